"""Service settings, validated once at start.

Defaults are the embedded set-up (SQLite database, SQLite-backed Celery broker and results, a
local data folder), so nothing needs installing. Environment variables switch to PostgreSQL and
Redis; both the prefixed (`FORGETD_DATABASE_URL`) and the plain (`DATABASE_URL`) names work.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Annotated, Any, Literal

from platformdirs import user_data_dir
from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict


def _default_home() -> Path:
    return Path(user_data_dir("forgetd", appauthor=False))


def _alias(name: str) -> AliasChoices:
    return AliasChoices(f"FORGETD_{name}", name)


class Settings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore")

    home: Path = Field(default_factory=_default_home, validation_alias=_alias("HOME_DIR"))
    database_url: str = Field("", validation_alias=_alias("DATABASE_URL"))
    broker_url: str = Field("", validation_alias=_alias("BROKER_URL"))
    result_backend: str = Field("", validation_alias=_alias("RESULT_BACKEND"))
    store_root: Path | None = Field(None, validation_alias=_alias("STORE_ROOT"))
    # Folders under which datasets and imported weights must lie (`:`-separated in the
    # environment); empty means `<home>/data`.
    data_roots: Annotated[list[Path], NoDecode] = Field(
        default_factory=list, validation_alias=_alias("DATA_ROOTS")
    )
    cache_root: Path | None = Field(None, validation_alias=_alias("CACHE_ROOT"))
    signing_key_path: Path | None = Field(None, validation_alias=_alias("SIGNING_KEY_PATH"))
    device: str = Field("auto", validation_alias=_alias("DEVICE"))
    default_class_method: str = Field("unsir", validation_alias=_alias("DEFAULT_CLASS_METHOD"))
    holdout_fraction: float = Field(
        0.1, gt=0.0, lt=0.9, validation_alias=_alias("HOLDOUT_FRACTION")
    )
    sweep_interval_s: float = Field(30.0, gt=0, validation_alias=_alias("SWEEP_INTERVAL_S"))
    stale_task_after_s: float = Field(120.0, gt=0, validation_alias=_alias("STALE_TASK_AFTER_S"))
    # Redis hands an unacknowledged task to another worker after this long; the flows guard
    # against the copy running beside the original, so it only bounds how late a lost task is
    # retried when the sweep has not acted first.
    broker_visibility_timeout_s: float = Field(
        6 * 3600.0, gt=0, validation_alias=_alias("BROKER_VISIBILITY_TIMEOUT_S")
    )
    import_max_bytes: int = Field(
        1024**3, gt=0, le=8 * 1024**3, validation_alias=_alias("IMPORT_MAX_BYTES")
    )
    # Compliance workflow: the default deadline of a request, and the hosts webhooks may reach
    # (comma-separated; empty means none, so the service cannot be aimed at internal addresses).
    default_deadline_days: int = Field(
        30, ge=1, le=365, validation_alias=_alias("DEFAULT_DEADLINE_DAYS")
    )
    webhook_allowed_hosts: Annotated[list[str], NoDecode] = Field(
        default_factory=list, validation_alias=_alias("WEBHOOK_ALLOWED_HOSTS")
    )
    # A host *name* on that list must resolve to public addresses at every send (a name can be
    # re-pointed at 127.0.0.1 or 169.254.169.254 after it was allowed); this lets it resolve to
    # loopback, private or link-local ones too. An IP literal on the list is allowed as named.
    webhook_allow_private_addresses: bool = Field(
        False, validation_alias=_alias("WEBHOOK_ALLOW_PRIVATE_ADDRESSES")
    )
    webhook_max_tries: int = Field(8, ge=1, le=50, validation_alias=_alias("WEBHOOK_MAX_TRIES"))
    webhook_backoff_s: float = Field(
        2.0, gt=0, le=3600, validation_alias=_alias("WEBHOOK_BACKOFF_S")
    )
    # Requests served at once per API process (more wait their turn), each on one thread with
    # at most one database connection: the pool (size + overflow) must be at least this.
    api_threads: int = Field(32, ge=1, le=256, validation_alias=_alias("API_THREADS"))
    db_pool_size: int = Field(10, ge=1, le=200, validation_alias=_alias("DB_POOL_SIZE"))
    db_max_overflow: int = Field(30, ge=0, le=500, validation_alias=_alias("DB_MAX_OVERFLOW"))
    db_pool_timeout_s: float = Field(
        60.0, gt=0, le=3600, validation_alias=_alias("DB_POOL_TIMEOUT_S")
    )
    # The audit scores at most this many forgotten samples (members), held-out test samples
    # (non-members) and retained training samples, drawn with the request's seed: every one costs
    # a forward pass per constituent of two versions, which must stay small next to a retrain.
    audit_max_members: int = Field(
        500, ge=1, le=100_000, validation_alias=_alias("AUDIT_MAX_MEMBERS")
    )
    audit_max_nonmembers: int = Field(
        300, ge=1, le=100_000, validation_alias=_alias("AUDIT_MAX_NONMEMBERS")
    )
    audit_max_retain: int = Field(
        100, ge=1, le=100_000, validation_alias=_alias("AUDIT_MAX_RETAIN")
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", validation_alias=_alias("LOG_LEVEL")
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if value == "auto" or value == "cpu" or value == "cuda" or value.startswith("cuda:"):
            return value
        raise ValueError("must be 'auto', 'cpu', 'cuda' or 'cuda:N'")

    @field_validator("data_roots", mode="before")
    @classmethod
    def _split_data_roots(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part for part in value.split(":") if part.strip()]
        return value

    @field_validator("webhook_allowed_hosts", mode="before")
    @classmethod
    def _split_hosts(cls, value: Any) -> Any:
        if isinstance(value, str):
            return [part.strip().lower() for part in value.split(",") if part.strip()]
        return value

    @field_validator("data_roots")
    @classmethod
    def _check_data_roots(cls, value: list[Path]) -> list[Path]:
        roots = [root.expanduser() for root in value]
        relative = [str(root) for root in roots if not root.is_absolute()]
        if relative:
            raise ValueError(f"data roots must be absolute paths, got {relative}")
        return roots

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        if value and not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:// or postgresql:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str) -> str:
        if value and not value.startswith(("redis://", "rediss://", "sqla+", "memory://", "amqp")):
            raise ValueError("must be a redis://, sqla+<database URL>, amqp:// or memory:// URL")
        return value

    @model_validator(mode="after")
    def _fill_embedded_defaults(self) -> Settings:
        home = self.home.expanduser()
        self.home = home
        if not self.database_url:
            self.database_url = f"sqlite:///{home / 'forgetd.db'}"
        if not self.broker_url:
            self.broker_url = f"sqla+sqlite:///{home / 'broker.db'}"
        if not self.result_backend:
            self.result_backend = f"db+sqlite:///{home / 'results.db'}"
        self.store_root = (self.store_root or home / "store").expanduser()
        self.data_roots = self.data_roots or [home / "data"]
        self.cache_root = (self.cache_root or home / "cache").expanduser()
        self.signing_key_path = (
            self.signing_key_path or home / "keys" / "signing.pem"
        ).expanduser()
        self._check_roots_hold_no_state()
        return self

    def _check_roots_hold_no_state(self) -> None:
        """A data root must not reach the service's own state: a dataset or an import path
        there would let a caller read the database, the store or the signing key."""
        assert self.store_root is not None and self.cache_root is not None
        assert self.signing_key_path is not None
        state = {
            "FORGETD_HOME_DIR": self.home,
            "FORGETD_STORE_ROOT": self.store_root,
            "FORGETD_CACHE_ROOT": self.cache_root,
            "FORGETD_SIGNING_KEY_PATH": self.signing_key_path.parent,
        }
        if self.is_embedded_db:
            state["FORGETD_DATABASE_URL"] = Path(self.database_url.split("///", 1)[-1]).parent
        for root in self.data_roots:
            real_root = root.resolve()
            for name, folder in state.items():
                if folder.resolve().is_relative_to(real_root):
                    raise ValueError(
                        f"FORGETD_DATA_ROOTS: {str(root)[:200]!r} holds the service's own "
                        f"state ({name}); choose a data root beside it, not above it"
                    )

    @model_validator(mode="after")
    def _pool_covers_threads(self) -> Settings:
        if self.db_pool_size + self.db_max_overflow < self.api_threads:
            raise ValueError(
                "FORGETD_DB_POOL_SIZE + FORGETD_DB_MAX_OVERFLOW must be at least "
                "FORGETD_API_THREADS (every API thread may hold a connection)"
            )
        return self

    @property
    def is_embedded_db(self) -> bool:
        return self.database_url.startswith("sqlite")

    def ensure_folders(self) -> None:
        for folder in (self.home, self.store_root, self.cache_root, *self.data_roots):
            assert folder is not None
            folder.mkdir(parents=True, exist_ok=True)


class SettingsError(RuntimeError):
    """Raised at start when a setting is invalid; the message names the setting."""


def load_settings() -> Settings:
    try:
        return Settings()
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            field = ".".join(str(part) for part in error["loc"]) or "settings"
            problems.append(f"{field}: {error['msg']}")
        raise SettingsError("invalid settings: " + "; ".join(problems)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()
