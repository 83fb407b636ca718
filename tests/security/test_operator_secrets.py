"""Tenant vs operator: nothing a shop sends decides where the operator's Shopify app secret goes.

The audit: a tenant-supplied ``api_url`` on ``POST /api/v1/connections/authorize`` made the OAuth code exchange
POST the operator's client id and secret to the tenant's server. Now an OAuth install only ever talks to
``https://{shop}.myshopify.com`` (or the operator's HUB_SHOPIFY_API_URL, an environment setting for emulators).
"""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from hub.plugins.shopify import ShopifyApp, ShopifySettings, base_url
from tests.conftest import wait_job
from tests.security.hostile import HostileServer
from tests.shopify_platform import APP_CLIENT_ID, APP_CLIENT_SECRET, DOMAIN, running_emulator


@pytest.fixture
def settings_overrides():
    return {"secret_key": "a-long-random-secret-key-for-tests", "allow_private_fetch": True}


@pytest.fixture
def hostile():
    server = HostileServer()
    yield server
    server.close()


@pytest.fixture
def shopify_app(monkeypatch):
    for emulator in running_emulator(monkeypatch, app=True):
        emulator.put(3, [33])
        yield emulator


HOSTILE_FIELDS = ("api_url", "base_url", "admin_url", "token_url", "redirect_uri", "url", "host", "proxy")


async def test_tenant_fields_never_redirect_the_oauth_exchange(client, shop, shopify_app, hostile):
    # every field a tenant might try beside the store's domain is refused, with the reason
    for field in HOSTILE_FIELDS:
        start = {"connector": "shopify", "settings": {"shop_domain": DOMAIN, field: f"{hostile.base}/steal"}}
        resp = await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)
        assert resp.status_code == 422 and field in resp.json()["detail"], resp.text
    # and a shop domain that is not a store's permanent domain cannot smuggle a host in either
    for domain in (hostile.base, "127.0.0.1", f"{DOMAIN}.evil.example", f"{DOMAIN}@127.0.0.1", "evil.example",
                   f"x.myshopify.com/{hostile.base}", "x.myshopify.com:8080"):
        start = {"connector": "shopify", "settings": {"shop_domain": domain}}
        resp = await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)
        assert resp.status_code == 422 and "myshopify.com" in resp.json()["detail"], (domain, resp.text)

    # the genuine flow: the secret goes to the store's Admin (the emulator standing in for it), nowhere else
    start = {"connector": "shopify", "settings": {"shop_domain": DOMAIN}}
    url = (await client.post("/api/v1/connections/authorize", json=start, headers=shop.secret)).json()["authorize_url"]
    assert url.startswith(f"{shopify_app.base}/admin/oauth/authorize?")
    callback = shopify_app.approve(url)
    # the merchant's browser comes back with a genuinely signed callback; extra query fields change nothing
    tampered = callback + f"&api_url={hostile.base}&redirect_uri={hostile.base}"
    done = await client.get(tampered.removeprefix("http://testserver.local"))
    assert done.status_code == 400, done.text  # (the extra fields break Shopify's hmac: refused)
    done = await client.get(callback.removeprefix("http://testserver.local"))
    assert done.status_code == 201, done.text
    await wait_job(client, shop.secret, done.json()["sync_job"]["id"])
    assert hostile.requests == [] and not hostile.saw(APP_CLIENT_SECRET)
    assert "api_url" not in done.json()["settings"]


async def test_custom_app_connections_cannot_name_an_api_url(client, shop, shopify_app, hostile, snapshot):
    before = await snapshot()
    settings = shopify_app.settings(api_url=f"{hostile.base}/admin")
    resp = await client.post("/api/v1/connections", json={"connector": "shopify", "settings": settings},
                             headers=shop.secret)
    assert resp.status_code == 422 and "api_url" in resp.json()["detail"]
    assert hostile.requests == [] and await snapshot() == before


def test_where_the_app_secret_can_go_is_decided_by_the_operator_alone(monkeypatch):
    """No hook, setting or field a tenant controls changes the OAuth host: the connection settings model has no
    URL field, the only input is a validated *.myshopify.com domain, and the override is an environment
    setting read from the operator's process."""
    assert not [name for name, field in ShopifySettings.model_fields.items()
                if "url" in name or "host" in name or field.annotation is not str and "Url" in str(field.annotation)]
    monkeypatch.delenv("HUB_SHOPIFY_API_URL", raising=False)
    assert ShopifyApp().api_url is None
    assert base_url("my-store.myshopify.com") == "https://my-store.myshopify.com"
    for bad in ("evil.example", "my-store.myshopify.com.evil.example", "127.0.0.1", "https://evil.example/x"):
        with pytest.raises(ValueError):
            base_url(bad)
    # authorize links point at the store's own admin: the secret is never in them, only the public client id
    from hub.plugins.shopify import ShopifyConnector

    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_ID", APP_CLIENT_ID)
    monkeypatch.setenv("HUB_SHOPIFY_CLIENT_SECRET", APP_CLIENT_SECRET)
    link = ShopifyConnector().authorize_url({"shop_domain": "my-store.myshopify.com"}, "https://hub/cb", "s")
    assert urlsplit(link).netloc == "my-store.myshopify.com"
    assert APP_CLIENT_SECRET not in link and parse_qs(urlsplit(link).query)["client_id"] == [APP_CLIENT_ID]
