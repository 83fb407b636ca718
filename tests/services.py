"""Real services for the tests: the machine's own when they answer, otherwise a throwaway instance."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(host: str, port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_open(host, port):
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on {host}:{port} after {timeout} s")


@dataclass
class Service:
    url: str
    stop: "callable[[], None]"  # type: ignore[valid-type]


def _pg_bin(name: str) -> str | None:
    found = sorted(glob.glob(f"/usr/lib/postgresql/*/bin/{name}"))
    return found[-1] if found else shutil.which(name)


def postgres() -> Service:
    """PostgreSQL at 127.0.0.1:5432 (trust auth) or a throwaway cluster on a free port."""
    if os.environ.get("HUB_TEST_POSTGRES_URL"):
        return Service(os.environ["HUB_TEST_POSTGRES_URL"], lambda: None)
    if port_open("127.0.0.1", 5432):
        return Service("postgresql://postgres@127.0.0.1:5432/postgres", lambda: None)
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        raise RuntimeError("PostgreSQL is not running on 127.0.0.1:5432 and no initdb/pg_ctl is installed")
    data = Path(tempfile.mkdtemp(prefix="hub-test-pg-"))
    port = free_port()
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses to run as root
        shutil.chown(data, "postgres")
        run_as = ["runuser", "-u", "postgres", "--"]
    subprocess.run([*run_as, initdb, "-D", str(data), "-U", "postgres", "--auth=trust"], check=True,
                   capture_output=True)
    subprocess.run(
        [*run_as, pg_ctl, "-D", str(data), "-w", "-l", str(data / "log"), "-o",
         f"-p {port} -k {data} -c listen_addresses=127.0.0.1 -c fsync=off", "start"],
        check=True, capture_output=True,
    )

    def stop() -> None:
        subprocess.run([*run_as, pg_ctl, "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(data, ignore_errors=True)

    return Service(f"postgresql://postgres@127.0.0.1:{port}/postgres", stop)


def redis() -> Service:
    """Redis at 127.0.0.1:6379 or a throwaway server on a free port."""
    if os.environ.get("HUB_TEST_REDIS_URL"):
        return Service(os.environ["HUB_TEST_REDIS_URL"], lambda: None)
    if port_open("127.0.0.1", 6379):
        return Service("redis://127.0.0.1:6379/0", lambda: None)
    binary = shutil.which("redis-server")
    if not binary:
        raise RuntimeError("Redis is not running on 127.0.0.1:6379 and redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly",
                             "no"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Service(f"redis://127.0.0.1:{port}/0", stop)


def s3() -> Service:
    """An S3-protocol server of the test run's own: moto's server mode (``moto[server]``, a test dependency) on a
    free port. Any access key works; buckets are made with a plain ``PUT /bucket``."""
    binary = shutil.which("moto_server", path=str(Path(sys.executable).parent)) or shutil.which("moto_server")
    if not binary:
        raise RuntimeError("moto_server is not installed (pip install 'moto[server]')")
    port = free_port()
    proc = subprocess.Popen([binary, "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    wait_for_port("127.0.0.1", port, timeout=60)

    def stop() -> None:
        proc.terminate()
        proc.wait(10)

    return Service(f"http://127.0.0.1:{port}", stop)
