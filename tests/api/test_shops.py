"""Shops through HTTP: the operator API, self-service signup with real SMTP delivery, the shop itself."""

from __future__ import annotations

import re
from email import message_from_bytes

import pytest
from aiosmtpd.controller import Controller

from tests.conftest import ADMIN_TOKEN
from tests.services import free_port

OPERATOR = {"Authorization": f"Bearer {ADMIN_TOKEN}"}


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 - aiosmtpd's hook name
        self.messages.append((envelope.rcpt_tos, message_from_bytes(envelope.content)))
        return "250 Message accepted for delivery"


@pytest.fixture
def smtp_server():
    inbox = Inbox()
    controller = Controller(inbox, hostname="127.0.0.1", port=free_port())
    controller.start()
    yield controller, inbox
    controller.stop()


@pytest.fixture
def settings_overrides(request):
    """SMTP points at the test's mail server when it has one; ``indirect`` parameters add more."""
    values = dict(getattr(request, "param", {}))
    if "smtp_server" in request.fixturenames:
        controller, _ = request.getfixturevalue("smtp_server")
        values["smtp_url"] = f"smtp://127.0.0.1:{controller.port}"
    return values


async def test_operator_creates_shop(client, snapshot):
    resp = await client.post("/api/v1/shops", json={"name": "Atelier", "email": "Owner@Atelier.example"}, headers=OPERATOR)
    assert resp.status_code == 201, resp.text
    body = resp.json()
    assert body["email"] == "owner@atelier.example"
    assert body["secret_key"].startswith("hub_sk_") and body["publishable_key"].startswith("hub_pk_")
    me = await client.get("/api/v1/shop", headers={"X-API-Key": body["secret_key"]})
    assert me.json() | {"images": None} == {
        "id": body["id"], "name": "Atelier", "email": "owner@atelier.example", "allowed_origins": [],
        "search_mode": "hybrid", "lexical_weight": 0.5, "created_at": body["created_at"], "images": None,
    }
    assert me.json()["images"] == {"total": 0, "pending": 0, "embedding": 0, "ready": 0, "failed": 0}

    before = await snapshot()
    cases = [
        ({"name": "X", "email": "owner@atelier.example"}, OPERATOR, 409),
        ({"name": "X", "email": "not-an-email"}, OPERATOR, 400),
        ({"name": "", "email": "a@b.example"}, OPERATOR, 400),
        ({"name": "X", "email": "new@b.example"}, {}, 401),
        ({"name": "X", "email": "new@b.example"}, {"Authorization": "Bearer wrong"}, 401),
        ({"name": "X", "email": "new@b.example"}, {"Authorization": f"Bearer {body['secret_key']}"}, 401),
    ]
    for payload, headers, status in cases:
        resp = await client.post("/api/v1/shops", json=payload, headers=headers)
        assert resp.status_code == status, (payload, resp.text)
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"admin_token": None}])
async def test_operator_api_off_without_token(client, snapshot):
    before = await snapshot()
    resp = await client.post("/api/v1/shops", json={"name": "X", "email": "x@y.example"}, headers=OPERATOR)
    assert resp.status_code == 403 and "HUB_ADMIN_TOKEN" in resp.json()["detail"]
    assert await snapshot() == before


async def test_signup_mails_working_keys(client, smtp_server, snapshot):
    _, inbox = smtp_server
    resp = await client.post("/api/v1/signup", json={"name": "Boutique Nova", "email": "nova@shop.example"})
    assert resp.status_code == 202, resp.text
    assert "key" not in resp.text.lower().replace("api keys sent", "")
    assert len(inbox.messages) == 1
    recipients, message = inbox.messages[0]
    assert recipients == ["nova@shop.example"]
    text = message.get_payload(decode=True).decode()
    secret = re.search(r"hub_sk_[\w-]+", text).group(0)
    publishable = re.search(r"hub_pk_[\w-]+", text).group(0)
    me = await client.get("/api/v1/shop", headers={"Authorization": f"Bearer {secret}"})
    assert me.status_code == 200 and me.json()["name"] == "Boutique Nova"
    assert (await client.get("/api/v1/shop", headers={"Authorization": f"Bearer {publishable}"})).status_code == 403

    before = await snapshot()
    dup = await client.post("/api/v1/signup", json={"name": "Again", "email": "nova@shop.example"})
    assert dup.status_code == 409
    assert len(inbox.messages) == 1
    assert await snapshot() == before


@pytest.mark.parametrize("email", ["nova\x1c@shop.example", "nova@shop.example\n", "nova@shop.exa\x85mple",
                                   "nova@shop.example\u2028bcc@evil.example",
                                   # stored as one address, mailed to another (found in review)
                                   "x<victim@corp.example>", "=?utf-8?q?victim?=@corp.example", "a:victim@corp.example",
                                   "a(victim@corp.example"])
async def test_an_email_that_is_not_one_plain_address_is_400(client, smtp_server, snapshot, email):
    """Found by Schemathesis: characters a regex does not call whitespace but a mail header calls a line break
    (U+001C) got through signup and failed at sending (a 500). Found in review: display names, groups, comments
    and encoded words made the address stored differ from the address mailed."""
    _, inbox = smtp_server
    before = await snapshot()
    resp = await client.post("/api/v1/signup", json={"name": "Nova", "email": email})
    assert resp.status_code == 400, resp.text
    assert inbox.messages == [] and await snapshot() == before


def test_the_domain_check_behind_the_cli_and_the_api_refuses_it_too():
    from hub.domain.shops import check_email
    from hub.errors import Invalid

    assert check_email("  Nova@Shop.Example ") == "nova@shop.example"
    with pytest.raises(Invalid):
        check_email("nova\x1d@shop.example")


async def test_signup_with_mail_down_is_503_and_creates_nothing(client, snapshot, settings):
    assert settings.smtp_url is None
    before = await snapshot()
    resp = await client.post("/api/v1/signup", json={"name": "Nova", "email": "nova@shop.example"})
    assert resp.status_code == 503 and "HUB_SMTP_URL" in resp.json()["detail"]
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"smtp_url": f"smtp://127.0.0.1:{free_port()}"}])
async def test_signup_with_unreachable_smtp_is_503(client, snapshot):
    before = await snapshot()
    resp = await client.post("/api/v1/signup", json={"name": "Nova", "email": "nova@shop.example"})
    assert resp.status_code == 503 and resp.json()["error"] == "unavailable"
    assert await snapshot() == before


@pytest.mark.parametrize("settings_overrides", [{"signup_rate_limit": "2/hour"}], indirect=True)
async def test_signup_is_rate_limited_per_address(client, smtp_server):
    for i in range(2):
        resp = await client.post("/api/v1/signup", json={"name": f"S{i}", "email": f"s{i}@shop.example"})
        assert resp.status_code == 202
    limited = await client.post("/api/v1/signup", json={"name": "S3", "email": "s3@shop.example"})
    assert limited.status_code == 429 and int(limited.headers["retry-after"]) > 0
