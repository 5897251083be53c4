"""The request options model: typed, bounded, finite, closed to unknown keys."""

from __future__ import annotations

import math

import pytest
from pydantic import ValidationError

from app.core.options import DEFAULT_MAX_RETAIN_DROP, RequestOptions, parse_options


def test_defaults_fill_in_for_a_request_stored_without_options() -> None:
    assert parse_options(None) == RequestOptions()
    assert parse_options({}).max_retain_drop == DEFAULT_MAX_RETAIN_DROP == 10.0
    assert parse_options({"max_retain_drop": 2.5}).max_retain_drop == 2.5


@pytest.mark.parametrize(
    "raw",
    [
        {"max_retain_drop": math.inf},
        {"max_retain_drop": math.nan},
        {"max_retain_drop": -0.1},
        {"max_retain_drop": 100.5},
        {"max_retain_drop": "ten"},
        {"escalate": True},
    ],
)
def test_bad_options_are_refused(raw: dict) -> None:
    with pytest.raises(ValidationError):
        RequestOptions.model_validate(raw)


def test_stored_form_round_trips() -> None:
    stored = RequestOptions(max_retain_drop=0).model_dump(mode="json")
    assert stored["max_retain_drop"] == 0.0
    assert parse_options(stored) == RequestOptions(max_retain_drop=0)
