"""What a method's implementation receives and returns. The specs (names, targets, configs)
live in the kernel, :mod:`app.core.methods`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

    from worker.unlearning.filtering import FilterSet

__all__ = [
    "MethodConfig",
    "MethodResult",
    "MethodSpec",
    "ProgressFn",
    "Runner",
    "Target",
    "UnlearningInputs",
    "no_progress",
]


ProgressFn = Callable[[float, str], None]
"""``progress(fraction in [0, 1], phase)``."""


def no_progress(fraction: float, phase: str) -> None:
    """A :data:`ProgressFn` that ignores its reports."""


@dataclass
class UnlearningInputs:
    """Everything a :attr:`Runner.MODEL` method gets.

    Images are uint8 ``[N, C, H, W]`` tensors on the CPU; methods move batches to ``device``.
    Callers give methods whose spec has ``reads_forget_images=False`` (zero-glance methods such as
    ``unsir``) an *empty* ``forget_images`` / ``forget_labels``; those methods never read them.
    """

    model: nn.Module
    """Modified in place; already on ``device``."""
    forget_images: Tensor
    forget_labels: Tensor
    retain_images: Tensor
    retain_labels: Tensor
    num_classes: int
    forget_classes: list[int]
    """Class indices to forget (may be empty for a files target)."""
    device: torch.device
    seed: int
    progress: ProgressFn = no_progress
    filters: FilterSet | None = None
    """The constituent's trained per-class weight filters, for methods whose spec sets
    ``uses_weight_filters`` (``None`` for every other method)."""


@dataclass
class MethodResult:
    details: dict[str, Any]
    """JSON-serialisable, method-specific (e.g. adversarial's discriminator score)."""


RunFn = Callable[[UnlearningInputs, Any], MethodResult]
