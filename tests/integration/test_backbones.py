"""Backbones and per-shard heads over HTTP, on the embedded default (SQLite) and on
PostgreSQL + Redis: registration and its refusals, heads trained from the embedding cache,
exact SISA deletion for heads, erased features, class forgetting on heads, and a torchvision
weights spec resolved offline from TORCH_HOME."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
import torch
import torchvision
from sqlalchemy import select

from app.core.recipe import parse_recipe
from app.core.store_namespaces import BACKBONES, CHECKPOINTS, EMBEDDINGS
from app.db.models import Checkpoint, ManifestEntry, Model, ModelVersion, Sample
from app.db.session import session_scope
from worker.backbones.embeddings import embedding_key, preprocessing_id
from worker.flows.common import store

TRAINED_ON = "CIFAR-10 airplane/automobile images (public; no one in them may ask to be forgotten)"
HEADS_MODEL = {"shards": 3, "slices": 2, "epochs_per_slice": 2, "seed": 3, "batch_size": 32}


def small_resnet18() -> torch.nn.Module:
    """torchvision resnet18 with the small-image stem (3x3 first conv, no max-pool)."""
    torch.manual_seed(0)
    net = torchvision.models.resnet18(num_classes=10)
    net.conv1 = torch.nn.Conv2d(3, 64, 3, 1, 1, bias=False)
    net.maxpool = torch.nn.Identity()  # type: ignore[assignment]
    return net


def _saved(state: dict) -> bytes:
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def backbone_bytes() -> bytes:
    return _saved(small_resnet18().state_dict())


@pytest.fixture(params=["sqlite", "postgres"])
def service(request: pytest.FixtureRequest):  # type: ignore[no-untyped-def]
    return request.getfixturevalue(f"{request.param}_service")


def register(client, data: bytes, **fields: str):  # type: ignore[no-untyped-def]
    form = {"name": "public-r18", "architecture": "resnet18", "trained_on": TRAINED_ON, **fields}
    return client.post("/v1/backbones", data=form, files={"file": ("w.pt", data)})


def _problem(response, status: int = 422) -> str:  # type: ignore[no-untyped-def]
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return json.dumps(response.json())


def test_register_list_show_and_every_refusal(service, backbone_bytes: bytes) -> None:
    client = service.client
    created = register(client, backbone_bytes, mean="0.5,0.5,0.5", std="[0.25, 0.25, 0.25]")
    assert created.status_code == 201, created.text
    body = created.json()
    assert body["name"] == "public-r18" and body["architecture"] == "resnet18"
    assert body["feature_dim"] == 512 and body["trained_on"] == TRAINED_ON
    assert body["stem"] == "small" and body["image_size"] == 32
    assert body["mean"] == [0.5] * 3 and body["std"] == [0.25] * 3
    import hashlib

    assert body["sha256"] == hashlib.sha256(backbone_bytes).hexdigest()
    assert store().get(BACKBONES, body["sha256"]) == backbone_bytes
    assert [b["id"] for b in client.get("/v1/backbones").json()] == [body["id"]]
    assert client.get(f"/v1/backbones/{body['id']}").json() == body
    assert client.get("/v1/backbones/public-r18").json() == body
    assert client.get("/v1/backbones/999").status_code == 404

    assert "already exists" in _problem(register(client, backbone_bytes))
    unknown = register(client, backbone_bytes, name="b2", architecture="resnet_nonesuch")
    assert "unknown architecture" in _problem(unknown)
    not_torch = register(client, b"these are not weights", name="b3")
    assert "not a torch state_dict" in _problem(not_torch)
    other = register(client, _saved({"weight": torch.zeros(3, 3)}), name="b4")
    assert "does not fit architecture 'resnet18'" in _problem(other)
    wrong_arch = register(client, backbone_bytes, name="b5", architecture="resnet34")
    assert "does not fit architecture 'resnet34'" in _problem(wrong_arch)
    missing = client.post(
        "/v1/backbones",
        data={"name": "b6", "architecture": "resnet18"},
        files={"file": ("w.pt", backbone_bytes)},
    )
    assert "trained_on" in _problem(missing)
    assert "three numbers" in _problem(register(client, backbone_bytes, name="b7", mean="1,2"))
    assert _problem(client.post("/v1/backbones", data={"name": "b8"}))
    # Refused weights leave no copy behind; only the registered backbone is stored.
    assert [b["name"] for b in client.get("/v1/backbones").json()] == ["public-r18"]
    stored = [p for p in (store().root / BACKBONES).rglob("*") if p.is_file()]
    assert [p.name for p in stored] == [body["sha256"]]


def test_bad_heads_model_inputs(service, tiny_dataset: Path, backbone_bytes: bytes) -> None:
    client = service.client
    assert register(client, backbone_bytes).status_code == 201
    dataset = service.register_dataset(tiny_dataset)
    base = {"name": "heads", "dataset": dataset["id"], **HEADS_MODEL}
    cases = [
        ({"backbone": "nonesuch"}, "not registered"),
        ({"head": "mlp"}, "need a backbone"),
        ({"backbone": "public-r18", "architecture": "small_cnn"}, "either architecture"),
        ({"backbone": "public-r18", "augment": "flip"}, "augment must be 'none'"),
        ({"backbone": "public-r18", "head": "transformer"}, "head"),
        ({"backbone": "public-r18", "tune": "everything"}, "tune"),
        ({"backbone": "torchvision:resnet18:NO_SUCH_WEIGHTS"}, "no weights"),
        ({"backbone": "torchvision:resnet18"}, "not a torchvision spec"),
    ]
    for extra, expected in cases:
        response = client.post("/v1/models", json={**base, **extra})
        assert expected in _problem(response), (extra, response.text)
    assert client.get("/v1/models/heads").status_code == 404


def _train_heads(service, dataset_id: int, **extra: object) -> dict:  # type: ignore[no-untyped-def]
    from worker import tasks

    spec = {"name": "heads", "dataset": dataset_id, **HEADS_MODEL, **extra}
    response = service.client.post("/v1/models", json=spec)
    assert response.status_code == 202, response.text
    model = response.json()
    with session_scope() as session:
        version = session.scalars(
            select(ModelVersion).where(ModelVersion.model_id == model["id"])
        ).one()
        version_id = version.id
    tasks.start_version(version_id)
    model = service.client.get(f"/v1/models/{model['id']}").json()
    assert model["status"] == "ready", model
    return model


def _final_state(model_id: int, number: int, shard: int) -> dict[str, torch.Tensor]:
    with session_scope() as session:
        version = session.scalar(
            select(ModelVersion).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        assert version is not None
        key = session.scalar(
            select(Checkpoint.key).where(
                Checkpoint.version_id == version.id,
                Checkpoint.shard == shard,
                Checkpoint.slice == HEADS_MODEL["slices"] - 1,
            )
        )
    assert key is not None
    blob = store().get(CHECKPOINTS, key)
    return torch.load(io.BytesIO(blob), weights_only=True)["model"]


def _train_rows(dataset_id: int, model_id: int) -> list[tuple[int, str, str, int, int]]:
    with session_scope() as session:
        version_id = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.model_id == model_id, ModelVersion.number == 1
            )
        )
        rows = session.execute(
            select(
                Sample.id, Sample.rel_path, Sample.sha256, ManifestEntry.shard, ManifestEntry.slice
            )
            .join(ManifestEntry, ManifestEntry.sample_id == Sample.id)
            .where(ManifestEntry.version_id == version_id)
            .order_by(Sample.id)
        ).all()
    return [tuple(r) for r in rows]  # type: ignore[misc]


def _prep(model_id: int) -> str:
    with session_scope() as session:
        model = session.get(Model, model_id)
        assert model is not None
        return preprocessing_id(parse_recipe(model.config), model.dataset.channels)


def test_heads_train_from_the_cache_forget_exactly_and_erase_their_features(
    service, tiny_dataset: Path, backbone_bytes: bytes
) -> None:
    client = service.client
    backbone = register(client, backbone_bytes).json()
    dataset = service.register_dataset(tiny_dataset)
    model = _train_heads(service, dataset["id"], backbone="public-r18")
    recipe = model["config"]
    assert recipe["backbone"]["sha256"] == backbone["sha256"]
    assert recipe["backbone"]["trained_on"] == TRAINED_ON
    assert recipe["head"] == "linear" and recipe["tune"] == "head"
    assert model["architecture"] == "resnet18+linear"
    assert model["metrics"]["test"]["count"] > 30  # evaluated on the test features
    prep = _prep(model["id"])
    rows = _train_rows(dataset["id"], model["id"])
    # Every training image's features are in the cache, computed once.
    assert all(store().exists(EMBEDDINGS, embedding_key(prep, sha)) for _, _, sha, _, _ in rows)

    victim = next(r for r in rows if r[4] == 1)
    victim_id, victim_path, victim_sha, shard, _ = victim
    sisa = service.forget({"model": model["id"], "filenames": [victim_path], "method": "sisa"})
    assert sisa["status"] == "completed", sisa
    # The erased image's cached features are gone; another image's are not.
    assert not store().exists(EMBEDDINGS, embedding_key(prep, victim_sha))
    assert store().exists(
        EMBEDDINGS, embedding_key(prep, rows[0][2] if rows[0] != victim else rows[1][2])
    )

    # Exactness: retrain every shard from scratch (salted keys, no reuse) without one more
    # sample from another shard, and compare the SISA-retrained head bit for bit.
    other = next(r for r in rows if r[3] != shard and r[0] != victim_id)
    retrain = service.forget({"model": model["id"], "filenames": [other[1]], "method": "retrain"})
    assert retrain["status"] == "completed", retrain
    assert retrain["plan"]["full_retrain"] is True
    sisa_state = _final_state(model["id"], 2, shard)
    retrain_state = _final_state(model["id"], 3, shard)
    assert sisa_state.keys() == retrain_state.keys()
    assert all(k.startswith("trainable.") for k in sisa_state)  # the backbone is not in it
    for name, tensor in sisa_state.items():
        assert torch.equal(tensor, retrain_state[name]), name


def test_class_forgetting_and_the_report_on_heads(
    sqlite_service, tiny_dataset: Path, backbone_bytes: bytes
) -> None:
    service = sqlite_service
    backbone = register(service.client, backbone_bytes).json()
    dataset = service.register_dataset(tiny_dataset)
    model = _train_heads(service, dataset["id"], backbone="public-r18", head="mlp")
    request = service.forget(
        {
            "model": model["id"],
            "class_name": "elephant",
            "method": "random_label",
            "method_config": {"epochs": 1, "batch_size": 32},
        }
    )
    assert request["status"] == "completed", request
    shown = service.client.get(f"/v1/models/{model['id']}").json()
    assert shown["current_version"] == 2 and shown["retired_classes"] == ["elephant"]
    report = service.client.get(f"/v1/deletion-requests/{request['id']}/report")
    assert report.status_code == 200, report.text
    lineage = report.json()["report"]["lineage"]
    assert lineage["backbone"]["sha256"] == backbone["sha256"]
    assert lineage["backbone"]["trained_on"] == TRAINED_ON
    assert "fixed" in lineage["backbone"]["statement"]
    page = service.client.get(
        f"/v1/deletion-requests/{request['id']}/report", headers={"Accept": "text/html"}
    )
    assert "Fixed backbone." in page.text and backbone["sha256"] in page.text


def test_last_block_heads_train_their_own_copy_of_the_last_stage(
    sqlite_service, tiny_dataset: Path, backbone_bytes: bytes
) -> None:
    service = sqlite_service
    register(service.client, backbone_bytes)
    dataset = service.register_dataset(tiny_dataset)
    model = _train_heads(service, dataset["id"], backbone="public-r18", tune="last_block")
    assert model["metrics"]["training"]["tune"] == "last_block"
    state = _final_state(model["id"], 1, 0)
    backbone = torch.load(io.BytesIO(backbone_bytes), weights_only=True)
    # The shard's copy of layer4 was trained: it starts from the backbone's and moved.
    trained = state["trainable.0.0.1.conv2.weight"]
    assert trained.shape == backbone["layer4.1.conv2.weight"].shape
    assert not torch.equal(trained, backbone["layer4.1.conv2.weight"])
    # The checkpoint holds the last stage and the head, nothing of the earlier stages.
    assert {k.split(".")[1] for k in state} == {"0", "1"}
    assert len([k for k in state if k.startswith("trainable.0.")]) == len(
        [k for k in backbone if k.startswith("layer4.")]
    )


def test_torchvision_spec_loads_offline_from_torch_home(
    sqlite_service, tiny_dataset: Path, tmp_path_factory: pytest.TempPathFactory, monkeypatch
) -> None:
    torch_home = tmp_path_factory.mktemp("torch-home")
    weights = torchvision.models.ResNet18_Weights.IMAGENET1K_V1
    target = torch_home / "hub" / "checkpoints" / Path(weights.url).name
    target.parent.mkdir(parents=True)
    torch.manual_seed(1)
    torch.save(torchvision.models.resnet18().state_dict(), target)
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    spec = "torchvision:resnet18:IMAGENET1K_V1"
    response = service.client.post(
        "/v1/models",
        json={"name": "tv", "dataset": dataset["id"], **HEADS_MODEL, "backbone": spec},
    )
    assert response.status_code == 202, response.text
    recipe = response.json()["config"]
    assert recipe["backbone"]["name"] == spec and recipe["image_size"] == 224
    assert recipe["backbone"]["trained_on"].startswith("ImageNet-1K")
    assert recipe["backbone"]["mean"] == [0.485, 0.456, 0.406]
    import hashlib

    assert recipe["backbone"]["sha256"] == hashlib.sha256(target.read_bytes()).hexdigest()
    listed = service.client.get("/v1/backbones").json()
    assert [b["name"] for b in listed] == [spec] and listed[0]["source"] == spec
