"""Webhook acknowledgement under load: how long a platform waits for the hub's answer.

A WooCommerce store (the emulator from the tests, on loopback) is connected to a real ``hub serve``; then signed
``product.updated`` deliveries — each one giving a product a new photo, so the hub also fetches and embeds an
image per delivery while it answers the next ones — are sent open-loop at each rate for ``--seconds``. Latency is
measured from the moment a delivery was due, not from when the client got round to sending it (a client that
falls behind must not hide the hub's delay). Between rates the hub is given time to finish the work it accepted.

``--mode embedded`` is the default deployment (SQLite, in-process workers and vector store); ``--mode server``
runs ``hub serve`` (API only) and one ``hub worker`` with PostgreSQL, Redis and a Chroma server.

    .venv/bin/python -m bench.webhooks --rates 20,50,100,200 --seconds 5 --mode embedded --mode server

A setting of the hub under test is given as ``BENCH_HUB_<NAME>`` (``BENCH_HUB_WORKER_CONCURRENCY=8``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager, ExitStack
from datetime import date
from pathlib import Path

import httpx

from bench.common import (RawClient, cpu_seconds_of, free_port, full_size_model, machine, profiled, rss_of, wait_for_http,
                          write_section)

OPERATOR = "bench-operator-token-0000000000000001"
POSTGRES = os.environ.get("BENCH_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS = os.environ.get("BENCH_REDIS", "redis://127.0.0.1:6379/0")
WEBHOOK_ROUTE = "/webhooks/{connector_name}/{connection_id}"  # (the label Litestar's metrics give it)


@contextmanager
def _process(argv: list[str], env: dict[str, str], log: Path, cwd: Path) -> Iterator[subprocess.Popen]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
    try:
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _admin(sql: str) -> None:
    """One statement on the local PostgreSQL's admin database (in a thread: the caller may be in an event loop)."""
    import asyncpg
    from concurrent.futures import ThreadPoolExecutor

    async def run() -> None:
        conn = await asyncpg.connect(POSTGRES)
        try:
            await conn.execute(sql)
        finally:
            await conn.close()

    with ThreadPoolExecutor(1) as pool:
        pool.submit(asyncio.run, run()).result()


@contextmanager
def _postgres_database(name: str) -> Iterator[str]:
    """A fresh database on the local PostgreSQL, dropped afterwards."""
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield POSTGRES.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://") + f"/{name}"
    finally:
        _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextmanager
