"""Unlearning methods behind one interface (:mod:`.base`) and one registry (:mod:`.registry`).

Importing this package, the base module or the registry never imports torch; the methods import
it inside their run functions.
"""

from worker.unlearning.base import (
    MethodConfig,
    MethodResult,
    MethodSpec,
    ProgressFn,
    Runner,
    Target,
    UnlearningInputs,
    no_progress,
)
from worker.unlearning.registry import all_methods, get_method, register, validate_config

__all__ = [
    "MethodConfig",
    "MethodResult",
    "MethodSpec",
    "ProgressFn",
    "Runner",
    "Target",
    "UnlearningInputs",
    "all_methods",
    "get_method",
    "no_progress",
    "register",
    "validate_config",
]
