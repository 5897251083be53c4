"""SCRUB (Kurmanji et al., "Towards Unbounded Machine Unlearning", NeurIPS 2023): a student
(initialised from the model) moves away from the original model (the teacher) on the forget
set and stays close to it on the retained data.

Each epoch first takes, while ``epoch < max_steps``, a *max* pass over the forget data
(``loss = -KL_T(teacher || student)``), then a *min* pass over the retained data
(``loss = gamma * CE + alpha * KL_T``). Defaults are the official code's small-scale settings
(github.com/meghdadk/SCRUB): T=4, gamma=0.99, alpha=0.001, msteps=2, sgda_epochs=3, SGD
lr 0.0005, momentum 0.9, weight decay 5e-4, batch sizes 128 (retain) and 32 (forget); the
official ``lr_decay_epochs=[3,5,9]`` never fire within 3 epochs, so the rate is constant.
"""

from __future__ import annotations

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class ScrubConfig(MethodConfig):
    epochs: int = Field(3, ge=1, le=1000, description="SCRUB epochs (official sgda_epochs)")
    max_steps: int = Field(
        2, ge=0, le=1000, description="epochs that start with a max pass (official msteps)"
    )
    temperature: float = Field(4.0, ge=0.1, le=100, description="distillation temperature T")
    gamma: float = Field(0.99, ge=0, le=100, description="weight of CE on the retained data")
    alpha: float = Field(0.001, ge=0, le=100, description="weight of KL on the retained data")
    lr: float = Field(0.0005, gt=0, le=10, description="SGD learning rate (constant)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(128, ge=2, le=65536, description="retained-data batch size")
    forget_batch_size: int = Field(32, ge=2, le=65536, description="forget-data batch size")


SPEC = register(
    MethodSpec(
        name="scrub",
        summary=(
            "SCRUB: teacher-student distillation that maximises the KL to the original model on "
            "the forget data and minimises CE + KL on the retained data. Not exact."
        ),
        paper="Kurmanji et al., Towards Unbounded Machine Unlearning, NeurIPS 2023",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=ScrubConfig,
        # twice the epochs, twice the max (forget) passes, then retrain
        escalation=({"epochs": 6, "max_steps": 4},),
        reads_forget_images=True,
    )
)
