"""Adversarial class forgetting with a generator and a discriminator.

The model being unlearned is the *generator* (trained in place); a frozen copy of the original
model is the *reference*. An MLP *discriminator* on softmax outputs learns to tell the
generator's outputs on forget-class images ("fake") from the reference's outputs on retain
images ("real", i.e. retain-like). The generator is trained with the non-saturating GAN loss
(``-log D(softmax(G(x_forget)))``) so that the discriminator cannot tell them apart, plus a
cross-entropy term on retain batches that keeps its retain accuracy. Both use Adam (betas 0.5,
0.999), lr 1e-3, weight decay 5e-4, and a cosine schedule.

``details["discriminator_score"]`` is measured at the end, in eval mode, over the forget
images: the mean probability, given by the trained discriminator, that the generator's output
on a forget image is a *forget* output, i.e. ``mean(1 - D(softmax(G(x))))``. 1.0 means the
discriminator still tells forget outputs apart; 0.5 is chance; **below 0.5 means forgotten**
(the forget outputs pass for retain outputs). Also in ``details``: ``forget_misclassification_rate``
(forget images whose prediction is not their label), ``retain_accuracy`` (both on at most
``eval_max_samples`` seeded samples), ``discriminator_reference_retain_probability`` (mean D on the
reference's retain outputs) and ``discriminator_soft_accuracy`` (the balanced
``0.5 * (score + that)``, 0.5 = chance, insensitive to a biased discriminator).
"""

from __future__ import annotations

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class AdversarialConfig(MethodConfig):
    epochs: int = Field(5, ge=1, le=1000, description="passes over the forget images")
    batch_size: int = Field(128, ge=2, le=65536, description="forget and retain batch size")
    lr: float = Field(
        1e-3, gt=0, le=10, description="generator Adam learning rate (cosine-annealed)"
    )
    disc_lr: float = Field(1e-3, gt=0, le=10, description="discriminator Adam learning rate")
    beta1: float = Field(0.5, ge=0, lt=1)
    beta2: float = Field(0.999, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    disc_hidden: int = Field(128, ge=1, le=65536, description="width of the MLP's hidden layers")
    disc_steps: int = Field(1, ge=1, le=100, description="discriminator updates per step")
    adversarial_weight: float = Field(1.0, ge=0, le=100, description="weight of the GAN loss")
    retain_weight: float = Field(
        1.0, ge=0, le=100, description="weight of the retain cross-entropy"
    )
    eval_max_samples: int = Field(
        10000,
        ge=1,
        le=10_000_000,
        description="forget/retain samples (seeded subset) for the final metrics",
    )


SPEC = register(
    MethodSpec(
        name="adversarial",
        summary=(
            "Generator/discriminator class forgetting: the model (generator) is trained so that "
            "an MLP discriminator on softmax outputs cannot tell its outputs on forget-class "
            "images from a frozen reference copy's outputs on retain images (non-saturating GAN "
            "loss) plus retain cross-entropy; Adam (0.5, 0.999), lr 1e-3, wd 5e-4, cosine. "
            "discriminator_score = mean over forget images of 1 - D(softmax(G(x))), the "
            "discriminator's probability that a forget output is a forget output: 1 = still "
            "told apart, 0.5 = chance, below 0.5 = forgotten. Not exact."
        ),
        paper=None,
        targets=frozenset({Target.CLASSES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=AdversarialConfig,
        # a longer adversarial phase (passes over the forget images only: cheap), then retrain
        escalation=({"epochs": 10},),
        reads_forget_images=True,
    )
)
