"""UNSIR (Tarun et al., "Fast Yet Effective Machine Unlearning", IEEE TNNLS 2023).

Zero-glance class forgetting, following the paper's code:

1. **Noise**: for every forgotten class ``c`` learn an error-maximising noise batch ``N_c``
   (``noise_batch_size`` samples, in the model's normalised input space, model frozen in eval
   mode) by minimising ``-CE(model(N_c), c) + noise_reg * mean_i(sum(N_c[i] ** 2))`` with Adam.
2. **Impair**: train (one epoch, high learning rate) on the noise, labelled ``c`` and repeated
   ``noise_repeats`` times, mixed with a small retain subset (``retain_per_class`` samples of
   every retained class).
3. **Repair**: train (lower learning rate) on the retain subset alone.
4. **BatchNorm recalibration** (ours, ``recalibrate_bn``): the impair epoch runs in train mode on
   the noise, so every BatchNorm layer's running statistics drift towards the noise's; the
   repair's steps only partly pull them back. Recomputing them from the retain subset (one
   forward pass, no gradient) removes that damage. Measured on the robustness subset
   (``bench.unsir_robustness``, 4 bases x 2 seeds): without it single retained classes lost up
   to 84 test points and 2 of 8 runs met the bar; with it and two repair epochs, 7 of 8.

It never reads the forget images or labels (callers may pass empty tensors).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class UnsirConfig(MethodConfig):
    """Defaults: the paper's schedule (one impair epoch at a higher learning rate than the
    repair) sized for the small CNNs this service trains on a CPU, with two repair epochs and
    the BatchNorm recalibration. The learning rates started from ``python -m bench.unsir_sweep``;
    the noise batch and retain subset were doubled because with the smaller ones a small
    dataset could lose most of a retained class. Once the recalibration was in, a second
    repair epoch and impair_lr 0.003 (from 0.002) gave 7 of 8 runs on the robustness subset
    (the method called directly, 4 bases x 2 seeds), against 2 of 8 for the earlier defaults.
    The paper's own values, for a ResNet-18 on a GPU (impair_lr 0.02, repair_lr 0.01, larger
    noise and retain sets), cost these small models 15-25 points of retained accuracy (README,
    class-forgetting table)."""

    noise_batch_size: int = Field(128, ge=1, le=65536, description="noise samples per class")
    noise_epochs: int = Field(3, ge=1, le=1000)
    noise_steps: int = Field(4, ge=1, le=1000, description="Adam steps per noise epoch")
    noise_lr: float = Field(0.1, gt=0, le=10)
    noise_reg: float = Field(
        0.1, ge=0, le=100, description="weight of the noise's mean squared l2 norm in its loss"
    )
    noise_repeats: int = Field(
        4, ge=1, le=10000, description="copies of each noise batch in the impair data"
    )
    retain_per_class: int = Field(
        200,
        ge=1,
        le=1_000_000,
        description="retain samples per retained class (clipped to what exists)",
    )
    batch_size: int = Field(64, ge=2, le=65536)
    optimizer: Literal["adam", "sgd"] = "adam"
    momentum: float = Field(0.9, ge=0, lt=1, description="used by sgd only")
    weight_decay: float = Field(0.0, ge=0, le=1)
    impair_lr: float = Field(0.003, gt=0, le=10)
    impair_epochs: int = Field(1, ge=1, le=100)
    repair_lr: float = Field(0.001, gt=0, le=10)
    repair_epochs: int = Field(2, ge=1, le=100)
    recalibrate_bn: bool = Field(
        True,
        description="recompute BatchNorm running statistics from the retain subset after the "
        "repair (the impair epoch fits them to the noise); no effect without BatchNorm",
    )


SPEC = register(
    MethodSpec(
        name="unsir",
        summary=(
            "UNSIR (zero-glance): learn an error-maximising noise batch per forgotten class, "
            "impair (one epoch at a high learning rate on the noise, labelled with its class, "
            "plus a small retain subset), then repair (one epoch on the retain subset). Never "
            "reads the forget images. Not exact."
        ),
        paper="Tarun et al., Fast Yet Effective Machine Unlearning, IEEE TNNLS 2023",
        targets=frozenset({Target.CLASSES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=UnsirConfig,
        reads_forget_images=False,
        # With the recalibration, what a miss most often lacks is forgetting (the class keeps
        # 6-14% on some seeds): a harder impair with a longer repair, then a second impair
        # epoch (each cleared 6 of 8 or 5 of 8 of the robustness runs on its own; the misses
        # differ between them), then the exact retrain.
        escalation=(
            {"impair_lr": 0.004, "repair_epochs": 4},
            {"impair_lr": 0.002, "impair_epochs": 2, "repair_epochs": 3},
        ),
    )
)
