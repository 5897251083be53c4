"""Random labels (Golatkar et al. 2020; the "RL" baseline of Jia et al. 2023): relabel the
forget samples with random *wrong* labels and train on them mixed with the retain data."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class RandomLabelConfig(MethodConfig):
    epochs: int = Field(3, ge=1, le=1000, description="passes over forget + retain data")
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate (cosine-annealed to 0)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    relabel_each_epoch: bool = Field(
        False, description="draw fresh random labels every epoch instead of once"
    )


SPEC = register(
    MethodSpec(
        name="random_label",
        summary=(
            "Relabel the forget samples with uniformly drawn wrong labels (from the retained "
            "classes) and fine-tune on them mixed with the retain data. Not exact."
        ),
        paper="Golatkar et al., Eternal Sunshine of the Spotless Net, CVPR 2020 (random labels)",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=RandomLabelConfig,
        # twice the passes (still well under a retrain's), then retrain
        escalation=({"epochs": 6},),
        reads_forget_images=True,
    )
)
