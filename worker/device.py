"""Pick the torch device a job runs on.

torch is imported lazily so that importing this module stays cheap and never touches CUDA.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch


def resolve_device(preference: str = "auto") -> torch.device:
    """Map a user preference ("auto", "cpu", "cuda", "cuda:N") to a concrete device.

    "auto" prefers CUDA when available. Asking for CUDA explicitly on a machine without it is an
    error rather than a silent CPU fallback, so misconfigured GPU workers fail loudly.
    """
    import torch

    pref = preference.strip().lower()
    if pref == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if pref == "cpu":
        return torch.device("cpu")
    if pref == "cuda" or pref.startswith("cuda:"):
        return _cuda_device(pref)
    raise ValueError(
        f"unknown device preference {preference!r}; use 'auto', 'cpu', 'cuda' or 'cuda:N'"
    )


def _cuda_device(pref: str) -> torch.device:
    import torch

    if not torch.cuda.is_available():
        raise ValueError(f"device {pref!r} requested but CUDA is not available on this machine")
    try:
        device = torch.device(pref)
    except RuntimeError as exc:
        raise ValueError(f"invalid CUDA device {pref!r}: {exc}") from exc
    count = torch.cuda.device_count()
    if device.index is not None and device.index >= count:
        raise ValueError(f"device {pref!r} requested but only {count} CUDA device(s) present")
    return device
