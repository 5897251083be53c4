"""Request options: how a deletion request wants its result judged, beyond the method's own
configuration. One typed model shared by the API (validation, storage in
``deletion_requests.options``) and the worker (the guard rails and the verification read it).
Torch-free."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from app.core.methods.reference import Reference

__all__ = [
    "DEFAULT_CLASS_MAX_RETAIN_DROP",
    "DEFAULT_MAX_CLASS_RETAIN_DROP",
    "DEFAULT_MAX_FORGET_ACCURACY",
    "DEFAULT_MAX_RETAIN_DROP",
    "RequestOptions",
    "parse_options",
]

DEFAULT_MAX_RETAIN_DROP = 10.0
"""Files: the guard on the test split (a few files barely move accuracy; this catches a
method that broke the model)."""
DEFAULT_CLASS_MAX_RETAIN_DROP = 2.0
"""Classes: a target checked on the validation split, where a miss escalates."""
DEFAULT_MAX_FORGET_ACCURACY = 0.05
DEFAULT_MAX_CLASS_RETAIN_DROP = 5.0
"""Classes: the most any one retained class may lose. An overall drop within 2 points can hide
one class losing 6-11 (``bench.unsir_robustness``), which is what a user of that class sees."""


class RequestOptions(BaseModel):
    """Every field has a default, unknown fields are refused, numbers are finite and bounded."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, frozen=True)

    max_retain_drop: float | None = Field(
        None,
        ge=0,
        le=100,
        description="the most the new version's accuracy on the retained classes may fall "
        "below its parent's, in percentage points, for an approximate method. Unset: 2 for a "
        "class request (a target checked on the validation split; a miss escalates), 10 for a "
        "file request (a guard on the test split; a miss fails the request and the parent "
        "stays current). Exact methods are proven by lineage instead",
    )
    reference: Reference = Field(
        Reference.NONE,
        description="'retrain' also trains the exact retrain in the same job and reports the gap "
        "to it per metric (approximate methods on monolithic models); 'none' runs no reference",
    )
    max_forget_accuracy: float = Field(
        DEFAULT_MAX_FORGET_ACCURACY,
        ge=0,
        le=1,
        description="class requests, approximate methods: the most the new version may still "
        "classify the forgotten classes' images correctly (a fraction), on the validation split "
        "and on the classes' own training images",
    )
    max_class_retain_drop: float = Field(
        DEFAULT_MAX_CLASS_RETAIN_DROP,
        ge=0,
        le=100,
        description="class requests, approximate methods: the most any one retained class's "
        "validation accuracy may fall below the parent's, in percentage points. Checked for "
        "every class whose validation images can resolve it (at least 100 / this many images, "
        "so one image moves the class by no more than the target); the others are listed as "
        "unchecked",
    )
    escalate: bool = Field(
        True,
        description="class requests: when an approximate method misses its targets, try the "
        "method's escalation plan, then an exact retrain; false ends the request failed with "
        "the figures",
    )

    def retain_drop_for(self, target_kind: str) -> float:
        """``max_retain_drop``, or the default for a request naming ``target_kind``."""
        if self.max_retain_drop is not None:
            return self.max_retain_drop
        return (
            DEFAULT_CLASS_MAX_RETAIN_DROP if target_kind == "classes" else DEFAULT_MAX_RETAIN_DROP
        )


def parse_options(stored: dict[str, Any] | None) -> RequestOptions:
    """The options of a stored request, defaults filled in for any added since it was stored."""
    return RequestOptions.model_validate(stored or {})
