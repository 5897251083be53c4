"""Pruning then fine-tuning: global L1-magnitude pruning of the conv/linear weights, then
fine-tuning on the retained data with the pruned weights held at zero. Spec and defaults:
:mod:`app.core.methods.pruning`."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.pruning import SPEC, PruningConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    from worker.unlearning.base import UnlearningInputs


def run(inputs: UnlearningInputs, config: PruningConfig) -> MethodResult:
    from worker.unlearning import _masks, _ops

    _ops.require(inputs.retain_images, inputs.retain_labels, "retain", "pruning")
    gen = _ops.seed_all(inputs.seed)
    model = inputs.model
    n = inputs.retain_images.shape[0]
    total = config.epochs * _ops.steps_per_epoch(n, config.batch_size)
    progress = _ops.Progress(inputs.progress, total)
    progress.start("pruning")
    weights = _masks.prunable_weights(model)
    mask = _masks.global_top_mask(
        {name: w.detach().abs() for name, w in weights.items()}, 1.0 - config.ratio
    )
    _masks.apply_mask(weights, mask)
    opt = _ops.make_optimizer(
        config.optimizer,
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    sched = _ops.cosine_schedule(opt, total)

    def step_hook(*_: object) -> None:
        _masks.apply_mask(weights, mask)

    handle = opt.register_step_post_hook(step_hook)
    try:
        with _ops.keep_mode(model):
            stats = _ops.train_supervised(
                model,
                inputs.retain_images,
                inputs.retain_labels,
                epochs=config.epochs,
                batch_size=config.batch_size,
                optimizer=opt,
                scheduler=sched,
                device=inputs.device,
                generator=gen,
                progress=progress,
                phase="pruning",
            )
    finally:
        handle.remove()
    progress.finish()
    return MethodResult(
        details={
            **stats,
            "pruned_fraction": 1.0 - _masks.kept_fraction(mask),
            "pruned_tensors": len(mask),
            "retain_samples": n,
        }
    )


register_runner(SPEC.name, run)
