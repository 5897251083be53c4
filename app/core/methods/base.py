"""What every unlearning method declares, torch-free: its name, targets, runner, exactness and
configuration model. The API validates requests against these; the worker pairs each spec with
its implementation (``worker.unlearning.registry``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["MethodConfig", "MethodSpec", "Runner", "Target"]


class Target(StrEnum):
    """What a deletion request names."""

    FILES = "files"
    CLASSES = "classes"


class Runner(StrEnum):
    """Who executes a method."""

    MODEL = "model"
    """Runs on one ``nn.Module`` in memory (all class-forgetting methods)."""
    SISA = "sisa"
    """Orchestrated by the service's SISA engine over checkpoints ("sisa", "retrain")."""


class MethodConfig(BaseModel):
    """Base class for method configurations: every field has a default, unknown fields are
    refused, and no number may be NaN or infinite (one would poison every weight it touches).
    Every numeric field also has an upper bound: a finite but absurd value (``1e308``) would
    overflow to infinity inside the method, or run for ever."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    @model_validator(mode="after")
    def _finite(self) -> MethodConfig:
        for name, value in self:
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value}")
        return self


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
    reads_forget_images: bool = True
    """``False`` for zero-glance methods (``unsir``): callers may pass empty forget tensors."""
    escalation: tuple[dict[str, Any], ...] = ()
    """Configuration overrides tried in order, each on top of the request's configuration, when
    a class request misses its targets; an exact retrain comes after the last one."""
    uses_weight_filters: bool = False
    """``True`` when the method applies the per-class weight filters trained beforehand for the
    model (``POST /v1/models/{id}/filters``): a request is refused while the model has none for
    the classes it names."""

    def __post_init__(self) -> None:
        if not self.name or self.name != self.name.strip().lower() or " " in self.name:
            raise ValueError(f"method name must be a lower-case identifier, got {self.name!r}")
        if not self.targets:
            raise ValueError(f"method {self.name!r} has no targets")
        object.__setattr__(self, "targets", frozenset(Target(t) for t in self.targets))
        object.__setattr__(self, "runner", Runner(self.runner))
        if not (isinstance(self.config_model, type) and issubclass(self.config_model, BaseModel)):
            raise ValueError(f"method {self.name!r}: config_model must be a pydantic model")
        if self.config_model.model_config.get("extra") != "forbid":
            raise ValueError(f"method {self.name!r}: config_model must set extra='forbid'")
        required = [n for n, f in self.config_model.model_fields.items() if f.is_required()]
        if required:
            raise ValueError(f"method {self.name!r}: config fields without default: {required}")
        object.__setattr__(self, "escalation", tuple(dict(step) for step in self.escalation))
        for step in self.escalation:
            self.config_model.model_validate(step)  # a bad plan fails at import, not mid-request

    def escalation_plan(self) -> list[dict[str, Any]]:
        """The attempts after a missed class request: each declared step (on top of the
        request's configuration), then the exact retrain; empty for exact methods and for
        methods without class targets (nothing to verify)."""
        if self.exact or Target.CLASSES not in self.targets:
            return []
        steps = [{"method": self.name, "config": dict(step)} for step in self.escalation]
        return [*steps, {"method": "retrain", "config": {}}]

    def default_config(self) -> BaseModel:
        return self.config_model()

    def describe(self) -> dict[str, Any]:
        """The public view served by ``GET /v1/methods``."""
        return {
            "name": self.name,
            "summary": self.summary,
            "paper": self.paper,
            "targets": sorted(t.value for t in self.targets),
            "exact": self.exact,
            "reads_forget_images": self.reads_forget_images,
            "uses_weight_filters": self.uses_weight_filters,
            "escalation": [dict(step) for step in self.escalation],
            # what a class request that misses its targets tries, in order
            "escalation_plan": self.escalation_plan(),
            "config_schema": self.config_model.model_json_schema(),
        }