def hub(mode: str, home: Path, model: Path) -> Iterator[tuple[str, list[int]]]:
    """A running hub in ``mode``: (its URL, the pids whose memory and CPU are the hub's)."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith("HUB_")} | {
        "HUB_HOME": str(home / "data"), "HUB_MODEL": str(model), "HUB_ADMIN_TOKEN": OPERATOR,
        "HUB_SECRET_KEY": "bench-secret-key-000000000000000001", "HUB_PUBLIC_URL": base,
        "HUB_ALLOW_PRIVATE_FETCH": "true", "HUB_RATE_LIMIT": "1000000/minute",
        "HUB_AUTH_FAILURE_LIMIT": "1000000/minute", "HUB_SIGNUP_RATE_LIMIT": "1000000/minute",
        "HUB_STOREFRONT_RATE_LIMIT": "1000000/minute", "HUB_LOG_LEVEL": os.environ.get("HUB_LOG_LEVEL", "WARNING"),
    } | {name[len("BENCH_"):]: value for name, value in os.environ.items() if name.startswith("BENCH_HUB_")}
    hub_cmd = [sys.executable, "-m", "hub"]
    with ExitStack() as stack:
        if mode == "server":
            env["HUB_DATABASE_URL"] = stack.enter_context(_postgres_database(f"bench_webhooks_{time.time_ns()}"))
            env["HUB_BROKER_URL"] = REDIS
            chroma_port = free_port()
            chroma = stack.enter_context(_process(
                [str(Path(sys.executable).parent / "chroma"), "run", "--path", str(home / "chroma"), "--port",
                 str(chroma_port)], env, home / "chroma.log", home))
            env["HUB_CHROMA_URL"] = f"http://127.0.0.1:{chroma_port}"
            wait_for_http(f"{env['HUB_CHROMA_URL']}/api/v2/heartbeat", [chroma], "the Chroma server", 120)
        subprocess.run([*hub_cmd, "migrate"], env=env, cwd=home, check=True, capture_output=True)
        procs = [stack.enter_context(_process([*hub_cmd, "serve", "--port", str(port)], env, home / "serve.log",
                                              home))]
        if mode == "server":
            procs.append(stack.enter_context(_process([*hub_cmd, "worker"], env, home / "worker.log", home)))
        try:
            wait_for_http(f"{base}/ready", procs, "the hub")
            yield base, [p.pid for p in procs]
        except BaseException:
            for log in sorted(home.glob("*.log")):
                print(f"--- {log.name} (end)\n{log.read_text(errors='replace')[-6000:]}", file=sys.stderr)
            raise


def _rss_mb(pids: list[int]) -> float:
    return sum(rss_of(pid) for pid in pids)


async def _drain(client: httpx.AsyncClient, base: str, headers: dict[str, str], connection: int,
                 timeout: float) -> tuple[float, bool]:
    """Wait until every accepted delivery is applied and every image embedded: (seconds waited, drained)."""
    start = time.monotonic()
    while time.monotonic() - start < timeout:
        busy = 0
        for status in ("received", "processing"):
            resp = await client.get(f"{base}/api/v1/connections/{connection}/deliveries",
                                    params={"status": status, "limit": 1}, headers=headers)
            resp.raise_for_status()
            busy += len(resp.json()["items"])
        for status in ("pending", "embedding"):
            resp = await client.get(f"{base}/api/v1/images", params={"status": status, "limit": 1}, headers=headers)
            resp.raise_for_status()
            busy += len(resp.json()["items"])
        if not busy:
            return time.monotonic() - start, True
        await asyncio.sleep(1)
    return time.monotonic() - start, False


async def _burst(url: str, deliveries: list[tuple[bytes, dict[str, str]]],
                 rate: float) -> tuple[list[float], dict[int, int]]:
    """Send ``deliveries`` open-loop at ``rate`` per second: the latency of each from its due time, in ms."""
    latencies: list[float] = []
    statuses: dict[int, int] = {}
    sender = RawClient(url, 256)
    start = time.perf_counter()

    async def one(i: int, body: bytes, headers: dict[str, str]) -> None:
        due = start + i / rate
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        code, _ = await sender.request("POST", body, headers)
        latencies.append((time.perf_counter() - due) * 1000)
        statuses[code] = statuses.get(code, 0) + 1

    await asyncio.gather(*(one(i, body, headers) for i, (body, headers) in enumerate(deliveries)))
    await sender.close()
    return latencies, statuses


async def _scrape(client: httpx.AsyncClient, base: str) -> dict[tuple[str, tuple], float]:
    """``hub serve``'s ``/metrics`` samples: {(name, sorted labels): value}."""
    from prometheus_client.parser import text_string_to_metric_families

    try:
        resp = await client.get(f"{base}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"})
    except (httpx.ReadError, httpx.RemoteProtocolError):  # a kept-alive connection the server closed meanwhile
        resp = await client.get(f"{base}/metrics", headers={"Authorization": f"Bearer {OPERATOR}"})
    resp.raise_for_status()
    return {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(resp.text) for sample in family.samples}


def _since(before: dict, after: dict, name: str, **labels: str) -> float:
    """How much the samples named ``name`` whose labels include ``labels`` grew between two scrapes."""
    def total(samples: dict) -> float:
        return sum(v for (n, ls), v in samples.items() if n == name and set(labels.items()) <= set(ls))
    return total(after) - total(before)


def _bucket_quantile(before: dict, after: dict, name: str, q: float, **labels: str) -> float:
    """The upper bound of the histogram bucket holding quantile ``q`` of what was observed between two scrapes."""
    count = _since(before, after, f"{name}_count", **labels)
    if not count:
        return 0.0
    bounds = sorted({float(dict(ls)["le"]) for (n, ls) in after if n == f"{name}_bucket"})
    for bound in bounds:
        le = "+Inf" if bound == float("inf") else str(bound)
        if _since(before, after, f"{name}_bucket", le=le, **labels) >= q * count:
            return bound
    return float("inf")


