"""The request option ``reference``: what an approximate deletion is compared with.

``"retrain"`` also trains, in the same job, the exact retrain (the model rebuilt from scratch
without the forgotten data, with the model's recipe and seed) and reports the gap to it per
metric; ``"none"`` (the default) runs no reference, and the report says so. Stored in the
request's ``options`` JSON as ``{"reference": "retrain"}`` (typed by
``app.core.options.RequestOptions``; the checks that depend on the model and method are here).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["Reference", "check_reference", "requested_reference"]


class Reference(StrEnum):
    NONE = "none"
    RETRAIN = "retrain"


def requested_reference(options: Mapping[str, Any] | None) -> Reference:
    """The reference a stored request asked for (``none`` when absent or unreadable)."""
    value = (options or {}).get("reference")
    try:
        return Reference(value) if value is not None else Reference.NONE
    except ValueError:
        return Reference.NONE


def check_reference(value: object, *, exact: bool, shards: int, slices: int) -> Reference:
    """Validate a request's ``reference``; ``ValueError`` naming the field otherwise."""
    if value is None:
        return Reference.NONE
    if not isinstance(value, str) or value not in {r.value for r in Reference}:
        raise ValueError(
            f"options.reference must be one of {[r.value for r in Reference]}, "
            f"got {str(value)[:40]!r}"
        )
    reference = Reference(value)
    if reference is Reference.RETRAIN:
        if exact:
            raise ValueError(
                "options.reference 'retrain' compares an approximate method with the exact "
                "retrain; this method is exact already"
            )
        if shards != 1 or slices != 1:
            raise ValueError(
                "options.reference 'retrain' needs a monolithic model (shards=1, slices=1)"
            )
    return reference
