"""End to end with real processes: `forgetd serve` and `forgetd worker` (Celery, solo pool),
over real Redis and PostgreSQL, and over the embedded default (SQLite broker and database)."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, select
from sqlalchemy.orm import Session

from app.db.models import Checkpoint, ManifestEntry, ModelVersion, Sample
from app.embedded import Deployment, deployment
from models_store import LocalStore
from tests.conftest import TINY_MODEL, make_subset

TERMINAL = {"completed", "failed", "rejected", "cancelled"}


def _train(client: httpx.Client, deployed: Deployment, root: Path, **overrides: object) -> dict:
    dataset = client.post("/v1/datasets", json={"name": "animals", "root": str(root)}).json()
    spec = {"name": "animals-sisa", "dataset": dataset["id"], **TINY_MODEL, **overrides}
    created = client.post("/v1/models", json=spec)
    assert created.status_code == 202, created.text
    # Waits on the observed status; the bound is generous because a shared CI machine can be
    # several times slower than an idle one.
    model = deployed.wait_until(client, created.headers["location"], {"ready", "failed"}, 600)
    assert model["status"] == "ready", model
    return model


def _children(pid: int) -> list[int]:
    """Live child processes of `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _pick_files(engine, model_id: int, slices: set[int]) -> dict[int, tuple[str, int]]:  # type: ignore[no-untyped-def]
    """One training file per shard, from a slice in `slices`: shard -> (rel_path, slice)."""
    with Session(engine) as session:
        version_id = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.model_id == model_id, ModelVersion.number == 1
            )
        )
        rows = session.execute(
            select(Sample.rel_path, ManifestEntry.shard, ManifestEntry.slice)
            .join(Sample, Sample.id == ManifestEntry.sample_id)
            .where(ManifestEntry.version_id == version_id)
            .order_by(Sample.sha256)
        ).all()
    picked: dict[int, tuple[str, int]] = {}
    for rel_path, shard, slice_ in rows:
        if slice_ in slices and shard not in picked:
            picked[shard] = (rel_path, slice_)
    return picked


def _checkpoints(engine, model_id: int, number: int) -> dict[tuple[int, int], Checkpoint]:  # type: ignore[no-untyped-def]
    with Session(engine) as session:
        version_id = session.scalar(
            select(ModelVersion.id).where(
                ModelVersion.model_id == model_id, ModelVersion.number == number
            )
        )
        rows = session.scalars(select(Checkpoint).where(Checkpoint.version_id == version_id)).all()
        return {(c.shard, c.slice): c for c in rows}


def _delete_and_check(deployed: Deployment, database_url: str, root: Path) -> None:
    engine = create_engine(database_url)
    store = LocalStore(deployed.home / "store")
    with deployed.client() as client:
        model = _train(client, deployed, root)
        picked = _pick_files(engine, model["id"], {1})
        shard_a, shard_b = sorted(picked)[:2]
        before = _checkpoints(engine, model["id"], 1)
        blobs = {slot: store.get("checkpoints", c.key) for slot, c in before.items()}

        # Two requests for two shards, sent back to back: the second arrives while the first
        # is queued or running, and is served by the same retrain or the next one.
        first = client.post(
            "/v1/deletion-requests",
            json={"model": model["id"], "filenames": [picked[shard_a][0]], "external_id": "p-1"},
        ).json()
        second = client.post(
            "/v1/deletion-requests",
            json={"model": model["id"], "filenames": [picked[shard_b][0]], "external_id": "p-2"},
        ).json()
        assert first["status"] in ("queued", "running")
        seen = set()
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            body = client.get(f"/v1/deletion-requests/{second['id']}").json()
            seen.add(body["status"])
            if body["status"] in TERMINAL:
                break
            deployed.check_alive()
            time.sleep(0.2)
        first = client.get(f"/v1/deletion-requests/{first['id']}").json()
        second = body
        assert first["status"] == second["status"] == "completed", (first, second)

        final = max(first["result_version"], second["result_version"])
        after = _checkpoints(engine, model["id"], final)
        retrained = (
            {s for (s, _), c in after.items() if not c.reused}
            if first["result_version"] == second["result_version"]
            else None
        )
        if retrained is not None:  # coalesced: one version serves both requests
            assert retrained == {shard_a, shard_b}
            assert sorted(first["plan"]["coalesced_with"]) == [second["id"]]
        for (shard, slice_), checkpoint in after.items():
            if shard in (shard_a, shard_b) and slice_ >= 1:
                continue
            # Untouched shards and slices before the deleted one: the very same bytes.
            assert checkpoint.key == before[(shard, slice_)].key
            assert store.get("checkpoints", checkpoint.key) == blobs[(shard, slice_)]

        with Session(engine) as session:
            final_id = session.scalar(
                select(ModelVersion.id).where(
                    ModelVersion.model_id == model["id"], ModelVersion.number == final
                )
            )
            trained_on = set(
                session.scalars(
                    select(Sample.rel_path)
                    .join(ManifestEntry, ManifestEntry.sample_id == Sample.id)
                    .where(ManifestEntry.version_id == final_id)
                ).all()
            )
        for rel_path, _ in (picked[shard_a], picked[shard_b]):
            assert rel_path not in trained_on
            assert not (root / rel_path).exists()
        listing = client.get("/v1/deletion-requests", params={"status": "completed"}).json()
        assert listing["total"] == 2
    engine.dispose()


@pytest.mark.slow
def test_postgres_redis_and_two_real_workers(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    root = make_subset(tmp_path / "data" / "animals")
    env = {
        "FORGETD_DATABASE_URL": postgres_url,
        "FORGETD_BROKER_URL": redis_url,
        "FORGETD_RESULT_BACKEND": redis_url,
        "FORGETD_DEVICE": "cpu",
        "FORGETD_DATA_ROOTS": str(root.parent),
    }
    with deployment(tmp_path / "home", env=env, workers=2) as deployed:
        _delete_and_check(deployed, postgres_url, root)


@pytest.mark.slow
def test_embedded_default_sqlite_and_sqlite_broker(tmp_path: Path) -> None:
    home = tmp_path / "home"
    root = make_subset(home / "data" / "animals")  # the embedded default data root
    with deployment(home, env={"FORGETD_DEVICE": "cpu"}) as deployed:
        _delete_and_check(deployed, f"sqlite:///{home / 'forgetd.db'}", root)


@pytest.mark.slow
def test_a_killed_worker_loses_no_request(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """SIGKILL the only worker in the middle of a retrain: the sweep of the next worker finds
    the stalled shard in the database and finishes the request."""
    root = make_subset(tmp_path / "data" / "animals", train_per_class=160)
    env = {
        "FORGETD_DATA_ROOTS": str(root.parent),
        "FORGETD_DATABASE_URL": postgres_url,
        "FORGETD_BROKER_URL": redis_url,
        "FORGETD_RESULT_BACKEND": redis_url,
        "FORGETD_DEVICE": "cpu",
        "FORGETD_SWEEP_INTERVAL_S": "2",
        "FORGETD_STALE_TASK_AFTER_S": "6",
    }
    engine = create_engine(postgres_url)
    with (
        deployment(tmp_path / "home", env=env) as deployed,
        deployed.client() as client,
    ):
        # Long enough a retrain (a slice-0 file: all three slices, 30 epochs each) that the
        # kill lands while the shard is training, as the progress it reports shows.
        model = _train(client, deployed, root, epochs_per_slice=30, slices=3)
        rel_path, _ = next(iter(_pick_files(engine, model["id"], {0}).values()))
        request = client.post(
            "/v1/deletion-requests", json={"model": model["id"], "filenames": [rel_path]}
        ).json()
        url = f"/v1/deletion-requests/{request['id']}"
        deadline = time.monotonic() + 120
        while not any(
            shard["status"] == "running" and shard["slice"] is not None
            for shard in client.get(url).json()["progress"].get("shards", [])
        ):
            assert time.monotonic() < deadline, "the retrain never started"
            time.sleep(0.05)
        scheduler = _children(deployed.processes["worker"].pid)
        assert scheduler, "the worker runs the sweep scheduler as a child process"
        deployed.kill("worker")
        # The orphaned scheduler must end with its worker, or it would run beside the next one.
        deadline = time.monotonic() + 10
        while any(Path(f"/proc/{pid}").exists() for pid in scheduler):
            assert time.monotonic() < deadline, "the killed worker's scheduler lived on"
            time.sleep(0.1)
        stalled = client.get(url).json()
        assert stalled["status"] == "running", stalled
        assert stalled["progress"]["percent"] < 100, stalled
        deployed.start_worker("worker")
        done = deployed.wait_until(
            client, f"/v1/deletion-requests/{request['id']}", TERMINAL, timeout_s=300
        )
        assert done["status"] == "completed", done
        assert not (root / rel_path).exists()
    engine.dispose()
