"""Bulk imports: a file read by an importer plugin into rows, stored as images by a job (``/api/v1/imports``).

Rows are applied in chunks; each chunk's images, the job's progress and its cursor (rows consumed) commit
together, so a restarted job resumes after the last committed chunk. A bad row is reported with its line
and the rest still go in; an image the shop already has (same bytes, or same URL) is skipped, not doubled.
"""

from __future__ import annotations

import itertools
import logging
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from litestar import Controller, Request, Response, post
from litestar.datastructures import UploadFile
from litestar.params import FromQuery
from pydantic import ValidationError
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import Importer, ImportFileError, ImportOptions, ImportRow, RowError
from hub.core.auth import Caller
from hub.core.catalog import Changes, notify
from hub.core.deps import Db
from hub.core.errors import ApiError, validation_detail
from hub.core.images import ImageFields, check_url
from hub.core.jobs import END, JobFailed, JobProgress, create_job, job_json, run_job
from hub.core.media import CheckedImage, check_image
from hub.core.models import Image, Job, Product, Shop, utcnow
from hub.core.taxonomy import taxon_names
from hub.core.services import Services

log = logging.getLogger("hub.imports")
CHUNK = 200
MAX_IMPORT_UPLOAD = 64 * 1024**3  # the route's ceiling; HUB_MAX_IMPORT_BYTES is the real limit
CONTENT_SUFFIX = {"application/zip": ".zip", "application/x-zip-compressed": ".zip", "text/csv": ".csv",
                  "application/json": ".json", "application/x-ndjson": ".jsonl"}


def pick_importer(services: Services, path: Path) -> Importer:
    importers = services.plugins.importers()
    for importer in importers.values():
        if importer.accepts(path):
            return importer
    known = ", ".join(importers) or "none installed"
    raise ApiError(415, f"no importer reads {path.name!r} (importers: {known}); send a ZIP, a CSV or a JSON list")


def import_path(services: Services, params: dict[str, Any]) -> Path:
    path = Path(params["path"])
    return path if path.is_absolute() else services.settings.media_dir / path


class RowWriter:
    """Turns import rows into images of one shop, inside the caller's transaction."""

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
            except ApiError as exc:
                return exc.detail

        good: list[tuple[ImportRow, CheckedImage | None]] = []
        for row in rows:
            if isinstance(row, RowError):
                errors.append(_error(row.line, row.item, row.error))
            elif row.data is not None:
                checked = await anyio.to_thread.run_sync(check, row)
                if isinstance(checked, str):
                    errors.append(_error(row.line, row.item, checked))
                else:
                    good.append((row, checked))
            else:
                good.append((row, None))

        hashes = {c.content_hash for _, c in good if c is not None}
        urls = {r.image_url for r, c in good if c is None and r.image_url}
        known: dict[str, int] = {}
        if hashes:
            known |= dict((await self.session.execute(select(Image.content_hash, func.min(Image.id)).where(
                Image.shop_id == self.shop_id, Image.content_hash.in_(hashes)).group_by(Image.content_hash))).all())
        if urls:
            known |= dict((await self.session.execute(select(Image.image_url, func.min(Image.id)).where(
                Image.shop_id == self.shop_id, Image.image_url.in_(urls)).group_by(Image.image_url))).all())
        taxa = self.taxa
        for row, checked in good:
            key = checked.content_hash if checked is not None else row.image_url
            if key in known:
                changes.count("skipped: already imported")
                continue
            try:
                fields = ImageFields(name=row.name, description=row.description, product_url=row.product_url)
                if checked is None:
                    check_url(row.image_url)  # the same URL rules as the API
            except ValidationError as exc:
                errors.append(_error(row.line, row.item, validation_detail(exc)))
                continue
            except ValueError as exc:
                errors.append(_error(row.line, row.item, f"image_url {exc}"))
                continue
            ids, problem = {}, None
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
            product_id = await self._product(row) if row.product_id else None
            img = Image(shop_id=self.shop_id, product_id=product_id, next_attempt_at=self.next_attempt,
                        **fields.model_dump(include={"name", "description", "product_url"}), **ids)
            if checked is not None:
                img.photo = await anyio.to_thread.run_sync(self.services.media.save, self.shop_id, checked)
                self.saved.append(img.photo)
                img.content_hash, img.mime_type = checked.content_hash, checked.mime_type
                img.width, img.height, img.size_bytes = checked.width, checked.height, len(checked.data)
            else:
                img.image_url = row.image_url
            self.session.add(img)
            await self.session.flush()
            known[key or ""] = img.id
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

    def discard(self) -> None:
        for photo in self.saved:
            self.services.media.delete(photo)


def _error(line: int | None, item: str, message: str) -> dict[str, Any]:
    return {"line": line, "item": item or None, "error": message}


def _take(rows: Iterator[ImportRow | RowError], n: int) -> list[ImportRow | RowError]:
    return list(itertools.islice(rows, n))


