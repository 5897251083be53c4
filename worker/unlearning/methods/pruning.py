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
    weights = _masks.prunable_weights(model)
    mask = _masks.global_top_mask(
        {name: w.detach().abs() for name, w in weights.items()}, 1.0 - config.ratio
    )
    _masks.apply_mask(weights, mask)
    stats = _ops.fine_tune(
        model,
        inputs.retain_images,
        inputs.retain_labels,
        config,
        device=inputs.device,
        generator=gen,
        progress=inputs.progress,
        phase="pruning",
        # the pruned weights stay at zero through the fine-tuning
        after_step=lambda: _masks.apply_mask(weights, mask),
    )
    return MethodResult(
        details={
            **stats,
            "pruned_fraction": 1.0 - _masks.kept_fraction(mask),
            "pruned_tensors": len(mask),
            "retain_samples": inputs.retain_images.shape[0],
        }
    )


register_runner(SPEC.name, run)
