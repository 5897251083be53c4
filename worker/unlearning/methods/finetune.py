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
    gen = _ops.seed_all(inputs.seed)
    model = inputs.model
    n = inputs.retain_images.shape[0]
    total = config.epochs * _ops.steps_per_epoch(n, config.batch_size)
    progress = _ops.Progress(inputs.progress, total)
    progress.start("finetune")
    opt = _ops.make_optimizer(
        config.optimizer,
        model.parameters(),
        lr=config.lr,
        momentum=config.momentum,
        weight_decay=config.weight_decay,
    )
    with _ops.keep_mode(model):
        stats = _ops.train_supervised(
            model,
            inputs.retain_images,
            inputs.retain_labels,
            epochs=config.epochs,
            batch_size=config.batch_size,
            optimizer=opt,
            scheduler=_ops.cosine_schedule(opt, total),
            device=inputs.device,
            generator=gen,
            progress=progress,
            phase="finetune",
        )
    progress.finish()
    return MethodResult(details={**stats, "retain_samples": n})


register_runner(SPEC.name, run)
