"""NegGrad+ (Kurmanji et al. 2023, "Towards Unbounded Machine Unlearning", the SCRUB paper's
baseline): gradient descent on the retain data and ascent on the forget data,
``loss = alpha * CE(retain) - (1 - alpha) * CE(forget)``."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class NegGradPlusConfig(MethodConfig):
    alpha: float = Field(
        0.99, ge=0, le=1, description="weight of the retain loss; 1 - alpha weighs the forget loss"
    )
    epochs: int = Field(
        5, ge=1, le=1000, description="passes over the retain data (forget batches cycle)"
    )
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate (cosine-annealed to 0)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    grad_clip: float | None = Field(
        None,
        gt=0,
        le=1e6,
        description="clip the global gradient norm (None: no clipping, as the paper)",
    )


SPEC = register(
    MethodSpec(
        name="neggrad_plus",
        summary=(
            "NegGrad+: fine-tune with loss alpha*CE(retain) - (1-alpha)*CE(forget), descending "
            "on retain batches while ascending on (cycled) forget batches. Not exact."
        ),
        paper="Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023 (NegGrad+)",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=NegGradPlusConfig,
        # no retry: a longer run costs a good share of a retrain (5 passes over the retained
        # data already), so a miss goes straight to the exact retrain
        escalation=(),
        reads_forget_images=True,
    )
)
