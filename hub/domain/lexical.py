"""The lexical index: each image's words (its name, its product's title, tags, type and description, its taxonomy
names) and the shop's images ranked by the words of a prompt.

Kept in step by the database session itself: when a transaction that added an image or changed a field the index
reads (an image's name, description, taxonomy or product; a product's title, description, tags or type; a
category, style or age group's name) commits, the affected images' documents are rebuilt in it, just before. Images
that predate the index, and those of a change too large to rebuild in its own commit, get theirs from the
sweep (``backfill``). Core ``insert()``/``update()`` statements bypass the session's events: code that changes
indexed text that way must call ``mark_changed`` (none does today: bulk statements only move statuses).

Scoring is the same on PostgreSQL and SQLite because it does not use either engine's own rank function (their
statistics differ, and SQLite's span every shop): the native index (a GIN ``tsvector`` or FTS5) only decides which
of the shop's documents contain a term, and each matching term adds its inverse document frequency within the
shop, ``ln(1 + (N - n + 0.5) / (n + 0.5))`` (BM25's, with term presence rather than counts: product texts are
short), in full when the term is in the title part and half when only in the descriptions. Ties go to the
lower image id.

A search has a deadline (``HUB_LEXICAL_DEADLINE``): PostgreSQL's ``statement_timeout`` inside a savepoint, on SQLite
a timer on the event loop that interrupts the connection (not a progress handler: its Python callback must take
the GIL thousands of times per search, which a busy server makes cost seconds); past it, ``LexicalTimeout`` and the transaction goes on as before the search.
"""

from __future__ import annotations

import asyncio
import math
import sqlite3
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, Integer, delete, event, inspect, literal_column, or_, select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.dialects.postgresql import insert as postgresql_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session, SessionTransaction, aliased
from sqlalchemy.sql import Select

from hub.db.models import AgeGroup, Category, Image, Product, SearchDoc, Style
from hub.search.text import query_terms, words

TITLE_WEIGHT = 1.0
BODY_WEIGHT = 0.5
IMAGE_FIELDS = ("name", "description", "category_id", "style_id", "age_group_id", "product_id")
PRODUCT_FIELDS = ("title", "description", "tags", "category_hint")
REFRESH_BATCH = 500
INTERRUPT_EVERY = 0.01  # seconds between two interrupts of a SQLite search past its deadline
QUERY_CANCELED = "57014"  # PostgreSQL's SQLSTATE for a statement cancelled by statement_timeout


class LexicalTimeout(Exception):
    """The word search did not finish within its deadline (its statements were cancelled)."""


@dataclass(frozen=True)
class LexicalHit:
    image_id: int
    score: float


@dataclass(frozen=True)
class Source:
    """The texts one image's document is made of (a row of ``_SOURCES``)."""

    image_id: int
    shop_id: int
    name: str
    description: str
    product_title: str | None
    product_description: str | None
    product_tags: list[str] | None
    product_type: str | None
    category: str | None
    style: str | None
    age_group: str | None

    def document(self) -> dict[str, Any]:
        """The ``search_docs`` row: title and body terms (space-separated) and how many words they hold."""
        title_text = [self.name, self.category or "", self.style or "", self.age_group or "",
                      self.product_title or "", self.product_type or "", *[str(t) for t in self.product_tags or []]]
        title = words(" \n ".join(title_text))
        body = words(" \n ".join([self.description, self.product_description or ""]))
        return {"image_id": self.image_id, "shop_id": self.shop_id, "title": " ".join(title),
                "body": " ".join(body), "length": len(title) + len(body)}


_product = aliased(Product)
_SOURCES = (
    select(Image.id, Image.shop_id, Image.name, Image.description, _product.title, _product.description,
           _product.tags, _product.category_hint, Category.name, Style.name, AgeGroup.name)
    .outerjoin(_product, _product.id == Image.product_id)
    .outerjoin(Category, Category.id == Image.category_id)
    .outerjoin(Style, Style.id == Image.style_id)
    .outerjoin(AgeGroup, AgeGroup.id == Image.age_group_id)
)


def refresh(conn: Connection, image_ids: Iterable[int]) -> int:
    """Rebuild these images' documents (a gone image's goes with it, by its foreign key). Written as upserts:
    two transactions rebuilding one image never collide on its key."""
    wanted = sorted(set(image_ids))
    done = 0
    upsert: Any = postgresql_insert if conn.dialect.name == "postgresql" else sqlite_insert
    for start in range(0, len(wanted), REFRESH_BATCH):
        chunk = wanted[start:start + REFRESH_BATCH]
        values = [Source(*row).document() for row in conn.execute(_SOURCES.where(Image.id.in_(chunk))).all()]
        if values:
            stmt = upsert(SearchDoc)
            conn.execute(stmt.on_conflict_do_update(index_elements=[SearchDoc.image_id], set_={
                name: stmt.excluded[name] for name in ("shop_id", "title", "body", "length")}), values)
        done += len(values)
    return done


