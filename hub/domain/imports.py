"""Bulk imports: a file read by an importer plugin into rows, stored as images by a job (``/api/v1/imports``).

Rows are applied in chunks; each chunk's images, the job's progress and its cursor (rows consumed) commit
together, so a restarted job resumes after the last committed chunk. A bad row is reported with its line
and the rest still go in; an image the shop already has (same bytes, or same URL) is skipped, not doubled.

Limits hold while the bytes arrive and while they are read: the upload stops at HUB_MAX_IMPORT_BYTES (multipart
is parsed as a stream, never through ``request.form()``); the importer counts rows inside the request within
HUB_MAX_MANIFEST_BYTES and HUB_MAX_IMPORT_ROWS (413 past them), and the job stops at the row limit whatever
the importer yields.
"""

from __future__ import annotations

import collections
import inspect
import itertools
import logging
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import AsyncExitStack, asynccontextmanager
import re
from pathlib import Path, PurePosixPath
from typing import Any

import anyio
from pydantic import ValidationError
from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import Importer, ImportFileError, ImportOptions, ImportRow, ImportTooLarge, RowError
from hub.domain.catalog import Changes, notify
from hub.errors import HubError, Invalid, NotFound, TooLarge, UnsupportedMedia, validation_detail
from hub.domain.images import ImageFields, check_url
from hub.domain.jobs import END, JobFailed, JobProgress, check_job_room, create_job, run_job
from hub.domain.media import CheckedImage, check_image
from hub.db.models import Image, Job, Product, Shop, utcnow
from hub.domain.services import Services
from hub.domain.taxonomy import taxon_names
from hub.settings import Settings

log = logging.getLogger("hub.imports")
CHUNK = 200
MULTIPART_OVERHEAD = 64 * 1024  # what a multipart body may add to its file: boundaries, part headers, small fields
CONTENT_SUFFIX = {"application/zip": ".zip", "application/x-zip-compressed": ".zip", "text/csv": ".csv",
                  "application/json": ".json", "application/x-ndjson": ".jsonl"}


def pick_importer(services: Services, path: Path) -> Importer:
    importers = services.plugins.importers()
    for importer in importers.values():
        if importer.accepts(path):
            return importer
    known = ", ".join(importers) or "none installed"
    raise UnsupportedMedia(f"no importer reads {path.name!r} (importers: {known}); send a ZIP, a CSV or a JSON list")


def import_options(settings: Settings, local_files: bool = False) -> ImportOptions:
    """The limits an importer reads a file within."""
    return ImportOptions(local_files=local_files, max_file_bytes=settings.max_upload_bytes,
                         max_manifest_bytes=settings.max_manifest_bytes, max_rows=settings.max_import_rows)


