"""What every unlearning method declares, torch-free: its name, targets, runner, exactness and
configuration model. The API validates requests against these; the worker pairs each spec with
its implementation (``worker.unlearning.registry``)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

__all__ = ["EscalationStep", "MethodConfig", "MethodSpec", "Miss", "Runner", "Target"]


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


class Miss(StrEnum):
    """Which of a class request's targets an attempt missed (on the validation split)."""

    FORGET = "forget"
    """The forgotten classes kept more accuracy than ``max_forget_accuracy``."""
    RETAIN = "retain"
    """The retained classes fell too far, overall or one of them (``max_retain_drop``,
    ``max_class_retain_drop``)."""


@dataclass(frozen=True)
class EscalationStep:
    """Configuration overrides for the next attempt, and the misses they are meant to fix: a
    step for a class that kept too much is skipped when only a retained class fell."""

    config: dict[str, Any]
    when: frozenset[Miss] = frozenset(Miss)

    def describe(self) -> dict[str, Any]:
        return {"config": dict(self.config), "when": sorted(m.value for m in self.when)}


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
    escalation: tuple[EscalationStep | dict[str, Any], ...] = ()
    """The steps tried in order when a class request misses its targets, each on top of the
    request's configuration; a step whose ``when`` does not include any of the misses is
    skipped. An exact retrain comes after the last one. A plain dict is a step for any miss."""
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
        steps = tuple(
            s if isinstance(s, EscalationStep) else EscalationStep(dict(s)) for s in self.escalation
        )
        object.__setattr__(self, "escalation", steps)
        for step in steps:
            if not step.when:
                raise ValueError(f"method {self.name!r}: an escalation step fixes no miss")
            self.config_model.model_validate(step.config)  # a bad plan fails at import

    @property
    def steps(self) -> tuple[EscalationStep, ...]:
        """``escalation``, every step normalised (``__post_init__`` did it)."""
        return tuple(s for s in self.escalation if isinstance(s, EscalationStep))

    def escalation_plan(self) -> list[dict[str, Any]]:
        """The attempts after a missed class request: each declared step (on top of the
        request's configuration), then the exact retrain; empty for exact methods and for
        methods without class targets (nothing to verify)."""
        if self.exact or Target.CLASSES not in self.targets:
            return []
        steps = [{"method": self.name, **step.describe()} for step in self.steps]
        return [*steps, {"method": "retrain", "config": {}, "when": sorted(m.value for m in Miss)}]

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
            "escalation": [dict(step.config) for step in self.steps],
            # what a class request that misses its targets tries, in order
            "escalation_plan": self.escalation_plan(),
            "config_schema": self.config_model.model_json_schema(),
        }
