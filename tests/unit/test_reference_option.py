"""The request option ``reference``: validated at request time, read back by the worker."""

from __future__ import annotations

import pytest

from app.core.methods.reference import Reference, request_options, requested_reference

MONO = {"exact": False, "shards": 1, "slices": 1}


def test_defaults_and_valid_values() -> None:
    assert request_options(None, **MONO) == {"reference": "none"}
    assert request_options({"reference": "retrain"}, **MONO) == {"reference": "retrain"}
    assert request_options({"reference": "none"}, exact=True, shards=5, slices=4) == {
        "reference": "none"
    }


@pytest.mark.parametrize(
    ("raw", "kwargs", "needle"),
    [
        ({"reference": "retrain"}, {"exact": True, "shards": 1, "slices": 1}, "exact already"),
        ({"reference": "retrain"}, {"exact": False, "shards": 3, "slices": 1}, "monolithic"),
        ({"reference": "retrain"}, {"exact": False, "shards": 1, "slices": 2}, "monolithic"),
        ({"reference": 3}, MONO, "options.reference"),
        ({"reference": "x" * 500}, MONO, "options.reference"),
        ({"colour": "blue"}, MONO, "unknown request options"),
    ],
)
def test_refusals_name_the_field(raw, kwargs, needle) -> None:
    with pytest.raises(ValueError, match=needle) as err:
        request_options(raw, **kwargs)
    assert len(str(err.value)) < 300  # a long input is never echoed whole


def test_the_worker_reads_what_was_stored() -> None:
    assert requested_reference({"reference": "retrain"}) is Reference.RETRAIN
    assert requested_reference({"reference": "none"}) is Reference.NONE
    assert requested_reference(None) is Reference.NONE
    assert requested_reference({"reference": "bogus"}) is Reference.NONE
