"""Data boundaries, tried as a hostile caller would: datasets and imports stay inside the data
roots, nothing is read or erased through a link, and errors list relative paths only."""

from __future__ import annotations

import hashlib
import io
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from sqlalchemy import select

from app.db.models import Dataset, Sample
from app.db.session import session_scope

PROBLEM = "application/problem+json"


def _refused(response: Any, status: int = 422) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    return response.json()


def _register(service: Any, root: Path | str, name: str = "ds") -> Any:
    return service.client.post("/v1/datasets", json={"name": name, "root": str(root)})


def _no_datasets() -> None:
    with session_scope() as session:
        assert session.scalars(select(Dataset)).all() == []


def test_symlinked_file_and_folder_are_refused(
    sqlite_service, tiny_dataset: Path, tmp_path: Path
) -> None:
    outside = tmp_path / "elsewhere"
    shutil.copytree(tiny_dataset / "train" / "bear", outside / "bear")
    victim = sorted((tiny_dataset / "train" / "zebra").iterdir())[0]
    victim.unlink()
    victim.symlink_to(sorted((outside / "bear").iterdir())[0])
    body = _refused(_register(sqlite_service, tiny_dataset))
    assert body["unsafe_paths"]["symlinks"] == {
        "paths": [f"train/zebra/{victim.name}"],
        "count": 1,
    }
    assert str(tmp_path) not in str(body)  # relative paths only

    victim.unlink()
    shutil.rmtree(tiny_dataset / "train" / "elephant")
    (tiny_dataset / "train" / "elephant").symlink_to(outside / "bear", target_is_directory=True)
    body = _refused(_register(sqlite_service, tiny_dataset))
    assert body["unsafe_paths"]["symlinks"]["paths"] == ["train/elephant"]
    _no_datasets()


def test_many_links_are_listed_twenty_at_most_with_a_count(
    sqlite_service, tiny_dataset: Path
) -> None:
    target = sorted((tiny_dataset / "train" / "bear").iterdir())[0]
    for index in range(35):
        (tiny_dataset / "test" / "bear" / f"link{index:02d}.png").symlink_to(target)
    fifo = tiny_dataset / "train" / "bear" / "pipe.png"
    os.mkfifo(fifo)
    hard = tiny_dataset / "train" / "zebra" / "hard.png"
    os.link(target, hard)
    body = _refused(_register(sqlite_service, tiny_dataset))
    links = body["unsafe_paths"]["symlinks"]
    assert links["count"] == 35 and len(links["paths"]) == 20
    assert body["unsafe_paths"]["special_files"] == {"paths": ["train/bear/pipe.png"], "count": 1}
    assert set(body["unsafe_paths"]["hard_links"]["paths"]) == {
        "train/zebra/hard.png",
        f"train/bear/{target.name}",
    }


def test_roots_outside_the_data_roots_reveal_nothing(
    sqlite_service, tiny_dataset: Path, tmp_path: Path
) -> None:
    outside = tmp_path.parent / f"{tmp_path.name}-outside"
    shutil.copytree(tiny_dataset, outside)
    etc_link = tmp_path / "etc-link"
    etc_link.symlink_to("/etc", target_is_directory=True)
    answers = set()
    for root in (outside, "/etc", etc_link, "/nonexistent/anywhere", "/"):
        body = _refused(_register(sqlite_service, root))
        assert "not inside a data root" in body["detail"]
        assert "passwd" not in str(body) and "unsafe_paths" not in body
        answers.add(body["detail"].replace(str(root), "ROOT"))
    assert len(answers) == 1  # one answer, whether the folder exists or not
    long_root = "/" + "x" * 3000
    body = _refused(_register(sqlite_service, long_root))
    assert len(body["detail"]) < 500
    assert _refused(_register(sqlite_service, "relative/path"))["detail"].startswith("root must")
    _no_datasets()
    shutil.rmtree(outside)


