"""The HTTP contract against real PostgreSQL (and Redis as the broker): every bad input gets a
problem+json 4xx that names what is wrong, and nothing stored is lost."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

PROBLEM = "application/problem+json"


def _write_images(root: Path, layout: dict[str, dict[str, list[str]]], seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    for split, classes in layout.items():
        for class_name, names in classes.items():
            folder = root / split / class_name
            folder.mkdir(parents=True, exist_ok=True)
            for name in names:
                pixels = rng.integers(0, 255, size=(12, 12, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / name)
    return root


@pytest.fixture
def ambiguous_dataset(tmp_path: Path) -> Path:
    """Bare names repeat across classes, as in CIFAR-10's JPEG export."""
    names = [f"{i:04d}.png" for i in range(8)]
    return _write_images(
        tmp_path / "cifar-like",
        {"train": {"cat": names, "dog": names}, "test": {"cat": names[:2], "dog": names[:2]}},
    )


def _problem(response, status: int) -> dict:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body = response.json()
    assert body["status"] == status and body["detail"]
    return body


def test_dataset_registration_and_its_refusals(
    postgres_service, tmp_path: Path, tiny_dataset: Path
) -> None:
    client = postgres_service.client
    created = client.post("/v1/datasets", json={"name": "animals", "root": str(tiny_dataset)})
    assert created.status_code == 201
    body = created.json()
    assert body["classes"] == ["bear", "elephant", "zebra"]
    assert body["counts"]["train"]["total"] == 3 * 48
    assert body["counts"]["test"]["per_class"]["zebra"] == 16
    assert client.get(f"/v1/datasets/{body['id']}").json()["name"] == "animals"
    assert client.get("/v1/datasets/animals").json()["id"] == body["id"]

    detail = _problem(
        client.post("/v1/datasets", json={"name": "animals", "root": str(tiny_dataset)}), 409
    )
    assert "already exists" in detail["detail"]
    missing = _problem(
        client.post("/v1/datasets", json={"name": "x", "root": str(tmp_path / "nope")}), 422
    )
    assert "does not exist" in missing["detail"]
    (tmp_path / "flat").mkdir()
    assert (
        "train/"
        in _problem(
            client.post("/v1/datasets", json={"name": "x", "root": str(tmp_path / "flat")}), 422
        )["detail"]
    )
    assert (
        "absolute"
        in _problem(client.post("/v1/datasets", json={"name": "x", "root": "rel/path"}), 422)[
            "detail"
        ]
    )

    broken = _write_images(tmp_path / "broken", {"train": {"a": ["1.png"], "b": []}})
    (broken / "train" / "a" / "2.png").write_bytes(b"not an image")
    problem = _problem(
        client.post("/v1/datasets", json={"name": "broken", "root": str(broken)}), 422
    )
    assert any("empty class" in p for p in problem["problems"])
    assert any("train/a/2.png" in p for p in problem["problems"])

    assert _problem(
        client.post("/v1/datasets", json={"name": "bad name!", "root": str(broken)}), 422
    )
    assert _problem(client.get("/v1/datasets/999999"), 404)


def test_model_registration_refusals(postgres_service, tiny_dataset: Path) -> None:
    client = postgres_service.client
    dataset = postgres_service.register_dataset(tiny_dataset)
    base = {"name": "m", "dataset": dataset["id"], "shards": 2, "slices": 2, "image_size": 16}
    assert (
        "unknown architecture"
        in _problem(client.post("/v1/models", json={**base, "architecture": "vgg99"}), 422)[
            "detail"
        ]
    )
    assert _problem(client.post("/v1/models", json={**base, "dataset": "nope"}), 404)
    assert (
        "too few"
        in _problem(client.post("/v1/models", json={**base, "shards": 40, "slices": 30}), 422)[
            "detail"
        ]
    )
    errors = _problem(
        client.post("/v1/models", json={**base, "shards": 0, "aggregation": "median"}), 422
    )["errors"]
    assert {e["field"] for e in errors} == {"body.shards", "body.aggregation"}
    accepted = client.post("/v1/models", json=base)
    assert accepted.status_code == 202
    assert accepted.headers["location"] == f"/v1/models/{accepted.json()['id']}"
    assert accepted.json()["status"] == "training"
    assert _problem(client.post("/v1/models", json=base), 409)
    # A model still training refuses deletions.
    refused = client.post("/v1/deletion-requests", json={"model": "m", "filenames": ["bear/x.png"]})
    assert "training" in _problem(refused, 409)["detail"]
    assert _problem(client.get("/v1/models/424242"), 404)


@pytest.fixture
def ready_model(postgres_service, ambiguous_dataset: Path) -> dict:
    dataset = postgres_service.register_dataset(ambiguous_dataset, name="cifar-like")
    return postgres_service.train_model(
        dataset["id"], name="small", shards=2, slices=2, epochs_per_slice=1, image_size=12
    )


