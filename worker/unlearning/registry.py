"""Method implementations, paired with the kernel's specs.

Implementation modules under :mod:`worker.unlearning.methods` call :func:`register_runner` at
import time. :func:`get_method` returns the spec with its ``run`` function; every
:attr:`Runner.MODEL` spec must have exactly one implementation and a :attr:`Runner.SISA` spec
none (the SISA engine runs those).
"""

from __future__ import annotations

import importlib
import threading
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from app.core.methods import registry as specs
from app.core.methods.base import EscalationStep, MethodSpec, Runner, Target
from worker.unlearning.base import RunFn

__all__ = ["Method", "all_methods", "get_method", "register_runner", "validate_config"]

_RUNNERS: dict[str, RunFn] = {}
_LOCK = threading.RLock()
_loaded = False


@dataclass(frozen=True)
class Method:
    """A spec and its implementation (``run`` is ``None`` for SISA-engine methods)."""

    spec: MethodSpec
    run: RunFn | None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def summary(self) -> str:
        return self.spec.summary

    @property
    def paper(self) -> str | None:
        return self.spec.paper

    @property
    def runner(self) -> Runner:
        return self.spec.runner

    @property
    def targets(self) -> frozenset[Target]:
        return self.spec.targets

    @property
    def exact(self) -> bool:
        return self.spec.exact

    @property
    def escalation(self) -> tuple[EscalationStep, ...]:
        return self.spec.steps

    @property
    def config_model(self) -> type[BaseModel]:
        return self.spec.config_model

    @property
    def reads_forget_images(self) -> bool:
        return self.spec.reads_forget_images

    @property
    def uses_weight_filters(self) -> bool:
        return self.spec.uses_weight_filters


def register_runner(name: str, run: RunFn) -> RunFn:
    """Attach ``run`` to the spec called ``name``; refused for an unknown name, a SISA-engine
    method, or a second implementation."""
    spec = specs.get_method(name)
    if spec.runner is not Runner.MODEL:
        raise ValueError(f"method {name!r} is run by the SISA engine; it takes no runner")
    with _LOCK:
        if name in _RUNNERS:
            raise ValueError(f"method {name!r} already has an implementation")
        _RUNNERS[name] = run
    return run


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _LOCK:
        if not _loaded:
            importlib.import_module("worker.unlearning.methods")
            _loaded = True


def get_method(name: str) -> Method:
    """The method called ``name`` with its implementation; ``ValueError`` if unknown, or if a
    model-runner method has no implementation."""
    spec = specs.get_method(name)
    _ensure_loaded()
    with _LOCK:
        run = _RUNNERS.get(name)
    if spec.runner is Runner.MODEL and run is None:
        raise ValueError(f"method {name!r} has no implementation in worker.unlearning.methods")
    return Method(spec=spec, run=run)


def all_methods() -> list[Method]:
    """Every registered method with its implementation, sorted by name."""
    return [get_method(spec.name) for spec in specs.all_methods()]


def validate_config(name: str, raw: dict[str, Any] | None) -> BaseModel:
    return specs.validate_config(name, raw)
