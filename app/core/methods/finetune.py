"""Fine-tune on the retain data only (the "FT" baseline, e.g. Golatkar et al. 2020; Jia et al.
2023): catastrophic forgetting erodes what the model knew about the forgotten data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class FinetuneConfig(MethodConfig):
    epochs: int = Field(5, ge=1, le=1000, description="passes over the retain data")
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate (cosine-annealed to 0)")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum")
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"


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
        # no retry: a longer run costs a good share of a retrain (5 passes over the retained
        # data already), so a miss goes straight to the exact retrain
        escalation=(),
        reads_forget_images=False,
    )
)
