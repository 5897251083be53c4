"""Run Alembic migrations from code (the CLI, the tests and the demo use this).

Processes started together on a fresh deployment (`forgetd serve` and `forgetd worker` on one
embedded home, or API replicas on one PostgreSQL) all migrate at start: a lock lets one of them
migrate while the others wait, then find the schema at head and do nothing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from filelock import FileLock
from sqlalchemy import create_engine, pool, text

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# pg_advisory_lock key: any constant that no other part of the service uses.
PG_MIGRATION_LOCK = 0x666F7267  # "forg"
LOCK_TIMEOUT_S = 600


def alembic_config(database_url: str | None = None) -> Config:
    config = Config(str(PROJECT_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(PROJECT_ROOT / "migrations"))
    config.attributes["configure_logger"] = False
    if database_url:
        config.attributes["database_url"] = database_url
    return config


@contextmanager
def migration_lock(database_url: str) -> Iterator[None]:
    """Held by one migrating process at a time, per database."""
    if database_url.startswith("sqlite:///"):
        database = Path(database_url.removeprefix("sqlite:///"))
        database.parent.mkdir(parents=True, exist_ok=True)
        with FileLock(str(database) + ".migrate.lock", timeout=LOCK_TIMEOUT_S):
            yield
        return
    if not database_url.startswith("postgresql"):
        yield  # an in-memory SQLite database belongs to one process
        return
    engine = create_engine(database_url, poolclass=pool.NullPool)
    try:
        with engine.connect() as connection:
            # A session-level lock on its own connection: released when it closes, even if
            # this process dies mid-migration.
            connection.execute(text("SELECT pg_advisory_lock(:key)"), {"key": PG_MIGRATION_LOCK})
            connection.commit()
            try:
                yield
            finally:
                connection.execute(
                    text("SELECT pg_advisory_unlock(:key)"), {"key": PG_MIGRATION_LOCK}
                )
                connection.commit()
    finally:
        engine.dispose()


def upgrade_to_head(database_url: str | None = None) -> None:
    if not database_url:
        from app.settings import get_settings

        database_url = get_settings().database_url
    with migration_lock(database_url):
        command.upgrade(alembic_config(database_url), "head")
