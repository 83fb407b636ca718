"""Keys and auth through HTTP: header forms, bad/revoked keys, key kinds, key management, rate limits."""

from __future__ import annotations

import pytest

SECRET_ENDPOINTS = [
    ("get", "/api/v1/shop"),
    ("get", "/api/v1/keys"),
    ("get", "/api/v1/images"),
    ("get", "/api/v1/categories"),
    ("get", "/api/v1/styles"),
    ("get", "/api/v1/age-groups"),
]


async def test_bearer_and_x_api_key_both_work(client, shop):
    for headers in (shop.secret, {"X-API-Key": shop["secret_key"]}):
        resp = await client.get("/api/v1/shop", headers=headers)
        assert resp.status_code == 200, resp.text
        assert resp.json()["id"] == shop["id"]


@pytest.mark.parametrize(("method", "path"), SECRET_ENDPOINTS)
async def test_missing_bad_and_publishable_keys(client, shop, method, path):
    missing = await getattr(client, method)(path)
    assert missing.status_code == 401 and "missing API key" in missing.json()["detail"]
    bad = await getattr(client, method)(path, headers={"Authorization": "Bearer hub_sk_not-a-real-key"})
    assert bad.status_code == 401 and bad.json()["error"] == "unauthorized"
    malformed = await getattr(client, method)(path, headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert malformed.status_code == 401
    publishable = await getattr(client, method)(path, headers=shop.publishable)
    assert publishable.status_code == 403 and "secret key" in publishable.json()["detail"]


async def test_key_lifecycle(client, shop, snapshot):
    listed = (await client.get("/api/v1/keys", headers=shop.secret)).json()["items"]
    assert {k["kind"] for k in listed} == {"secret", "publishable"}
    assert all("key" not in k and "key_hash" not in k for k in listed)
    assert listed[0]["prefix"] == shop["secret_key"][:12]

    created = await client.post("/api/v1/keys", json={"kind": "secret", "name": "ci"}, headers=shop.secret)
    assert created.status_code == 201
    new = created.json()
    assert new["key"].startswith("hub_sk_") and new["name"] == "ci"
    new_headers = {"Authorization": f"Bearer {new['key']}"}
    assert (await client.get("/api/v1/shop", headers=new_headers)).status_code == 200
    used = (await client.get("/api/v1/keys", headers=shop.secret)).json()["items"]
    assert next(k for k in used if k["id"] == new["id"])["last_used_at"] is not None

    assert (await client.delete(f"/api/v1/keys/{new['id']}", headers=shop.secret)).status_code == 204
    revoked = await client.get("/api/v1/shop", headers=new_headers)
    assert revoked.status_code == 401 and "revoked" in revoked.json()["detail"]
    listed = (await client.get("/api/v1/keys", headers=shop.secret)).json()["items"]
    assert next(k for k in listed if k["id"] == new["id"])["active"] is False

    pk = (await client.post("/api/v1/keys", json={"kind": "publishable"}, headers=shop.secret)).json()
    assert pk["key"].startswith("hub_pk_")

    before = await snapshot()
    bad = await client.post("/api/v1/keys", json={"kind": "admin"}, headers=shop.secret)
    assert bad.status_code == 400
    default_secret = next(k for k in listed if k["kind"] == "secret" and k["active"])
    last = await client.delete(f"/api/v1/keys/{default_secret['id']}", headers=shop.secret)
    assert last.status_code == 409
    assert await snapshot() == before


async def test_other_shops_keys_are_404(client, shop, make_shop, snapshot):
    other = await make_shop()
    other_key = (await client.get("/api/v1/keys", headers=other.secret)).json()["items"][0]["id"]
    before = await snapshot()
    resp = await client.delete(f"/api/v1/keys/{other_key}", headers=shop.secret)
    assert resp.status_code == 404
    assert await snapshot() == before
    assert (await client.get("/api/v1/shop", headers=other.secret)).status_code == 200


@pytest.mark.parametrize("settings_overrides", [{"rate_limit": "3/minute"}])
async def test_rate_limit_per_key(client, shop, make_shop):
    # the shop fixture made no keyed requests yet
    for _ in range(3):
        assert (await client.get("/api/v1/shop", headers=shop.secret)).status_code == 200
    limited = await client.get("/api/v1/shop", headers=shop.secret)
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["retry-after"]) <= 60
    assert limited.json()["error"] == "rate_limited"
    other = await make_shop()
    assert (await client.get("/api/v1/shop", headers=other.secret)).status_code == 200  # per key, not global


async def test_a_key_is_read_once_per_cache_time_and_another_process_revoking_it_counts_within_it(client, shop,
                                                                                                   settings):
    """HUB_QUERY_CACHE_SECONDS: a key that authenticated is not read again for that long, so a revocation made by
    another process (here: another engine, writing the database directly) counts here once that time is up —
    and a revocation through this process counts at once (``test_key_lifecycle``)."""
    from sqlalchemy import update

    from hub.db.engine import create_engine, dispose
    from hub.db.models import ApiKey, utcnow
    from hub.domain.keys import hash_key

    services = client.app.state.services
    now = [1000.0]
    services.keys.clock = lambda: now[0]
    assert (await client.get("/api/v1/shop", headers=shop.publishable)).status_code == 403  # read and kept
    other = create_engine(settings.db_url)
    try:
        async with other.begin() as conn:
            await conn.execute(update(ApiKey).where(ApiKey.key_hash == hash_key(shop["publishable_key"]))
                               .values(revoked_at=utcnow()))
    finally:
        await dispose(other)
    found = await client.post("/api/v1/recommendations", json={"prompt": "dress"}, headers=shop.publishable)
    assert found.status_code == 200  # still trusted: within the cache time
    now[0] += settings.query_cache_seconds + 0.01
    found = await client.post("/api/v1/recommendations", json={"prompt": "dress"}, headers=shop.publishable)
    assert found.status_code == 401 and "revoked" in found.json()["detail"]
