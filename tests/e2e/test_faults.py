"""Faults with real processes (`forgetd serve`, `forgetd worker`, PostgreSQL, Redis): a worker
killed between erasing a request's files and committing it, the broker restarted mid-batch,
and a task outliving the broker's visibility timeout. Each test waits on observed state (the
files on disk, the database, the API, the worker logs), never on a fixed sleep."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

import httpx
import pytest
import redis
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Session

from app.audit.verify import verify_file
from app.db.models import AuditReport, ModelVersion, Sample, Tombstone
from app.embedded import Deployment, deployment, free_port
from tests.conftest import make_subset
from tests.e2e.test_real_worker import TERMINAL, _pick_files, _train

T = TypeVar("T")


def _env(root: Path, database_url: str, broker_url: str, **extra: str) -> dict[str, str]:
    env = {
        "FORGETD_DATA_ROOTS": str(root.parent),
        "FORGETD_DATABASE_URL": database_url,
        "FORGETD_BROKER_URL": broker_url,
        "FORGETD_RESULT_BACKEND": broker_url,
        "FORGETD_DEVICE": "cpu",
        "FORGETD_SWEEP_INTERVAL_S": "1",
        "FORGETD_STALE_TASK_AFTER_S": "4",
    }
    env.update({f"FORGETD_{name}": value for name, value in extra.items()})
    return env


def _wait_for(
    what: str, condition: Callable[[], T], deployed: Deployment, timeout_s: float = 300
) -> T:
    """Poll ``condition`` until it returns something true; fail with ``what`` on time-out."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = condition()
        if value:
            return value
        deployed.check_alive()
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _verify_chain(client: httpx.Client, tmp_path: Path) -> list[str]:
    """The deployment's whole report chain, checked offline against its signed head."""
    (tmp_path / "head.json").write_bytes(client.get("/v1/audit-chain/head").content)
    (tmp_path / "chain.json").write_bytes(client.get("/v1/audit-chain").content)
    pem = client.get("/v1/keys").json()["keys"][0]["public_key_pem"]
    (tmp_path / "key.pem").write_text(pem)
    return verify_file(
        tmp_path / "chain.json", tmp_path / "key.pem", head_path=tmp_path / "head.json"
    )


# --------------------------------------------------------------------------- kill at commit


def _blocked_by(connection: Connection) -> int:
    """How many other database sessions wait on a lock this connection holds."""
    # Activity views are a snapshot kept for the whole transaction unless cleared.
    connection.execute(text("SELECT pg_stat_clear_snapshot()"))
    return int(
        connection.execute(
            text(
                "SELECT count(*) FROM pg_stat_activity "
                "WHERE pg_backend_pid() = ANY(pg_blocking_pids(pid))"
            )
        ).scalar_one()
    )


