"""Every number of every registered method's configuration is finite and bounded: NaN, the
infinities and absurd magnitudes are refused with an error that names the field."""

from __future__ import annotations

import math
import types
import typing

import pytest
from pydantic import BaseModel, ValidationError

from app.core.methods import all_methods

ABSURD = (math.nan, math.inf, -math.inf, 1e308, -1e308)


def _is_numeric(annotation: object) -> bool:
    if annotation in (int, float):
        return True
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        return any(_is_numeric(arg) for arg in typing.get_args(annotation))
    return False


def _numeric_fields() -> list[tuple[str, type[BaseModel], str, str]]:
    fields = []
    for spec in all_methods():
        model = spec.config_model
        for name, info in model.model_fields.items():
            if _is_numeric(info.annotation):
                fields.append((spec.name, model, name, info.alias or name))
    return fields


NUMERIC = _numeric_fields()


def test_the_walk_finds_the_numbers() -> None:
    assert {"lr", "epochs", "batch_size", "noise_lr", "alpha"} <= {f[2] for f in NUMERIC}
    assert {f[0] for f in NUMERIC} >= {"finetune", "unsir", "ssd", "neggrad_plus"}


@pytest.mark.parametrize(
    ("method", "model", "field", "key"), NUMERIC, ids=[f"{f[0]}.{f[2]}" for f in NUMERIC]
)
def test_every_number_is_finite_and_bounded(
    method: str, model: type[BaseModel], field: str, key: str
) -> None:
    model()  # the defaults are valid
    for value in ABSURD:
        with pytest.raises(ValidationError) as caught:
            model.model_validate({key: value})
        located = {str(part) for error in caught.value.errors() for part in error["loc"]}
        assert key in located, (method, field, value, caught.value.errors())
