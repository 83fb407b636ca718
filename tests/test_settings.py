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


def test_renamed_settings_still_read_their_old_names(monkeypatch, tmp_path, caplog):
    """HUB_EMBED_* named retries and leases for images; they govern deliveries and jobs too, so they were renamed.
    The old names still work from the environment and as keywords; the new name wins; start-up warns."""
    import logging

    from hub.bootstrap import build

    monkeypatch.setenv("HUB_HOME", str(tmp_path))
    monkeypatch.setenv("HUB_EMBED_MAX_ATTEMPTS", "5")
    monkeypatch.setenv("HUB_EMBED_RETRY_SECONDS", "2.5")
    monkeypatch.setenv("HUB_EMBED_LEASE_SECONDS", "60")
    s = load_settings()
    assert (s.retry_max_attempts, s.retry_first_seconds, s.lease_seconds) == (5, 2.5, 60)
    assert s.retry_delay(2).total_seconds() == 5.0 and s.lease.total_seconds() == 60
    monkeypatch.setenv("HUB_RETRY_MAX_ATTEMPTS", "7")
    assert load_settings().retry_max_attempts == 7
    assert load_settings(lease_seconds=31).lease_seconds == 31
    monkeypatch.setenv("LEASE_SECONDS", "1")  # unprefixed names are nobody's settings
    assert load_settings().lease_seconds == 60
    with caplog.at_level(logging.WARNING, logger="hub.bootstrap"):
        build(load_settings(), "cli")
    warned = {r.setting for r in caplog.records if hasattr(r, "setting")}
    assert "HUB_EMBED_LEASE_SECONDS (now HUB_LEASE_SECONDS)" in warned and len(warned) == 3
    assert "HUB_EMBED_MAX_ATTEMPTS (now HUB_RETRY_MAX_ATTEMPTS; HUB_RETRY_MAX_ATTEMPTS is set too and is used)" \
        in warned


def test_old_names_in_a_dotenv_file_are_read_and_warned_about(monkeypatch, tmp_path):
    from hub.settings import old_names_in_use

    monkeypatch.chdir(tmp_path)
    (tmp_path / ".env").write_text("HUB_EMBED_RETRY_SECONDS=4\nexport HUB_LOG_LEVEL=DEBUG\n")
    assert load_settings().retry_first_seconds == 4
    assert old_names_in_use({}) == ["HUB_EMBED_RETRY_SECONDS (now HUB_RETRY_FIRST_SECONDS)"]


def test_a_bad_value_under_an_old_or_new_name_is_named(monkeypatch):
    monkeypatch.setenv("HUB_EMBED_MAX_ATTEMPTS", "many")
    with pytest.raises(SettingsError, match="MAX_ATTEMPTS"):
        load_settings()
    monkeypatch.delenv("HUB_EMBED_MAX_ATTEMPTS")
    monkeypatch.setenv("HUB_LEASE_SECONDS", "-1")
    with pytest.raises(SettingsError, match="HUB_LEASE_SECONDS"):
        load_settings()
