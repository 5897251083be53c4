"""Shared fixtures: real PostgreSQL and Redis (a test about them fails when they are down),
a tiny real-image dataset cut from Animal-MNIST, and configured service settings."""

from __future__ import annotations

import os
import shutil
import tarfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from app.db.migrate import PROJECT_ROOT, upgrade_to_head
from app.db.session import reset_engine_cache
from app.settings import Settings, get_settings

SHARED_DATASETS = Path(
    os.environ.get("FORGETD_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets")
)
CACHE = PROJECT_ROOT / ".cache" / "datasets"
PG_ADMIN_URL = os.environ.get(
    "FORGETD_TEST_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
)
REDIS_URL = os.environ.get("FORGETD_TEST_REDIS_URL", "redis://127.0.0.1:6379/14")
TINY_CLASSES = ("bear", "elephant", "zebra")


def unpack_animal_mnist() -> Path:
    """Animal-MNIST unpacked once into the git-ignored cache."""
    target = CACHE / "animal-mnist"
    if (target / "train").is_dir():
        return target
    archive = SHARED_DATASETS / "animal-mnist.tar.gz"
    if not archive.is_file():
        pytest.skip(f"needs {archive} (the shared datasets folder beside the project)")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as handle:
        handle.extractall(CACHE, filter="data")
    return target


def make_subset(
    destination: Path,
    *,
    classes: tuple[str, ...] = TINY_CLASSES,
    train_per_class: int = 48,
    test_per_class: int = 16,
) -> Path:
    """A private ImageFolder copy (the service erases files from it)."""
    source = unpack_animal_mnist()
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for name in classes:
            folder = destination / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for path in sorted((source / split / name).iterdir())[:count]:
                shutil.copy2(path, folder / path.name)
    return destination


@pytest.fixture
def tiny_dataset(tmp_path: Path) -> Path:
    return make_subset(tmp_path / "tiny-animals")


@pytest.fixture(scope="session")
def postgres_server() -> str:
    engine = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as exc:  # a test about PostgreSQL must fail, not skip, without it
        pytest.fail(f"PostgreSQL is not reachable at {PG_ADMIN_URL}: {exc}")
    finally:
        engine.dispose()
    return PG_ADMIN_URL


@pytest.fixture
def postgres_url(postgres_server: str) -> Iterator[str]:
    """A fresh, empty PostgreSQL database for one test."""
    name = f"forgetd_test_{uuid.uuid4().hex[:10]}"
    admin = create_engine(postgres_server, isolation_level="AUTOCOMMIT")
    with admin.connect() as connection:
        connection.execute(text(f'CREATE DATABASE "{name}"'))
    url = make_url(postgres_server).set(database=name).render_as_string(hide_password=False)
    try:
        yield url
    finally:
        reset_engine_cache()
        with admin.connect() as connection:
            connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture(scope="session")
def redis_server() -> str:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.ping()
    except Exception as exc:
        pytest.fail(f"Redis is not reachable at {REDIS_URL}: {exc}")
    return REDIS_URL


@pytest.fixture
def redis_url(redis_server: str) -> str:
    import redis

    redis.Redis.from_url(redis_server).flushdb()
    return redis_server


Configure = Callable[..., Settings]


@pytest.fixture
def configure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Configure]:
    """Point this process's settings, database engine and Celery app at a fresh set-up.

    The test's own tmp_path is the data root (tests build their datasets there); the service's
    home lies beside it, since a data root must not hold the service's own state."""
    home = tmp_path_factory.mktemp("home")
    from worker.celery_app import celery_app, reconfigure
    from worker.flows.common import store

    def _configure(
        *, database_url: str | None = None, broker_url: str | None = None, **extra: str
    ) -> Settings:
        for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"):
            monkeypatch.delenv(name, raising=False)
            monkeypatch.delenv(f"FORGETD_{name}", raising=False)
        monkeypatch.setenv("FORGETD_HOME_DIR", str(home))
        monkeypatch.setenv("FORGETD_DATA_ROOTS", str(tmp_path))
        monkeypatch.setenv("FORGETD_DEVICE", "cpu")
        if database_url:
            monkeypatch.setenv("FORGETD_DATABASE_URL", database_url)
        if broker_url:
            monkeypatch.setenv("FORGETD_BROKER_URL", broker_url)
            if broker_url.startswith("redis"):
                monkeypatch.setenv("FORGETD_RESULT_BACKEND", broker_url)
        for key, value in extra.items():
            monkeypatch.setenv(f"FORGETD_{key.upper()}", value)
        get_settings.cache_clear()
        reset_engine_cache()
        store.cache_clear()
        settings = get_settings()
        settings.ensure_folders()
        upgrade_to_head(settings.database_url)
        reconfigure(celery_app, settings)
        return settings

    yield _configure
    get_settings.cache_clear()
    reset_engine_cache()
    store.cache_clear()
    celery_app.conf.task_always_eager = False