def test_filename_resolution_lists_every_offending_name(
    postgres_service, ready_model: dict
) -> None:
    client = postgres_service.client
    response = client.post(
        "/v1/deletion-requests",
        json={
            "model": ready_model["id"],
            "filenames": [
                "0001.png",
                "cat/0002.png",
                "cat/0002.png",
                "../etc/passwd",
                "/abs.png",
                "cat/9999.png",
                "",
            ],
        },
    )
    invalid = _problem(response, 422)["invalid_filenames"]
    assert invalid["ambiguous"] == {
        "0001.png": [
            "test/cat/0001.png",
            "test/dog/0001.png",
            "train/cat/0001.png",
            "train/dog/0001.png",
        ]
    }
    assert invalid["duplicated"] == ["cat/0002.png"]
    assert invalid["unknown"] == ["cat/9999.png"]
    assert set(invalid["malformed"]) == {"../etc/passwd", "/abs.png", ""}
    # A name in both train/ and test/ is ambiguous too; the full relative path resolves it.
    assert (
        "cat/0000.png"
        in _problem(
            client.post(
                "/v1/deletion-requests", json={"model": "small", "filenames": ["cat/0000.png"]}
            ),
            422,
        )["invalid_filenames"]["ambiguous"]
    )
    assert _problem(
        client.post("/v1/deletion-requests", json={"model": "small", "filenames": []}), 422
    )
    # Nothing was stored by the refused requests.
    assert client.get("/v1/deletion-requests").json()["total"] == 0


def test_target_and_method_refusals(postgres_service, ready_model: dict) -> None:
    client = postgres_service.client
    model = ready_model["id"]
    both = {"model": model, "filenames": ["cat/0003.png"], "class_name": "cat"}
    assert "not both" in _problem(client.post("/v1/deletion-requests", json=both), 422)["detail"]
    assert _problem(client.post("/v1/deletion-requests", json={"model": model}), 422)
    unknown_method = {"model": model, "filenames": ["cat/0003.png"], "method": "magic"}
    assert (
        "magic"
        in _problem(client.post("/v1/deletion-requests", json=unknown_method), 422)["detail"]
    )
    unknown_class = {"model": model, "class_name": "unicorn"}
    assert (
        "unicorn"
        in _problem(client.post("/v1/deletion-requests", json=unknown_class), 422)["detail"]
    )
    extra_field = {"model": model, "filenames": ["cat/0003.png"], "surprise": 1}
    assert _problem(client.post("/v1/deletion-requests", json=extra_field), 422)
    assert _problem(
        client.post("/v1/deletion-requests", json={"model": "ghost", "filenames": ["a.png"]}), 404
    )


def test_idempotency_listing_and_cancellation(postgres_service, ready_model: dict) -> None:
    client = postgres_service.client
    body = {"model": ready_model["id"], "filenames": ["cat/0003.png"], "external_id": "ticket-1"}
    first = client.post("/v1/deletion-requests", json=body, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == 202
    request = first.json()
    assert first.headers["location"] == f"/v1/deletion-requests/{request['id']}"
    # Stored, planned and handed to the broker (real Redis) after the commit.
    assert request["status"] == "queued"
    assert request["plan"]["samples"] == 1 and len(request["plan"]["affected_shards"]) == 1
    again = client.post("/v1/deletion-requests", json=body, headers={"Idempotency-Key": "k-1"})
    assert again.status_code == 200 and again.json()["id"] == request["id"]
    changed = {**body, "filenames": ["dog/0003.png"]}
    assert (
        "Idempotency-Key"
        in _problem(
            client.post("/v1/deletion-requests", json=changed, headers={"Idempotency-Key": "k-1"}),
            422,
        )["detail"]
    )

    other = client.post(
        "/v1/deletion-requests", json={"model": "small", "filenames": ["dog/0004.png"]}
    ).json()
    page = client.get("/v1/deletion-requests", params={"status": "queued", "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1
    assert client.get("/v1/deletion-requests", params={"model": "small", "offset": 1}).json()[
        "items"
    ]
    assert _problem(client.get("/v1/deletion-requests", params={"status": "bogus"}), 422)

    cancelled = client.post(f"/v1/deletion-requests/{other['id']}/cancel").json()
    assert cancelled["status"] == "cancelled"
    assert _problem(client.post(f"/v1/deletion-requests/{other['id']}/cancel"), 409)
    assert _problem(client.get(f"/v1/deletion-requests/{other['id']}/report"), 404)
    assert _problem(client.get("/v1/deletion-requests/no-such-id"), 404)

    # The worker picks the queued request up; the cancelled one is never run.
    postgres_service.run_worker(ready_model["id"])
    done = client.get(f"/v1/deletion-requests/{request['id']}").json()
    assert done["status"] == "completed" and done["progress"]["percent"] == 100.0
    assert client.get(f"/v1/deletion-requests/{other['id']}").json()["status"] == "cancelled"


def test_methods_keys_and_docs(postgres_service) -> None:
    client = postgres_service.client
    methods = {m["name"]: m for m in client.get("/v1/methods").json()["methods"]}
    assert {"sisa", "retrain", "unsir", "adversarial"} <= set(methods)
    assert methods["sisa"]["exact"] and methods["sisa"]["targets"] == ["classes", "files"]
    assert (
        methods["unsir"]["targets"] == ["classes"]
        and "properties" in methods["unsir"]["config_schema"]
    )
    # one salun module serves both targets; a class request's plan is listed to its retrain
    assert methods["salun"]["targets"] == ["classes", "files"]
    assert [s["method"] for s in methods["salun"]["escalation_plan"]] == ["retrain"]
    assert [s["method"] for s in methods["kodge"]["escalation_plan"]] == ["kodge", "retrain"]
    assert methods["retrain"]["escalation_plan"] == []
    key = client.get("/v1/keys").json()["keys"][0]
    assert key["algorithm"] == "Ed25519" and "BEGIN PUBLIC KEY" in key["public_key_pem"]
    assert client.get("/docs").status_code == 200
    assert "/v1/deletion-requests" in client.get("/openapi.json").json()["paths"]
