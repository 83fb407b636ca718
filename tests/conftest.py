"""Shared fixtures: real databases (SQLite and PostgreSQL), the app over HTTP, shops with keys."""

from __future__ import annotations

import asyncio
import os
import shutil
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, closing
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import yaml
from sqlalchemy import select, text

from hub.bootstrap import web_app
from hub.db.engine import create_engine, migrate
from hub.db.models import Base
from hub.settings import Settings, load_settings
from tests import services

pytest_plugins = ["tests.file_order"]  # the files, longest first

ADMIN_TOKEN = "test-operator-token-0123456789-abcdef"
BACKENDS = ["sqlite", "postgres"]


@pytest.fixture(scope="session", autouse=True)
def example_plugin_installed(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Install the example connector as a third party would: a package with a ``hub`` entry point. Once per run:
    under pytest-xdist the workers share the run's temporary root, and the first one installs it."""
    from filelock import FileLock

    example = Path(__file__).resolve().parents[1] / "examples" / "hub-example-connector"
    shared = tmp_path_factory.getbasetemp().parent if os.environ.get("PYTEST_XDIST_WORKER") else \
        tmp_path_factory.getbasetemp()
    with FileLock(shared / "example-plugin.lock"):
        done = shared / "example-plugin.installed"
        if done.exists():
            return
        subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
             "--force-reinstall", str(example)],
            check=True, capture_output=True,
        )
        done.touch()


@pytest.fixture(scope="session")
def test_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The small random CLIP checkpoint from `hub model init-test`, loaded through the real code path."""
    from hub.search.test_checkpoint import write_test_checkpoint

    return write_test_checkpoint(tmp_path_factory.mktemp("model") / "tiny-clip")


@pytest.fixture(scope="session")
def other_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A second small random checkpoint (another seed: its vectors differ), for switching models."""
    from hub.search.test_checkpoint import write_test_checkpoint

    return write_test_checkpoint(tmp_path_factory.mktemp("model-b") / "tiny-clip-b", seed=1)


@pytest.fixture(scope="session")
def pg_service() -> Iterator[services.Service]:
    svc = services.postgres()
    yield svc
    svc.stop()


class ChromaServer:
    """``chroma run`` on a free port; with ``open_indexes``, from a config file like deploy/chroma-lru.yaml that
    keeps at most that many HNSW indexes open."""

    def __init__(self, path: Path, open_indexes: int | None = None) -> None:
        self.path = path
        self.port = services.free_port()
        self.open_indexes = open_indexes
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> None:
        chroma = shutil.which("chroma", path=str(Path(sys.executable).parent)) or "chroma"
        args = [chroma, "run", "--path", str(self.path), "--host", "127.0.0.1", "--port", str(self.port)]
        if self.open_indexes is not None:
            config = yaml.safe_load((Path(__file__).parents[1] / "deploy" / "chroma-lru.yaml").read_text())
            config |= {"persist_path": str(self.path), "port": self.port, "listen_address": "127.0.0.1"}
            config["segment_manager"]["hnsw_index_pool_cache_config"]["memory"]["capacity"] = self.open_indexes
            (self.path.parent / "chroma.yaml").write_text(yaml.safe_dump(config))
            args = [chroma, "run", str(self.path.parent / "chroma.yaml")]
        self.proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=os.environ | {"ANONYMIZED_TELEMETRY": "False"},
        )
        services.wait_for_port("127.0.0.1", self.port, timeout=60)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            self.proc.wait(20)
            self.proc = None


@pytest.fixture
def redis_service():
    svc = services.redis()
    yield svc
    svc.stop()


@pytest.fixture
def chroma(tmp_path):
    server = ChromaServer(tmp_path / "chroma")
    server.start()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def s3_service() -> Iterator[services.Service]:
    svc = services.s3()
    yield svc
    svc.stop()


@pytest.fixture
def s3_media(s3_service: services.Service) -> dict[str, Any]:
    """Settings for media in a new bucket of the test run's S3 server (a prefix inside it, as an operator
    would share one bucket between environments)."""
    bucket = f"hub-test-{uuid.uuid4().hex[:12]}"
    assert httpx.put(f"{s3_service.url}/{bucket}").status_code == 200
    return {"media_url": f"s3://{bucket}/media", "s3_endpoint_url": s3_service.url,
            "s3_access_key_id": "test-access-key", "s3_secret_access_key": "test-secret-key"}


