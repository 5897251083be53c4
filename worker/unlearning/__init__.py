"""Unlearning method implementations behind one interface (:mod:`.base`) and one registry
(:mod:`.registry`); their specs live in :mod:`app.core.methods`.

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
from worker.unlearning.registry import Method, all_methods, get_method, register_runner

__all__ = [
    "Method",
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
    "register_runner",
]
