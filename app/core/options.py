"""Request options: how a deletion request wants its result judged, beyond the method's own
configuration. One typed model shared by the API (validation, storage in
``deletion_requests.options``) and the worker (the guard rails read it). Torch-free."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.methods.reference import Reference

__all__ = ["DEFAULT_MAX_RETAIN_DROP", "RequestOptions", "parse_options"]

DEFAULT_MAX_RETAIN_DROP = 10.0


class RequestOptions(BaseModel):
    """Every field has a default, unknown fields are refused, numbers are finite and bounded."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    max_retain_drop: float = Field(
        DEFAULT_MAX_RETAIN_DROP,
        ge=0,
        le=100,
        description="the most the new version's test accuracy on the retained classes may fall "
        "below its parent's, in percentage points, for an approximate method; a larger drop "
        "fails the request and the parent stays current (exact methods are proven by lineage "
        "instead)",
    )
    reference: Reference = Field(
        Reference.NONE,
        description="'retrain' also trains the exact retrain in the same job and reports the gap "
        "to it per metric (approximate methods on monolithic models); 'none' runs no reference",
    )


def parse_options(stored: dict[str, Any] | None) -> RequestOptions:
    """The options of a stored request, defaults filled in for any added since it was stored."""
    return RequestOptions.model_validate(stored or {})
