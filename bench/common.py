"""Shared by the benchmarks: the full-size random checkpoint, a real `hub serve`, generated product photos."""

from __future__ import annotations

import asyncio
import io
import json
import os
import platform
import signal
import random
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
from PIL import Image, ImageDraw, ImageFilter

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "bench" / ".cache"
RESULTS = ROOT / "docs" / "benchmarks.md"


def full_size_model() -> Path:
    """FashionCLIP's architecture (ViT-B/32, 512-d) with random weights: the real compute cost."""
    folder = CACHE / "clip-vit-b32-random"
    if not (folder / "model.safetensors").exists():
        from hub.search.test_checkpoint import write_test_checkpoint

        write_test_checkpoint(folder, full_size=True)
    return folder


def product_photo(seed: int, size: tuple[int, int] = (600, 800)) -> bytes:
    """A generated product shot: a garment-like shape with a pattern on a plain studio background."""
    rng = random.Random(seed)
    img = Image.new("RGB", size, tuple(rng.randrange(200, 256) for _ in range(3)))
    draw = ImageDraw.Draw(img)
    w, h = size
    colour = tuple(rng.randrange(256) for _ in range(3))
    body = [(w * 0.3, h * 0.15), (w * 0.7, h * 0.15), (w * 0.8, h * 0.9), (w * 0.2, h * 0.9)]
    draw.polygon(body, fill=colour)
    for _ in range(rng.randrange(10, 40)):
        x, y = rng.uniform(w * 0.25, w * 0.75), rng.uniform(h * 0.2, h * 0.85)
        r = rng.uniform(5, 25)
        draw.ellipse((x - r, y - r, x + r, y + r), fill=tuple(rng.randrange(256) for _ in range(3)))
    img = img.filter(ImageFilter.GaussianBlur(0.8))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=88)
    return buf.getvalue()


class RawClient:
    """A lean HTTP/1.1 client for load: kept-alive connections (at most ``connections``), requests written as
    bytes, answers read by their Content-Length. httpx spent 5 ms of CPU per request at 200 requests/s here, a
    core of this two-core machine: a bench with it measured its client."""

    def __init__(self, url: str, connections: int) -> None:
        parts = httpx.URL(url)
        self.host, self.port, self.path = parts.host, parts.port or 80, parts.raw_path.decode()
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []
        self.slots = asyncio.Semaphore(connections)

    async def request(self, method: str, body: bytes, headers: dict[str, str]) -> tuple[int, bytes]:
        """(status, body) of one request to the URL; (0, b"") if the connection failed."""
        async with self.slots:
            stream = self.idle.pop() if self.idle else await asyncio.open_connection(self.host, self.port)
            reader, writer = stream
            head = "".join(f"{k}: {v}\r\n" for k, v in headers.items())
            writer.write(f"{method} {self.path} HTTP/1.1\r\nHost: {self.host}:{self.port}\r\n{head}"
                         f"Content-Length: {len(body)}\r\n\r\n".encode() + body)
            try:
                status_line = await reader.readline()
                length = 0
                while (line := await reader.readline()) not in (b"\r\n", b""):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                answer = await reader.readexactly(length)
                status = int(status_line.split()[1])
            except (OSError, ValueError, IndexError, asyncio.IncompleteReadError):
                writer.close()
                return 0, b""
            self.idle.append(stream)
            return status, answer

    async def close(self) -> None:
        for _, writer in self.idle:
            writer.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_http(url: str, procs: list[subprocess.Popen], what: str, timeout: float = 300) -> None:
    """Until ``url`` answers 200; fails loudly if one of ``procs`` exits first or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=5).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not become ready at {url}")
        time.sleep(0.3)


@contextmanager
def hub_server(home: Path, model: Path, **env: str):
    """`hub serve` on the embedded default (in-process workers), as a user runs it."""
    port = free_port()
    environ = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {
        "HUB_HOME": str(home), "HUB_MODEL": str(model), "HUB_RATE_LIMIT": "1000000/minute",
        "HUB_STOREFRONT_RATE_LIMIT": "1000000/minute",
        "HUB_LOG_LEVEL": os.environ.get("HUB_LOG_LEVEL", "WARNING"), **env,
    }
    log = (home / "serve.log").open("wb") if home.mkdir(parents=True, exist_ok=True) is None else None
    proc = subprocess.Popen([sys.executable, "-m", "hub", "serve", "--port", str(port)], env=environ,
                            stdout=log, stderr=subprocess.STDOUT, cwd=home)
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_http(f"{base}/ready", [proc], f"hub serve (see {home / 'serve.log'})")
        yield base, environ | {"BENCH_SERVE_PID": str(proc.pid)}
    finally:
        proc.terminate()
        proc.wait(60)


def cpu_seconds_of(pid: int | str, thread: int | str | None = None) -> float:
    """User + system CPU time a process (or one of its threads: the main thread's id is the process's) has used
    so far (0 if it is gone)."""
    stat = f"/proc/{pid}/stat" if thread is None else f"/proc/{pid}/task/{thread}/stat"
    try:
        fields = Path(stat).read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_of(pid: int | str) -> float:
    """A process's resident memory, in MB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


