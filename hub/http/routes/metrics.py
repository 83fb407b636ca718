"""``GET /metrics``: Prometheus' text format, for the operator (``Authorization: Bearer $HUB_ADMIN_TOKEN``;
Prometheus sends it with ``authorization: {credentials: …}`` in its scrape config). ``HUB_METRICS_ADDRESS``
also serves each process's own figures on a private address without a token (``hub worker`` has no other)."""

from __future__ import annotations

from litestar import Response, get
from litestar.di import NamedDependency, Provide

from hub.domain.figures import shared_state
from hub.http.auth import require_operator
from hub.http.deps import Db, Svc
from hub.metrics import CONTENT_TYPE, exposition


@get("/metrics", tags=["ops"], dependencies={"operator": Provide(require_operator)}, media_type=CONTENT_TYPE)
async def metrics(db: Db, services: Svc, operator: NamedDependency[None]) -> Response[str]:
    """This process's counters and latency histograms (HTTP per route, model, vector store, embedding outcomes,
    webhook outcomes per connector) and the figures every process shares (images by status, jobs, webhook
    deliveries, connections, shops, the task queue's depth), in Prometheus' text format."""
    state = await shared_state(db, services.pipeline)
    return Response(exposition(state).decode(), media_type=CONTENT_TYPE)