def _burst_metrics(before: dict, after: dict) -> dict[str, float]:
    """What the burst cost ``hub serve`` in garbage collections and in turns to write the SQLite file."""
    wait, held = "hub_sqlite_write_wait_seconds", "hub_sqlite_write_held_seconds"
    intake_waits = _since(before, after, f"{wait}_count", urgent="true")
    app, route = "hub_http_request_duration_seconds", {"path": WEBHOOK_ROUTE}
    answered = _since(before, after, f"{app}_count", **route)
    return {
        "full_gcs": _since(before, after, "hub_gc_pause_seconds_count", generation="2"),
        "full_gc_ms": _since(before, after, "hub_gc_pause_seconds_sum", generation="2") * 1000,
        "gc_ms": _since(before, after, "hub_gc_pause_seconds_sum") * 1000,
        "intake_wait_ms": (_since(before, after, f"{wait}_sum", urgent="true") * 1000 / intake_waits
                           if intake_waits else 0.0),
        "intake_wait_p99_ms": _bucket_quantile(before, after, wait, 0.99, urgent="true") * 1000,
        "others_held_ms": _since(before, after, f"{held}_sum", urgent="false") * 1000,
        "others_held_p99_ms": _bucket_quantile(before, after, held, 0.99, urgent="false") * 1000,
        # the requests' own time inside the app (Litestar's histogram of the webhook route): the rest of the
        # answer's latency was spent before the app saw the request (the event loop, the server, the sockets)
        "app_mean_ms": (_since(before, after, f"{app}_sum", **route) * 1000 / answered) if answered else 0.0,
        "app_p99_ms": _bucket_quantile(before, after, app, 0.99, **route) * 1000,
    }


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def measure(mode: str, rates: list[int], seconds: float, model: Path, products: int) -> list[dict]:
    from tests.woo_platform import WooEmulator

    rows = []
    with tempfile.TemporaryDirectory(prefix="hub-bench-webhooks-") as tmp, WooEmulator() as woo:
        home = Path(tmp)
        for pid in range(1, products + 1):
            woo.put(pid, [pid])
        with hub(mode, home, model) as (base, pids):
            woo.sender = lambda url, body, headers: httpx.post(url, content=body, headers=headers, timeout=30).status_code
            shop = httpx.post(f"{base}/api/v1/shops", json={"name": "Bench", "email": "bench@example.com"},
                              headers={"Authorization": f"Bearer {OPERATOR}"}, timeout=30).json()
            auth = {"Authorization": f"Bearer {shop['secret_key']}"}
            resp = httpx.post(f"{base}/api/v1/connections", json={
                "connector": "woocommerce", "name": "Bench store", "settings": woo.settings()}, headers=auth,
                timeout=120)
            resp.raise_for_status()
            connection = resp.json()
            url = connection["webhook_url"]
            limits = httpx.Limits(max_connections=2000, max_keepalive_connections=200)
            seed = 10_000
            async with httpx.AsyncClient(timeout=120, limits=limits) as client:
                await _drain(client, base, auth, connection["id"], 600)
                for rate in rates:
                    deliveries = []
                    for i in range(int(rate * seconds)):
                        seed += 1
                        product = woo.put(1 + i % products, [seed])
                        deliveries.append(woo.delivery("product.updated", product,
                                                       delivery_id=f"bench-{seed}"))
                    cpu, own = cpu_seconds_of(pids[0]), cpu_seconds_of(os.getpid())
                    scraped = await _scrape(client, base)
                    with profiled(pids[0], f"webhooks-{mode}-{rate}", seconds + 5):
                        latencies, statuses = await _burst(url, deliveries, rate)
                    cpu, own = cpu_seconds_of(pids[0]) - cpu, cpu_seconds_of(os.getpid()) - own
                    costs = _burst_metrics(scraped, await _scrape(client, base))
                    rss = _rss_mb(pids)
                    waited, drained = await _drain(client, base, auth, connection["id"], 900)
                    rows.append({"mode": mode, "rate": rate, "sent": len(deliveries), "statuses": statuses,
                                 "p50": statistics.median(latencies), "p99": _pct(latencies, 0.99),
                                 "max": max(latencies), "cpu_ms": cpu * 1000 / len(deliveries),
                                 "client_cpu_ms": own * 1000 / len(deliveries), **costs, "drain": waited,
                                 "drained": drained, "rss": rss})
                    print(rows[-1], flush=True)
    return rows


