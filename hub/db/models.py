"""ORM models: every table the hub keeps. Tables are created by Alembic migrations, never ``create_all``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    Numeric,
    String,
    Text,
    TypeDecorator,
    func,
    literal_column,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> datetime:
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC, on SQLite as on PostgreSQL."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value


MAX_ID = 2**31 - 1  # ids are INTEGER columns (int4 on PostgreSQL): a larger one is bad input, never a query


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {datetime: UTCDateTime}


# SQLite reuses the id of a deleted last row unless the table is AUTOINCREMENT; ids appear in URLs (a webhook
# URL routes a platform's deliveries to a connection), so they are never reused on any backend.
NEVER_REUSE_IDS = {"sqlite_autoincrement": True}


class Shop(Base):
    """A tenant: one clothing shop."""

    __tablename__ = "shops"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    email: Mapped[str] = mapped_column(String(320), unique=True)
    active: Mapped[bool] = mapped_column(Boolean, default=True)
    # the sites (origins) whose pages may use the shop's publishable key; empty: any site
    allowed_origins: Mapped[list[str]] = mapped_column(JSON, default=list)
    # how recommendations rank when a request does not say: vector | lexical | hybrid, and the lexical side's
    # share of a hybrid ranking (0..1)
    search_mode: Mapped[str] = mapped_column(String(10), default="hybrid", server_default="hybrid")
    lexical_weight: Mapped[float] = mapped_column(Float, default=0.5, server_default="0.5")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A shop's API key, stored as a SHA-256 hash; only its prefix is ever shown again."""

    __tablename__ = "api_keys"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(16))  # "secret" | "publishable"
    name: Mapped[str] = mapped_column(String(100), default="")
    prefix: Mapped[str] = mapped_column(String(24))
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_used_at: Mapped[datetime | None] = mapped_column(default=None)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)

    shop: Mapped[Shop] = relationship(lazy="joined")


class ConsoleSession(Base):
    """A signed-in browser of the console: the cookie holds a random token, this row its SHA-256; it lives as long
    as the secret key that opened it (revoking the key ends it) and at most ``expires_at``."""

    __tablename__ = "console_sessions"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    # the secret key that opened it (None: a sign-in link sent to the shop's email)
    key_id: Mapped[int | None] = mapped_column(ForeignKey("api_keys.id", ondelete="CASCADE"), index=True,
                                               default=None)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    csrf_token: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


class ConsoleLink(Base):
    """A sign-in link mailed to a shop's address: one use, a short life; the mail holds the token, this row its
    SHA-256."""

    __tablename__ = "console_links"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column()
    used_at: Mapped[datetime | None] = mapped_column(default=None)


class _Taxon:
    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(100))
    description: Mapped[str] = mapped_column(Text, default="")
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class Category(_Taxon, Base):
    """A product category (dresses, jackets…), per shop. The original ``Category``."""

    __tablename__ = "categories"
    __table_args__ = (Index("uq_categories_shop_id_name", "shop_id", func.lower(literal_column("name")), unique=True),
                      NEVER_REUSE_IDS)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)


class Style(_Taxon, Base):
    """A style (casual, formal…), per shop. The original ``Styles``."""

    __tablename__ = "styles"
    __table_args__ = (Index("uq_styles_shop_id_name", "shop_id", func.lower(literal_column("name")), unique=True),
                      NEVER_REUSE_IDS)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)


class AgeGroup(_Taxon, Base):
    """An age group (kids, adults…), per shop. The original ``AgeGroup``."""

    __tablename__ = "age_groups"
    __table_args__ = (Index("uq_age_groups_shop_id_name", "shop_id", func.lower(literal_column("name")), unique=True),
                      NEVER_REUSE_IDS)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)