@pytest.mark.slow
def test_a_worker_killed_between_erasing_and_committing(
    tmp_path: Path, postgres_url: str, redis_url: str
) -> None:
    """The worker marks the samples ``erasing`` and commits, unlinks the files, then commits
    the request as completed with the tombstones of the erased hashes. To stop it exactly
    between the unlink and that commit, with no test hook in the product, the test holds an
    uncommitted tombstone row for the target's hash in its own transaction: the worker's
    final transaction then waits on that row's lock (PostgreSQL reports who blocks whom). Once
    the file is gone and the worker is seen waiting, it is SIGKILLed, so its last transaction
    never commits, and the lock is released. A new worker's sweep resumes the completion: the
    file already gone is accepted for an ``erasing`` sample, no other file is touched, no
    second version or report is made, and the request completes with one tombstone."""
    root = make_subset(tmp_path / "data" / "animals")
    engine = create_engine(postgres_url)
    with (
        deployment(tmp_path / "home", env=_env(root, postgres_url, redis_url)) as deployed,
        deployed.client() as client,
    ):
        model = _train(client, deployed, root)
        rel_path, _ = next(iter(_pick_files(engine, model["id"], {1}).values()))
        target = root / rel_path
        sha256 = hashlib.sha256(target.read_bytes()).hexdigest()
        before = _files(root)
        with engine.connect() as blocker:
            held = blocker.begin()
            blocker.execute(
                text("INSERT INTO tombstones (sha256, created_at) VALUES (:sha, now())"),
                {"sha": sha256},
            )
            request = client.post(
                "/v1/deletion-requests", json={"model": model["id"], "filenames": [rel_path]}
            ).json()
            url = f"/v1/deletion-requests/{request['id']}"
            _wait_for(
                "the file to be erased and the worker to wait on its final commit",
                lambda: not target.exists() and _blocked_by(blocker) > 0,
                deployed,
            )
            deployed.kill("worker")
            with Session(engine) as session:
                state = session.scalar(select(Sample.state).where(Sample.sha256 == sha256))
            stalled = client.get(url).json()
            held.rollback()
        assert state == "erasing" and stalled["status"] == "verifying", (state, stalled)

        deployed.start_worker("worker")
        done = deployed.wait_until(client, url, TERMINAL, timeout_s=300)
        assert done["status"] == "completed", done
        assert done["status_reason"].endswith("1 files erased"), done["status_reason"]
        assert _files(root) == before - {rel_path}  # that file, and only it
        with Session(engine) as session:
            sample = session.scalars(select(Sample).where(Sample.sha256 == sha256)).one()
            assert (sample.state, sample.rel_path) == ("deleted", None)
            tombstones = session.scalars(select(Tombstone).where(Tombstone.sha256 == sha256)).all()
            assert [t.request_id for t in tombstones] == [request["id"]]
            versions = session.scalar(
                select(func.count()).where(ModelVersion.model_id == model["id"])
            )
            reports = session.scalar(
                select(func.count()).where(AuditReport.request_id == request["id"])
            )
        assert (versions, reports) == (2, 1)  # no second retrain, no second report
        assert _verify_chain(client, tmp_path) == []
    engine.dispose()


# --------------------------------------------------------------------------- a broker of its own


class RedisServer:
    """A `redis-server` of the test's own, on a free port, without persistence: a restart
    loses every queued and unacknowledged task, as a crashed broker without a disk would."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "these tests start their own broker: install redis-server"
        self.process = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
            ],
            stdout=(self.folder / "redis.log").open("ab"),
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 30
        while True:
            try:
                if redis.Redis.from_url(self.url).ping():
                    return
            except redis.ConnectionError:
                pass
            assert self.process.poll() is None, "redis-server exited at start"
            assert time.monotonic() < deadline, "redis-server did not answer"
            time.sleep(0.05)

    def kill(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=30)

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    folder = tmp_path / "redis"
    folder.mkdir()
    server = RedisServer(folder)
    server.start()
    yield server
    server.kill()


def _queued_shard_tasks(server: RedisServer) -> set[str]:
    """The ids of the shard-training tasks waiting in the broker's queue."""
    queued = (json.loads(raw)["headers"] for raw in server.client().lrange("celery", 0, -1))
    return {h["id"] for h in queued if h["task"] == "forgetd.train_shard"}


def _shard_running(client: httpx.Client, url: str) -> bool:
    shards = client.get(url).json()["progress"].get("shards", [])
    return any(s["status"] == "running" and s["slice"] is not None for s in shards)