TINY_MODEL = {
    "architecture": "small_cnn",
    "shards": 3,
    "slices": 2,
    "epochs_per_slice": 2,
    "image_size": 16,
    "seed": 3,
    "aggregation": "mean_softmax",
    "lr": 0.05,
    "batch_size": 32,
}


def mint_key(role: str, name: str = "") -> str:
    """A new API key of ``role`` in the configured database (as `forgetd keys create` does)."""
    from app.db.models import Role
    from app.db.session import session_scope
    from app.services.api_keys import create_key

    with session_scope() as session:
        _, key = create_key(session, role=Role(role), name=name or f"test {role}")
    return key


def bearer(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


class InProcessService:
    """The real API (TestClient) with the worker's tasks run inline (Celery eager mode).

    For tests that inspect the flows step by step; the end-to-end tests use real processes.
    ``client`` sends an admin key; ``client_for(role)`` gives a client with a key of that role.
    """

    def __init__(self, settings: Settings) -> None:
        from fastapi.testclient import TestClient

        from app.api.main import create_app
        from worker.celery_app import celery_app

        celery_app.conf.task_always_eager = True
        celery_app.conf.task_eager_propagates = True
        self.settings = settings
        self.app = create_app()
        self.admin_key = mint_key("admin")
        self.headers = bearer(self.admin_key)
        self.client = TestClient(self.app, headers=self.headers)
        self.client.__enter__()
        self._clients = [self.client]

    def client_for(self, role: str | None, key: str | None = None) -> Any:
        """A client with a new key of ``role`` (or ``key``); ``None`` for an anonymous one."""
        from fastapi.testclient import TestClient

        if key is None and role is not None:
            key = mint_key(role)
        client = TestClient(self.app, headers=bearer(key) if key else None)
        client.__enter__()
        self._clients.append(client)
        return client

    def close(self) -> None:
        for client in reversed(self._clients):
            client.__exit__(None, None, None)

    def register_dataset(self, root: Path, name: str = "tiny") -> dict:
        response = self.client.post("/v1/datasets", json={"name": name, "root": str(root)})
        assert response.status_code == 201, response.text
        return response.json()

    def train_model(self, dataset_id: int, name: str = "tiny-sisa", **overrides: object) -> dict:
        from app.db.models import ModelVersion
        from app.db.session import session_scope
        from worker import tasks

        spec = {"name": name, "dataset": dataset_id, **TINY_MODEL, **overrides}
        response = self.client.post("/v1/models", json=spec)
        assert response.status_code == 202, response.text
        model = response.json()
        with session_scope() as session:
            version = session.query(ModelVersion).filter_by(model_id=model["id"], number=1).one()
            version_id = version.id
        tasks.start_version(version_id)
        model = self.client.get(f"/v1/models/{model['id']}").json()
        assert model["status"] == "ready", model
        return model

    def submit(self, payload: dict, **headers: str) -> dict:
        response = self.client.post("/v1/deletion-requests", json=payload, headers=headers)
        assert response.status_code in (200, 202), response.text
        return response.json()

    def run_worker(self, model_id: int) -> None:
        from worker import tasks

        tasks.process_model(model_id)

    def forget(self, payload: dict) -> dict:
        request = self.submit(payload)
        self.run_worker(payload["model"] if isinstance(payload["model"], int) else request["model"])
        # Other models of the dataset that trained on the targets forget them too (linked
        # requests); a deployment's worker runs them as they come, here they run in turn.
        for link in request.get("plan", {}).get("linked_requests", []):
            self.run_worker(link["model"])
        return self.client.get(f"/v1/deletion-requests/{request['id']}").json()


@pytest.fixture
def sqlite_service(configure: Configure) -> Iterator[InProcessService]:
    service = InProcessService(configure())
    yield service
    service.close()


@pytest.fixture
def postgres_service(
    configure: Configure, postgres_url: str, redis_url: str
) -> Iterator[InProcessService]:
    service = InProcessService(configure(database_url=postgres_url, broker_url=redis_url))
    yield service
    service.close()
