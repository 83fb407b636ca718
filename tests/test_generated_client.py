"""A developer can integrate from the schema alone: a Python client generated from ``/schema/openapi.json`` by
openapi-python-client runs the README's five-minute tour against a running ``hub serve``."""

from __future__ import annotations

import importlib
import io
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import httpx
import pytest

from tests.images import photo
from tests.live import ADMIN, LiveHub, live_hub

GENERATOR = Path(sys.executable).with_name("openapi-python-client")
CONFIG = "post_hooks: []\npackage_name_override: fashion_hub_client\nproject_name_override: fashion-hub-client\n"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory, test_model: Path) -> Iterator[LiveHub]:
    with live_hub(tmp_path_factory.mktemp("client"), test_model) as running:
        yield running


@pytest.fixture(scope="module")
def client(hub: LiveHub, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ModuleType]:
    """The client package, generated offline from the served document (no formatter hooks), then imported."""
    folder = tmp_path_factory.mktemp("generated")
    (folder / "openapi.json").write_bytes(httpx.get(f"{hub.base}/schema/openapi.json", timeout=30).content)
    (folder / "config.yaml").write_text(CONFIG)
    result = subprocess.run([str(GENERATOR), "generate", "--path", "openapi.json", "--config", "config.yaml",
                             "--meta", "none", "--output-path", "fashion_hub_client"], cwd=folder,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    sys.path.insert(0, str(folder))
    try:
        yield importlib.import_module("fashion_hub_client")
    finally:
        sys.path.remove(str(folder))
        for name in [m for m in sys.modules if m.startswith("fashion_hub_client")]:
            del sys.modules[name]


def api(name: str) -> Any:
    return importlib.import_module(f"fashion_hub_client.api.{name}")


def test_the_readme_tour_through_a_generated_client(hub: LiveHub, client: ModuleType):
    from fashion_hub_client import AuthenticatedClient
    from fashion_hub_client.models import (
        ApiV1ImagesCreateImageUpload,
        ImageByUrl,
        RecommendationRequest,
        ShopCreate,
    )
    from fashion_hub_client.types import File

    operator = AuthenticatedClient(base_url=hub.base, token=ADMIN)
    shop = api("operator.api_v1_shops_create").sync(client=operator, body=ShopCreate(
        name="Demo Boutique", email="demo@example.com"))
    secret = AuthenticatedClient(base_url=hub.base, token=shop.secret_key)
    publishable = AuthenticatedClient(base_url=hub.base, token=shop.publishable_key)

    # upload a photo (multipart), add one by URL (JSON)
    uploaded = api("images.api_v1_images_create").sync(client=secret, body=ApiV1ImagesCreateImageUpload(
        file=File(payload=io.BytesIO(photo(1)), file_name="dress.jpg", mime_type="image/jpeg"),
        name="Red floral dress"))
    assert uploaded.status == "pending" and uploaded.name == "Red floral dress"
    by_url = api("images.api_v1_images_from_url_create_from_url").sync(client=secret, body=ImageByUrl(
        image_url="https://cdn.example.com/jacket.jpg"))
    assert by_url.image_url == "https://cdn.example.com/jacket.jpg"

    # list; the upload becomes ready
    listed = api("images.api_v1_images_list_images").sync(client=secret)
    assert {i.id for i in listed.items} == {uploaded.id, by_url.id}
    deadline = time.monotonic() + 60
    while api("images.api_v1_images_image_id_get_image").sync(uploaded.id, client=secret).status != "ready":
        assert time.monotonic() < deadline, "the upload never became ready"
        time.sleep(0.2)

    # what a storefront asks, with the publishable key
    found = api("recommendations.api_v1_recommendations_recommendations").sync(
        client=publishable, body=RecommendationRequest(prompt="red dress with floral patterns", limit=10))
    assert [r.id for r in found.results] == [uploaded.id] and found.count == 1

    # errors come back typed, as the document says
    missing = api("images.api_v1_images_image_id_get_image").sync(999_999, client=secret)
    assert missing.status == 404 and missing.error == "not_found"

    # and delete
    deleted = api("images.api_v1_images_image_id_remove").sync_detailed(uploaded.id, client=secret)
    assert deleted.status_code == 204
    assert {i.id for i in api("images.api_v1_images_list_images").sync(client=secret).items} == {by_url.id}