def forget_documents(conn: Connection, image_ids: Iterable[int]) -> None:
    """Drop these images' documents; the sweep builds them again (``backfill``)."""
    wanted = sorted(set(image_ids))
    for start in range(0, len(wanted), REFRESH_BATCH):
        conn.execute(delete(SearchDoc).where(SearchDoc.image_id.in_(wanted[start:start + REFRESH_BATCH])))


def _changed(obj: Any, fields: tuple[str, ...]) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in fields)


_PENDING = "lexical_pending"
INLINE_MAX = 1000  # documents a commit rebuilds itself; more (a category renamed) are left to the sweep


def _pending(session: Session) -> dict[str, Any]:
    pending: dict[str, Any] = session.info.setdefault(_PENDING, {"images": set(), "products": set(), "taxa": {}})
    return pending


def _after_flush(session: Session, _context: Any) -> None:
    """Note what a flush changed that documents are made of; ``_before_commit`` rebuilds them."""
    for obj in [*session.new, *session.dirty]:
        if isinstance(obj, Image) and (obj in session.new or _changed(obj, IMAGE_FIELDS)):
            _pending(session)["images"].add(obj.id)
        elif isinstance(obj, Product) and obj not in session.new and _changed(obj, PRODUCT_FIELDS):
            _pending(session)["products"].add(obj.id)
        elif isinstance(obj, Category | Style | AgeGroup) and obj not in session.new and _changed(obj, ("name",)):
            _pending(session)["taxa"].setdefault(type(obj), set()).add(obj.id)


def mark_changed(session: AsyncSession, image_ids: Iterable[int]) -> None:
    """Rebuild these images' documents when the transaction commits: for changes the session's flushes do not
    show (a deleted category clears its images' reference in the database, by its foreign key)."""
    _pending(session.sync_session)["images"].update(image_ids)


def _before_commit(session: Session) -> None:
    """Rebuild the documents of what this transaction changed, in it, once (not after every flush: an import
    flushes each row). A change that touches more than ``INLINE_MAX`` images drops their documents instead, and
    the sweep rebuilds them: a commit never analyses a whole catalog while it holds the write lock."""
    session.flush()
    pending = session.info.pop(_PENDING, None)
    if not pending:
        return
    conn = session.connection()
    images: set[int] = pending["images"]
    column = {Category: Image.category_id, Style: Image.style_id, AgeGroup: Image.age_group_id}
    clauses = [Image.product_id.in_(pending["products"])] if pending["products"] else []
    clauses += [column[kind].in_(ids) for kind, ids in pending["taxa"].items()]
    if clauses:
        images.update(conn.scalars(select(Image.id).where(or_(*clauses))))
    if len(images) > INLINE_MAX:
        forget_documents(conn, images)
    else:
        refresh(conn, images)


def _forget(session: Session, previous_transaction: SessionTransaction) -> None:
    if previous_transaction.parent is None:  # the whole transaction, not a savepoint within it
        session.info.pop(_PENDING, None)


def track_changes() -> None:
    """Keep documents in step with every session's transactions (idempotent; the composition root calls it)."""
    for name, listener in (("after_flush", _after_flush), ("before_commit", _before_commit),
                           ("after_soft_rollback", _forget)):
        if not event.contains(Session, name, listener):
            event.listen(Session, name, listener)


async def backfill(session: AsyncSession, after: int = 0, limit: int = 2000) -> tuple[int, int]:
    """Build the documents of images that have none (images from before the index, documents a large change
    dropped), looking at ids above ``after``: how many were built and where the next call goes on (0: start
    again from the first image)."""
    missing = list(await session.scalars(
        select(Image.id).outerjoin(SearchDoc, SearchDoc.image_id == Image.id)
        .where(SearchDoc.image_id.is_(None), Image.id > after).order_by(Image.id).limit(limit)))
    if not missing:
        return 0, 0
    done = await session.run_sync(lambda sync: refresh(sync.connection(), missing))
    await session.commit()
    return done, missing[-1] if len(missing) == limit else 0


# -- ranking ---------------------------------------------------------------------------------------------------

# SQLite's FTS5 table holds each word with its shop in front (``s12xred``; migration 0011): a look-up reads
# that shop's postings of that word only. A term is a group of words (synonyms): any of them matches.


def _words(postgres: bool, shop_id: int, group: list[str], weight: str = "") -> str:
    if postgres:
        return "(" + " | ".join(f"{w}{weight}" for w in group) + ")"
    return "(" + " OR ".join(f'"s{shop_id}x{w}"' for w in group) + ")"


