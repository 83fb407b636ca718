"""Settings read from ``HUB_*`` environment variables (and an optional ``.env`` file)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Mapping
from datetime import timedelta
from functools import lru_cache
from pathlib import Path
from urllib.parse import urlsplit

from typing import Literal

from pydantic import AliasChoices, Field, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_MODEL = "patrickjohncyh/fashion-clip"


# settings renamed for what they govern (they were named for images, and govern deliveries and jobs too): the old
# HUB_ names are still read, from the environment or a .env file; where both names are set in the same place the
# new one wins (and, as for every setting, the environment wins over .env)
RENAMED = {
    "retry_max_attempts": "embed_max_attempts",
    "retry_first_seconds": "embed_retry_seconds",
    "lease_seconds": "embed_lease_seconds",
}


def _renamed(name: str) -> AliasChoices:
    # only prefixed names (the unprefixed field name still works as a keyword: populate_by_name)
    return AliasChoices(f"HUB_{name.upper()}", f"HUB_{RENAMED[name].upper()}")


def old_names_in_use(environ: Mapping[str, str] | None = None, env_file: str | Path = ".env") -> list[str]:
    """The renamed variables set under their old names, in the environment or the .env file (the service warns
    about each at start-up, and says which value is used when both names are set)."""
    names = {key.upper() for key in (os.environ if environ is None else environ)}
    with contextlib.suppress(OSError, UnicodeDecodeError):
        names |= {line.split("=", 1)[0].strip().removeprefix("export ").strip().upper()
                  for line in Path(env_file).read_text().splitlines() if "=" in line}
    found = []
    for new, old in RENAMED.items():
        if f"HUB_{old.upper()}" in names:
            both = f"; HUB_{new.upper()} is set too and is used" if f"HUB_{new.upper()}" in names else ""
            found.append(f"HUB_{old.upper()} (now HUB_{new.upper()}{both})")
    return found


def _http_url(value: str, problem: str) -> str:
    """``value`` without its trailing slash if it is an http(s) URL with a host; else ``problem``."""
    parts = urlsplit(value)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise ValueError(problem)
    return value.rstrip("/")


class Settings(BaseSettings):
    """Every knob of the service. Unset values fall back to the embedded single-machine default."""

    model_config = SettingsConfigDict(env_prefix="HUB_", env_file=".env", extra="ignore", populate_by_name=True)

    home: Path = Field(Path(".hub"), description="Embedded data folder (SQLite, media, vectors).")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite in HUB_HOME.")
    broker_url: str = Field("memory://", description="memory:// (in-process) or redis://host:port/db.")
    queue_name: str = Field("hub:tasks", min_length=1, max_length=100, description="Redis stream of tasks.")
    chroma_url: str | None = Field(None, description="http://host:port of a Chroma server; default embedded.")
    chroma_open_indexes: int = Field(0, ge=0, le=100_000, description="Embedded Chroma: shops' vector indexes "
                                     "kept open at once (the least recently used is closed, and loaded again when "
                                     "needed); 0: Chroma's own number (the file-handle limit / 5). A Chroma server "
                                     "has its own (deploy/chroma-lru.yaml).")
    media_url: str | None = Field(None, description="s3://bucket/prefix: photos, thumbnails and import files in an "
                                  "S3-compatible bucket (default: HUB_HOME/media).")
    s3_endpoint_url: str | None = Field(None, description="http(s)://host:port of an S3-compatible server (MinIO…); "
                                        "unset: AWS S3.")
    s3_region: str = Field("us-east-1", description="The bucket's region.")
    s3_access_key_id: str | None = Field(None, description="S3 credentials (unset: the AWS_* environment).")
    s3_secret_access_key: str | None = Field(None, repr=False,
                                             description="S3 credentials (unset: the AWS_* environment).")
    model: str = Field(DEFAULT_MODEL, description="Hugging Face id or local folder of a CLIP checkpoint.")
    admin_token: str | None = Field(None, description="Bearer token for the operator API (32+ characters).")
    metrics_address: str | None = Field(None, description="host:port where each process (serve, worker) also "
                                        "serves its own Prometheus metrics without a token; keep it private.")
    secret_key: str | None = Field(None, description="Encrypts connector credentials at rest.")
    smtp_url: str | None = Field(None, description="smtp://user:pass@host:port, smtps:// or smtp+starttls://.")
    mail_from: str = Field("Fashion Hub <no-reply@fashion-hub.local>", description="Sender of key mails.")
    public_url: str = Field("http://127.0.0.1:8000", description="Base URL the hub is reachable at.")
    allow_private_fetch: bool = Field(False, description="Allow image URLs on private/loopback addresses.")
    max_upload_bytes: int = Field(20 * 1024 * 1024, ge=1024, description="Largest accepted image file.")
    max_image_pixels: int = Field(25_000_000, ge=1024, description="Largest accepted width x height.")
    max_import_bytes: int = Field(2 * 1024**3, ge=1024, description="Largest bulk-import upload (ZIP, CSV, JSON).")
    max_manifest_bytes: int = Field(64 * 1024**2, ge=1024,
                                    description="Largest bulk-import manifest (CSV/JSON), read as a stream.")
    max_import_rows: int = Field(1_000_000, ge=1, description="Most rows (images) one bulk import may have.")
    rate_limit: str = Field("600/minute", description="Per-key request limit (limits notation).")
    signup_rate_limit: str = Field("10/hour", description="Per-client-address signup limit.")
    storefront_rate_limit: str = Field("120/minute", description="Requests one client address may make with one "
                                       "publishable key (the storefront widget), on top of the per-key limit.")
    auth_failure_limit: str = Field("30/minute", description="Failed authentications (bad keys, bad operator "
                                    "tokens) per client address before it gets 429.")
    max_keys_per_shop: int = Field(50, ge=2, le=10_000, description="Active API keys one shop may have.")
    rate_limit_storage_url: str = Field("memory://", description="memory:// or redis://… shared by API nodes.")
    device: str | None = Field(None, description="cpu, cuda or cuda:N; default cuda when present.")
    inference: Literal["auto", "onnx", "torch"] = Field(
        "auto", description="What runs the model: onnx (ONNX Runtime, exported from the checkpoint once), torch, or "
        "auto (ONNX Runtime on CPU, torch on a GPU).")
    inference_threads: int | None = Field(None, ge=1, le=256, description="ONNX Runtime threads per model tower; "
                                          "default the cores the process may use.")
    inference_int8: bool = Field(False, description="ONNX Runtime runs the model's weights quantized to int8: "
                                 "faster, less exact (docs/benchmarks.md).")
    embed_batch_size: int = Field(32, ge=1, le=256, description="Images per forward pass.")
    embed_batch_wait_ms: int = Field(100, ge=0, le=5000, description="How long a batch waits to fill.")
    query_cache_seconds: float = Field(5.0, ge=0, le=300, description="How long a query trusts what it read "
                                       "before: its key, its shop's search defaults and merchandising rules, and "
                                       "a webhook delivery its connection (0: read on every request). A change "
                                       "made through another API process counts here within this time; through "
                                       "this one, at once.")
    worker_nice: int = Field(10, ge=0, le=19, description="CPU priority of `hub worker` (Linux nice value; 0 "
                             "leaves it as started): a worker sharing a host with the API leaves the API the "
                             "cores it needs to answer.")
    embed_nice: int = Field(10, ge=0, le=19, description="CPU priority of embedding images (Linux nice value of "
                            "its threads; 0 leaves it at the process's): where the API shares the cores with "
                            "embedding, requests and webhooks are answered first.")
    retry_max_attempts: int = Field(13, ge=1, le=100, validation_alias=_renamed("retry_max_attempts"),
                                    description="Attempts before an image, a webhook delivery or a job fails: with "
                                    "the default delays, about 4.4 hours of retrying.")
    retry_first_seconds: float = Field(10.0, gt=0, validation_alias=_renamed("retry_first_seconds"),
                                       description="First retry delay (images, deliveries, jobs); doubles each attempt.")
    retry_max_seconds: float = Field(3600.0, gt=0, description="Longest delay between two attempts.")
    lease_seconds: float = Field(300.0, gt=0, validation_alias=_renamed("lease_seconds"),
                                 description="Claimed work (an image, a delivery, a job, a queued task) whose worker "
                                 "vanished is handed out again after this.")
    sweep_seconds: int = Field(30, ge=1, description="How often stuck images are re-queued.")
    delivery_retention_days: int = Field(30, ge=1, description="How long webhook delivery records are kept.")
    worker_concurrency: int = Field(64, ge=1, le=1000, description="Tasks a worker runs at once.")
    fetch_timeout: float = Field(15.0, gt=0, description="Seconds an image host may stay silent (connect, each read).")
    fetch_deadline: float = Field(60.0, gt=0, description="Seconds one image fetch may take in all.")
    fetch_min_rate: int = Field(8192, ge=0, description="Bytes/s an image must arrive at after 5 s (0: no minimum).")
    fetch_per_shop: int = Field(8, ge=1, le=256, description="Image fetches one shop may have running at once.")
    fetch_max_redirects: int = Field(5, ge=0, le=20, description="Redirects followed per image URL.")
    platform_max_response_bytes: int = Field(32 * 1024 * 1024, ge=64 * 1024,
                                             description="Largest answer read from a shop platform's API.")
    platform_deadline: float = Field(60.0, gt=0, description="Seconds one call to a shop platform may take in all.")
    model_drop_delay: float = Field(900.0, ge=0, description="Seconds after a model is forgotten (hub reindex "
                                    "--forget, or a third switch) before the sweep drops its collections.")
    stop_grace: float = Field(10.0, ge=0, le=300, description="Seconds a stopping hub serve lets the tasks its "
                              "in-process workers run finish before it cancels them (picked up again later).")
    feed_deadline: float = Field(1800.0, gt=0, description="Seconds one read of a product feed (the feed "
                                 "connector) may take in all; its size is bounded by HUB_MAX_IMPORT_BYTES.")
    connect_deadline: float = Field(180.0, gt=0,
                                    description="Seconds connecting a store (check, webhooks) may take in all.")
    lexical_deadline: float = Field(2.0, ge=0, le=60, description="Seconds a query's word searches may take in "
                                    "all; past it a hybrid query is ranked by looks alone, a lexical one answers "
                                    "503 (0: no word search at all).")
    exact_max_vectors: int = Field(5_000, ge=0, le=1_000_000, description="Queries matching at most this many "
                                   "images are ranked exactly (cosine against each) instead of through the index.")
    exact_cache_mb: int = Field(256, ge=1, description="Memory for the vectors kept for exact ranking.")
    max_decodes: int = Field(2, ge=1, le=64, description="Images decoded at once in one process (memory bound).")
    disabled_plugins: str = Field("", description="Comma-separated plugin names not to load.")
    log_level: str = Field("INFO", description="DEBUG, INFO, WARNING or ERROR.")
    log_format: str = Field("json", description="json or text.")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value.startswith("postgres://"):
            value = "postgresql://" + value.removeprefix("postgres://")
        if value.startswith("postgresql://"):
            value = "postgresql+asyncpg://" + value.removeprefix("postgresql://")
        if value.startswith("sqlite://") and not value.startswith("sqlite+aiosqlite://"):
            value = "sqlite+aiosqlite://" + value.removeprefix("sqlite://")
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("must be a postgresql://… or sqlite:///… URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _broker_url(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"memory", "redis", "rediss"}:
            raise ValueError("must be memory:// or redis://host:port/db")
        return value

    @field_validator("chroma_url")
    @classmethod
    def _chroma_url(cls, value: str | None) -> str | None:
        return _http_url(value, "must be http://host:port of a Chroma server (or unset for embedded)") if value else None

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme not in {"smtp", "smtps", "smtp+starttls"} or not parts.hostname:
            raise ValueError("must be smtp://[user:pass@]host:port, smtps://… or smtp+starttls://…")
        return value

    @field_validator("public_url")
    @classmethod
    def _public_url(cls, value: str) -> str:
        return _http_url(value, "must be an http(s):// URL")

    @field_validator("admin_token")
    @classmethod
    def _admin_token(cls, value: str | None) -> str | None:
        if value is not None and value != "" and len(value) < 32:
            raise ValueError("must be at least 32 characters (use a long random string: openssl rand -hex 32)")
        return value or None

    @field_validator("media_url")
    @classmethod
    def _media_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        parts = urlsplit(value)
        if parts.scheme != "s3" or not parts.netloc or parts.query or parts.fragment or "@" in parts.netloc:
            raise ValueError("must be s3://bucket or s3://bucket/prefix, without credentials (those go in "
                             "HUB_S3_ACCESS_KEY_ID and HUB_S3_SECRET_ACCESS_KEY; unset: the media folder in HUB_HOME)")
        return value.rstrip("/")

    @field_validator("s3_endpoint_url")
    @classmethod
    def _s3_endpoint(cls, value: str | None) -> str | None:
        return _http_url(value, "must be an http(s):// URL") if value else None

    @field_validator("metrics_address")
    @classmethod
    def _metrics_address(cls, value: str | None) -> str | None:
        if not value:
            return None
        host, _, port = value.rpartition(":")
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be host:port, e.g. 127.0.0.1:9464")
        return value

    @field_validator("rate_limit", "signup_rate_limit", "auth_failure_limit", "storefront_rate_limit")
    @classmethod
    def _rate(cls, value: str) -> str:
        from limits import parse_many

        try:
            parse_many(value)
        except ValueError as exc:
            raise ValueError("must look like '600/minute' or '10 per second'") from exc
        return value

    @field_validator("rate_limit_storage_url")
    @classmethod
    def _rate_storage(cls, value: str) -> str:
        if urlsplit(value).scheme not in {"memory", "redis", "rediss"}:
            raise ValueError("must be memory:// or redis://host:port/db")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        value = value.upper()
        if value not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("must be DEBUG, INFO, WARNING or ERROR")
        return value

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value not in {"json", "text"}:
            raise ValueError("must be json or text")
        return value

    @field_validator("secret_key")
    @classmethod
    def _secret_key(cls, value: str | None) -> str | None:
        if value is not None and len(value) < 16:
            raise ValueError("must be at least 16 characters (use a long random string)")
        return value or None

    @model_validator(mode="after")
    def _resolve_home(self) -> Settings:
        self.home = self.home.expanduser().resolve()
        return self

    @model_validator(mode="after")
    def _onnx_on_cpu(self) -> Settings:
        if self.inference == "onnx" and self.device not in (None, "cpu"):
            raise ValueError(f"HUB_INFERENCE=onnx runs the model on the CPU; with HUB_DEVICE={self.device} set "
                             "HUB_INFERENCE=torch (or auto)")
        return self

    def retry_delay(self, attempts: int) -> timedelta:
        """Exponential backoff after the n-th failed attempt (images, deliveries, jobs), capped at
        HUB_RETRY_MAX_SECONDS: 10 s, 20 s, 40 s … 1 h, so a host that is down for hours is still waited for."""
        seconds = self.retry_first_seconds * 2 ** min(max(0, attempts - 1), 40)
        return timedelta(seconds=min(seconds, self.retry_max_seconds))

    @property
    def lease(self) -> timedelta:
        """How long claimed work (an image, a delivery, a job) is someone's before the sweep hands it out again."""
        return timedelta(seconds=self.lease_seconds)

    @property
    def db_url(self) -> str:
        """The database URL in effect (SQLite in HUB_HOME unless HUB_DATABASE_URL is set)."""
        return self.database_url or f"sqlite+aiosqlite:///{self.home / 'hub.db'}"

    @property
    def is_embedded_db(self) -> bool:
        return self.db_url.startswith("sqlite")

    @property
    def broker_is_redis(self) -> bool:
        """A shared Redis queue (server mode) rather than the in-process one."""
        return self.broker_url.startswith(("redis://", "rediss://"))

    @property
    def disabled_plugin_names(self) -> frozenset[str]:
        return frozenset(name.strip() for name in self.disabled_plugins.split(",") if name.strip())

    @property
    def media_dir(self) -> Path:
        return self.home / "media"


class SettingsError(Exception):
    """Raised with one readable line per bad HUB_* value."""


def format_errors(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "settings"
        msg = err["msg"].removeprefix("Value error, ")
        lines.append(f"HUB_{field.upper()}: {msg}")
    return "\n".join(lines)


def load_settings(**overrides: object) -> Settings:
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        raise SettingsError(format_errors(exc)) from None


@lru_cache
def get_settings() -> Settings:
    return load_settings()
