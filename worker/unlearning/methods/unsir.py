"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023).

Zero-glance class forgetting, following the paper's code:

1. **Noise**: for every forgotten class ``c`` learn an error-maximising noise batch ``N_c``
   (``noise_batch_size`` samples, in the model's normalised input space, model frozen in eval
   mode) by minimising ``-CE(model(N_c), c) + noise_reg * mean_i(sum(N_c[i] ** 2))`` with Adam.
2. **Impair**: train (one epoch, high learning rate) on the noise, labelled ``c`` and repeated
   ``noise_repeats`` times, mixed with a small retain subset (``retain_per_class`` samples of
   every retained class).
3. **Repair**: train (lower learning rate) on the retain subset alone; optionally
   (``repair_distill``) towards the parent's predictions with the forgotten classes removed.
BatchNorm stays at the parent's statistics during the impair epoch (``impair_batchnorm``) and
is recalibrated from the retain subset after the repair (``recalibrate_bn``); see the spec.

It never reads the forget images or labels (callers may pass empty tensors).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from app.core.methods.unsir import SPEC, UnsirConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch
    from torch import nn

    from worker.unlearning import _ops
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


def _checked_forget_classes(inputs: UnlearningInputs) -> list[int]:
    forget_classes = sorted(set(inputs.forget_classes))
    if not forget_classes:
        raise ValueError("unsir forgets classes: forget_classes is empty")
    if any(not 0 <= c < inputs.num_classes for c in forget_classes):
        raise ValueError(
            f"forget_classes {forget_classes} out of range 0..{inputs.num_classes - 1}"
        )
    return forget_classes