class Connection(Base):
    """A shop's link to a platform through a connector. Secret settings are stored encrypted (Fernet)."""

    __tablename__ = "connections"
    __table_args__ = NEVER_REUSE_IDS

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    connector: Mapped[str] = mapped_column(String(50))
    name: Mapped[str] = mapped_column(String(200), default="")
    settings: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # the non-secret settings
    secrets: Mapped[str | None] = mapped_column(Text, default=None)  # Fernet token of the secret settings
    webhook_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    status: Mapped[str] = mapped_column(String(20), default="active")  # connecting | active | disabled | erased
    via_app: Mapped[bool] = mapped_column(Boolean, default=False)  # installed through the operator's app (OAuth)
    webhook_url: Mapped[str | None] = mapped_column(String(2000), default=None)  # where its webhooks point
    info: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # what the connector's check reported
    # the catalog is re-read every sync_interval_minutes (None: only when asked); the sweep starts the sync due at
    # next_sync_at
    sync_interval_minutes: Mapped[int | None] = mapped_column(Integer, default=None)
    next_sync_at: Mapped[datetime | None] = mapped_column(default=None, index=True)
    # what the last complete catalog read left for the next (hub.connectors.CatalogPage.state), and why the last
    # read failed (None once one succeeds): the catalog is kept as it was
    catalog_state: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict, server_default="{}")
    sync_error: Mapped[str | None] = mapped_column(Text, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Product(Base):
    """An optional grouping of images: one product of the shop's catalog."""

    __tablename__ = "products"
    __table_args__ = (
        # a connection's products are keyed by the platform's id; the shop's own (manual) ones by source + id
        Index("uq_products_connection_id_external_id", "connection_id", "external_id", unique=True,
              sqlite_where=text("connection_id IS NOT NULL"), postgresql_where=text("connection_id IS NOT NULL")),
        Index("uq_products_shop_id_source_external_id", "shop_id", "source", "external_id", unique=True,
              sqlite_where=text("connection_id IS NULL"), postgresql_where=text("connection_id IS NULL")),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    source: Mapped[str] = mapped_column(String(50), default="manual")
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True, default=None
    )
    external_id: Mapped[str | None] = mapped_column(String(100), default=None)
    title: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    url: Mapped[str | None] = mapped_column(String(2000), default=None)
    price: Mapped[float | None] = mapped_column(Numeric(12, 2), default=None)
    currency: Mapped[str | None] = mapped_column(String(3), default=None)
    available: Mapped[bool] = mapped_column(Boolean, default=True)
    status: Mapped[str] = mapped_column(String(20), default="active")  # active | draft | archived | deleted
    tags: Mapped[list[str]] = mapped_column(JSON, default=list)
    category_hint: Mapped[str | None] = mapped_column(String(200), default=None)
    remote_updated_at: Mapped[datetime | None] = mapped_column(default=None)  # newest platform change applied
    seen_job_id: Mapped[int | None] = mapped_column(Integer, default=None)  # the last full sync that saw it
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class Image(Base):
    """One product image. Every field of the original ``ImageCollection`` plus the pipeline's state."""

    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_shop_id_id", "shop_id", "id"),
        Index("ix_images_shop_id_content_hash", "shop_id", "content_hash"),
        Index("ix_images_status_next_attempt_at", "status", "next_attempt_at"),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    product_id: Mapped[int | None] = mapped_column(
        ForeignKey("products.id", ondelete="SET NULL"), index=True, default=None
    )
    name: Mapped[str] = mapped_column(String(500), default="")
    description: Mapped[str] = mapped_column(Text, default="")
    category_id: Mapped[int | None] = mapped_column(
        ForeignKey("categories.id", ondelete="SET NULL"), default=None
    )
    style_id: Mapped[int | None] = mapped_column(ForeignKey("styles.id", ondelete="SET NULL"), default=None)
    age_group_id: Mapped[int | None] = mapped_column(
        ForeignKey("age_groups.id", ondelete="SET NULL"), default=None
    )
    photo: Mapped[str | None] = mapped_column(String(500), default=None)  # path under the media folder
    source: Mapped[str] = mapped_column(String(50), default="manual")
    connection_id: Mapped[int | None] = mapped_column(
        ForeignKey("connections.id", ondelete="CASCADE"), index=True, default=None
    )
    external_id: Mapped[str | None] = mapped_column(String(100), default=None)
    image_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    product_url: Mapped[str | None] = mapped_column(String(2000), default=None)
    status: Mapped[str] = mapped_column(String(20), default="pending")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)  # when the sweep re-queues it
    content_hash: Mapped[str | None] = mapped_column(String(64), default=None)
    mime_type: Mapped[str | None] = mapped_column(String(50), default=None)
    width: Mapped[int | None] = mapped_column(Integer, default=None)
    height: Mapped[int | None] = mapped_column(Integer, default=None)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    processor_embedded: Mapped[bool] = mapped_column(Boolean, default=False)
    embedded_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)

    category: Mapped[Category | None] = relationship(lazy="joined")
    style: Mapped[Style | None] = relationship(lazy="joined")
    age_group: Mapped[AgeGroup | None] = relationship(lazy="joined")


