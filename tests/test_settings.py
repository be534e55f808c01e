"""Settings: defaults, PRIMUS_* environment, database URLs and the secret key rules."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from cryptography.fernet import Fernet

from db.urls import async_url, sync_url
from primus_safe import settings as settings_module
from primus_safe.settings import Settings, SettingsError


@pytest.fixture(autouse=True)
def no_primus_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test starts from a clean environment (the caller may have PRIMUS_* set)."""
    for name in list(os.environ):
        if name.startswith("PRIMUS_"):
            monkeypatch.delenv(name)


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path))
    settings = Settings()
    assert settings.data_dir == tmp_path / "primus-safe"
    assert settings.temporal_address == "127.0.0.1:7233"
    assert settings.temporal_namespace == "default"
    assert (settings.api_host, settings.api_port) == ("127.0.0.1", 8088)
    assert settings.dev_mode is False and settings.secret_key is None
    assert settings.token_lifetime_seconds == 7 * 24 * 3600
    assert settings.queues.control != settings.queues.ssh != settings.queues.images


def test_environment_prefix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PRIMUS_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("PRIMUS_API_PORT", "9999")
    monkeypatch.setenv("PRIMUS_TEMPORAL_ADDRESS", "temporal.example:7233")
    monkeypatch.setenv("PRIMUS_DEV_MODE", "true")
    monkeypatch.setenv("PRIMUS_QUEUE_SSH", "my-ssh")
    monkeypatch.setenv("API_PORT", "1")  # unprefixed names are ignored
    settings = Settings()
    assert settings.data_dir == tmp_path
    assert settings.api_port == 9999
    assert settings.temporal_address == "temporal.example:7233"
    assert settings.dev_mode is True
    assert settings.queues.ssh == "my-ssh"


def test_sqlite_is_the_default_database_in_the_data_dir(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    assert settings.sqlalchemy_url == f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    assert sync_url(settings.sqlalchemy_url) == f"sqlite:///{tmp_path / 'primus.db'}"


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@db:5432/primus", "postgresql+psycopg://u:p@db:5432/primus"),
        ("postgres://u@db/primus", "postgresql+psycopg://u@db/primus"),
        ("postgresql+psycopg2://u@db/primus", "postgresql+psycopg://u@db/primus"),
        ("postgresql+psycopg://u@db/primus", "postgresql+psycopg://u@db/primus"),
        ("sqlite:////var/lib/primus.db", "sqlite+aiosqlite:////var/lib/primus.db"),
    ],
)
def test_database_url_normalisation(given: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    assert async_url(given) == expected
    assert settings_module.async_url(given) == expected  # still importable from the settings
    monkeypatch.setenv("PRIMUS_DATABASE_URL", given)
    assert Settings().sqlalchemy_url == expected


def test_secret_key_generated_in_dev_mode_and_reused(tmp_path: Path) -> None:
    key = Settings(data_dir=tmp_path, dev_mode=True).encryption_key()
    path = tmp_path / "secret.key"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    Fernet(key)  # a valid key
    assert Settings(data_dir=tmp_path, dev_mode=True).encryption_key() == key
    assert path.read_bytes().strip() == key


def test_secret_key_refused_outside_dev_mode(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="PRIMUS_SECRET_KEY is not set"):
        Settings(data_dir=tmp_path).encryption_key()
    assert not (tmp_path / "secret.key").exists()


def test_secret_key_from_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    key = Fernet.generate_key()
    monkeypatch.setenv("PRIMUS_SECRET_KEY", key.decode())
    assert Settings(data_dir=tmp_path).encryption_key() == key
    assert not (tmp_path / "secret.key").exists()


@pytest.mark.parametrize("bad", ["short", "x" * 44, "not base64 at all!!"])
def test_invalid_secret_key_refused(tmp_path: Path, bad: str) -> None:
    with pytest.raises(SettingsError, match="not a valid Fernet key"):
        Settings(data_dir=tmp_path, secret_key=bad).encryption_key()


def test_invalid_secret_key_file_refused(tmp_path: Path) -> None:
    (tmp_path / "secret.key").write_text("garbage")
    with pytest.raises(SettingsError, match="not a valid Fernet key"):
        Settings(data_dir=tmp_path, dev_mode=True).encryption_key()


def test_workflow_timings_come_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """The composition root builds the timings workflows receive (the probe schedule's among them)."""
    monkeypatch.setenv("PRIMUS_SSH_CONNECT_TIMEOUT_SECONDS", "3")
    monkeypatch.setenv("PRIMUS_SSH_UNREACHABLE_ATTEMPTS", "5")
    monkeypatch.setenv("PRIMUS_NODE_HEARTBEAT_TIMEOUT_SECONDS", "7")
    monkeypatch.setenv("PRIMUS_CLUSTER_PROVISION_TIMEOUT_SECONDS", "99")
    settings = Settings()
    node = settings.node_timings()
    assert (node.connect_timeout, node.unreachable_attempts, node.heartbeat_timeout) == (3, 5, 7)
    assert node.command_timeout == settings.ssh_command_timeout_seconds
    cluster = settings.cluster_timings()
    assert (cluster.connect_timeout, cluster.attempts, cluster.provision_timeout) == (3, 5, 99)