async def run_import(services: Services, progress: JobProgress) -> None:
    """The ``import`` job: read the file's rows from the cursor on, a chunk per transaction."""
    job = progress.job
    if job.cursor == END:
        return
    params = job.params
    importer = services.plugins.importers().get(params.get("importer", ""))
    if importer is None:
        raise JobFailed(f"the {params.get('importer')!r} importer is not installed")
    path = import_path(services, params)
    if not path.exists():
        raise JobFailed(f"the import file {params.get('filename') or path.name} is gone")
    options = ImportOptions(local_files=bool(params.get("local_files")), max_file_bytes=services.settings.max_upload_bytes)
    consumed = int(job.cursor or 0)
    # without a pipeline here (``hub import``), the images are due at once for the running service's sweep
    next_attempt = utcnow() if services.pipeline is None else utcnow() + services.settings.lease
    async with services.sessions() as session:  # the shop's taxonomy, once for the whole import
        taxa = {kind: {name.strip().lower(): ident for ident, name in pairs} | {str(ident): ident for ident, _ in pairs}
                for kind, pairs in (await taxon_names(session, job.shop_id)).items()}
    try:
        rows = await anyio.to_thread.run_sync(lambda: importer.read(path, options))
        await anyio.to_thread.run_sync(_take, rows, consumed)  # resume: skip what a previous run committed
        while True:
            chunk = await anyio.to_thread.run_sync(_take, rows, CHUNK)
            if not chunk:
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
                    await anyio.to_thread.run_sync(writer.discard)
                    raise
            await notify(services.pipeline, services.media, job.shop_id, changes)
    except ImportFileError as exc:
        raise JobFailed(str(exc)) from None
    async with services.sessions() as session:
        await progress.advance(session, cursor=END)
        await session.commit()
    if params.get("uploaded"):
        await anyio.to_thread.run_sync(lambda: path.unlink(missing_ok=True))


async def _save_upload(request: Request, dest: Path, limit: int, filename: str | None) -> str:
    """Stream the body (raw, or a multipart ``file`` field) to ``dest``; the original file name."""
    content_type = request.headers.get("content-type", "")
    written = 0

    def too_large() -> ApiError:
        return ApiError(413, f"the import is larger than HUB_MAX_IMPORT_BYTES ({limit} bytes)")

    if content_type.startswith("multipart/form-data"):
        form = await request.form()
        upload = form.get("file")
        if not isinstance(upload, UploadFile):
            raise ApiError(400, "multipart import needs a 'file' field")

        def copy() -> int:
            upload.file.seek(0)
            with dest.open("wb") as out:
                shutil.copyfileobj(upload.file, out, 1024 * 1024)
            return dest.stat().st_size

        if await anyio.to_thread.run_sync(copy) > limit:
            raise too_large()
        return upload.filename or filename or dest.name
    with dest.open("wb") as out:
        async for chunk in request.stream():
            written += len(chunk)
            if written > limit:
                raise too_large()
            await anyio.to_thread.run_sync(out.write, chunk)
    return filename or dest.name


async def new_import_job(session: AsyncSession, services: Services, shop_id: int, path: Path, filename: str,
                         params: dict[str, Any]) -> Job:
    """A queued import of ``path``: 415 if no importer reads it, 400 if it cannot be read at all."""
    importer = pick_importer(services, path)
    try:
        total = await anyio.to_thread.run_sync(importer.count, path)
    except ImportFileError as exc:
        raise ApiError(400, f"cannot import {filename}: {exc}") from None
    return await create_job(session, shop_id, "import",
                            {**params, "filename": filename, "importer": importer.name}, total=total)


class ImportController(Controller):
    """``/api/v1/imports``: start a bulk import; follow it at ``/api/v1/jobs/{id}`` (secret key)."""

    path = "/api/v1/imports"
    tags = ["imports"]

    @post("/", status_code=202, request_max_body_size=MAX_IMPORT_UPLOAD)
    async def create(self, request: Request, db: Db, principal: Caller,
                     filename: FromQuery[str | None] = None) -> Response[dict[str, Any]]:
        """Send a ZIP (images + optional manifest.csv/json), or a CSV/JSON list of image URLs: the raw body
        with its ``Content-Type`` (or ``?filename=``), or multipart with a ``file`` field. Answers the job."""
        services: Services = request.app.state.services
        content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        suffix = Path(filename).suffix.lower() if filename else CONTENT_SUFFIX.get(content_type, "")
        folder = services.settings.media_dir / "imports"
        await anyio.to_thread.run_sync(lambda: folder.mkdir(parents=True, exist_ok=True))
        dest = folder / f"{principal.shop_id}-{uuid.uuid4().hex}{suffix}"
        try:
            original = await _save_upload(request, dest, services.settings.max_import_bytes, filename)
            if suffix == "" and Path(original).suffix:
                dest = dest.rename(dest.with_suffix(Path(original).suffix.lower()))
            job = await new_import_job(db, services, principal.shop_id, dest, original, {
                "path": dest.relative_to(services.settings.media_dir).as_posix(), "uploaded": True})
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        await request.app.state.pipeline.job_queued(job.id)
        return Response(job_json(job), status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})


async def import_local(services: Services, shop_id: int, path: Path, on_progress: Any = None) -> Job:
    """``hub import``: run an import of a local file or folder in this process, files beside a manifest allowed."""
    async with services.sessions() as session:
        if await session.get(Shop, shop_id) is None:
            raise ApiError(404, f"shop {shop_id} not found")
        job = await new_import_job(session, services, shop_id, path, path.name,
                                   {"path": str(path.resolve()), "local_files": True})
    finished = await run_job(services, job.id, {"import": run_import}, on_progress)
    assert finished is not None
    return finished
