"""Dummy labels (an entry of the NeurIPS 2023 machine-unlearning challenge write-up this method
is seeded from): predict the forget images with the original model, relabel each with the
model's own best *wrong* guess (the highest-scoring class other than its label), then fine-tune
on those relabelled images mixed with the retained data.

The write-up reports MIA 0.505 but a retain accuracy that collapsed to 13.8% in its run: a
cautionary entry, kept so the benchmark shows whether it holds up. Defaults: the write-up gives
no hyper-parameters, so the fine-tuning recipe is the ``random_label`` one (3 epochs, SGD 0.01,
momentum 0.9, cosine), of which this is the deterministic variant.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class DummyLabelsConfig(MethodConfig):
    epochs: int = Field(3, ge=1, le=1000, description="passes over forget + retain data")
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate (cosine to 0)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"


SPEC = register(
    MethodSpec(
        name="dummy_labels",
        summary=(
            "Relabel each forget sample with the original model's best wrong class and "
            "fine-tune on them mixed with the retained data. Not exact."
        ),
        paper="NeurIPS 2023 Machine Unlearning challenge, dummy-labels entry",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=DummyLabelsConfig,
        # twice the passes (still well under a retrain's), then retrain
        escalation=({"epochs": 6},),
        reads_forget_images=True,
    )
)
