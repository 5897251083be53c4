"""Weight filtering (Poppi, Sarto, Cornia, Baraldi, Cucchiara, "Multi-Class Unlearning for
Image Classification via Weight Filtering", arXiv 2304.02049; IEEE Intelligent Systems 2024).

Two steps:

1. **Filter training** (once per model, ``POST /v1/models/{id}/filters``): the model is frozen;
   every convolution and linear layer ``l`` gets a memory matrix ``alpha_l`` of shape
   ``[classes, output channels]``, initialised at 1, that multiplies the layer's kernels
   point-wise. Row ``c`` is trained to be "the model without class ``c``": each training image
   is paired with a class to unlearn (its own with probability ``forget_fraction``, another one
   otherwise) and the loss is ``CE`` on images of retained classes, plus ``lambda_unlearn``
   times the inverse cross-entropy ``1 / CE`` on images of the class being unlearned, plus
   ``lambda_reg`` times ``mean |1 - alpha|`` (an l1 pull that keeps most entries at 1).
   Entries are kept in ``[0, 1]``.
2. **Forgetting** (``method: "weight_filtering"``): the filtered weights ``W * alpha_l[c]`` are
   materialised as the new version, in seconds; two classes multiply both rows. The filters of
   the other classes stay for later requests and compose with what was already applied.

Where the defaults come from: the loss terms and the filter shape (memory matrices of classes
x kernels, ``alpha_l`` of shape ``N_c x K``) follow the paper; no official implementation was
found in the sources searched when this was written, so the numbers are this service's own.
``pair_fraction`` (some images trained under two classes' rows at once) is this service's
addition, so that rows applied one after another compose. ``keep_target: parent`` is ours
too: the kept classes' images are distilled from the frozen model with the filtered classes
removed rather than fitted to their labels, because a retrain without a class *gains* on the
other classes (the images the model gave to that class go to their next one: +3 points on
CIFAR-10 "cat") and because filters cannot fix the model's own errors, which cross-entropy on
labels asks of them. ``python -m bench.weight_filtering_sweep`` (the filters trained directly
on bench.class_forgetting's full-size base models, three filter seeds) picked
``lambda_unlearn`` 1 (0.3 left 17% of CIFAR-10 "cat") and the distillation at temperature 2,
the closest to the retrain on the two datasets together (temperature 1 and the label loss
with 10 epochs came next). Its step-size sets then picked a cosine decay over 10 epochs:
0.4 points closer to the retrain on CIFAR-10 on average, 0.1 further on Animal-MNIST, at twice
the (once per model) filter training; with 5 epochs the decay forgot too little and lost one
Animal-MNIST class 13.5 points in one seed. ``min_steps`` keeps that step count on small
datasets: with 200 images per class, 10 epochs (320 steps) of filters for Animal-MNIST
"elephant" also erased "bear" (95% to 0%), while as many steps as at full size (40 epochs)
kept the other classes within a point of the retrain. README, weight filtering, has the
figures.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class FilterTrainingConfig(MethodConfig):
    """How the per-class filters of a model are trained (the body of
    ``POST /v1/models/{id}/filters``)."""

    epochs: int = Field(
        10, ge=1, le=200, description="passes over each constituent's data (at least)"
    )
    min_steps: int = Field(
        1250,
        ge=0,
        le=1_000_000,
        description="fewest optimizer steps: a constituent with few images gets more epochs "
        "than `epochs`, since every class's row needs enough batches in which it keeps the "
        "other classes (the defaults' step count on 8,000 images)",
    )
    lr: float = Field(0.05, gt=0, le=10, description="Adam step size on the filter entries")
    lr_schedule: Literal["constant", "cosine"] = Field(
        "cosine",
        description="the step size through training: constant, or a cosine decay to 0 (the "
        "last steps then settle the entries rather than move them by up to lr each step)",
    )
    batch_size: int = Field(64, ge=2, le=65536)
    forget_fraction: float = Field(
        0.5,
        gt=0,
        lt=1,
        description="share of training images paired with their own class (to unlearn); the "
        "others are paired with another class (to keep)",
    )
    pair_fraction: float = Field(
        0.5,
        ge=0,
        le=1,
        description="share of training images filtered by the product of two classes' rows "
        "(so that rows applied one after another still forget and keep what they should)",
    )
    lambda_unlearn: float = Field(
        1.0, ge=0, le=1e4, description="weight of the inverse cross-entropy on unlearned images"
    )
    lambda_reg: float = Field(
        10.0, ge=0, le=1e4, description="weight of mean |1 - alpha| (keeps most entries at 1)"
    )
    keep_target: Literal["labels", "parent"] = Field(
        "parent",
        description="what images of the classes kept are trained towards: their labels (the "
        "paper's cross-entropy) or the frozen model's own predictions with the filtered "
        "classes removed (a distillation: the next class takes their share, as after a "
        "retrain, and the model's errors are not the filters' to fix)",
    )
    distill_temperature: float = Field(
        2.0, gt=0, le=100, description="softmax temperature when keep_target is 'parent'"
    )
    max_samples: int = Field(
        20000,
        ge=10,
        le=10_000_000,
        description="most training images per constituent (an even subsample beyond that)",
    )


class WeightFilteringConfig(MethodConfig):
    """Nothing to tune at forgetting time: the filters were trained beforehand."""


SPEC = register(
    MethodSpec(
        name="weight_filtering",
        summary=(
            "Weight filtering: applies the per-class filters trained beforehand for the model "
            "(POST /v1/models/{id}/filters) and materialises the filtered weights; forgets a "
            "class in seconds. Needs trained filters. Not exact."
        ),
        paper=(
            "Poppi, Sarto, Cornia, Baraldi, Cucchiara, Multi-Class Unlearning for Image "
            "Classification via Weight Filtering, arXiv 2304.02049 (IEEE Intelligent Systems "
            "2024)"
        ),
        targets=frozenset({Target.CLASSES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=WeightFilteringConfig,
        # The filters are fixed: there is nothing stronger to try, so a miss goes to retrain.
        escalation=(),
        uses_weight_filters=True,
    )
)