@contextmanager
def profiled(pid: int | str, name: str, seconds: float) -> Iterator[None]:
    """py-spy's samples of process ``pid`` while the block runs, into ``$BENCH_PROFILE/name.txt`` (collapsed
    stacks, each under its thread's name), when ``BENCH_PROFILE`` names a folder and py-spy is installed (``pip install py-spy``)."""
    folder = os.environ.get("BENCH_PROFILE")
    spy = Path(sys.executable).parent / "py-spy"
    if not folder or not spy.exists():
        yield
        return
    proc = subprocess.Popen([str(spy), "record", "-p", str(pid), "--nonblocking", "--threads", "--format", "raw", "-d",
                             str(int(seconds)), "-o", f"{folder}/{name}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # py-spy writes what it has on an interrupt
        proc.wait()


@contextmanager
def shop_home(model: Path) -> Iterator[tuple[Path, dict]]:
    """A fresh, migrated HUB_HOME (the embedded default) with one shop: ``(home, shop)``."""
    with tempfile.TemporaryDirectory(prefix="hub-bench-") as tmp:
        home = Path(tmp)
        environ = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {
            "HUB_HOME": str(home), "HUB_MODEL": str(model)}
        subprocess.run([sys.executable, "-m", "hub", "migrate"], env=environ, cwd=home, check=True,
                       capture_output=True)
        yield home, create_shop(environ, home)


def create_shop(environ: dict[str, str], home: Path) -> dict:
    out = subprocess.run([sys.executable, "-m", "hub", "shops", "create", "--name", "Bench", "--email",
                          f"bench{time.time_ns()}@example.com", "--json"], env=environ, cwd=home,
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout)


def machine() -> str:
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (f"{cpu}, {os.cpu_count()} cores, {mem:.0f} GiB RAM, no GPU; Python {platform.python_version()}, "
            f"torch {torch.__version__} ({torch.get_num_threads()} threads)")


def write_section(name: str, body: str) -> None:
    """Replace (or add) the ``## name`` section of docs/benchmarks.md."""
    RESULTS.parent.mkdir(exist_ok=True)
    text = RESULTS.read_text() if RESULTS.exists() else (
        "# Benchmarks\n\nWritten by the scripts in `bench/`; rerun them to refresh a section. The model is "
        "FashionCLIP's architecture (CLIP ViT-B/32, 512-d) with random weights: the real compute cost, "
        "meaningless rankings.\n"
    )
    marker = f"\n## {name}\n"
    if marker in text:
        start = text.index(marker)
        nxt = text.find("\n## ", start + len(marker))
        text = text[:start] + text[nxt if nxt != -1 else len(text):]
    RESULTS.write_text(text.rstrip("\n") + "\n" + marker + "\n" + body.strip("\n") + "\n")
