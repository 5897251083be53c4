"""Fine-tune on the retain data only (the "FT" baseline, e.g. Golatkar et al. 2020; Jia et al.
2023): catastrophic forgetting erodes what the model knew about the forgotten data."""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from worker.unlearning.base import MethodConfig, MethodResult, MethodSpec, Runner, Target
from worker.unlearning.registry import register

if TYPE_CHECKING:
    from worker.unlearning.base import UnlearningInputs


class FinetuneConfig(MethodConfig):
    epochs: int = Field(5, ge=1, le=1000, description="passes over the retain data")
    lr: float = Field(0.01, gt=0, description="initial learning rate (cosine-annealed to 0)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"


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


SPEC = register(
    MethodSpec(
        name="finetune",
        summary=(
            "Fine-tune the model on the retain data only (SGD, cosine schedule); forgetting of "
            "the deleted data comes from catastrophic forgetting. Cheap baseline, not exact."
        ),
        paper="Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020 (FT baseline)",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=FinetuneConfig,
        run=run,
        reads_forget_images=False,
    )
)