def bucket_names(s3_url: str, media_url: str) -> list[str]:
    """The names under the media prefix of a bucket of the test S3 server (relative to the prefix)."""
    import re

    bucket, _, prefix = media_url.removeprefix("s3://").partition("/")
    listing = httpx.get(f"{s3_url}/{bucket}", params={"prefix": f"{prefix}/"}).text
    return sorted(key.removeprefix(f"{prefix}/") for key in re.findall(r"<Key>([^<]+)</Key>", listing))


def _pg_admin_url(pg_url: str) -> str:
    return pg_url.replace("postgresql+asyncpg://", "postgresql://")


async def _pg_exec(pg_url: str, *statements: str) -> None:
    conn = await asyncpg.connect(_pg_admin_url(pg_url))
    try:
        for statement in statements:
            await conn.execute(statement)
    finally:
        await conn.close()


def _with_db(pg_url: str, name: str) -> str:
    base = pg_url.rsplit("/", 1)[0].replace("postgresql://", "postgresql+asyncpg://")
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def pg_template(pg_service: services.Service) -> Iterator[str]:
    """A database migrated once; each test clones it (fast) instead of migrating again."""
    name = f"hub_tpl_{uuid.uuid4().hex[:10]}"
    asyncio.run(_pg_exec(pg_service.url, f'CREATE DATABASE "{name}"'))
    asyncio.run(migrate(_with_db(pg_service.url, name)))
    yield name
    asyncio.run(_pg_exec(pg_service.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def make_pg_database(request: pytest.FixtureRequest) -> Iterator[Callable[[], str]]:
    """Create fresh migrated PostgreSQL databases; dropped after the test."""
    created: list[str] = []
    pg_service = request.getfixturevalue("pg_service")
    template = request.getfixturevalue("pg_template")

    def make() -> str:
        name = f"hub_test_{uuid.uuid4().hex[:12]}"
        asyncio.run(_pg_exec(pg_service.url, f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        created.append(name)
        return _with_db(pg_service.url, name)

    yield make
    for name in created:
        asyncio.run(_pg_exec(pg_service.url, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An embedded database migrated once; each test gets a copy (as PostgreSQL tests clone ``pg_template``)."""
    path = tmp_path_factory.mktemp("sqlite-template") / "hub.db"
    asyncio.run(migrate(f"sqlite+aiosqlite:///{path}"))
    return path


def copy_sqlite(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's backup API (whatever its journal holds)."""
    with closing(sqlite3.connect(source)) as src, closing(sqlite3.connect(target)) as dst:
        src.backup(dst)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        copy_sqlite(request.getfixturevalue("sqlite_template"), tmp_path / "hub.db")
        return f"sqlite+aiosqlite:///{tmp_path / 'hub.db'}"
    return request.getfixturevalue("make_pg_database")()


@pytest.fixture
def settings_overrides() -> dict[str, Any]:
    """Override in a test module (or with ``@pytest.mark.parametrize``) to change settings."""
    return {}


@pytest.fixture
def settings(tmp_path: Path, database_url: str, settings_overrides: dict[str, Any], test_model: Path) -> Settings:
    values: dict[str, Any] = {
        "home": tmp_path / "home",
        "model": str(test_model),
        "sweep_seconds": 1,
        "retry_first_seconds": 0.2,
        "rate_limit": "100000/minute",
        "storefront_rate_limit": "100000/minute",
        "database_url": database_url,
        "admin_token": ADMIN_TOKEN,
        "public_url": "http://testserver.local",
        "log_format": "text",
    }
    values.update(settings_overrides)
    return load_settings(**values)


RUNNING_APPS: list[Any] = []  # the services of the apps ``serve_app`` runs (their prompt logs)


@asynccontextmanager
async def serve_app(settings: Settings, **kwargs: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The app with its lifespan, called over HTTP semantics in the test's own event loop."""
    app = web_app(settings, **kwargs)
    started, stopping = asyncio.Event(), asyncio.Event()

    async def run_lifespan() -> None:  # one task owns the lifespan, as under a real server
        async with app.lifespan():
            started.set()
            await stopping.wait()

    lifespan = asyncio.create_task(run_lifespan())
    await asyncio.wait([lifespan, asyncio.ensure_future(started.wait())], return_when=asyncio.FIRST_COMPLETED)
    if lifespan.done():
        lifespan.result()
    RUNNING_APPS.append(app.state.services)
    try:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver.local", timeout=60) as http:
            http.app = app  # type: ignore[attr-defined]
            yield http
    finally:
        RUNNING_APPS.remove(app.state.services)
        stopping.set()
        await lifespan


@pytest.fixture
async def client(settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with serve_app(settings) as http:
        yield http


class ShopKeys(dict):
    """A created shop: ``id``, ``secret_key``, ``publishable_key`` and ready-made auth headers."""

    @property
    def secret(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self['secret_key']}"}

    @property
    def publishable(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self['publishable_key']}"}


@pytest.fixture
def make_shop(client: httpx.AsyncClient) -> Callable[..., Any]:
    counter = iter(range(1, 1000))

    async def make(name: str | None = None) -> ShopKeys:
        n = next(counter)
        resp = await client.post(
            "/api/v1/shops",
            json={"name": name or f"Shop {n}", "email": f"shop{n}-{uuid.uuid4().hex[:6]}@example.com"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert resp.status_code == 201, resp.text
        return ShopKeys(resp.json())

    return make


@pytest.fixture
def make_shop_for() -> Callable[..., Any]:
    """Make a shop through the operator API of a given client (for tests that build their own app)."""

    async def make(http: httpx.AsyncClient, name: str = "Plugin Shop") -> ShopKeys:
        resp = await http.post(
            "/api/v1/shops",
            json={"name": name, "email": f"{uuid.uuid4().hex[:8]}@example.com"},
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        )
        assert resp.status_code == 201, resp.text
        return ShopKeys(resp.json())

    return make


@pytest.fixture
async def shop(make_shop: Callable[..., Any]) -> ShopKeys:
    return await make_shop("Main Street Fashion")


async def _settle(engine: Any, timeout: float = 60) -> None:
    """Wait until no image, webhook delivery or job is in flight, so a snapshot is stable."""
    from sqlalchemy import func

    from hub.db.models import Image, Job, WebhookDelivery

    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        async with engine.connect() as conn:
            busy = 0
            for column, states in ((Image.status, ("pending", "embedding")),
                                   (WebhookDelivery.status, ("received", "processing")),
                                   (Job.status, ("queued", "running"))):
                busy += await conn.scalar(select(func.count()).where(column.in_(states)))
        if not busy:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{busy} images, deliveries or jobs still in flight after {timeout} s")
        await asyncio.sleep(0.1)


async def db_snapshot(settings: Settings) -> dict[str, Any]:
    """Every row of every table (but key usage times) and every media file: to prove nothing changed. The prompts
    that running apps have gathered are written first (else a timed flush could land between two snapshots)."""
    for running in RUNNING_APPS:
        await running.prompt_log.flush()
    engine = create_engine(settings.db_url)
    state: dict[str, Any] = {}
    try:
        await _settle(engine)
        async with engine.connect() as conn:
            for table in Base.metadata.sorted_tables:
                cols = [c for c in table.columns if c.name != "last_used_at"]
                rows = (await conn.execute(select(*cols).order_by(*table.primary_key.columns))).all()
                state[table.name] = [tuple(r) for r in rows]
    finally:
        await engine.dispose()
    media = settings.media_dir
    state["media"] = sorted(str(p.relative_to(media)) for p in media.rglob("*") if p.is_file()) if media.exists() else []
    return state


@pytest.fixture
def snapshot(settings: Settings) -> Callable[[], Any]:
    return lambda: db_snapshot(settings)


async def wait_for_images(
    client: httpx.AsyncClient, headers: dict[str, str], ids: list[int], statuses: set[str] = frozenset({"ready", "failed"}),
    timeout: float = 60,
) -> dict[int, dict[str, Any]]:
    """Poll the API until every image is in one of ``statuses``; returns the images by id."""
    deadline = asyncio.get_running_loop().time() + timeout
    wanted = set(ids)
    while True:
        images: dict[int, dict[str, Any]] = {}
        cursor = None
        while True:  # one listing per poll, not one request per image
            params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
            resp = await client.get("/api/v1/images", params=params, headers=headers)
            assert resp.status_code == 200, resp.text
            page = resp.json()
            images.update({i["id"]: i for i in page["items"] if i["id"] in wanted})
            cursor = page["next_cursor"]
            if not cursor or len(images) == len(wanted):
                break
        assert set(images) == wanted, f"images missing: {wanted - set(images)}"
        if all(img["status"] in statuses for img in images.values()):
            return images
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"images not {statuses} after {timeout} s: "
                                 f"{ {i: (img['status'], img['error']) for i, img in images.items()} }")
        await asyncio.sleep(0.2)


async def wait_job(client: httpx.AsyncClient, headers: dict[str, str], job_id: int, timeout: float = 120) -> dict[str, Any]:
    """Poll ``GET /api/v1/jobs/{id}`` until the job succeeded or failed; returns it."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        job = (await client.get(f"/api/v1/jobs/{job_id}", headers=headers)).json()
        if job["status"] in ("succeeded", "failed"):
            return job
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"job {job_id} did not finish: {job}")
        await asyncio.sleep(0.05)


async def settle_deliveries(settings: Settings, timeout: float = 30) -> list[Any]:
    """Wait until no webhook delivery is in flight; returns every delivery row, oldest first."""
    from hub.db.models import WebhookDelivery

    engine = create_engine(settings.db_url)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        while True:
            async with engine.connect() as db:
                rows = list((await db.execute(select(WebhookDelivery).order_by(WebhookDelivery.id))).all())
            if all(r.status not in ("received", "processing") for r in rows):
                return rows
            if asyncio.get_running_loop().time() > deadline:
                raise AssertionError("webhook deliveries still in flight")
            await asyncio.sleep(0.05)
    finally:
        await engine.dispose()


async def images_by_external_id(client: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, dict[str, Any]]:
    """Every image of the shop, keyed by the platform's image id (connector tests)."""
    found: dict[str, dict[str, Any]] = {}
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 100} | ({"cursor": cursor} if cursor else {})
        page = (await client.get("/api/v1/images", params=params, headers=headers)).json()
        found |= {i["external_id"]: i for i in page["items"]}
        cursor = page["next_cursor"]
        if not cursor:
            return found


async def wait_catalog(client: httpx.AsyncClient, headers: dict[str, str], count: int,
                       timeout: float = 120) -> dict[str, dict[str, Any]]:
    """Wait until the shop has ``count`` images, none of them still pending or embedding."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        found = await images_by_external_id(client, headers)
        if len(found) == count and all(i["status"] in ("ready", "failed") for i in found.values()):
            return found
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"{len(found)} images, statuses {sorted({i['status'] for i in found.values()})}")
        await asyncio.sleep(0.1)


def app_sender(client: httpx.AsyncClient, public_url: str = "http://testserver.local") -> Callable[..., int]:
    """How a platform emulator (in its own thread) reaches the in-process app: (url, body, headers) -> status.
    Used for deliveries a platform makes while the hub is still waiting for it (WooCommerce's webhook ping)."""
    loop = asyncio.get_running_loop()

    def send(url: str, body: bytes, headers: dict[str, str]) -> int:
        future = asyncio.run_coroutine_threadsafe(
            client.post(url.removeprefix(public_url), content=body, headers=headers), loop)
        return future.result(timeout=60).status_code

    return send


@asynccontextmanager
async def write_lock(db_url: str, table: str) -> AsyncIterator[None]:
    """Another transaction holding the lock that writing ``table`` needs until the block ends (SQLite: the
    database's write lock; PostgreSQL: a lock on that table): for tests of what waits for a write."""
    from hub.db.engine import dispose

    holder = create_engine(db_url)
    try:
        async with holder.connect() as conn:
            if db_url.startswith("postgresql"):
                await conn.execute(text(f"LOCK TABLE {table} IN SHARE ROW EXCLUSIVE MODE"))
            else:
                await conn.execute(text("UPDATE shops SET name = name WHERE id = -1"))
            yield
            await conn.rollback()
    finally:
        await dispose(holder)


async def upload_photos(client: httpx.AsyncClient, shop: ShopKeys, seeds: Any) -> list[int]:
    """Upload the generated product photo of each seed; the new images' ids."""
    from tests.images import photo

    ids = []
    for seed in seeds:
        resp = await client.post("/api/v1/images", files={"file": (f"{seed}.jpg", photo(seed), "image/jpeg")},
                                 headers=shop.secret)
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    return ids


async def until(check: Callable[[], Any], what: str, timeout: float = 10) -> None:
    """Wait until ``check()`` (or what it returns, when that is awaitable) is true; fail loudly after
    ``timeout`` seconds. What is awaited is the condition, not an amount of time."""
    deadline = asyncio.get_running_loop().time() + timeout
    while True:
        result = check()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.005)
