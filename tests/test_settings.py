"""Settings: HUB_* variables, defaults, and one clear line per bad value."""

from __future__ import annotations

import subprocess
import sys

import pytest

from hub.settings import SettingsError, load_settings


def test_defaults_are_the_embedded_setup(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = load_settings()
    assert s.home == tmp_path / ".hub"
    assert s.db_url == f"sqlite+aiosqlite:///{tmp_path / '.hub' / 'hub.db'}"
    assert s.broker_url == "memory://" and s.chroma_url is None
    assert s.model == "patrickjohncyh/fashion-clip" and s.allow_private_fetch is False


def test_environment_and_normalised_urls(monkeypatch, tmp_path):
    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.setenv("HUB_DATABASE_URL", "postgres://u:p@db:5432/hub")
    monkeypatch.setenv("HUB_BROKER_URL", "redis://redis:6379/0")
    monkeypatch.setenv("HUB_CHROMA_URL", "http://chroma:8000/")
    monkeypatch.setenv("HUB_ALLOW_PRIVATE_FETCH", "true")
    s = load_settings()
    assert s.db_url == "postgresql+asyncpg://u:p@db:5432/hub" and not s.is_embedded_db
    assert s.chroma_url == "http://chroma:8000" and s.allow_private_fetch is True


def test_every_bad_value_is_named(monkeypatch):
    for name, value in {
        "HUB_DATABASE_URL": "mysql://x",
        "HUB_BROKER_URL": "amqp://x",
        "HUB_CHROMA_URL": "chroma:8000",
        "HUB_SMTP_URL": "mail.example.com",
        "HUB_RATE_LIMIT": "lots",
        "HUB_MAX_UPLOAD_BYTES": "ten",
        "HUB_SECRET_KEY": "short",
        "HUB_LOG_LEVEL": "LOUD",
    }.items():
        monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    lines = str(err.value).splitlines()
    assert len(lines) == 8
    for name in ("DATABASE_URL", "BROKER_URL", "CHROMA_URL", "SMTP_URL", "RATE_LIMIT", "MAX_UPLOAD_BYTES",
                 "SECRET_KEY", "LOG_LEVEL"):
        assert any(line.startswith(f"HUB_{name}: ") for line in lines), name


def test_cli_refuses_bad_settings_with_exit_2(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-m", "hub", "migrate"],
        env={"HUB_HOME": str(tmp_path), "HUB_DATABASE_URL": "oracle://x", "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, cwd=tmp_path,
    )
    assert proc.returncode == 2
    assert "HUB_DATABASE_URL: must be a postgresql://… or sqlite:///… URL" in proc.stderr
    assert "Traceback" not in proc.stderr
