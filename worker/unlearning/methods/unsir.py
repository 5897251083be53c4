"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023).

Zero-glance class forgetting, following the paper's code:

1. **Noise**: for every forgotten class ``c`` learn an error-maximising noise batch ``N_c``
   (``noise_batch_size`` samples, in the model's normalised input space, model frozen in eval
   mode) by minimising ``-CE(model(N_c), c) + noise_reg * mean_i(sum(N_c[i] ** 2))`` with Adam.
2. **Impair**: train (one epoch, high learning rate) on the noise, labelled ``c`` and repeated
   ``noise_repeats`` times, mixed with a small retain subset (``retain_per_class`` samples of
   every retained class).
3. **Repair**: train (one epoch, lower learning rate) on the retain subset alone.

It never reads the forget images or labels (callers may pass empty tensors).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.unsir import SPEC, UnsirConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch

    from worker.unlearning.base import UnlearningInputs


def _retain_subset(
    labels: torch.Tensor, classes: list[int], per_class: int, gen: torch.Generator
) -> torch.Tensor:
    import torch

    picked = []
    for c in classes:
        idx = (labels == c).nonzero().squeeze(1)
        if idx.numel():
            picked.append(idx[torch.randperm(idx.numel(), generator=gen)[:per_class]])
    return torch.cat(picked) if picked else torch.empty(0, dtype=torch.long)


def run(inputs: UnlearningInputs, config: UnsirConfig) -> MethodResult:
    # Zero-glance: nothing below may touch inputs.forget_images / inputs.forget_labels.
    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    forget_classes = sorted(set(inputs.forget_classes))
    if not forget_classes:
        raise ValueError("unsir forgets classes: forget_classes is empty")
    if any(not 0 <= c < inputs.num_classes for c in forget_classes):
        raise ValueError(
            f"forget_classes {forget_classes} out of range 0..{inputs.num_classes - 1}"
        )
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    shape = tuple(inputs.retain_images.shape[1:])
    retained = _ops.retained_classes(inputs.num_classes, forget_classes)
    subset = _retain_subset(inputs.retain_labels, retained, config.retain_per_class, gen)
    if subset.numel() == 0:
        raise ValueError("unsir needs retain samples of the retained classes")
    sub_images = inputs.retain_images[subset]
    sub_labels = inputs.retain_labels[subset].long()

    k, b, r = len(forget_classes), config.noise_batch_size, config.noise_repeats
    n_noise = k * r * b
    n_impair = n_noise + subset.numel()
    impair_steps = config.impair_epochs * _ops.steps_per_epoch(n_impair, config.batch_size)
    repair_steps = config.repair_epochs * _ops.steps_per_epoch(subset.numel(), config.batch_size)
    noise_steps = k * config.noise_epochs * config.noise_steps
    progress = _ops.Progress(inputs.progress, noise_steps + impair_steps + repair_steps)
    progress.start("noise")

    details: dict[str, object] = {}
    with _ops.keep_mode(model):
        # 1. error-maximising noise, one batch per forgotten class
        model.eval()
        trainable = [p for p in model.parameters() if p.requires_grad]
        for p in trainable:
            p.requires_grad_(False)
        noises: list[torch.Tensor] = []
        noise_losses: dict[str, float | None] = {}
        try:
            for c in forget_classes:
                noise = torch.randn((b, *shape), generator=gen).to(device).requires_grad_(True)
                noise_opt = torch.optim.Adam([noise], lr=config.noise_lr)
                target = torch.full((b,), c, dtype=torch.long, device=device)
                loss = torch.zeros(())
                for _ in range(config.noise_epochs * config.noise_steps):
                    loss = -F.cross_entropy(model(noise), target) + config.noise_reg * torch.mean(
                        torch.sum(noise.pow(2), dim=tuple(range(1, noise.dim())))
                    )
                    noise_opt.zero_grad(set_to_none=True)
                    loss.backward()
                    noise_opt.step()
                    progress.advance("noise")
                noise_losses[str(c)] = _ops.finite_or_none(float(loss.detach()))
                noises.append(noise.detach())
        finally:
            for p in trainable:
                p.requires_grad_(True)
        noise_all = torch.stack(noises)  # [k, b, C, H, W], on device
        noise_labels = torch.tensor(forget_classes, dtype=torch.long, device=device)

        def impair_batch(idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            is_noise = idx < n_noise
            nidx = idx[is_noise]
            cls, row = nidx // (r * b), nidx % b
            cls_d, row_d = cls.to(device), row.to(device)
            xr, yr = _ops.load_batch(sub_images, sub_labels, idx[~is_noise] - n_noise, device)
            x = torch.cat([noise_all[cls_d, row_d], xr])
            y = torch.cat([noise_labels[cls_d], yr])
            return x, y

        # 2. impair: high learning rate on noise + retain subset
        model.train()
        opt = _ops.make_optimizer(
            config.optimizer,
            model.parameters(),
            lr=config.impair_lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        last = float("nan")
        for _ in range(config.impair_epochs):
            total, count = 0.0, 0
            for idx in _ops.batch_indices(n_impair, config.batch_size, gen):
                x, y = impair_batch(idx)
                loss = F.cross_entropy(model(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                total += float(loss.detach()) * idx.numel()
                count += idx.numel()
                progress.advance("impair")
            last = total / max(1, count)
        details["impair_loss"] = _ops.finite_or_none(last)

        # 3. repair: lower learning rate on the retain subset alone
        opt = _ops.make_optimizer(
            config.optimizer,
            model.parameters(),
            lr=config.repair_lr,
            momentum=config.momentum,
            weight_decay=config.weight_decay,
        )
        stats = _ops.train_supervised(
            model,
            sub_images,
            sub_labels,
            epochs=config.repair_epochs,
            batch_size=config.batch_size,
            optimizer=opt,
            scheduler=None,
            device=device,
            generator=gen,
            progress=progress,
            phase="repair",
        )
        details["repair_loss"] = stats["final_loss"]
    progress.finish()
    details.update(
        {
            "noise_final_loss": noise_losses,
            "noise_samples": n_noise,
            "retain_subset_samples": int(subset.numel()),
            "forget_classes": forget_classes,
        }
    )
    return MethodResult(details=details)


register_runner(SPEC.name, run)