class SearchDoc(Base):
    """An image's words for the lexical index, analysed by ``hub.search.text`` (space-separated terms):
    ``title`` from the image's name, its product's title, tags and type, and its taxonomy names; ``body`` from
    the descriptions. PostgreSQL indexes them as a generated ``tsvector`` (GIN), SQLite in an FTS5 table kept
    by triggers (migration 0011); both see exactly these terms."""

    __tablename__ = "search_docs"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True,
                                          autoincrement=False)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    title: Mapped[str] = mapped_column(Text, default="")
    body: Mapped[str] = mapped_column(Text, default="")
    length: Mapped[int] = mapped_column(Integer, default=0)  # words in title and body


class MerchRule(Base):
    """A shop's merchandising rule (``hub.domain.merchandising``): ``pin`` a product (or image) at a position for a
    query, ``hide`` one (for a query or every query), ``synonyms`` (a group of words that find each other),
    ``boost`` what is in stock or new."""

    __tablename__ = "merch_rules"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(10))  # pin | hide | synonyms | boost
    query: Mapped[str | None] = mapped_column(String(1000), default=None)  # as the merchant wrote it
    query_key: Mapped[str | None] = mapped_column(String(1000), default=None)  # its analysed words
    product_id: Mapped[int | None] = mapped_column(ForeignKey("products.id", ondelete="CASCADE"), default=None)
    image_id: Mapped[int | None] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), default=None)
    position: Mapped[int | None] = mapped_column(Integer, default=None)
    words: Mapped[list[str]] = mapped_column(JSON, default=list)
    condition: Mapped[str | None] = mapped_column(String(20), default=None)  # in_stock | new
    weight: Mapped[float | None] = mapped_column(Float, default=None)
    days: Mapped[int | None] = mapped_column(Integer, default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


def dialect_only(kind: str, name: str | None) -> bool:
    """What migration 0011 adds beside the models on one backend only, the lexical index's native parts:
    PostgreSQL's ``search_docs.terms`` column and its GIN index, SQLite's ``search_fts`` tables."""
    return (kind == "table" and (name or "").startswith("search_fts")) or (
        kind == "column" and name == "terms") or (kind == "index" and name == "ix_search_docs_terms")


class Prompt(Base):
    """A shopper's query. The original ``Prompt_API`` (prompt, num_recommended) plus time and result count."""

    __tablename__ = "prompts"
    __table_args__ = (Index("ix_prompts_shop_id_id", "shop_id", "id"),
                      Index("ix_prompts_shop_id_created_at", "shop_id", "created_at"), NEVER_REUSE_IDS)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    prompt: Mapped[str] = mapped_column(Text)
    num_recommended: Mapped[int] = mapped_column(Integer)
    result_count: Mapped[int] = mapped_column(Integer, default=0)
    top_score: Mapped[float | None] = mapped_column(Float, default=None)  # the best result's similarity
    filters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    api_key_id: Mapped[int | None] = mapped_column(
        ForeignKey("api_keys.id", ondelete="SET NULL"), default=None
    )
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class WebhookDelivery(Base):
    """One verified webhook delivery: deduplicated by its content, processed by a queued task."""

    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("uq_webhook_deliveries_connection_id_content_key", "connection_id", "content_key", unique=True),
        Index("ix_webhook_deliveries_status_next_attempt_at", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_connection_id_id", "connection_id", "id"),  # a connection's, newest first
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    connection_id: Mapped[int] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"))
    delivery_id: Mapped[str | None] = mapped_column(String(200), default=None)  # the platform's id, as sent
    content_key: Mapped[str | None] = mapped_column(String(64), default=None)  # what replays are recognised by
    app_wide: Mapped[bool] = mapped_column(Boolean, default=False)  # came to /webhooks/{connector}, app-verified
    topic: Mapped[str] = mapped_column(String(100), default="")
    # received | processing | processed | ignored | rejected | failed
    status: Mapped[str] = mapped_column(String(20), default="received")
    error: Mapped[str | None] = mapped_column(Text, default=None)
    headers: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    body: Mapped[bytes | None] = mapped_column(LargeBinary, default=None)  # dropped once processed
    summary: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    duplicates: Mapped[int] = mapped_column(Integer, default=0, server_default="0")  # the same sent again
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    received_at: Mapped[datetime] = mapped_column(default=utcnow)
    processed_at: Mapped[datetime | None] = mapped_column(default=None)


ACTIVE_JOB = "status IN ('queued', 'running')"


class Job(Base):
    """A full sync, a bulk import or a shop's build for another model, run by a worker with its progress here;
    resumable from ``cursor``."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_shop_id_id", "shop_id", "id"),
        Index("ix_jobs_status_next_attempt_at", "status", "next_attempt_at"),
        # one active sync per connection
        Index("uq_jobs_active_connection_id", "connection_id", unique=True,
              sqlite_where=text(ACTIVE_JOB), postgresql_where=text(ACTIVE_JOB)),
        NEVER_REUSE_IDS,
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    shop_id: Mapped[int] = mapped_column(ForeignKey("shops.id", ondelete="CASCADE"))
    connection_id: Mapped[int | None] = mapped_column(ForeignKey("connections.id", ondelete="CASCADE"), default=None)
    kind: Mapped[str] = mapped_column(String(20))  # sync | import | reindex (hub.domain.reindex)
    status: Mapped[str] = mapped_column(String(20), default="queued")  # queued|running|succeeded|failed
    total: Mapped[int | None] = mapped_column(Integer, default=None)
    done: Mapped[int] = mapped_column(Integer, default=0)
    failed: Mapped[int] = mapped_column(Integer, default=0)
    errors: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    error: Mapped[str | None] = mapped_column(Text, default=None)  # why the whole job failed
    cursor: Mapped[str | None] = mapped_column(Text, default=None)  # where a restarted job resumes
    params: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class VectorModel(Base):
    """A model the vector store holds collections for (``hub.domain.vector_models``): ``active`` (every process
    serves it; the first to start registers its ``HUB_MODEL``), ``previous`` (active before the last switch: kept
    current for a rollback), ``building`` (``hub reindex --model`` embeds every shop's images with it), or
    ``forgotten`` (the sweep drops its collections, then the row). Processes write metadata changes and deletions
    to every registered model's collections but forgotten ones."""

    __tablename__ = "vector_models"

    key: Mapped[str] = mapped_column(String(80), primary_key=True)  # hub.search.encoder.model_key(name)
    name: Mapped[str] = mapped_column(String(1000))  # a Hugging Face id or a checkpoint folder, as HUB_MODEL takes
    state: Mapped[str] = mapped_column(String(20), default="building")  # active | previous | building | forgotten
    created_at: Mapped[datetime] = mapped_column(default=utcnow)  # registered in its current role
    updated_at: Mapped[datetime] = mapped_column(default=utcnow)
    switched_at: Mapped[datetime | None] = mapped_column(default=None)  # made active by a switch (None: a process)