def test_overlapping_roots_are_refused(sqlite_service, tiny_dataset: Path, tmp_path: Path) -> None:
    assert _register(sqlite_service, tiny_dataset, "a").status_code == 201
    alias = tmp_path / "alias"
    alias.symlink_to(tiny_dataset, target_is_directory=True)
    nested = tmp_path / "outer" / "inner"
    shutil.copytree(tiny_dataset, nested)
    (tmp_path / "outer" / "sibling").mkdir()
    for spelling in (
        f"{tiny_dataset}/",
        f"/proc/self/root{tiny_dataset}",
        f"{tmp_path}/outer/../{tiny_dataset.name}",
        str(alias),
        str(tmp_path),
        str(tiny_dataset / "test"),
    ):
        body = _refused(_register(sqlite_service, spelling, "b"))
        assert "overlaps" in body["detail"] and body["overlapping_datasets"] == ["a"], spelling
    assert _register(sqlite_service, nested, "inner").status_code == 201
    body = _refused(_register(sqlite_service, tmp_path / "outer", "outer"))
    assert body["overlapping_datasets"] == ["inner"]
    with session_scope() as session:
        roots = session.scalars(select(Dataset.root).order_by(Dataset.id)).all()
    assert roots == [str(tiny_dataset.resolve()), str(nested.resolve())]


def _train(service: Any, root: Path) -> dict[str, Any]:
    dataset = service.register_dataset(root)
    return service.train_model(dataset["id"], shards=2, slices=1, epochs_per_slice=1)


def _samples(names: list[str]) -> dict[str, Sample]:
    with session_scope() as session:
        rows = session.scalars(select(Sample).where(Sample.rel_path.in_(names))).all()
        return {row.rel_path or "": row for row in rows}


