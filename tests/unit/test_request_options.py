"""The request options model: typed, bounded, finite, closed to unknown keys."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from app.core.options import (
    DEFAULT_CLASS_MAX_RETAIN_DROP,
    DEFAULT_MAX_FORGET_ACCURACY,
    DEFAULT_MAX_RETAIN_DROP,
    RequestOptions,
    parse_options,
)


def test_defaults_fill_in_for_a_request_stored_without_options() -> None:
    assert parse_options(None) == RequestOptions()
    defaults = parse_options({})
    assert defaults.max_retain_drop is None
    # unset: 10 points for files (the test-split guard), 2 for classes (a validation target)
    assert defaults.retain_drop_for("files") == DEFAULT_MAX_RETAIN_DROP == 10.0
    assert defaults.retain_drop_for("classes") == DEFAULT_CLASS_MAX_RETAIN_DROP == 2.0
    assert defaults.max_forget_accuracy == DEFAULT_MAX_FORGET_ACCURACY == 0.05
    assert defaults.escalate is True
    set_drop = parse_options({"max_retain_drop": 2.5})
    assert set_drop.retain_drop_for("files") == set_drop.retain_drop_for("classes") == 2.5
    # a request stored before these options existed reads back with their defaults
    assert parse_options({"max_retain_drop": 10.0}).escalate is True


@pytest.mark.parametrize(
    "raw",
    [
        {"max_retain_drop": math.inf},
        {"max_retain_drop": math.nan},
        {"max_retain_drop": -0.1},
        {"max_retain_drop": 100.5},
        {"max_retain_drop": "ten"},
        {"max_forget_accuracy": 1.5},
        {"max_forget_accuracy": -0.01},
        {"max_forget_accuracy": math.nan},
        {"escalate": "sometimes"},
        {"escalate_to": "retrain"},
    ],
)
def test_bad_options_are_refused(raw: dict) -> None:
    with pytest.raises(ValidationError):
        RequestOptions.model_validate(raw)


def test_stored_form_round_trips() -> None:
    stored = RequestOptions(max_retain_drop=0).model_dump(mode="json")
    assert stored["max_retain_drop"] == 0.0
    assert stored["max_forget_accuracy"] == 0.05 and stored["escalate"] is True
    assert parse_options(stored) == RequestOptions(max_retain_drop=0)
