"""The request option ``reference``: typed in the request options, checked against the method
and model at request time, read back by the worker."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from app.core.methods.reference import Reference, check_reference, requested_reference
from app.core.options import RequestOptions

MONO = {"exact": False, "shards": 1, "slices": 1}


def test_defaults_and_valid_values() -> None:
    assert RequestOptions().reference is Reference.NONE
    assert RequestOptions.model_validate({"reference": "retrain"}).reference is Reference.RETRAIN
    assert check_reference("retrain", **MONO) is Reference.RETRAIN
    assert check_reference("none", exact=True, shards=5, slices=4) is Reference.NONE


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"exact": True, "shards": 1, "slices": 1}, "exact already"),
        ({"exact": False, "shards": 3, "slices": 1}, "monolithic"),
        ({"exact": False, "shards": 1, "slices": 2}, "monolithic"),
    ],
)
def test_a_retrain_reference_needs_an_approximate_method_on_a_monolithic_model(
    kwargs, needle
) -> None:
    with pytest.raises(ValueError, match=needle):
        check_reference("retrain", **kwargs)


@pytest.mark.parametrize("raw", [{"reference": 3}, {"reference": "x" * 500}, {"colour": "blue"}])
def test_bad_options_are_refused_by_field(raw) -> None:
    with pytest.raises(ValidationError) as err:
        RequestOptions.model_validate(raw)
    assert err.value.errors()[0]["loc"][0] in {"reference", "colour"}


def test_the_worker_reads_what_was_stored() -> None:
    stored = RequestOptions(reference=Reference.RETRAIN).model_dump(mode="json")
    assert requested_reference(stored) is Reference.RETRAIN
    assert requested_reference({"reference": "none"}) is Reference.NONE
    assert requested_reference(None) is Reference.NONE
    assert requested_reference({"reference": "bogus"}) is Reference.NONE
