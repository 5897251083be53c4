"""The one interface every unlearning method implements.

This module must stay importable without torch: the HTTP API imports the registry (and so this
module) to list methods and validate their configurations. Torch types appear only in type hints.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    import torch
    from torch import Tensor, nn

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


class Target(StrEnum):
    """What a deletion request names."""

    FILES = "files"
    CLASSES = "classes"


class Runner(StrEnum):
    """Who executes a method."""

    MODEL = "model"
    """Runs on one ``nn.Module`` in memory (all class-forgetting methods): ``spec.run(...)``."""
    SISA = "sisa"
    """Orchestrated by the service's SISA engine over checkpoints ("sisa", "retrain");
    ``spec.run`` is ``None``."""


ProgressFn = Callable[[float, str], None]
"""``progress(fraction in [0, 1], phase)``."""


def no_progress(fraction: float, phase: str) -> None:
    """A :data:`ProgressFn` that ignores its reports."""


class MethodConfig(BaseModel):
    """Base class for method configurations: every field has a default, unknown fields are
    refused."""

    model_config = ConfigDict(extra="forbid")


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


@dataclass
class MethodResult:
    details: dict[str, Any]
    """JSON-serialisable, method-specific (e.g. adversarial's discriminator score)."""


@dataclass(frozen=True)
class MethodSpec:
    name: str
    summary: str
    paper: str | None
    targets: frozenset[Target]
    runner: Runner
    exact: bool
    config_model: type[BaseModel]
    """Pydantic model; every field defaulted, ``extra="forbid"``."""
    run: Callable[[UnlearningInputs, Any], MethodResult] | None
    """``None`` for :attr:`Runner.SISA`."""
    reads_forget_images: bool = True
    """``False`` for zero-glance methods (``unsir``): callers may pass empty forget tensors."""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower() or " " in self.name:
            raise ValueError(f"method name must be a lower-case identifier, got {self.name!r}")
        if not self.targets:
            raise ValueError(f"method {self.name!r} has no targets")
        object.__setattr__(self, "targets", frozenset(Target(t) for t in self.targets))
        object.__setattr__(self, "runner", Runner(self.runner))
        if (self.run is None) != (self.runner is Runner.SISA):
            raise ValueError(
                f"method {self.name!r}: run must be None exactly when runner is 'sisa'"
            )
        if not (isinstance(self.config_model, type) and issubclass(self.config_model, BaseModel)):
            raise ValueError(f"method {self.name!r}: config_model must be a pydantic model")
        if self.config_model.model_config.get("extra") != "forbid":
            raise ValueError(f"method {self.name!r}: config_model must set extra='forbid'")
        required = [n for n, f in self.config_model.model_fields.items() if f.is_required()]
        if required:
            raise ValueError(f"method {self.name!r}: config fields without default: {required}")

    def default_config(self) -> BaseModel:
        return self.config_model()