@dataclass
class _ImpairSet:
    """The impair phase's training set: ``repeats`` copies of every class's noise batch (indices
    ``0 .. n_noise - 1``) followed by the retain subset."""

    noise: torch.Tensor
    """``[k, b, C, H, W]`` on the device, one noise batch per forgotten class."""
    noise_labels: torch.Tensor
    repeats: int
    sub_images: torch.Tensor
    sub_labels: torch.Tensor

    @property
    def n_noise(self) -> int:
        k, b = self.noise.shape[0], self.noise.shape[1]
        return int(k * self.repeats * b)

    def __len__(self) -> int:
        return self.n_noise + int(self.sub_images.shape[0])

    def batch(self, idx: torch.Tensor, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        import torch

        from worker.unlearning import _ops

        n_noise, b = self.n_noise, self.noise.shape[1]
        is_noise = idx < n_noise
        nidx = idx[is_noise]
        cls, row = nidx // (self.repeats * b), nidx % b
        cls_d, row_d = cls.to(device), row.to(device)
        xr, yr = _ops.load_batch(self.sub_images, self.sub_labels, idx[~is_noise] - n_noise, device)
        x = torch.cat([self.noise[cls_d, row_d], xr])
        y = torch.cat([self.noise_labels[cls_d], yr])
        return x, y


def _noise_for_class(
    model: nn.Module,
    c: int,
    shape: tuple[int, ...],
    config: UnsirConfig,
    device: torch.device,
    gen: torch.Generator,
    progress: _ops.Progress,
) -> tuple[torch.Tensor, float]:
    """Learn one error-maximising noise batch for class ``c``; returns it and its last loss."""
    import torch
    import torch.nn.functional as F

    b = config.noise_batch_size
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
    return noise.detach(), float(loss.detach())


def _learn_noise(
    model: nn.Module,
    forget_classes: list[int],
    shape: tuple[int, ...],
    config: UnsirConfig,
    device: torch.device,
    gen: torch.Generator,
    progress: _ops.Progress,
) -> tuple[torch.Tensor, dict[str, float | None]]:
    """One noise batch per forgotten class, the model frozen in eval mode; returns the stacked
    noise ``[k, b, C, H, W]`` and each class's final noise loss."""
    import torch

    from worker.unlearning import _ops

    model.eval()
    trainable = [p for p in model.parameters() if p.requires_grad]
    for p in trainable:
        p.requires_grad_(False)
    noises: list[torch.Tensor] = []
    noise_losses: dict[str, float | None] = {}
    try:
        for c in forget_classes:
            noise, loss = _noise_for_class(model, c, shape, config, device, gen, progress)
            noise_losses[str(c)] = _ops.finite_or_none(loss)
            noises.append(noise)
    finally:
        for p in trainable:
            p.requires_grad_(True)
    return torch.stack(noises), noise_losses


def _optimizer(model: nn.Module, config: UnsirConfig, lr: float) -> torch.optim.Optimizer:
    from worker.unlearning import _ops

    return _ops.make_optimizer(
        config.optimizer,
        model.parameters(),
        lr=lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )


def _impair(
    model: nn.Module,
    impair_set: _ImpairSet,
    config: UnsirConfig,
    device: torch.device,
    gen: torch.Generator,
    progress: _ops.Progress,
) -> float | None:
    """High learning rate on noise + retain subset; returns the last epoch's mean loss."""
    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    model.train()
    if config.impair_batchnorm == "frozen":
        # the parent's statistics normalise the noise too, and the noise never enters them
        for m in model.modules():
            if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
                m.eval()
    opt = _optimizer(model, config, config.impair_lr)
    last = float("nan")
    for _ in range(config.impair_epochs):
        total, count = 0.0, 0
        for idx in _ops.batch_indices(len(impair_set), config.batch_size, gen):
            x, y = impair_set.batch(idx, device)
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * idx.numel()
            count += idx.numel()
            progress.advance("impair")
        last = total / max(1, count)
    return _ops.finite_or_none(last)


def _repair(
    model: nn.Module,
    impair_set: _ImpairSet,
    teacher_logits: torch.Tensor | None,
    config: UnsirConfig,
    device: torch.device,
    gen: torch.Generator,
    progress: _ops.Progress,
) -> float | int | None:
    """Lower learning rate on the retain subset alone (labels, and the parent's predictions
    without the forgotten classes when ``teacher_logits`` is given); returns the last epoch's
    mean loss."""
    from worker.unlearning import _ops

    stats = _ops.train_supervised(
        model,
        impair_set.sub_images,
        impair_set.sub_labels,
        epochs=config.repair_epochs,
        batch_size=config.batch_size,
        optimizer=_optimizer(model, config, config.repair_lr),
        scheduler=None,
        device=device,
        generator=gen,
        progress=progress,
        phase="repair",
        loss_fn=None
        if teacher_logits is None
        else _ops.distilled_loss(teacher_logits, config.repair_distill, config.distill_temperature),
    )
    return stats["final_loss"]


def _total_steps(config: UnsirConfig, k: int, n_noise: int, n_subset: int) -> int:
    from worker.unlearning import _ops

    n_impair = n_noise + n_subset
    impair_steps = config.impair_epochs * _ops.steps_per_epoch(n_impair, config.batch_size)
    repair_steps = config.repair_epochs * _ops.steps_per_epoch(n_subset, config.batch_size)
    noise_steps = k * config.noise_epochs * config.noise_steps
    return noise_steps + impair_steps + repair_steps


def run(inputs: UnlearningInputs, config: UnsirConfig) -> MethodResult:
    # Zero-glance: nothing below may touch inputs.forget_images / inputs.forget_labels.
    import torch

    from worker.unlearning import _ops

    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    forget_classes = _checked_forget_classes(inputs)
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    shape = tuple(inputs.retain_images.shape[1:])
    retained = _ops.retained_classes(inputs.num_classes, forget_classes)
    subset = _retain_subset(inputs.retain_labels, retained, config.retain_per_class, gen)
    if subset.numel() == 0:
        raise ValueError("unsir needs retain samples of the retained classes")

    k = len(forget_classes)
    n_noise = k * config.noise_repeats * config.noise_batch_size
    total_steps = _total_steps(config, k, n_noise, int(subset.numel()))
    progress = _ops.Progress(inputs.progress, total_steps)
    progress.start("noise")

    details: dict[str, object] = {}
    with _ops.keep_mode(model):
        noise, noise_losses = _learn_noise(
            model, forget_classes, shape, config, device, gen, progress
        )
        impair_set = _ImpairSet(
            noise=noise,
            noise_labels=torch.tensor(forget_classes, dtype=torch.long, device=device),
            repeats=config.noise_repeats,
            sub_images=inputs.retain_images[subset],
            sub_labels=inputs.retain_labels[subset].long(),
        )
        # the parent's view of the retain subset, read before the impair changes it
        teacher_logits = (
            _ops.logits_without(model, impair_set.sub_images, forget_classes, device)
            if config.repair_distill > 0
            else None
        )
        details["impair_loss"] = _impair(model, impair_set, config, device, gen, progress)
        details["repair_loss"] = _repair(
            model, impair_set, teacher_logits, config, device, gen, progress
        )
        if config.recalibrate_bn:
            details["batchnorm_layers_recalibrated"] = _ops.recalibrate_batchnorm(
                model, impair_set.sub_images, device, config.batch_size
            )
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
