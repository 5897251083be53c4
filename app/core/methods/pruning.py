"""Pruning then fine-tuning (the "CNN pruning" entry of the NeurIPS 2023 machine-unlearning
challenge write-up that this method is seeded from): global magnitude (L1) pruning of every
conv/linear weight at a configurable ratio, then fine-tuning on the retained data with the
pruned weights held at zero.

Defaults: the write-up publishes no code or hyper-parameters beyond "prune weak weights by L1
magnitude, then fine-tune on the retained data", so the ratio (0.2, ``torch.nn.utils.prune``'s
usual global amount) and the fine-tuning recipe (the service's ``finetune`` defaults: SGD 0.01,
momentum 0.9, cosine) are ours, and the benchmark in ``bench/file_forgetting.py`` measures them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class PruningConfig(MethodConfig):
    ratio: float = Field(
        0.2, ge=0, le=0.99, description="fraction of conv/linear weights zeroed (global L1)"
    )
    epochs: int = Field(5, ge=1, le=1000, description="fine-tuning passes over the retain data")
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate (cosine to 0)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"


SPEC = register(
    MethodSpec(
        name="pruning",
        summary=(
            "Global L1-magnitude pruning of conv/linear weights (ratio), then fine-tuning on the "
            "retained data with the pruned weights kept at zero. Zero-glance, not exact."
        ),
        paper="NeurIPS 2023 Machine Unlearning challenge, CNN pruning entry (L1 pruning + FT)",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=PruningConfig,
        # no retry: a longer run costs a good share of a retrain (5 passes over the retained
        # data already), so a miss goes straight to the exact retrain
        escalation=(),
        reads_forget_images=False,
    )
)
