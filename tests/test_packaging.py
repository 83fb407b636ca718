"""A plain (not editable) install of the package is complete: it ships its migrations and ``py.typed``, and
its ``hub migrate`` and ``hub serve`` work from a fresh virtual environment, far from the source tree."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import sysconfig
import venv
import zipfile
from pathlib import Path

import httpx

from tests.services import free_port, wait_for_port

ROOT = Path(__file__).resolve().parents[1]


def test_a_plain_install_migrates_and_serves(tmp_path, test_model):
    dist = tmp_path / "dist"
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "--wheel-dir", str(dist), str(ROOT)], check=True, cwd=tmp_path, timeout=300)
    wheel = next(dist.glob("fashion_hub-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    assert {"hub/py.typed", "hub/db/migrations/env.py", "hub/db/migrations/script.py.mako"} <= names
    assert {n.rsplit("/", 1)[-1] for n in names if n.startswith("hub/db/migrations/versions/")} >= {
        "0001_initial_schema.py", "0005_tenant_safety.py"}

    # a fresh venv with the wheel alone; its dependencies are borrowed from the test venv (PYTHONPATH, where
    # the editable install is inert: .pth files are not read from there) to keep the test offline and quick
    fresh = tmp_path / "venv"
    venv.create(fresh, with_pip=False)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(fresh / "bin" / "python"), "install", "--quiet",
                    "--no-deps", "--no-index", str(wheel)], check=True, cwd=tmp_path, timeout=300)
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")}
    env.update(PYTHONPATH=sysconfig.get_paths()["purelib"], HUB_HOME=str(tmp_path / "data"),
               HUB_MODEL=str(test_model))
    where = subprocess.run([str(fresh / "bin" / "python"), "-c", "import hub; print(hub.__file__)"], env=env,
                           cwd=tmp_path, capture_output=True, text=True, check=True)
    assert where.stdout.startswith(str(fresh)), where.stdout  # the installed copy, not the source tree

    migrated = subprocess.run([str(fresh / "bin" / "hub"), "migrate"], env=env, cwd=tmp_path, capture_output=True,
                              text=True, timeout=120)
    assert migrated.returncode == 0, migrated.stderr
    with sqlite3.connect(tmp_path / "data" / "hub.db") as db:
        tables = {row[0] for row in db.execute("select name from sqlite_master where type = 'table'")}
    assert {"shops", "images", "connections", "alembic_version"} <= tables

    port = free_port()
    with (tmp_path / "serve.log").open("w+") as log:
        server = subprocess.Popen([str(fresh / "bin" / "hub"), "serve", "--port", str(port)], env=env,
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT)
        try:
            wait_for_port("127.0.0.1", port, timeout=60)
            assert httpx.get(f"http://127.0.0.1:{port}/health", timeout=10).json()["status"] == "ok"
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(timeout=30)
