from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from app.settings import Settings, SettingsError, load_settings
from models_store import LocalStore

KEY = hashlib.sha256(b"k").hexdigest()


def test_store_round_trip_and_atomic_replace(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    digest = store.put("checkpoints", KEY, b"one")
    assert digest == hashlib.sha256(b"one").hexdigest()
    assert store.get("checkpoints", KEY) == b"one"
    store.put("checkpoints", KEY, b"two")
    assert store.get("checkpoints", KEY) == b"two"
    # No temporary files are left behind.
    assert [p.name for p in store.path("checkpoints", KEY).parent.iterdir()] == [KEY]
    assert store.delete("checkpoints", KEY) and not store.exists("checkpoints", KEY)
    with pytest.raises(KeyError):
        store.get("checkpoints", KEY)


def test_store_refuses_keys_that_could_escape_its_root(tmp_path: Path) -> None:
    store = LocalStore(tmp_path)
    for bad in ("../etc/passwd", "ABC", "short"):
        with pytest.raises(ValueError):
            store.put("checkpoints", bad, b"x")
    with pytest.raises(ValueError):
        store.put("../x", KEY, b"x")


def test_embedded_defaults_live_under_the_home_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("DATABASE_URL", "BROKER_URL", "RESULT_BACKEND"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(f"FORGETD_{name}", raising=False)
    monkeypatch.setenv("FORGETD_HOME_DIR", str(tmp_path))
    settings = Settings()
    assert settings.database_url == f"sqlite:///{tmp_path / 'forgetd.db'}"
    assert settings.broker_url.startswith("sqla+sqlite:///")
    assert settings.result_backend.startswith("db+sqlite:///")
    assert settings.store_root == tmp_path / "store"


def test_plain_and_prefixed_names_both_work(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("FORGETD_BROKER_URL", "redis://localhost:6379/0")
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.broker_url == "redis://localhost:6379/0"


@pytest.mark.parametrize(
    ("name", "value", "named"),
    [
        ("FORGETD_DEVICE", "tpu", "FORGETD_DEVICE"),
        ("FORGETD_DATABASE_URL", "mysql://x", "FORGETD_DATABASE_URL"),
        ("FORGETD_BROKER_URL", "kafka://x", "FORGETD_BROKER_URL"),
        ("FORGETD_HOLDOUT_FRACTION", "1.5", "FORGETD_HOLDOUT_FRACTION"),
    ],
)
def test_bad_settings_fail_at_start_naming_the_setting(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, named: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=named):
        load_settings()


def test_data_roots_default_to_the_home_data_folder_and_split_on_colons(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FORGETD_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.delenv("FORGETD_DATA_ROOTS", raising=False)
    assert Settings().data_roots == [tmp_path / "home" / "data"]
    monkeypatch.setenv("FORGETD_DATA_ROOTS", f"{tmp_path}/a:{tmp_path}/b:")
    assert Settings().data_roots == [tmp_path / "a", tmp_path / "b"]


@pytest.mark.parametrize(
    ("roots", "says"),
    [
        ("relative/data", "absolute"),
        ("{tmp}", "FORGETD_HOME_DIR"),  # would expose the database, store and signing key
        ("{tmp}/home/store/..", "FORGETD_HOME_DIR"),
        ("/", "own state"),
    ],
)
def test_data_roots_that_reach_the_service_state_are_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, roots: str, says: str
) -> None:
    monkeypatch.setenv("FORGETD_HOME_DIR", str(tmp_path / "home"))
    monkeypatch.setenv("FORGETD_DATA_ROOTS", roots.format(tmp=tmp_path))
    with pytest.raises(SettingsError, match=says):
        load_settings()
