"""First start: processes that migrate the same fresh database at the same moment (`forgetd
serve` and `forgetd worker` on a new embedded home; replicas on a new PostgreSQL) all succeed:
one migrates, the others wait for it and find the schema at head."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect, text

from app.db.migrate import PROJECT_ROOT

PROCESSES = 4

# Every process waits until all have started (a file each), then migrates: the race is real.
RACE = """
import os, sys, time
from pathlib import Path
gate = Path(sys.argv[1])
(gate / str(os.getpid())).touch()
while len(list(gate.iterdir())) < int(sys.argv[2]):
    time.sleep(0.01)
from app.db.migrate import upgrade_to_head
upgrade_to_head()
print("migrated")
"""


def _race(env: dict[str, str], gate: Path) -> None:
    gate.mkdir()
    full_env = {**os.environ, **env, "PYTHONPATH": str(PROJECT_ROOT)}
    # Imports first (slow), so that all processes reach the migration together.
    processes = [
        subprocess.Popen(
            [sys.executable, "-c", RACE, str(gate), str(PROCESSES)],
            env=full_env,
            cwd=PROJECT_ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for _ in range(PROCESSES)
    ]
    outputs = [process.communicate(timeout=300)[0] for process in processes]
    failed = [
        out[-2000:] for process, out in zip(processes, outputs, strict=True) if process.returncode
    ]
    assert not failed, failed


def _at_head(url: str) -> None:
    engine = create_engine(url)
    try:
        assert {"datasets", "models", "deletion_requests"} <= set(inspect(engine).get_table_names())
        with engine.connect() as connection:
            versions = connection.execute(text("SELECT version_num FROM alembic_version")).all()
        assert len(versions) == 1
    finally:
        engine.dispose()


def test_processes_migrating_a_fresh_embedded_home_at_once(tmp_path: Path) -> None:
    home = tmp_path / "home"
    env = {"FORGETD_HOME_DIR": str(home), "FORGETD_DATA_ROOTS": str(tmp_path / "data")}
    for name in ("DATABASE_URL", "FORGETD_DATABASE_URL"):
        env[name] = ""
    _race(env, tmp_path / "gate")
    _at_head(f"sqlite:///{home / 'forgetd.db'}")


def test_processes_migrating_a_fresh_postgres_at_once(postgres_url: str, tmp_path: Path) -> None:
    env = {
        "FORGETD_HOME_DIR": str(tmp_path / "home"),
        "FORGETD_DATA_ROOTS": str(tmp_path / "data"),
        "FORGETD_DATABASE_URL": postgres_url,
    }
    _race(env, tmp_path / "gate")
    _at_head(postgres_url)
