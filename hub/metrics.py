"""Prometheus metrics: what this process did (counters and histograms, kept in prometheus-client's registry)
and the state every process shares (images by status, jobs, deliveries, queue depth: read from the database
and the broker when ``GET /metrics`` is scraped, so any API replica reports the same figures).

Names start with ``hub_``; the HTTP latency histograms (``hub_http_*``) come from Litestar's Prometheus
middleware, labelled by route template (``/api/v1/images/{image_id}``), never by raw path.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from prometheus_client import REGISTRY, Counter, Histogram, generate_latest, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4
from prometheus_client.registry import Collector, CollectorRegistry

CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # (the text format generate_latest writes)
FAST = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

EMBEDDED = Counter("hub_embed_images_total", "Images through the embedding step, by outcome: ready (stored), "
                   "failed (given up, with a reason), retry (will be tried again), gone (deleted meanwhile)",
                   ["outcome"])
MODEL_SECONDS = Histogram("hub_model_forward_seconds", "Forward passes of the model, by tower (image, text)",
                          ["tower"], buckets=FAST)
MODEL_ITEMS = Counter("hub_model_items_total", "Images or prompts through the model, by tower", ["tower"])
VECTOR_STORE_SECONDS = Histogram("hub_vector_store_seconds", "Calls to the vector store, by operation and "
                                 "outcome (ok, error)", ["operation", "outcome"], buckets=FAST)
WEBHOOKS = Counter("hub_webhook_deliveries_received_total", "Webhook deliveries answered, by connector and "
                   "outcome (accepted, duplicate, ignored, processed, rejected, unauthenticated)",
                   ["connector", "outcome"])
SQLITE_WRITE_WAIT = Histogram("hub_sqlite_write_wait_seconds", "How long a transaction's first write to the SQLite "
                              "file waited for this process's turn, by urgency (true: the webhook intake)",
                              ["urgent"], buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25,
                                                   0.5, 1.0, 5.0))
SQLITE_WRITE_HELD = Histogram("hub_sqlite_write_held_seconds", "How long a transaction held this process's turn to "
                              "write the SQLite file (from its turn to its commit or rollback: every other writer "
                              "waits meanwhile), by urgency", ["urgent"],
                              buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0))
BACKGROUND_DEFERRED = Counter("hub_background_deferred_seconds", "Time the in-process workers' steps waited for "
                              "webhook requests in flight to be answered (the embedded default: hub.foreground)")
GC_PAUSE = Histogram("hub_gc_pause_seconds", "The interpreter's garbage collections (the whole process waits), by "
                     "generation (2: a full collection)", ["generation"],
                     buckets=(0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0))


@contextmanager
def forward_pass(tower: str, items: int) -> Iterator[None]:
    """Observe one forward pass of ``tower`` over ``items`` images or prompts (a pass that raised is not one)."""
    start = time.perf_counter()
    yield
    MODEL_SECONDS.labels(tower).observe(time.perf_counter() - start)
    MODEL_ITEMS.labels(tower).inc(items)


@contextmanager
def vector_store_call(operation: str) -> Iterator[None]:
    """Observe one vector-store call's duration under its operation and outcome (``ok`` or ``error``)."""
    start = time.perf_counter()
    outcome = "ok"
    try:
        yield
    except BaseException:
        outcome = "error"
        raise
    finally:
        VECTOR_STORE_SECONDS.labels(operation, outcome).observe(time.perf_counter() - start)


@dataclass
class SharedState:
    """Figures every process shares, read at scrape time. Each maps a tuple of label values to a count."""

    images: dict[tuple[str], int] = field(default_factory=dict)  # (status,)
    jobs: dict[tuple[str, str], int] = field(default_factory=dict)  # (kind, status)
    deliveries: dict[tuple[str, str], int] = field(default_factory=dict)  # (connector, status)
    connections: dict[tuple[str, str], int] = field(default_factory=dict)  # (connector, state)
    shops: int = 0
    queue: dict[tuple[str], int] = field(default_factory=dict)  # (state,) of the task queue: waiting, running
    oldest_pending_seconds: float = 0.0


class _Snapshot(Collector):
    def __init__(self, state: SharedState) -> None:
        self.state = state

    def collect(self) -> Iterator[GaugeMetricFamily]:
        s = self.state
        yield _gauge("hub_images", "Images stored, by status", ["status"], s.images)
        yield _gauge("hub_jobs", "Jobs (imports, syncs) kept, by kind and status", ["kind", "status"], s.jobs)
        yield _gauge("hub_webhook_deliveries", "Webhook deliveries kept, by connector and status",
                     ["connector", "status"], s.deliveries)
        yield _gauge("hub_connections", "Shop platform connections, by connector and state", ["connector", "state"],
                     s.connections)
        yield _gauge("hub_queue_tasks", "Tasks in the queue, by state (waiting: not yet taken by a worker; "
                     "running: taken, not yet acknowledged)", ["state"], s.queue)
        shops = GaugeMetricFamily("hub_shops", "Shops")
        shops.add_metric([], s.shops)
        yield shops
        oldest = GaugeMetricFamily("hub_images_oldest_pending_seconds",
                                   "Age of the oldest image waiting to be embedded (0: none waits)")
        oldest.add_metric([], s.oldest_pending_seconds)
        yield oldest


def _gauge(name: str, doc: str, labels: list[str], values: dict[tuple[str, ...], int]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=labels)
    for key, value in sorted(values.items()):
        family.add_metric(list(key), value)
    return family


def exposition(state: SharedState | None) -> bytes:
    """This process's metrics, then the shared state's, in Prometheus' text format."""
    text = generate_latest(REGISTRY)
    if state is not None:
        shared = CollectorRegistry(auto_describe=False)
        shared.register(_Snapshot(state))
        text += generate_latest(shared)
    return text


def serve_process_metrics(address: str | None) -> None:
    """Serve this process's metrics at ``address`` (``host:port``, ``HUB_METRICS_ADDRESS``) from a thread of
    prometheus-client's; nothing when unset."""
    if not address:
        return
    host, _, port = address.rpartition(":")
    start_http_server(int(port), addr=host.strip("[]"))
