"""The registry of unlearning method specs (torch-free).

Spec modules in this package call :func:`register` at import time; the readers import the
catalogue first, so the registry is complete whenever it is read.
"""

from __future__ import annotations

import importlib
import threading
from typing import Any

from pydantic import BaseModel

from app.core.methods.base import MethodSpec

__all__ = ["all_methods", "get_method", "register", "validate_config"]

_REGISTRY: dict[str, MethodSpec] = {}
_LOCK = threading.RLock()
_loaded = False


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec``; a second method with the same name is refused (``ValueError``)."""
    if not isinstance(spec, MethodSpec):
        raise TypeError(f"expected a MethodSpec, got {type(spec).__name__}")
    with _LOCK:
        if spec.name in _REGISTRY:
            raise ValueError(f"an unlearning method named {spec.name!r} is already registered")
        _REGISTRY[spec.name] = spec
    return spec


def _ensure_loaded() -> None:
    global _loaded
    if _loaded:
        return
    with _LOCK:
        if not _loaded:
            importlib.import_module("app.core.methods.catalog")
            _loaded = True


def all_methods() -> list[MethodSpec]:
    """Every registered method, sorted by name."""
    _ensure_loaded()
    with _LOCK:
        return [_REGISTRY[name] for name in sorted(_REGISTRY)]


def get_method(name: str) -> MethodSpec:
    """The method called ``name``; ``ValueError`` (listing the known names) if there is none."""
    _ensure_loaded()
    with _LOCK:
        spec = _REGISTRY.get(name)
        if spec is None:
            known = ", ".join(sorted(_REGISTRY))
            raise ValueError(f"unknown unlearning method {name!r}; known methods: {known}")
        return spec


def validate_config(name: str, raw: dict[str, Any] | None) -> BaseModel:
    """Validate ``raw`` (``None`` means defaults) against the method's config model.

    ``ValueError`` for an unknown method; pydantic's ``ValidationError`` propagates.
    """
    spec = get_method(name)
    return spec.config_model.model_validate({} if raw is None else raw)