def test_files_swapped_after_registration_are_not_erased(
    sqlite_service, tiny_dataset: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file replaced by a link, by other bytes, or reached through a folder replaced by a
    link, fails the request with hashes in the reason, and nothing at all is erased."""
    caplog.set_level(logging.INFO)
    service = sqlite_service
    model = _train(service, tiny_dataset)
    bears = sorted((tiny_dataset / "train" / "bear").iterdir())
    linked, intact, rewritten = bears[0], bears[1], bears[2]
    names = [f"train/bear/{p.name}" for p in (linked, intact, rewritten)]
    samples = _samples(names)
    outside = tmp_path.parent / f"{tmp_path.name}-real"
    outside.mkdir()
    moved = outside / linked.name
    shutil.move(linked, moved)
    linked.symlink_to(moved)
    rewritten.write_bytes(intact.read_bytes())

    request = service.forget({"model": model["id"], "filenames": names})

    assert request["status"] == "failed", request
    reason = request["status_reason"]
    assert "2 of 3 files cannot be erased safely, so none was erased" in reason
    assert samples[names[0]].sha256 in reason and samples[names[2]].sha256 in reason
    assert "symbolic link" in reason
    assert hashlib.sha256(intact.read_bytes()).hexdigest() in reason  # the rewritten bytes
    for needle in (linked.name, rewritten.name, intact.name, str(tiny_dataset)):
        assert needle not in reason and needle not in caplog.text
    assert moved.exists() and linked.is_symlink() and intact.exists() and rewritten.exists()
    assert all(s.state == "active" for s in _samples(names).values())

    # A folder on the path replaced by a link to a copy: refused as well.
    linked.unlink()
    shutil.move(moved, linked)
    zebras = tiny_dataset / "train" / "zebra"
    shutil.move(zebras, outside / "zebra")
    zebras.symlink_to(outside / "zebra", target_is_directory=True)
    zebra = sorted((outside / "zebra").iterdir())[0]
    request = service.forget({"model": model["id"], "filenames": [f"train/zebra/{zebra.name}"]})
    assert request["status"] == "failed" and "a folder on its path" in request["status_reason"]
    assert zebra.exists()


def _state_dict() -> bytes:
    from worker.training.architectures import build_model

    net = build_model("small_cnn", num_classes=3, in_channels=1, image_size=16)
    buffer = io.BytesIO()
    torch.save(net.state_dict(), buffer)
    return buffer.getvalue()


def _imports_left(service: Any) -> list[Path]:
    folder = Path(service.settings.store_root) / "imports"
    return [p for p in folder.rglob("*") if p.is_file()] if folder.exists() else []


@pytest.fixture
def import_service(configure, tiny_dataset: Path) -> Any:
    """A service whose upload cap is just above the size of `_state_dict()`."""
    from tests.conftest import InProcessService

    cap = len(_state_dict()) + 50_000
    service = InProcessService(configure(import_max_bytes=str(cap)))
    service.cap = cap  # type: ignore[attr-defined]
    service.dataset = service.register_dataset(tiny_dataset)  # type: ignore[attr-defined]
    yield service
    service.close()


def _import_body(dataset: dict[str, Any], name: str = "imported") -> dict[str, Any]:
    return {
        "name": name,
        "dataset": dataset["id"],
        "class_names": dataset["classes"],
        "image_size": 16,
    }


def test_import_path_is_no_file_oracle(import_service: Any, tmp_path: Path) -> None:
    service = import_service
    base = _import_body(service.dataset)
    settings = service.settings
    inside_link = tmp_path / "passwd.pt"
    inside_link.symlink_to("/etc/passwd")
    forbidden = [
        "/etc/shadow",
        "/etc/passwd",
        str(settings.signing_key_path),
        settings.database_url.removeprefix("sqlite:///"),
        str(inside_link),
        str(tmp_path / "missing.pt"),
        str(tmp_path),
        "weights.pt",
        "/" + "y" * 3000,
    ]
    answers = set()
    for path in forbidden:
        body = _refused(
            service.client.post("/v1/models/import", json={**base, "state_dict_path": path})
        )
        assert "sha256" not in str(body) and "bytes" not in body["detail"]
        answers.add(body["detail"])
    assert len(answers) == 1, answers
    assert _imports_left(service) == []

    # A path inside the data roots works, and reveals only that file's hash.
    weights = _state_dict()
    allowed = tmp_path / "weights.pt"
    allowed.write_bytes(weights)
    by_path = service.client.post(
        "/v1/models/import", json={**base, "name": "by-path", "state_dict_path": str(allowed)}
    )
    assert by_path.status_code == 202, by_path.text
    source = by_path.json()["config"]["imported"]["source_sha256"]
    assert source == hashlib.sha256(weights).hexdigest()


def test_an_uploaded_import_leaves_no_copy_behind(import_service: Any) -> None:
    from worker import tasks

    service = import_service
    form = {**_import_body(service.dataset), "dataset": str(service.dataset["id"])}
    # Staged in the store until the worker converts it, then gone.
    files = {"file": ("w.pt", _state_dict(), "application/octet-stream")}
    accepted = service.client.post("/v1/models/import", data=form, files=files)
    assert accepted.status_code == 202, accepted.text
    assert len(_imports_left(service)) == 1
    tasks.import_model(_version_id(accepted.json()["id"]))
    shown = service.client.get(f"/v1/models/{accepted.json()['id']}").json()
    assert shown["status"] == "ready", shown
    assert _imports_left(service) == []

    # A failed import leaves no copy of its bytes behind.
    junk = {"file": ("junk.pt", b"not a state dict" * 10, "application/octet-stream")}
    failed = service.client.post("/v1/models/import", data={**form, "name": "junk"}, files=junk)
    assert failed.status_code == 202, failed.text
    tasks.import_model(_version_id(failed.json()["id"]))
    assert service.client.get(f"/v1/models/{failed.json()['id']}").json()["status"] == "failed"
    assert _imports_left(service) == []

    # Over the size cap: 413, nothing stored.
    big = {"file": ("big.pt", b"\0" * (service.cap + 100_000), "application/octet-stream")}
    too_big = service.client.post("/v1/models/import", data={**form, "name": "big"}, files=big)
    assert _refused(too_big, 413)["detail"].startswith("the upload exceeds")
    assert _imports_left(service) == []
    assert service.client.get("/v1/models/big").status_code == 404


def _version_id(model_id: int) -> int:
    from app.db.models import ModelVersion

    with session_scope() as session:
        version = session.scalar(
            select(ModelVersion).where(ModelVersion.model_id == model_id, ModelVersion.number == 1)
        )
        assert version is not None
        return version.id


def test_a_missing_folder_inside_the_data_roots_is_named(sqlite_service, tmp_path: Path) -> None:
    assert _refused(_register(sqlite_service, tmp_path / "nope"))["detail"].endswith(
        "does not exist or is not a folder"
    )


def test_a_file_gone_from_the_dataset_is_named_by_its_hash(
    sqlite_service, tiny_dataset: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A retrain that cannot read an image fails with the sample's hash, never its name."""
    caplog.set_level(logging.INFO)
    service = sqlite_service
    dataset = service.register_dataset(tiny_dataset)
    model = service.train_model(dataset["id"], shards=1, slices=1, epochs_per_slice=1)
    bears = sorted((tiny_dataset / "train" / "bear").iterdir())
    gone = bears[0]
    sha = hashlib.sha256(gone.read_bytes()).hexdigest()
    gone.unlink()
    request = service.forget({"model": model["id"], "filenames": [f"train/bear/{bears[1].name}"]})
    assert request["status"] == "failed", request
    assert f"sample {sha} cannot be read" in request["status_reason"]
    for needle in (gone.name, str(tiny_dataset)):
        assert needle not in request["status_reason"] and needle not in caplog.text
    assert bears[1].exists()