def _match_title(postgres: bool, shop_id: int, group: list[str]) -> tuple[str, str]:
    if postgres:
        return "terms @@ to_tsquery('simple', {p})", _words(True, shop_id, group, ":A")
    return "search_fts MATCH {p}", f"title : {_words(False, shop_id, group)}"


def _match_body_only(postgres: bool, shop_id: int, group: list[str]) -> tuple[str, str]:
    if postgres:
        return ("terms @@ to_tsquery('simple', {p})",
                f"{_words(True, shop_id, group, ':D')} & !{_words(True, shop_id, group, ':A')}")
    return ("search_fts MATCH {p}",
            f"body : {_words(False, shop_id, group)} NOT title : {_words(False, shop_id, group)}")


def _match_any(postgres: bool, shop_id: int, group: list[str]) -> tuple[str, str]:
    if postgres:
        return "terms @@ to_tsquery('simple', {p})", _words(True, shop_id, group)
    return "search_fts MATCH {p}", f"{{title body}} : {_words(False, shop_id, group)}"


def _source(postgres: bool) -> str:
    return "search_docs WHERE shop_id = :shop AND " if postgres else "search_fts WHERE "


def _id(postgres: bool) -> str:
    return "image_id" if postgres else "rowid"


async def term_statistics(session: AsyncSession, shop_id: int,
                          terms: list[list[str]]) -> tuple[int, list[int]]:
    """The shop's number of documents and, for each term (a group of synonyms), how many contain it."""
    postgres = _is_postgres(session)
    parts = ["SELECT -1 AS term, count(*) AS n FROM search_docs WHERE shop_id = :shop"]
    params: dict[str, Any] = {"shop": shop_id}
    for i, term in enumerate(terms):
        clause, value = _match_any(postgres, shop_id, term)
        parts.append(f"SELECT {i}, count(*) FROM {_source(postgres)}{clause.format(p=f':q{i}')}")
        params[f"q{i}"] = value
    counts = {int(term): int(n) for term, n in (await session.execute(text(" UNION ALL ".join(parts)), params)).all()}
    return int(counts.get(-1, 0)), [int(counts.get(i, 0)) for i in range(len(terms))]


def _is_postgres(session: AsyncSession) -> bool:
    return session.get_bind().dialect.name == "postgresql"


def idf(documents: int, containing: int) -> float:
    return math.log(1 + (documents - containing + 0.5) / (containing + 0.5))


def _cancelled(exc: DBAPIError, postgres: bool) -> bool:
    if postgres:
        cause = exc.orig.__cause__ if exc.orig is not None else None
        return QUERY_CANCELED in (getattr(exc.orig, "sqlstate", None), getattr(exc.orig, "pgcode", None),
                                  getattr(cause, "sqlstate", None))
    return "interrupted" in str(exc.orig)


class Deadline:
    """Time left for a word search (none watched: ``seconds`` None). Each statement starts only with time left
    (``before_statement``); on PostgreSQL it gets what is left as its ``statement_timeout``, on SQLite the
    ``deadline``'s timer interrupts it."""

    def __init__(self, session: AsyncSession, seconds: float | None) -> None:
        self.session, self.seconds = session, seconds or 0.0
        self.end: float | None = None if seconds is None else time.monotonic() + seconds

    def timeout(self) -> LexicalTimeout:
        return LexicalTimeout(f"took over {self.seconds:g} s")

    async def before_statement(self) -> None:
        if self.end is None:
            return
        left = self.end - time.monotonic()
        if left <= 0:
            raise self.timeout()
        if _is_postgres(self.session):
            await self.session.execute(text(f"SET LOCAL statement_timeout = {max(1, math.ceil(left * 1000))}"))


class _Interrupter:
    """Interrupts a SQLite connection once ``seconds`` have passed, from the event loop (``interrupt`` is safe from
    any thread). Interrupting a connection with no statement running does nothing (SQLite clears the flag when the
    next one starts): so again every ``INTERRUPT_EVERY`` seconds until stopped, for a statement that started just
    after."""

    def __init__(self, database: sqlite3.Connection, seconds: float) -> None:
        self.database, self.loop = database, asyncio.get_running_loop()
        self.handle = self.loop.call_later(seconds, self.fire)

    def fire(self) -> None:
        with suppress(sqlite3.ProgrammingError):  # (closed meanwhile: nothing left to interrupt)
            self.database.interrupt()
        self.handle = self.loop.call_later(INTERRUPT_EVERY, self.fire)

    def stop(self) -> None:
        self.handle.cancel()


