"""SalUn (Fan et al., "SalUn: Empowering Machine Unlearning via Gradient-based Weight Saliency
in both Image Classification and Generation", ICLR 2024): a weight-saliency mask from the
gradient of the forget loss, then random-label training on the forget data plus the retained
data with updates confined to the mask. One module for both targets: for a file request the
forget set is the named files, for a class request (the paper's class-wise setting) it is every
training image of the forgotten classes, and the retained data is everything else.

As in the official code (github.com/OPTML-Group/Unlearn-Saliency, ``generate_mask.py`` and
``unlearn/RL.py``): the mask keeps the ``mask_ratio`` of weights (over all parameters, one
global threshold) with the largest ``|grad|`` of the forget set's cross-entropy; the forget
samples get uniformly random labels over every class (which may equal the true one, as there);
gradients outside the mask are zeroed before each step, and after it the masked-out weights are
put back to their values with their momentum cleared (the official weight-decay fix: SGD adds
the decay inside its step, which would otherwise move them). Forget and retained batches are
shuffled together (the official CIFAR-100 / TinyImageNet loop; its CIFAR-10 loop runs the
forget batches first in each epoch). Defaults: the official README's CIFAR-10 command (mask
ratio 0.5, 10 epochs, SGD lr 0.013, batch 256) with its parser's momentum 0.9 and weight decay
5e-4; the README gives no separate class-wise command, and its parser's default rate (0.01) is
within a third of it, so both targets share these values.
"""

from __future__ import annotations

from pydantic import Field

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import register


class SalunConfig(MethodConfig):
    mask_ratio: float = Field(
        0.5, gt=0, le=1, description="fraction of weights (largest forget-gradient) updated"
    )
    epochs: int = Field(10, ge=1, le=1000, description="passes over forget + retain data")
    lr: float = Field(0.013, gt=0, le=10, description="SGD learning rate (constant)")
    momentum: float = Field(0.9, ge=0, lt=1)
    weight_decay: float = Field(5e-4, ge=0, le=1)
    batch_size: int = Field(256, ge=2, le=65536)


SPEC = register(
    MethodSpec(
        name="salun",
        summary=(
            "SalUn: a weight-saliency mask from the forget loss's gradient, then random labels "
            "on the forget data plus retained data with updates confined to the mask. Not exact."
        ),
        paper="Fan et al., SalUn: Gradient-based Weight Saliency, ICLR 2024",
        targets=frozenset({Target.CLASSES, Target.FILES}),
        runner=Runner.MODEL,
        exact=False,
        config_model=SalunConfig,
        # no retry: one run (10 passes over all the data) costs most of a retrain already, so
        # a miss goes straight to the exact retrain
        escalation=(),
        reads_forget_images=True,
    )
)
