"""l1-sparse unlearning (Jia et al. 2023, "Model Sparsity Can Simplify Machine Unlearning"):
fine-tune on the retain data with an l1 penalty ``gamma_t * ||theta||_1`` (all trainable
parameters) whose weight decays linearly over the epochs, as in the paper's code:
``gamma_t = gamma * (1 - t / (T - no_l1_epochs))`` for epoch ``t``, 0 for the last
``no_l1_epochs`` epochs. The paper's runs use gamma = 1e-4, lr 0.01, 10 epochs."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class L1SparseConfig(MethodConfig):
    epochs: int = Field(5, ge=1, le=1000, description="passes over the retain data")
    lr: float = Field(0.01, gt=0, le=10, description="initial learning rate (cosine-annealed to 0)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536)
    optimizer: Literal["sgd", "adam"] = "sgd"
    l1_weight: float = Field(
        1e-4,
        ge=0,
        le=1,
        description="gamma: initial weight of the l1 norm of all trainable parameters",
    )
    decay: Literal["linear", "constant"] = Field(
        "linear",
        description="linear: gamma * (1 - epoch / (epochs - no_l1_epochs)); constant: gamma",
    )
    no_l1_epochs: int = Field(
        0, ge=0, le=1000, description="final epochs trained without the penalty"
    )

    @model_validator(mode="after")
    def _some_l1_epochs(self) -> L1SparseConfig:
        if self.no_l1_epochs >= self.epochs:
            raise ValueError("no_l1_epochs must be smaller than epochs")
        return self


SPEC = register(
    MethodSpec(
        name="l1_sparse",
        summary=(
            "l1-sparse fine-tuning: fine-tune on the retain data with loss CE + gamma_t*||w||_1 "
            "over all trainable parameters, gamma_t decaying linearly to 0. Not exact."
        ),
        paper="Jia et al., Model Sparsity Can Simplify Machine Unlearning, NeurIPS 2023",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=L1SparseConfig,
        # no retry: a longer run costs a good share of a retrain (5 passes over the retained
        # data already), so a miss goes straight to the exact retrain
        escalation=(),
        reads_forget_images=False,
    )
)
