"""Unlearning methods as the API and the worker both see them: specs and configurations."""

from app.core.methods import measured
from app.core.methods.base import MethodConfig, MethodSpec, Runner, Target
from app.core.methods.registry import all_methods, get_method, register, validate_config

__all__ = [
    "MethodConfig",
    "MethodSpec",
    "Runner",
    "Target",
    "all_methods",
    "get_method",
    "measured",
    "register",
    "validate_config",
]
