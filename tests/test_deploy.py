"""The compose stack (Docker can't run here): every service, port and volume the README names is defined."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]


def readme_services() -> list[dict[str, str]]:
    text = (ROOT / "README.md").read_text()
    section = text.split("## Server mode: Docker Compose", 1)[1]
    rows = [line for line in section.splitlines() if line.startswith("| ") and not line.startswith("| ---")]
    header = [c.strip() for c in rows[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in row.strip("|").split("|")), strict=True)) for row in rows[1:]]


def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_readme_services_match_compose():
    spec = compose()
    services = spec["services"]
    named = readme_services()
    assert {s["service"] for s in named} == set(services)
    for row in named:
        svc = services[row["service"]]
        published = {str(p).rsplit(":", 1)[0].rsplit(":", 1)[-1] for p in svc.get("ports", [])}  # (host address:)port
        if row["port"] != "—":
            assert row["port"] in published, row
        volumes = {str(v).split(":")[0] for v in svc.get("volumes", [])}
        if row["volume"] != "—":
            assert row["volume"] in volumes, row
            assert row["volume"] in spec["volumes"], row


def test_stack_is_wired():
    spec = compose()
    services = spec["services"]
    for name in ("api", "worker", "postgres", "redis", "chroma", "mailpit"):
        assert "healthcheck" in services[name], name
    assert services["pgadmin"]["profiles"] == ["admin"]
    for name in ("api", "worker"):
        assert services[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        env = services[name]["environment"]
        assert env["HUB_DATABASE_URL"].startswith("postgresql://") and "@postgres:5432/" in env["HUB_DATABASE_URL"]
        assert env["HUB_BROKER_URL"] == "redis://redis:6379/0"
        assert env["HUB_CHROMA_URL"] == "http://chroma:8000"
        assert env["HUB_SMTP_URL"] == "smtp://mailpit:1025"
    assert services["migrate"]["command"] == ["hub", "migrate"]
    # API and workers on separate hosts: no volume shared between the hub's containers; media in the bucket
    for name in ("api", "worker", "migrate"):
        assert not services[name].get("volumes"), name
        assert services[name]["environment"]["HUB_MEDIA_URL"].startswith("s3://")
        assert services[name]["environment"]["HUB_S3_ENDPOINT_URL"] == "http://minio:9000"
    for name in ("api", "worker"):
        assert services[name]["deploy"]["replicas"] == 2
        assert services[name]["depends_on"]["minio-bucket"]["condition"] == "service_completed_successfully"
    assert not services["api"].get("ports") and services["proxy"]["ports"] == ["8000:8000"]
    # forwarded client addresses are believed from the proxy only (rate limits and auth failures count per client)
    proxy_address = services["proxy"]["networks"]["edge"]["ipv4_address"]
    assert services["api"]["environment"]["FORWARDED_ALLOW_IPS"] == proxy_address
    assert "X-Forwarded-For $remote_addr" in (ROOT / "deploy" / "nginx.conf").read_text()
    assert "server api:8000" in (ROOT / "deploy" / "nginx.conf").read_text()
    # the Chroma server keeps a bounded number of shops' indexes open (its memory does not grow with the shops)
    assert "./deploy/chroma-lru.yaml:/config.yaml:ro" in services["chroma"]["volumes"]
    chroma_config = yaml.safe_load((ROOT / "deploy" / "chroma-lru.yaml").read_text())
    assert chroma_config["segment_manager"]["hnsw_index_pool_cache_config"]["memory"]["capacity"] > 0
    assert chroma_config["persist_path"] == "/data"
    assert services["worker"]["command"] == ["hub", "worker"]
    # every variable the stack or .env.example sets is one the hub knows
    from hub.plugins.shopify import ShopifyApp
    from hub.settings import Settings

    known = {f"HUB_{name.upper()}" for name in Settings.model_fields}
    known |= {f"HUB_SHOPIFY_{name.upper()}" for name in ShopifyApp.model_fields}  # the Shopify plugin's own
    example = (ROOT / ".env.example").read_text()
    used = set(re.findall(r"\bHUB_[A-Z0-9_]+", example)) | {n for n in services["api"]["environment"] if n.startswith("HUB_")}
    assert used <= known, used - known


def test_dockerfile_runs_the_cli():
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "torch==2.13.0" in dockerfile and "download.pytorch.org/whl/cpu" in dockerfile
    assert 'CMD ["hub", "serve", "--host", "0.0.0.0", "--port", "8000"]' in dockerfile
    assert "RUN pip install . " in dockerfile  # not editable: the migrations ship inside the package
