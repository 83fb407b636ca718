"""Ops endpoints: liveness, readiness, OpenAPI, and 503 (not 500) when the database is down."""

from __future__ import annotations

import asyncio
import logging

from hub.settings import load_settings
from tests.conftest import serve_app
from tests.services import free_port


async def wait_ready(client, timeout: float = 60):
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        ready = await client.get("/ready")
        if ready.status_code == 200 or asyncio.get_running_loop().time() > deadline:
            return ready
        assert ready.json()["checks"]["model"] == "loading", ready.text
        await asyncio.sleep(0.1)


async def test_health_ready_schema(client, caplog):
    assert (await client.get("/health")).json()["status"] == "ok"
    ready = await wait_ready(client)
    assert ready.status_code == 200, ready.text
    caplog.set_level(logging.INFO, logger="alembic")
    caplog.clear()
    assert (await client.get("/ready")).status_code == 200
    assert [r.getMessage() for r in caplog.records if r.name.startswith("alembic")] == []  # a probe logs nothing
    body = ready.json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "media": "ok", "vector_store": "ok", "broker": "ok", "model": "ok"}
    assert isinstance(body["plugins"], list)
    schema = (await client.get("/schema/openapi.json")).json()
    for path in ("/api/v1/images", "/api/v1/keys", "/api/v1/categories", "/api/image-collection", "/ready"):
        assert path in schema["paths"], path
    assert (await client.get("/schema")).status_code == 200


async def test_unknown_route_is_json_404(client):
    resp = await client.get("/api/v1/nope")
    assert resp.status_code == 404 and resp.json()["status"] == 404


async def test_database_down_gives_503_not_500(tmp_path, test_model):
    url = f"postgresql://postgres@127.0.0.1:{free_port()}/nothing"
    settings = load_settings(home=tmp_path, database_url=url, log_format="text", model=str(test_model))
    async with serve_app(settings) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert ready.json()["checks"]["database"].startswith("unreachable")
        resp = await client.get("/api/v1/shop", headers={"Authorization": "Bearer hub_sk_whatever"})
        assert resp.status_code == 503, resp.text
        assert resp.json() == {
            "status": 503, "error": "unavailable", "detail": "database unavailable; retry shortly"
        }
        assert "Traceback" not in resp.text


async def test_unmigrated_database_is_not_ready(tmp_path, test_model):
    settings = load_settings(home=tmp_path, log_format="text", model=str(test_model))  # never migrated
    async with serve_app(settings) as client:
        ready = await client.get("/ready")
        assert ready.status_code == 503
        assert "hub migrate" in ready.json()["checks"]["database"]
