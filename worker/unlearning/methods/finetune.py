"""Fine-tune on the retain data only (the "FT" baseline, e.g. Golatkar et al. 2020; Jia et al.
2023): catastrophic forgetting erodes what the model knew about the forgotten data."""

from __future__ import annotations

from typing import TYPE_CHECKING

from app.core.methods.finetune import SPEC, FinetuneConfig
from worker.unlearning.base import MethodResult
from worker.unlearning.registry import register_runner

if TYPE_CHECKING:
    from worker.unlearning.base import UnlearningInputs


def run(inputs: UnlearningInputs, config: FinetuneConfig) -> MethodResult:
    from worker.unlearning import _ops

    _ops.require(inputs.retain_images, inputs.retain_labels, "retain", "finetune")
    stats = _ops.fine_tune(
        inputs.model,
        inputs.retain_images,
        inputs.retain_labels,
        config,
        device=inputs.device,
        generator=_ops.seed_all(inputs.seed),
        progress=inputs.progress,
        phase="finetune",
    )
    n = inputs.retain_images.shape[0]
    return MethodResult(details={**stats, "retain_samples": n})


register_runner(SPEC.name, run)
