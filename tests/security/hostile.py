"""Hostile hosts on loopback, standing in for what a tenant can point the hub at: a server that records every
request it gets (where did a secret go?), streams an endless answer, trickles bytes, or holds a request open
until the test lets it go."""

from __future__ import annotations

import json
import threading
import time
import zlib
from typing import Any

from hub.testing import FakePlatform, PlatformHandler


class HostileServer(FakePlatform):
    """Every request is recorded (method, path, headers, body). Behaviour by path prefix:

    - ``/endless``: a JSON array that never ends (chunked), up to ``endless_cap`` bytes, then the connection drops;
    - ``/trickle``: an image-like answer sent one byte every ``trickle_seconds``;
    - ``/gzip-tail``, ``/gzip-bomb``: compressed answers that end and go on, or decompress without end;
    - ``/weird``: valid JSON of an unexpected shape (``[]`` to reads, ``[1]`` to writes);
    - ``/hold``: nothing until ``release`` is set (``held`` is set when the request arrived), then ``[]``;
    - anything else: ``{}`` with 200.
    """

    def __init__(self, endless_cap: int = 400 * 1024 * 1024, trickle_seconds: float = 1.0) -> None:
        self.requests: list[dict[str, Any]] = []
        self.endless_cap = endless_cap
        self.trickle_seconds = trickle_seconds
        self.held = threading.Event()
        self.release = threading.Event()
        self.sent_endless = 0
        self.lock = threading.Lock()
        server = self

        class Handler(PlatformHandler):
            protocol_version = "HTTP/1.1"

            def _record(self, method: str) -> bytes:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with server.lock:
                    server.requests.append({"method": method, "path": self.path, "headers": dict(self.headers),
                                            "body": body})
                return body

            def _handle(self, method: str) -> None:
                self._record(method)
                try:
                    if self.path.startswith("/endless"):
                        self._endless()
                    elif self.path.startswith("/trickle"):
                        self._trickle()
                    elif self.path.startswith("/gzip-tail"):
                        self._gzip(tail=True)
                    elif self.path.startswith("/gzip-bomb"):
                        self._gzip(tail=False)
                    elif self.path.startswith("/weird"):  # well-formed JSON of the wrong shape
                        self._plain(200, b"[]" if method == "GET" else b"[1]")
                    elif self.path.startswith("/hold"):
                        server.held.set()
                        server.release.wait(120)
                        self._plain(200, b"[]")
                    else:
                        self._plain(200, b"{}")
                except (BrokenPipeError, ConnectionResetError):
                    pass

            def _plain(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _endless(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                item = json.dumps({"id": 1, "name": "x" * 1000, "images": []}).encode() + b","
                chunk = b"[" + item * 1000
                while server.sent_endless < server.endless_cap:
                    self.wfile.write(f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n")
                    server.sent_endless += len(chunk)
                    chunk = item * 1000
                self.close_connection = True

            def _gzip(self, tail: bool) -> None:
                """``tail``: a tiny complete gzip answer, then junk after its end, forever; otherwise a gzip
                stream of zeros that never ends (each MB of it is gigabytes once decompressed)."""
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Encoding", "gzip")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()

                def chunk(data: bytes) -> None:
                    if data:
                        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                        server.sent_endless += len(data)

                compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
                if tail:
                    chunk(compressor.compress(b"[]") + compressor.flush())
                zeros = bytes(1024 * 1024)
                while server.sent_endless < server.endless_cap:
                    chunk(b"junk" * 16384 if tail else compressor.compress(zeros))
                self.close_connection = True

            def _trickle(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "image/jpeg")
                self.send_header("Content-Length", "100000")
                self.end_headers()
                for _ in range(100000):
                    self.wfile.write(b"\xff")
                    self.wfile.flush()
                    time.sleep(server.trickle_seconds)

            def do_GET(self) -> None:  # noqa: N802
                self._handle("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._handle("POST")

            def do_DELETE(self) -> None:  # noqa: N802
                self._handle("DELETE")

        super().__init__(Handler)

    def close(self) -> None:
        self.release.set()
        super().close()

    def saw(self, needle: str) -> bool:
        """True if any request carried ``needle`` anywhere (path, headers or body)."""
        with self.lock:
            return any(needle in r["path"] or needle in json.dumps(r["headers"]) or needle.encode() in r["body"]
                       for r in self.requests)


def rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def reset_peak_rss() -> None:
    """Linux: make VmHWM (peak RSS) start again from the current RSS."""
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")


def peak_rss_bytes() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM")
