"""``POST /api/v1/imports``: start a bulk import; follow it at ``/api/v1/jobs/{id}`` (secret key)."""

from __future__ import annotations

from litestar import Request, Response, post
from litestar.openapi.spec import Schema
from litestar.openapi.spec.enums import OpenAPIType
from litestar.params import FromQuery

from hub.domain.imports import start_import
from hub.domain.jobs import JobOut, job_json
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db, Svc
from hub.http.openapi import BINARY, problems, request_body

MAX_IMPORT_UPLOAD = 64 * 1024**3  # the route's ceiling; HUB_MAX_IMPORT_BYTES is the real limit, checked as bytes arrive


def content_length(request: Request) -> int | None:
    value = request.headers.get("content-length", "").strip()
    return int(value) if value.isascii() and value.isdigit() else None


class ImportController(SecretKeyController):
    path = "/api/v1/imports"
    tags = ["imports"]  # noqa: RUF012 - read by Litestar like every controller's

    @post("/", status_code=202, request_max_body_size=MAX_IMPORT_UPLOAD, responses=problems(413, 415),
          operation_class=request_body({
              "multipart/form-data": Schema(type=OpenAPIType.OBJECT, required=["file"],
                                            properties={"file": BINARY})}))
    async def create(self, request: Request, db: Db, services: Svc, principal: Caller,
                     filename: FromQuery[str | None] = None) -> Response[JobOut]:
        """Send a ZIP (images + optional manifest.csv/json), or a CSV/JSON list of image URLs, as multipart with a
        ``file`` field — or as the raw body with its ``Content-Type`` (``application/zip``, ``text/csv``,
        ``application/json``, ``application/x-ndjson``) or ``?filename=``. Answers the job (202); follow it at
        ``/api/v1/jobs/{id}``."""
        job = await start_import(db, services, principal.shop_id, request.stream(),
                                 request.headers.get("content-type", ""), content_length(request), filename)
        return Response(job_json(job), status_code=202, headers={"Location": f"/api/v1/jobs/{job.id}"})
