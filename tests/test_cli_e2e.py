"""The README flow with the real commands: `hub serve`, `hub shops create`, upload, list, delete, stop."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import IO

import httpx
import pytest

from tests.images import photo
from tests.services import free_port, wait_for_port


def hub(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "hub", *args], env=env, cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.fixture(params=["embedded", "postgres"])
def environment(request, tmp_path, test_model):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env["HUB_HOME"] = str(tmp_path / "data")
    env["HUB_MODEL"] = str(test_model)
    if request.param == "postgres":
        url = request.getfixturevalue("make_pg_database")()
        env["HUB_DATABASE_URL"] = url.replace("+asyncpg", "")
        migrated = hub("migrate", env=env, cwd=tmp_path)
        assert migrated.returncode == 0, migrated.stderr
        assert "up to date" in migrated.stdout and "postgres@" in migrated.stdout
    return env


def wait_until(check, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def start_service(env: dict[str, str], tmp_path: Path) -> tuple[subprocess.Popen[bytes], int, IO[str]]:
    """`hub serve` on a free port, its output in serve.log; returns once it listens."""
    port = free_port()
    log = (tmp_path / "serve.log").open("w+")
    server = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--port", str(port)], env=env, cwd=tmp_path,
                              stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_port("127.0.0.1", port, timeout=60)
    except BaseException:
        server.kill()
        raise
    return server, port, log


def test_readme_flow(environment, tmp_path):
    env = environment
    server, port, log = start_service(env, tmp_path)
    try:
        created = hub("shops", "create", "--name", "Demo Boutique", "--email", "demo@example.com", "--json",
                      env=env, cwd=tmp_path)
        assert created.returncode == 0, created.stderr
        shop = json.loads(created.stdout)
        headers = {"Authorization": f"Bearer {shop['secret_key']}"}
        base = f"http://127.0.0.1:{port}"
        with httpx.Client(base_url=base, headers=headers, timeout=30) as api:
            wait_until(lambda: api.get("/ready").json()["status"] == "ready")
            up = api.post("/api/v1/images", files={"file": ("dress.jpg", photo(1), "image/jpeg")},
                          data={"name": "Red dress"})
            assert up.status_code == 202, up.text
            image = up.json()
            assert image["file_url"] == f"{base}/api/v1/images/{image['id']}/file"
            listed = api.get("/api/v1/images").json()["items"]
            assert [i["name"] for i in listed] == ["Red dress"]
            wait_until(lambda: api.get(f"/api/v1/images/{image['id']}").json()["status"] == "ready")
            found = api.post("/api/v1/recommendations", json={"prompt": "red dress"},
                             headers={"Authorization": f"Bearer {shop['publishable_key']}"})
            assert found.status_code == 200, found.text
            assert [r["id"] for r in found.json()["results"]] == [image["id"]]
            assert api.get(image["file_url"]).content == photo(1)
            assert api.delete(f"/api/v1/images/{image['id']}").status_code == 204
            assert api.get("/api/v1/images").json()["items"] == []
            human = hub("shops", "create", "--name", "Second", "--email", "second@example.com", env=env, cwd=tmp_path)
            assert "secret key:" in human.stdout and "hub_sk_" in human.stdout
            dup = hub("shops", "create", "--name", "Again", "--email", "demo@example.com", env=env, cwd=tmp_path)
            assert dup.returncode != 0 and "already exists" in dup.stderr
    finally:
        server.send_signal(signal.SIGTERM)
        code = server.wait(timeout=30)
    log.seek(0)
    logs = log.read()
    # uvicorn finishes in-flight work, runs the shutdown, then re-raises SIGTERM for the supervisor
    assert code in (0, -signal.SIGTERM), logs
    assert "Application shutdown complete" in logs
    assert '"path": "/api/v1/images"' in logs
    assert shop["secret_key"] not in logs and shop["secret_key"][7:] not in logs
    for line in logs.splitlines():
        if line.startswith("{"):
            json.loads(line)


def test_import_command_with_a_running_service(environment, tmp_path):
    env = {**environment, "HUB_SWEEP_SECONDS": "1"}
    folder = tmp_path / "catalog"
    (folder / "dresses").mkdir(parents=True)
    (folder / "dresses" / "red.jpg").write_bytes(photo(31))
    (folder / "coat.jpg").write_bytes(photo(32))
    (folder / "manifest.csv").write_text(
        "file,name,category,product_id\n"
        "dresses/red.jpg,Red dress,Dresses,SKU-9\n"
        "../outside.jpg,Escape,,\n"
        "coat.jpg,Wool coat,Jackets & Coats,\n"
    )
    server, port, _ = start_service(env, tmp_path)
    try:
        shop = json.loads(hub("shops", "create", "--name", "Importer", "--email", "imp@example.com", "--json",
                              env=env, cwd=tmp_path).stdout)
        done = hub("import", str(folder), "--shop", str(shop["id"]), env=env, cwd=tmp_path)
        assert done.returncode == 1, done.stderr  # one row failed
        assert "2 images imported, 0 already there, 1 rows failed" in done.stdout
        assert "line 3: file '../outside.jpg' is not in the import" in done.stdout
        assert "importing catalog" in done.stderr and "3/3" in done.stderr  # the progress bar
        again = hub("import", str(folder / "manifest.csv"), "--shop", str(shop["id"]), "--json", env=env, cwd=tmp_path)
        job = json.loads(again.stdout)
        assert job["result"] == {"skipped: already imported": 2} and job["failed"] == 1
        missing = hub("import", str(folder), "--shop", "999", env=env, cwd=tmp_path)
        assert missing.returncode != 0 and "shop 999 not found" in missing.stderr
        (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 not really a zip")
        broken = hub("import", str(tmp_path / "broken.zip"), "--shop", str(shop["id"]), env=env, cwd=tmp_path)
        assert broken.returncode != 0 and "cannot import broken.zip" in broken.stderr
        assert "Traceback" not in broken.stderr

        headers = {"Authorization": f"Bearer {shop['secret_key']}"}
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=30) as api:
            def all_ready() -> bool:
                items = api.get("/api/v1/images").json()["items"]
                return len(items) == 2 and all(i["status"] == "ready" for i in items)

            wait_until(all_ready)  # the running service's sweep queued what the command imported
            names = {i["name"]: i for i in api.get("/api/v1/images").json()["items"]}
            assert names["Red dress"]["category"]["name"] == "Dresses"
            assert names["Wool coat"]["category"]["name"] == "Jackets & Coats"
            jobs = api.get("/api/v1/jobs").json()["items"]
            assert [j["kind"] for j in jobs] == ["import", "import"]
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(timeout=30)


def test_worker_needs_a_shared_queue(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {"HUB_HOME": str(tmp_path)}
    proc = hub("worker", env=env, cwd=tmp_path)
    assert proc.returncode != 0 and "HUB_BROKER_URL=redis://" in proc.stderr


def test_model_download_of_a_local_folder(tmp_path, test_model):
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {"HUB_HOME": str(tmp_path)}
    proc = hub("model", "download", str(test_model), env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert str(test_model) in proc.stdout
