"""``/api/v1/jobs``: progress of syncs and imports (secret key)."""

from __future__ import annotations

from typing import Annotated, Literal, TypedDict

from litestar import get
from litestar.params import FromQuery, QueryParameter

from hub.domain.jobs import JobOut, JobStatus, get_job, job_json, list_jobs
from hub.http.auth import Caller, SecretKeyController
from hub.http.deps import Db
from hub.http.validation import PathId, QueryId


class JobPage(TypedDict):
    items: list[JobOut]
    next_cursor: str | None


class JobController(SecretKeyController):
    path = "/api/v1/jobs"
    tags = ["jobs"]

    @get("/")
    async def list_jobs(
        self, db: Db, principal: Caller,
        limit: Annotated[int, QueryParameter(ge=1, le=100)] = 20,
        cursor: FromQuery[str | None] = None,
        status: FromQuery[JobStatus | None] = None,
        kind: FromQuery[Literal["sync", "import", "reindex"] | None] = None,
        connection_id: QueryId = None,
    ) -> JobPage:
        """The shop's jobs, newest first (pass ``next_cursor`` back as ``cursor`` for the next page)."""
        items, next_cursor = await list_jobs(db, principal.shop_id, limit, cursor, status, kind, connection_id)
        return {"items": [job_json(j) for j in items], "next_cursor": next_cursor}

    @get("/{job_id:int}")
    async def get_job(self, db: Db, principal: Caller, job_id: PathId) -> JobOut:
        """Status, total, done, failed, the errors (first 1000) and start/end of one job."""
        return job_json(await get_job(db, principal.shop_id, job_id))