@asynccontextmanager
async def deadline(session: AsyncSession, seconds: float) -> AsyncIterator[Deadline]:
    """Statements run inside (each after ``before_statement``) are cancelled once ``seconds`` have passed in all:
    ``LexicalTimeout``, and the transaction goes on as it was. No time left (``seconds`` ≤ 0): at once."""
    clock = Deadline(session, seconds)
    if seconds <= 0:
        raise clock.timeout()
    if _is_postgres(session):
        try:
            async with session.begin_nested():  # a cancelled statement aborts its transaction: only the savepoint
                await clock.before_statement()
                yield clock
                await session.execute(text("SET LOCAL statement_timeout TO DEFAULT"))
        except DBAPIError as exc:
            if _cancelled(exc, True):
                raise clock.timeout() from None
            raise
        return
    raw = (await (await session.connection()).get_raw_connection()).driver_connection
    assert raw is not None
    # the sqlite3 connection itself, interrupted synchronously from the timer (aiosqlite's interrupt() is a
    # coroutine: scheduled from the timer, it could run after the search is over, on the connection's next user)
    interrupter = _Interrupter(raw._conn, seconds)
    try:
        yield clock
    except DBAPIError as exc:
        if _cancelled(exc, False):
            raise clock.timeout() from None
        raise
    finally:
        interrupter.stop()  # (on the event loop, as the timer runs: nothing interrupts the connection's next user)


async def search(session: AsyncSession, shop_id: int, prompt: str, limit: int, narrow: Any,
                 synonyms: dict[str, list[str]] | None = None, seconds: float | None = None) -> list[LexicalHit]:
    """The shop's images ranked by the prompt's words, best first (at most ``limit``); ``narrow`` restricts a
    select over ``Image`` to the images that may be ranked (ready, listed, matching the filters); ``synonyms``
    maps a word to its group (the word included): a document with any word of the group matches; past
    ``seconds`` in all (if given), ``LexicalTimeout``."""
    with session.no_autoflush:  # (only reads: an interrupted write would roll back the caller's transaction)
        if seconds is None:
            return await _search(session, shop_id, prompt, limit, narrow, synonyms, Deadline(session, None))
        async with deadline(session, seconds) as clock:
            return await _search(session, shop_id, prompt, limit, narrow, synonyms, clock)


async def _search(session: AsyncSession, shop_id: int, prompt: str, limit: int, narrow: Any,
                  synonyms: dict[str, list[str]] | None, clock: Deadline) -> list[LexicalHit]:
    terms = [(synonyms or {}).get(t, [t]) for t in query_terms(prompt)]
    if not terms:
        return []
    if not all(w.isalnum() for group in terms for w in group):  # analysed words are plain: safe in a query string
        raise ValueError(f"not an analysed word in {terms!r}")
    postgres = _is_postgres(session)
    documents, containing = await term_statistics(session, shop_id, terms)
    parts: list[str] = []
    params: dict[str, Any] = {"shop": shop_id}
    weight = "CAST(:{w} AS NUMERIC)" if postgres else ":{w}"
    for i, term in enumerate(terms):
        if not containing[i]:
            continue
        term_idf = idf(documents, containing[i])
        for kind, match, share in (("t", _match_title, TITLE_WEIGHT), ("b", _match_body_only, BODY_WEIGHT)):
            clause, value = match(postgres, shop_id, term)
            key = f"{kind}{i}"
            parts.append(f"SELECT {_id(postgres)} AS image_id, {weight.format(w='w' + key)} AS w "
                         f"FROM {_source(postgres)}{clause.format(p=':q' + key)}")
            params["q" + key] = value
            params["w" + key] = round(term_idf * share, 6)
    if not parts:
        return []
    hits = text(" UNION ALL ".join(parts)).columns(image_id=Integer, w=Float).subquery("hits")
    score: Any = literal_column("ROUND(SUM(hits.w), 6)").label("score")
    # first the best documents by words alone (no join: the index's rows only), then which of them may be ranked;
    # when the filters leave too few of them, the whole ranking again with the filters inside
    wide = limit * 2 + 50
    await clock.before_statement()
    best = (await session.execute(select(hits.c.image_id, score).group_by(hits.c.image_id)
                                  .order_by(score.desc(), hits.c.image_id).limit(wide), params)).all()
    await clock.before_statement()
    allowed = set(await session.scalars(narrow(select(Image.id)).where(Image.id.in_([i for i, _ in best]))))
    kept = [LexicalHit(int(ident), float(value)) for ident, value in best if ident in allowed]
    if len(kept) >= limit or len(best) < wide:
        return kept[:limit]
    stmt: Select[Any] = narrow(select(hits.c.image_id, score).join(Image, Image.id == hits.c.image_id))
    stmt = stmt.group_by(hits.c.image_id).order_by(score.desc(), hits.c.image_id).limit(limit)
    await clock.before_statement()
    rows = (await session.execute(stmt, params)).all()
    return [LexicalHit(int(image_id), float(value)) for image_id, value in rows]

