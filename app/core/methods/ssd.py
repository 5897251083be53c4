"""Selective Synaptic Dampening (Foster et al. 2023, "Fast Machine Unlearning Without
Retraining Through Selective Synaptic Dampening").

Diagonal Fisher importances (the mean over batches of the squared gradient of the
cross-entropy, model in eval mode, as in the paper's code) are computed on the forget data
(``[]_F``) and on the full training data (``[]_D``, retain + forget; or the retain data only).
Every parameter with ``[]_F > alpha * []_D`` is multiplied by
``beta = min((lambda * []_D / []_F) ** exponent, 1)``. No training, no learning rate.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class SSDConfig(MethodConfig):
    model_config = ConfigDict(
        extra="forbid", validate_by_name=True, validate_by_alias=True, serialize_by_alias=True
    )

    alpha: float = Field(
        10.0, gt=0, le=1e6, description="selection weighting: dampen where []_F > alpha * []_D"
    )
    lambda_: float = Field(
        1.0,
        gt=0,
        le=1e6,
        alias="lambda",
        description="dampening constant: beta = min((lambda * []_D / []_F) ** exponent, 1)",
    )
    exponent: float = Field(1.0, gt=0, le=100, description="exponent of the dampening factor")
    reference: Literal["full", "retain"] = Field(
        "full", description="data for []_D: the full training data (paper) or the retain data"
    )
    batch_size: int = Field(64, ge=1, le=65536, description="batch size of the importances")
    max_reference_samples: int | None = Field(
        None,
        ge=1,
        le=100_000_000,
        description="estimate []_D on a seeded random subset of this size",
    )


SPEC = register(
    MethodSpec(
        name="ssd",
        summary=(
            "Selective Synaptic Dampening: diagonal Fisher importances on the forget data and on "
            "the full training data; parameters with forget importance > alpha * full importance "
            "are scaled by min(lambda * full / forget, 1). Retrain-free, not exact."
        ),
        paper=(
            "Foster et al., Fast Machine Unlearning Without Retraining Through Selective "
            "Synaptic Dampening, AAAI 2024 (arXiv 2308.07707)"
        ),
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=SSDConfig,
        # dampen more parameters, more strongly (one pass of importances: cheap), then retrain
        escalation=({"alpha": 5.0, "lambda": 0.5},),
        reads_forget_images=True,
    )
)