@pytest.mark.slow
def test_the_broker_restarted_mid_batch(
    tmp_path: Path, postgres_url: str, own_redis: RedisServer
) -> None:
    """One request erases files from two shards; one worker trains one shard while the
    other shard's task waits in Redis. Redis is then killed and started afresh, empty: the
    queued task and the running one's delivery are gone. The worker reconnects, and the sweep,
    reading the database, sends the lost shard again; the request completes."""
    root = make_subset(tmp_path / "data" / "animals")
    engine = create_engine(postgres_url)
    env = _env(root, postgres_url, own_redis.url)
    with (
        deployment(tmp_path / "home", env=env) as deployed,
        deployed.client() as client,
    ):
        model = _train(client, deployed, root, epochs_per_slice=20)
        picked = _pick_files(engine, model["id"], {0})
        names = [picked[shard][0] for shard in sorted(picked)[:2]]
        request = client.post(
            "/v1/deletion-requests", json={"model": model["id"], "filenames": names}
        ).json()
        url = f"/v1/deletion-requests/{request['id']}"

        def waiting_while_one_trains() -> set[str]:
            return _queued_shard_tasks(own_redis) if _shard_running(client, url) else set()

        waiting = _wait_for(
            "one shard training while another waits in the broker",
            waiting_while_one_trains,
            deployed,
        )
        own_redis.kill()
        own_redis.start()
        assert not waiting & _queued_shard_tasks(own_redis)  # the queued task is lost
        done = deployed.wait_until(client, url, TERMINAL, timeout_s=300)
        assert done["status"] == "completed", done
        assert not any((root / name).exists() for name in names)
        with Session(engine) as session:
            versions = session.scalar(
                select(func.count()).where(ModelVersion.model_id == model["id"])
            )
        assert versions == 2
        assert _verify_chain(client, tmp_path) == []
    engine.dispose()


# --------------------------------------------------------------------------- visibility timeout

RECEIVED = re.compile(r"Task (forgetd\.\w+)\[([0-9a-f-]+)\] received")
TRAINED = re.compile(r"version (\d+) shard (\d+) trained slices")
ELSEWHERE = re.compile(r"version (\d+) shard (\d+) is being trained elsewhere")


@pytest.mark.slow
def test_a_task_outliving_the_visibility_timeout_is_not_run_twice_at_once(
    tmp_path: Path, postgres_url: str, own_redis: RedisServer
) -> None:
    """With a visibility timeout of one second, Redis hands every task that runs longer to
    the other, idle worker while the first still runs it (the worker logs show one task id
    received twice). The copy must find its work claimed and do nothing: a shard's training
    by the shard's heartbeat claim, a finalization by its conditional update, a batch by the
    model's batch lock. So every shard is trained once per version, one new version and one
    report are made, and the request completes."""
    root = make_subset(tmp_path / "data" / "animals")
    engine = create_engine(postgres_url)
    env = _env(
        root, postgres_url, own_redis.url, BROKER_VISIBILITY_TIMEOUT_S="1", STALE_TASK_AFTER_S="15"
    )
    with (
        deployment(tmp_path / "home", env=env, workers=2) as deployed,
        deployed.client() as client,
    ):
        # Training long enough (a few seconds a shard) to outlive the timeout several times.
        model = _train(client, deployed, root, shards=2, epochs_per_slice=100)
        rel_path, _ = next(iter(_pick_files(engine, model["id"], {0}).values()))
        request = client.post(
            "/v1/deletion-requests", json={"model": model["id"], "filenames": [rel_path]}
        ).json()
        done = deployed.wait_until(
            client, f"/v1/deletion-requests/{request['id']}", TERMINAL, timeout_s=300
        )
        assert done["status"] == "completed", done
        assert not (root / rel_path).exists()
        logs = "\n".join(
            (deployed.home / f"{name}.log").read_text(errors="replace")
            for name in ("worker", "worker1")
        )
        received = Counter(match.groups() for match in RECEIVED.finditer(logs))
        twice = {task for (task, _), count in received.items() if count > 1}
        assert "forgetd.train_shard" in twice, received  # the timeout did hand tasks on
        assert ELSEWHERE.search(logs), "no copy arrived while its original was running"
        trained = Counter(match.groups() for match in TRAINED.finditer(logs))
        assert trained and set(trained.values()) == {1}, trained  # each shard trained once
        with Session(engine) as session:
            versions = session.scalar(
                select(func.count()).where(ModelVersion.model_id == model["id"])
            )
            reports = session.scalar(select(func.count()).select_from(AuditReport))
        assert (versions, reports) == (2, 1)
        assert _verify_chain(client, tmp_path) == []
    engine.dispose()