def _takes_options(importer: Importer) -> bool:
    """Whether the importer's ``count`` takes the options (older importers have ``count(path)``)."""
    try:
        params = list(inspect.signature(importer.count).parameters.values())
    except (TypeError, ValueError):
        return True
    positional = [p for p in params if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    return len(positional) >= 2 or any(p.kind == p.VAR_POSITIONAL for p in params)


def count_rows(importer: Importer, path: Path, options: ImportOptions) -> int | None:
    """The importer's row count (None if it cannot tell); in a worker thread, inside the upload request."""
    total = importer.count(path, options) if _takes_options(importer) else importer.count(path)  # type: ignore[call-arg]
    if isinstance(total, bool) or not isinstance(total, int) or total < 0:
        return None
    return total


@asynccontextmanager
async def import_file(services: Services, params: dict[str, Any]) -> AsyncIterator[Path]:
    """The import's file on this host: ``hub import``'s own local file or folder, or an uploaded file from the
    media store (a download when it is a bucket, removed after). ``FileNotFoundError`` when it is gone."""
    path = Path(params["path"])
    if path.is_absolute():
        if not await anyio.to_thread.run_sync(path.exists):
            raise FileNotFoundError(str(path))
        yield path
        return
    async with services.media.local_file(params["path"], services.settings.max_import_bytes) as local:
        yield local


class RowWriter:
    """Turns import rows into images of one shop, a chunk per call, in a session of its own (``apply`` commits
    its reads before it stores the chunk's photos, then writes the rows for the caller to commit)."""

    def __init__(self, session: AsyncSession, services: Services, shop_id: int, next_attempt: Any,
                 taxa: dict[str, dict[str, int]]) -> None:
        self.session = session
        self.services = services
        self.shop_id = shop_id
        self.next_attempt = next_attempt
        self.taxa = taxa  # kind -> name (lower case) or id -> id: what a row may call a taxon
        self.saved: list[str] = []  # files written in this transaction (removed again if it rolls back)

    async def apply(self, rows: list[ImportRow | RowError]) -> tuple[Changes, list[dict[str, Any]]]:
        changes, errors = Changes(), []
        settings = self.services.settings

        def check(row: ImportRow) -> CheckedImage | str:
            try:
                return check_image(row.data or b"", max_bytes=settings.max_upload_bytes,
                                   max_pixels=settings.max_image_pixels)
            except HubError as exc:
                return exc.detail

        good: list[tuple[ImportRow, CheckedImage | None]] = []
        for row in rows:
            if isinstance(row, RowError):
                errors.append(_error(row.line, row.item, row.error))
            elif row.data is not None:
                outcome = await anyio.to_thread.run_sync(check, row)
                if isinstance(outcome, str):
                    errors.append(_error(row.line, row.item, outcome))
                else:
                    good.append((row, outcome))
            else:
                good.append((row, None))

        hashes = {c.content_hash for _, c in good if c is not None}
        urls = {r.image_url for r, c in good if c is None and r.image_url}
        known: dict[str, int] = {}
        if hashes:
            known |= {str(h): int(i) for h, i in (await self.session.execute(
                select(Image.content_hash, func.min(Image.id)).where(
                    Image.shop_id == self.shop_id, Image.content_hash.in_(hashes)).group_by(Image.content_hash))).all()}
        if urls:
            known |= {str(u): int(i) for u, i in (await self.session.execute(
                select(Image.image_url, func.min(Image.id)).where(
                    Image.shop_id == self.shop_id, Image.image_url.in_(urls)).group_by(Image.image_url))).all()}
        await self.session.commit()  # (those reads' transaction ends here: nothing is held while photos are stored)
        taxa = self.taxa
        accepted: list[tuple[ImportRow, CheckedImage | None, ImageFields, dict[str, int | None]]] = []
        for row, checked in good:
            key = checked.content_hash if checked is not None else row.image_url
            if key in known:
                changes.count("skipped: already imported")
                continue
            try:
                fields = ImageFields.model_validate({"name": row.name, "description": row.description,
                                                     "product_url": row.product_url})
                if checked is None:
                    check_url(row.image_url)  # the same URL rules as the API
            except ValidationError as exc:
                errors.append(_error(row.line, row.item, validation_detail(exc)))
                continue
            except ValueError as exc:
                errors.append(_error(row.line, row.item, f"image_url {exc}"))
                continue
            ids: dict[str, int | None] = {}
            problem = None
            for kind, value in (("category", row.category), ("style", row.style), ("age_group", row.age_group)):
                if value is None:
                    continue
                ids[f"{kind}_id"] = taxa[kind].get(value.strip().lower())
                if ids[f"{kind}_id"] is None:
                    problem = f"unknown {kind.replace('_', ' ')} {value!r}: add it to the shop's taxonomy first"
                    break
            if problem is None and row.product_id is not None and len(row.product_id) > 100:
                problem = "product_id is longer than 100 characters"
            if problem is not None:
                errors.append(_error(row.line, row.item, problem))
                continue
            known[key or ""] = 0  # (a later row with the same picture or URL in this chunk is skipped)
            accepted.append((row, checked, fields, ids))
        # the photos are stored before this transaction writes anything: the media store may be a bucket across
        # the network, and a write transaction must not wait on one
        photos: dict[str, str] = {}  # content hash -> the photo's name in the store
        for _, checked, _, _ in accepted:
            if checked is not None:
                photos[checked.content_hash] = await self.services.media.save(self.shop_id, checked)
                self.saved.append(photos[checked.content_hash])
        for row, checked, fields, ids in accepted:
            product_id = await self._product(row) if row.product_id else None
            img = Image(shop_id=self.shop_id, product_id=product_id, next_attempt_at=self.next_attempt,
                        **fields.model_dump(include={"name", "description", "product_url"}), **ids)
            if checked is not None:
                img.photo = photos[checked.content_hash]
                img.content_hash, img.mime_type = checked.content_hash, checked.mime_type
                img.width, img.height, img.size_bytes = checked.width, checked.height, len(checked.data)
            else:
                img.image_url = row.image_url
            self.session.add(img)
            await self.session.flush()
            changes.added.append(img.id)
            changes.count("created")
        return changes, errors

    async def _product(self, row: ImportRow) -> int:
        product = await self.session.scalar(select(Product).where(
            Product.shop_id == self.shop_id, Product.source == "manual", Product.connection_id.is_(None),
            Product.external_id == row.product_id))
        if product is None:
            product = Product(shop_id=self.shop_id, source="manual", external_id=row.product_id,
                              title=row.name[:500], description=row.description)
            self.session.add(product)
        if row.product_url:
            product.url = row.product_url
        await self.session.flush()
        return product.id

    async def discard(self) -> None:
        """The photos this chunk stored, when its transaction rolled back: every one of them is tried (best
        effort), even while the job is being cancelled."""
        with anyio.CancelScope(shield=True):
            await self.services.media.tidy(self.saved)


def _error(line: int | None, item: str, message: str) -> dict[str, Any]:
    return {"line": line, "item": item or None, "error": message}


def _take(rows: Iterator[ImportRow | RowError], n: int) -> list[ImportRow | RowError]:
    return list(itertools.islice(rows, n))


def _skip(rows: Iterator[ImportRow | RowError], n: int) -> None:
    """Drop ``n`` rows without keeping them (a resumed job: what a previous run committed)."""
    collections.deque(itertools.islice(rows, n), maxlen=0)


def _too_many_rows(options: ImportOptions) -> str:
    return (f"the import has more than {options.max_rows} rows (HUB_MAX_IMPORT_ROWS); "
            f"the first {options.max_rows} were read")


async def run_import(services: Services, progress: JobProgress) -> None:
    """The ``import`` job: read the file's rows from the cursor on, a chunk per transaction."""
    job = progress.job
    params = job.params
    try:
        if job.cursor != END:  # (at END: read to its end by a run that stopped before it removed the file)
            await _read_file(services, progress)
    except JobFailed:  # final: its file is not read again (other failures are retried, and need it)
        await _drop_upload(services, params)
        raise
    await _drop_upload(services, params)


async def _read_file(services: Services, progress: JobProgress) -> None:
    params = progress.job.params
    importer = services.plugins.importers().get(params.get("importer", ""))
    if importer is None:
        raise JobFailed(f"the {params.get('importer')!r} importer is not installed")
    async with AsyncExitStack() as stack:
        try:
            path = await stack.enter_async_context(import_file(services, params))
        except FileNotFoundError:
            raise JobFailed(f"the import file {params.get('filename') or Path(params['path']).name} is gone") from None
        await _import_rows(services, progress, importer, path)


async def _drop_upload(services: Services, params: dict[str, Any]) -> None:
    """An uploaded import file goes once the job is done with it (``hub import``'s own files stay)."""
    if params.get("uploaded"):
        await services.media.tidy([params["path"]])


async def _import_rows(services: Services, progress: JobProgress, importer: Importer, path: Path) -> None:
    job, params = progress.job, progress.job.params
    options = import_options(services.settings, bool(params.get("local_files")))
    consumed = int(job.cursor or 0)
    # without a pipeline here (``hub import``), the images are due at once for the running service's sweep
    next_attempt = utcnow() if services.pipeline is None else utcnow() + services.settings.lease
    async with services.sessions() as session:  # the shop's taxonomy, once for the whole import
        taxa = {kind: {name.strip().lower(): ident for ident, name in pairs} | {str(ident): ident for ident, _ in pairs}
                for kind, pairs in (await taxon_names(session, job.shop_id)).items()}
    try:
        rows = await anyio.to_thread.run_sync(lambda: importer.read(path, options))
        await anyio.to_thread.run_sync(_skip, rows, consumed)  # resume: skip what a previous run committed
        while True:
            # one row past the limit tells a file over it (an importer that does not count, or one that counted
            # wrong) from one exactly at it; the rows within the limit are imported, the job then fails
            chunk = await anyio.to_thread.run_sync(_take, rows, max(0, min(CHUNK, options.max_rows + 1 - consumed)))
            over = consumed + len(chunk) > options.max_rows
            if over:
                chunk = chunk[:max(0, options.max_rows - consumed)]
            if not chunk:
                if over:
                    raise JobFailed(_too_many_rows(options))
                break
            consumed += len(chunk)
            async with services.sessions() as session:
                writer = RowWriter(session, services, job.shop_id, next_attempt, taxa)
                try:
                    changes, errors = await writer.apply(chunk)
                    ok = len(chunk) - len(errors)
                    await progress.advance(session, done=ok, failed=len(errors), errors=errors, cursor=str(consumed),
                                           result=changes.counts)
                    await session.commit()
                except BaseException:
                    await session.rollback()
                    await writer.discard()
                    raise
            await notify(services.pipeline, services.media, job.shop_id, changes)
            if over:
                raise JobFailed(_too_many_rows(options))
    except ImportFileError as exc:
        raise JobFailed(str(exc)) from None
    async with services.sessions() as session:
        await progress.advance(session, cursor=END)
        await session.commit()


def _too_large(limit: int) -> HubError:
    return TooLarge(f"the import is larger than HUB_MAX_IMPORT_BYTES ({limit} bytes)")


class _FilePart:
    """Callbacks for ``MultipartParser``: the first part named ``file`` is collected, chunk by chunk, for the
    caller to write; every other part is skipped (its bytes still count against the body's ceiling)."""

    def __init__(self) -> None:
        self.header_field = self.header_value = b""
        self.headers: dict[bytes, bytes] = {}
        self.found = self.writing = self.finished = False
        self.filename: str | None = None
        self.pending: list[bytes] = []
        self.size = 0

    def callbacks(self) -> dict[str, Any]:
        return {"on_part_begin": self.part_begin, "on_header_field": self.field, "on_header_value": self.value,
                "on_header_end": self.header_end, "on_headers_finished": self.headers_finished,
                "on_part_data": self.data, "on_part_end": self.part_end}

    def part_begin(self) -> None:
        self.headers = {}

    def field(self, data: bytes, start: int, end: int) -> None:
        self.header_field += data[start:end]

    def value(self, data: bytes, start: int, end: int) -> None:
        self.header_value += data[start:end]

    def header_end(self) -> None:
        self.headers[self.header_field.strip().lower()] = self.header_value.strip()
        self.header_field = self.header_value = b""

    def headers_finished(self) -> None:
        _, params = parse_options_header(self.headers.get(b"content-disposition", b""))
        if params.get(b"name") == b"file" and not self.found:
            self.found = self.writing = True
            name = params.get(b"filename")
            self.filename = name.decode("utf-8", "replace") if name else None

    def data(self, data: bytes, start: int, end: int) -> None:
        if self.writing:
            self.pending.append(data[start:end])
            self.size += end - start

    def part_end(self) -> None:
        if self.writing:
            self.writing, self.finished = False, True


async def _save_multipart(body: AsyncIterator[bytes], content_type: str, dest: Path, limit: int) -> str | None:
    """Parse a multipart body as it arrives, its ``file`` part straight into ``dest``; the part's file name.

    (A framework's form parsing reads the whole body, into memory, before anything can be checked.)
    """
    _, params = parse_options_header(content_type)
    boundary = params.get(b"boundary")
    if not boundary:
        raise Invalid("a multipart body needs a boundary in its Content-Type")
    part = _FilePart()
    try:
        parser = MultipartParser(boundary, part.callbacks())  # type: ignore[arg-type]  # (its TypedDict)
    except FormParserError as exc:
        raise Invalid(f"malformed multipart body: {exc}") from None
    ceiling, received = limit + MULTIPART_OVERHEAD, 0
    with dest.open("wb") as out:
        async for chunk in body:
            received += len(chunk)
            if received > ceiling:
                raise _too_large(limit)
            try:
                parser.write(chunk)
            except FormParserError as exc:
                raise Invalid(f"malformed multipart body: {exc}") from None
            if part.size > limit:
                raise _too_large(limit)
            if part.pending:
                data = b"".join(part.pending)
                part.pending.clear()
                await anyio.to_thread.run_sync(out.write, data)
    if not part.found:
        raise Invalid("multipart import needs a 'file' field")
    if not part.finished:
        raise Invalid("the multipart body ends inside its 'file' part")
    return part.filename


async def _save_upload(body: AsyncIterator[bytes], content_type: str, length: int | None, dest: Path, limit: int,
                       filename: str | None) -> str:
    """Stream the body (raw, or a multipart ``file`` field) to ``dest``; the original file name.

    ``limit`` holds as the bytes arrive: a declared length over it is refused before reading, and reading stops
    with 413 at the first byte past it.
    """
    multipart = content_type.lower().startswith("multipart/form-data")
    if length is not None and length > limit + (MULTIPART_OVERHEAD if multipart else 0):
        raise _too_large(limit)
    if multipart:
        return await _save_multipart(body, content_type, dest, limit) or filename or dest.name
    written = 0
    with dest.open("wb") as out:
        async for chunk in body:
            written += len(chunk)
            if written > limit:
                raise _too_large(limit)
            await anyio.to_thread.run_sync(out.write, chunk)
    return filename or dest.name


async def new_import_job(session: AsyncSession, services: Services, shop_id: int, path: Path, filename: str,
                         params: dict[str, Any], store: Callable[[], Awaitable[None]] | None = None) -> Job:
    """A queued import of ``path``: 415 if no importer reads it, 400 if it cannot be read at all, 413 if it is
    over a limit (manifest bytes, rows). Counting runs here, in the request, within the same limits. ``store``
    puts the file where the job will read it, once it passed and before the job can be seen."""
    importer = pick_importer(services, path)
    options = import_options(services.settings, bool(params.get("local_files")))
    try:
        total = await anyio.to_thread.run_sync(count_rows, importer, path, options)
    except ImportTooLarge as exc:
        raise TooLarge(f"cannot import {filename}: {exc}") from None
    except ImportFileError as exc:
        raise Invalid(f"cannot import {filename}: {exc}") from None
    except Exception as exc:  # whatever an importer trips on is the file's problem: never a 500
        log.warning("importer failed on a file", exc_info=True, extra={"importer": importer.name, "shop_id": shop_id})
        raise Invalid(f"cannot import {filename}: the {importer.name} importer cannot read it "
                            f"({type(exc).__name__})") from None
    if total is not None and total > options.max_rows:
        raise TooLarge(f"cannot import {filename}: {total} rows, more than HUB_MAX_IMPORT_ROWS "
                            f"({options.max_rows})")
    if store is not None:
        await check_job_room(session, shop_id)  # (before the file goes to the media store, not after)
        await session.commit()  # (that read's transaction ends: nothing is held while the file is stored)
        await store()
    return await create_job(session, shop_id, "import",
                            {**params, "filename": filename, "importer": importer.name}, total=total)


async def start_import(session: AsyncSession, services: Services, shop_id: int, body: AsyncIterator[bytes],
                       content_type: str, length: int | None, filename: str | None) -> Job:
    """Receive an import file as it streams in (raw, or multipart with a ``file`` part), within
    HUB_MAX_IMPORT_BYTES; then a queued import job (see ``new_import_job``). Nothing is kept if it fails."""
    media_type = content_type.split(";")[0].strip().lower()
    suffix = safe_suffix(filename) if filename else CONTENT_SUFFIX.get(media_type, "")
    # received into this host's media folder (where a folder store keeps it; a bucket gets it once it is checked),
    # under the shop's own prefix: deleting the shop deletes its import files too
    folder = services.settings.media_dir / str(int(shop_id)) / "imports"
    await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
    dest = folder / f"{uuid.uuid4().hex}{suffix}"
    stored: list[str] = []  # the name, once the file is in the media store
    try:
        original = await _save_upload(body, content_type, length, dest, services.settings.max_import_bytes, filename)
        if suffix == "" and safe_suffix(original):
            dest = dest.rename(dest.with_suffix(safe_suffix(original)))
        relative = f"{int(shop_id)}/imports/{dest.name}"

        async def store() -> None:
            await services.media.put_file(relative, dest)
            stored.append(relative)

        job = await new_import_job(session, services, shop_id, dest, original, {"path": relative, "uploaded": True},
                                   store=store)
    except BaseException:
        with anyio.CancelScope(shield=True), anyio.move_on_after(60):
            await anyio.to_thread.run_sync(lambda: dest.unlink(missing_ok=True))
            await services.media.tidy(stored)
        raise
    if services.pipeline is not None:
        await services.pipeline.job_queued(job.id)
    return job


def safe_suffix(name: str | None) -> str:
    """A file name's extension if it is a plain one (``.zip``, ``.csv``…), else nothing: the name is the
    client's, and only this part of it reaches the file system."""
    suffix = PurePosixPath((name or "").replace("\\", "/")).suffix.lower()
    return suffix if re.fullmatch(r"\.[a-z0-9]{1,10}", suffix) else ""


async def import_local(services: Services, shop_id: int, path: Path, on_progress: Any = None) -> Job:
    """``hub import``: run an import of a local file or folder in this process, files beside a manifest allowed."""
    async with services.sessions() as session:
        if await session.get(Shop, shop_id) is None:
            raise NotFound(f"shop {shop_id} not found")
        job = await new_import_job(session, services, shop_id, path, path.name,
                                   {"path": str(path.resolve()), "local_files": True})
    finished = await run_job(services, job.id, {"import": run_import}, on_progress)
    assert finished is not None
    return finished
