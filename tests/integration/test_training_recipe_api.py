"""The training recipe over HTTP: bounds refused with a 422 naming the field, the recommended
recipe recorded with the model and with each version it trains."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from app.core.recipe import RECOMMENDED


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("label_smoothing", float("nan")),
        ("label_smoothing", "Infinity"),
        ("warmup", 0.75),
        ("lr", float("inf")),
        ("schedule", "exponential"),
        ("norm", "instance"),
    ],
)
def test_a_bad_recipe_field_is_a_422_naming_it(
    postgres_service, tiny_dataset: Path, field: str, value: object
) -> None:
    client = postgres_service.client
    dataset = postgres_service.register_dataset(tiny_dataset)
    body = {"name": "m", "dataset": dataset["id"], "shards": 2, "slices": 2, field: value}
    # Raw JSON: NaN and Infinity literals, as a non-strict client would send them.
    response = client.post(
        "/v1/models", content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert {e["field"] for e in response.json()["errors"]} == {f"body.{field}"}
    assert client.get("/v1/models/m").status_code == 404  # nothing was stored


def test_a_new_model_records_the_recipe_it_was_trained_with(
    postgres_service, tiny_dataset: Path
) -> None:
    dataset = postgres_service.register_dataset(tiny_dataset)
    model = postgres_service.train_model(dataset["id"], name="tuned", label_smoothing=0.1)
    stored = model["config"]["recipe"]
    # The spec's lr and batch size, the given smoothing, the recommendation for everything else.
    given = {"lr": 0.05, "batch_size": 32, "label_smoothing": 0.1}
    assert stored == {**RECOMMENDED["small_cnn"], **given}
    training = model["metrics"]["training"]
    assert training["norm"] == "batch" and training["schedule"] == "onecycle"
    assert training["schedule_restarts"] == "every slice"
    assert training["label_smoothing"] == 0.1 and training["epochs_per_slice"] == 2
