"""SalUn: a saliency mask from the forget loss's gradient, then random-label training on the
forget data plus the retained data with updates confined to the mask. Spec and defaults:
:mod:`app.core.methods.salun`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.salun import SPEC, SalunConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    import torch
    from torch import nn

    from worker.unlearning.base import UnlearningInputs


def saliency(
    model: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor,
    device: torch.device,
    batch_size: int,
) -> dict[str, torch.Tensor]:
    """``|grad|`` of the forget set's cross-entropy (summed over batches) per parameter, in
    eval mode as the official mask generation (no BatchNorm statistics are updated)."""
    import torch
    import torch.nn.functional as F

    from worker.unlearning import _ops

    params = {n: p for n, p in model.named_parameters() if p.requires_grad}
    grads = {n: torch.zeros_like(p) for n, p in params.items()}
    with _ops.eval_mode(model):
        for idx in _ops.batch_indices(images.shape[0], batch_size, None, shuffle=False):
            x, y = _ops.load_batch(images, labels, idx, device)
            model.zero_grad(set_to_none=True)
            # the official code ascends the forget loss; the sign does not change |grad|
            (-F.cross_entropy(model(x), y)).backward()
            for n, p in params.items():
                if p.grad is not None:
                    grads[n] += p.grad.detach()
    model.zero_grad(set_to_none=True)
    return {n: g.abs() for n, g in grads.items()}


def run(inputs: UnlearningInputs, config: SalunConfig) -> MethodResult:
    import torch

    from worker.unlearning import _masks, _ops

    _ops.require(inputs.forget_images, inputs.forget_labels, "forget", "salun")
    _ops.check_pair(inputs.retain_images, inputs.retain_labels, "retain")
    gen = _ops.seed_all(inputs.seed)
    model, device = inputs.model, inputs.device
    nf = inputs.forget_images.shape[0]
    mask = _masks.global_top_mask(
        saliency(model, inputs.forget_images, inputs.forget_labels, device, config.batch_size),
        config.mask_ratio,
    )
    # uniformly random labels over every class, as the official RL (may equal the true one)
    random = torch.randint(0, inputs.num_classes, (nf,), generator=gen)
    images = torch.cat([inputs.forget_images, inputs.retain_images])
    labels = torch.cat([random, inputs.retain_labels.long()])
    total = config.epochs * _ops.steps_per_epoch(images.shape[0], config.batch_size)
    progress = _ops.Progress(inputs.progress, total)
    progress.start("salun")
    opt = _ops.make_optimizer(
        "sgd",
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    # masked gradients before every step; after it, the masked-out weights go back to their
    # values (SGD adds weight decay inside the step) and lose their momentum, as the official
    # code does since its weight-decay fix: only the salient weights ever change
    initial = {n: p.detach().clone() for n, p in model.named_parameters() if n in mask}
    handles = [
        opt.register_step_pre_hook(lambda *_: _masks.mask_gradients(model, mask)),
        opt.register_step_post_hook(lambda *_: _masks.restore_outside(model, mask, initial, opt)),
    ]
    try:
        with _ops.keep_mode(model):
            stats = _ops.train_supervised(
                model,
                images,
                labels,
                epochs=config.epochs,
                batch_size=config.batch_size,
                optimizer=opt,
                scheduler=None,  # constant rate, as the official code
                device=device,
                generator=gen,
                progress=progress,
                phase="salun",
            )
    finally:
        for handle in handles:
            handle.remove()
    progress.finish()
    return MethodResult(
        details={
            **stats,
            "mask_fraction": _masks.kept_fraction(mask),
            "forget_samples": nf,
            "retain_samples": images.shape[0] - nf,
        }
    )


register_runner(SPEC.name, run)