def report(rows: list[dict], rates: str, seconds: float, modes: list[str], products: int) -> list[str]:
    """The section's lines for ``rows`` (``measure``'s)."""
    command = (f"`.venv/bin/python -m bench.webhooks --rates {rates} --seconds {seconds:g} "
               + " ".join(f"--mode {m}" for m in modes) + f"` — {date.today().isoformat()}")
    lines = [command, "", f"Machine: {machine()}.", "",
             "Signed WooCommerce `product.updated` deliveries, each giving one of "
             f"{products} products a new photo (so the hub fetches the product and embeds an image per delivery "
             f"while it answers), sent open-loop for {seconds:g} s at each rate; latency from the moment each "
             "was due to the hub's answer. *In the app*: the requests' own time inside the hub's application "
             "(Litestar's `hub_http_request_duration_seconds` of the webhook route: mean, and the p99's histogram "
             "bucket); the rest of the latency was spent before the application had the request. *Drain*: how long the hub then took to apply every accepted delivery and "
             "embed every image. *RSS*: the hub's processes (API and worker), at the end of the burst. *CPU*: the "
             "CPU time `hub serve` used during the burst, per delivery (in embedded mode that includes the work "
             "it started). *GC*: `hub serve`'s garbage collections during the burst (`hub_gc_pause_seconds`): the "
             "full ones and their time, and the time all of them held the process. *Write turns*: the intake's writes' "
             "wait for the process's turn to write the SQLite file (`hub_sqlite_write_wait_seconds`, mean and the "
             "p99's histogram bucket) and how long the other writers (the in-process workers) held the turn "
             "(`hub_sqlite_write_held_seconds`: p99 bucket, and the burst's total); server mode's PostgreSQL has "
             "no such turns.", "",
             "| mode | deliveries/s | sent | answers | p50 ms | p99 ms | max ms | in the app: mean, p99 ≤ ms | "
             "CPU ms | GC: full, ms; all ms | "
             "write turns: intake wait mean, p99 ≤ ms; others held p99 ≤, total ms | drain s | RSS MB |",
             "| --- | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        answers = ", ".join(f"{n}× {code or 'error'}" for code, n in sorted(r["statuses"].items()))
        drain = f"{r['drain']:.0f}" + ("" if r["drained"] else " (not drained)")
        lines.append(f"| {r['mode']} | {r['rate']} | {r['sent']} | {answers} | {r['p50']:.1f} | {r['p99']:.1f} | "
                     f"{r['max']:.1f} | {r['app_mean_ms']:.1f}, {r['app_p99_ms']:g} | {r['cpu_ms']:.1f} | {r['full_gcs']:.0f}, {r['full_gc_ms']:.0f}; {r['gc_ms']:.0f} | "
                     + (f"{r['intake_wait_ms']:.1f}, {r['intake_wait_p99_ms']:g}; {r['others_held_p99_ms']:g}, "
                        f"{r['others_held_ms']:.0f}" if r["mode"] == "embedded" else "—")
                     + f" | {drain} | {r['rss']:.0f} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="20,50,100,200", help="deliveries per second, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="how long each rate is sent")
    parser.add_argument("--mode", action="append", choices=("embedded", "server"),
                        help="repeat for both (default: embedded)")
    parser.add_argument("--products", type=int, default=50, help="products the deliveries cycle over")
    parser.add_argument("--no-write", action="store_true", help="print only; leave docs/benchmarks.md alone")
    args = parser.parse_args()
    modes = args.mode or ["embedded"]
    rates = [int(r) for r in args.rates.split(",")]
    model = full_size_model()
    rows = []
    for mode in modes:
        rows += asyncio.run(measure(mode, rates, args.seconds, model, args.products))
    lines = report(rows, args.rates, args.seconds, modes, args.products)
    print("\n".join(lines))
    if not args.no_write:
        write_section("Webhook acknowledgement", "\n".join(lines))


if __name__ == "__main__":
    main()
