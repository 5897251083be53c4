"""An in-process forgetd for benchmarks: the real API (TestClient) and the real worker flows,
with Celery in eager mode so each step runs inline and can be timed without broker latency.

Every benchmark writes a JSON file under bench/results/ with the command, the machine and the
figures, so a number quoted anywhere can be traced to a run.
"""

from __future__ import annotations

import json
import os
import platform
import random
import shutil
import sys
import tarfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(
    os.environ.get("FORGETD_SHARED_DATASETS", PROJECT_ROOT.parent / "shared" / "datasets")
)
CACHE = PROJECT_ROOT / ".cache" / "datasets"
RESULTS = PROJECT_ROOT / "bench" / "results"
ARCHIVES = {"animal-mnist": "animal-mnist.tar.gz", "cifar10": "cifar10-jpeg.tar.gz"}


def unpack(name: str) -> Path:
    """A dataset from ../shared/datasets unpacked once into the git-ignored cache."""
    target = CACHE / name
    if (target / "train").is_dir():
        return target
    archive = SHARED_DATASETS / ARCHIVES[name]
    if not archive.is_file():
        raise SystemExit(f"needs {archive}")
    CACHE.mkdir(parents=True, exist_ok=True)
    with tarfile.open(archive) as handle:
        if name == "cifar10":  # this archive has no top folder
            handle.extractall(target, filter="data")
        else:
            handle.extractall(CACHE, filter="data")
    return target


def subset(
    name: str,
    destination: Path,
    *,
    train_per_class: int | None,
    test_per_class: int | None,
    classes: list[str] | None = None,
    seed: int = 0,
) -> Path:
    """A private, seeded subset copy (the service erases forgotten files from its copy)."""
    source = unpack(name)
    rng = random.Random(seed)
    if destination.exists():
        shutil.rmtree(destination)
    for split, count in (("train", train_per_class), ("test", test_per_class)):
        for class_dir in sorted((source / split).iterdir()):
            if not class_dir.is_dir() or (classes and class_dir.name not in classes):
                continue
            files = sorted(class_dir.iterdir())
            chosen = files if count is None else rng.sample(files, min(count, len(files)))
            target = destination / split / class_dir.name
            target.mkdir(parents=True, exist_ok=True)
            for path in chosen:
                os.link(path, target / path.name) if _same_fs(path, target) else shutil.copy2(
                    path, target / path.name
                )
    return destination


def _same_fs(a: Path, b: Path) -> bool:
    return a.stat().st_dev == b.stat().st_dev


@dataclass
class Service:
    client: Any
    home: Path

    def register_dataset(self, root: Path, name: str) -> dict[str, Any]:
        response = self.client.post("/v1/datasets", json={"name": name, "root": str(root)})
        response.raise_for_status()
        return response.json()

    def train_model(self, spec: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """Train synchronously; returns the model and the wall time of the training."""
        from sqlalchemy import select

        from app.db.models import ModelVersion
        from app.db.session import session_scope
        from worker import tasks

        response = self.client.post("/v1/models", json=spec)
        response.raise_for_status()
        model = response.json()
        with session_scope() as session:
            version_id = session.scalar(
                select(ModelVersion.id).where(
                    ModelVersion.model_id == model["id"], ModelVersion.number == 1
                )
            )
        began = time.perf_counter()
        tasks.start_version(version_id)
        took = time.perf_counter() - began
        model = self.client.get(f"/v1/models/{model['id']}").json()
        if model["status"] != "ready":
            raise RuntimeError(f"training failed: {model['status_reason']}")
        return model, took

    def forget(self, payload: dict[str, Any]) -> tuple[dict[str, Any], float]:
        """Submit a deletion request and run the worker inline; returns it and its wall time."""
        from worker import tasks

        began = time.perf_counter()
        response = self.client.post("/v1/deletion-requests", json=payload)
        if response.status_code >= 400:
            raise RuntimeError(response.text)
        request = response.json()
        tasks.process_model(request["model"])
        took = time.perf_counter() - began
        return self.client.get(f"/v1/deletion-requests/{request['id']}").json(), took


@contextmanager
def in_process_service(home: Path, **settings: str) -> Iterator[Service]:
    """A fresh embedded forgetd (SQLite) under `home`, or whatever `settings` select."""
    if home.exists():
        shutil.rmtree(home)
    os.environ["FORGETD_HOME_DIR"] = str(home)
    for key, value in settings.items():
        os.environ[f"FORGETD_{key.upper()}"] = value
    from fastapi.testclient import TestClient

    from app.api.main import create_app
    from app.db.migrate import upgrade_to_head
    from app.db.session import reset_engine_cache
    from app.settings import get_settings
    from worker.celery_app import celery_app, reconfigure
    from worker.flows.common import store

    get_settings.cache_clear()
    reset_engine_cache()
    store.cache_clear()
    config = get_settings()
    config.ensure_folders()
    upgrade_to_head(config.database_url)
    reconfigure(celery_app, config)
    celery_app.conf.task_always_eager = True
    celery_app.conf.task_eager_propagates = True
    with TestClient(create_app()) as client:
        yield Service(client=client, home=home)


def machine() -> dict[str, Any]:
    import torch

    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "torch": torch.__version__,
        "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch_threads": torch.get_num_threads(),
    }


def write_result(name: str, payload: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    body = {
        "benchmark": name,
        "command": " ".join([Path(sys.executable).name, *sys.argv]),
        "finished_at": datetime.now(UTC).isoformat(),
        "machine": machine(),
        **payload,
    }
    path.write_text(json.dumps(body, indent=2, default=str) + "\n")
    return path
