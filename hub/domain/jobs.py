"""Jobs: a full sync or a bulk import, run by a worker, with progress in the database (``/api/v1/jobs``).

A job is claimed with a lease that every progress commit renews; a worker that dies leaves the lease to run
out, and the sweep hands the job to another worker, which resumes from the stored ``cursor``. A connection has
at most one active job (a partial unique index); asking for a second sync answers 409 with the running one.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from datetime import datetime, timedelta
from typing import Any, Literal, TypedDict

import httpx
from sqlalchemy import func, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hub.connectors import ConnectorError
from hub.errors import Conflict, RateLimited, Unavailable, not_found
from hub.db.engine import affected
from hub.db.models import Job, utcnow
from hub.domain.pagination import decode_cursor, page
from hub.domain.services import Services
from hub.logs import redact

log = logging.getLogger("hub.jobs")
MAX_ERRORS_KEPT = 1000
MAX_ACTIVE_JOBS_PER_SHOP = 5  # syncs and imports queued or running at once, per shop
END = "<end>"  # the cursor of a job whose whole input has been read
JobStatus = Literal["queued", "running", "succeeded", "failed"]
Progress = Callable[[Job], None]


class JobFailed(Exception):
    """The job cannot go on (its connection is gone, its file unreadable): fail it with this reason."""


TRANSIENT = (httpx.TransportError, httpx.HTTPStatusError, Unavailable, OSError)


class JobErrorOut(TypedDict, total=False):
    """One item that failed: its line (imports) and item (an import's image, a sync's product id), and why."""

    line: int | None
    item: str | None
    error: str


class JobOut(TypedDict):
    """A sync, an import or a reindex (the operator's ``hub reindex`` building the shop's vectors for another
    model): ``status`` is queued → running → succeeded or failed; ``scheduled`` is true for a sync
    the connection's schedule started; ``errors`` lists the first
    1,000 items that failed (``errors_truncated`` when there were more); ``error`` says why a failed job failed."""

    id: int
    kind: str
    status: str
    scheduled: bool
    connection_id: int | None
    total: int | None
    done: int
    failed: int
    errors: list[JobErrorOut]
    errors_truncated: bool
    error: str | None
    result: dict[str, Any] | None
    attempts: int
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    updated_at: datetime | None


def job_json(job: Job) -> JobOut:
    return {
        "id": job.id,
        "kind": job.kind,
        "status": job.status,
        "scheduled": bool((job.params or {}).get("scheduled")),  # started by the connection's schedule
        "connection_id": job.connection_id,
        "total": job.total,
        "done": job.done,
        "failed": job.failed,
        "errors": job.errors,  # type: ignore[typeddict-item]  # (JSON: the same keys)
        "errors_truncated": job.failed > len(job.errors),
        "error": job.error,
        "result": job.result,
        "attempts": job.attempts,
        "created_at": job.created_at,
        "started_at": job.started_at,
        "finished_at": job.finished_at,
        "updated_at": job.updated_at,
    }


async def check_job_room(session: AsyncSession, shop_id: int) -> None:
    """429 when the shop already runs as many syncs and imports as it may."""
    active = await session.scalar(select(func.count(Job.id)).where(  # (an operator's reindex does not count)
        Job.shop_id == shop_id, Job.status.in_(("queued", "running")), Job.kind != "reindex"))
    if (active or 0) >= MAX_ACTIVE_JOBS_PER_SHOP:
        raise RateLimited(f"this shop has {active} syncs and imports running; wait for one to finish",
                          retry_after=30)


async def create_job(
    session: AsyncSession, shop_id: int, kind: str, params: dict[str, Any], connection_id: int | None = None,
    total: int | None = None,
) -> Job:
    """A queued job, committed; 409 if the connection already has an active one."""
    await check_job_room(session, shop_id)
    job = Job(shop_id=shop_id, kind=kind, params=params, connection_id=connection_id, total=total,
              next_attempt_at=utcnow())
    session.add(job)
    try:
        await session.commit()
    except IntegrityError:
        await session.rollback()
        active = await session.scalar(select(Job.id).where(
            Job.connection_id == connection_id, Job.status.in_(("queued", "running"))))
        raise Conflict(f"connection {connection_id} already has a job running: job {active}",
                       extra={"job_id": active}) from None
    return job


async def claim_job(services: Services, job_id: int) -> Job | None:
    """Take a queued job (or one whose worker's lease ran out); None if another worker has it."""
    now = utcnow()
    async with services.sessions() as session:
        result = await session.execute(
            update(Job)
            .where(Job.id == job_id, or_(Job.status == "queued",
                                         (Job.status == "running") & (Job.next_attempt_at <= now)))
            .values(status="running", attempts=Job.attempts + 1, next_attempt_at=now + services.settings.lease)
        )
        if affected(result) != 1:
            await session.rollback()
            return None
        job = await session.get(Job, job_id)
        assert job is not None
        if job.started_at is None:
            job.started_at = now
        await session.commit()
        return job


class JobProgress:
    """Moves a job forward inside the caller's transaction (so progress and the work commit together)."""

    def __init__(self, services: Services, job: Job, on_progress: Progress | None = None) -> None:
        self.services = services
        self.job = job
        self.on_progress = on_progress

    async def advance(
        self, session: AsyncSession, *, done: int = 0, failed: int = 0, errors: list[dict[str, Any]] = (),  # type: ignore[assignment]
        cursor: str | None = None, total: int | None = None, result: dict[str, int] | None = None,
    ) -> None:
        job = await session.get(Job, self.job.id, populate_existing=True)
        if job is None or job.status != "running":
            raise JobFailed("the job was removed or taken over while it ran")
        job.done += done
        job.failed += failed
        if errors and len(job.errors) < MAX_ERRORS_KEPT:
            job.errors = [*job.errors, *errors][:MAX_ERRORS_KEPT]
        if cursor is not None:
            job.cursor = cursor
        if total is not None:
            job.total = total
        if result:
            job.result = {k: job.result.get(k, 0) + result.get(k, 0) for k in {*job.result, *result}}
        job.next_attempt_at = utcnow() + self.services.settings.lease  # the heartbeat
        self.job = job
        if self.on_progress is not None:
            self.on_progress(job)


async def finish_job(services: Services, job_id: int, status: str, error: str | None = None) -> Job | None:
    async with services.sessions() as session:
        job = await session.get(Job, job_id)
        if job is None:
            return None
        job.status, job.error, job.finished_at, job.next_attempt_at = status, error, utcnow(), None
        if status == "succeeded" and job.total is None:
            job.total = job.done + job.failed
        await session.commit()
        return job


async def requeue_job(services: Services, job_id: int, error: str, delay: timedelta) -> Job | None:
    """Back to the queue: the sweep runs it again after ``delay``, from its cursor."""
    async with services.sessions() as session:
        job = await session.get(Job, job_id)
        if job is not None:
            job.status, job.error, job.next_attempt_at = "queued", error, utcnow() + delay
            await session.commit()
        return job


Runner = Callable[[Services, JobProgress], Awaitable[None]]


async def run_job(services: Services, job_id: int, runners: dict[str, Runner],
                  on_progress: Progress | None = None) -> Job | None:
    """The ``RunJob`` task: claim, run the kind's runner from the stored cursor, and record the outcome."""
    job = await claim_job(services, job_id)
    if job is None:
        return None
    runner = runners.get(job.kind)
    progress = JobProgress(services, job, on_progress)
    try:
        if runner is None:
            raise JobFailed(f"no runner for jobs of kind {job.kind!r}")
        await runner(services, progress)
    except JobFailed as exc:
        return await finish_job(services, job_id, "failed", redact(str(exc))[:2000])
    except (*TRANSIENT, ConnectorError) as exc:
        reason = redact(f"{type(exc).__name__}: {exc}")[:2000]  # (an error's URL may carry the store's keys)
        if job.attempts >= services.settings.retry_max_attempts or isinstance(exc, ConnectorError):
            return await finish_job(services, job_id, "failed", reason)
        log.warning("job interrupted; it will resume", extra={"job_id": job_id, "reason": reason})
        return await requeue_job(services, job_id, reason, services.settings.retry_delay(job.attempts))
    except Exception as exc:  # noqa: BLE001 - a bug fails the job with its reason instead of killing the worker
        log.exception("job failed", extra={"job_id": job_id})
        return await finish_job(services, job_id, "failed", redact(f"{type(exc).__name__}: {exc}")[:2000])
    return await finish_job(services, job_id, "succeeded")


async def due_jobs(services: Services, limit: int = 100) -> list[int]:
    """Queued jobs whose time has come and running ones whose worker stopped renewing its lease."""
    now = utcnow()
    async with services.sessions() as session:
        rows = await session.scalars(select(Job.id).where(
            Job.status.in_(("queued", "running")), Job.next_attempt_at <= now).order_by(Job.id).limit(limit))
        ids = list(rows)
        if ids:  # queued once per sweep: the next sweep finds them again only if still not picked up
            await session.execute(update(Job).where(Job.id.in_(ids), Job.status == "queued")
                                  .values(next_attempt_at=now + services.settings.lease))
            await session.commit()
        return ids


async def list_jobs(session: AsyncSession, shop_id: int, limit: int, cursor: str | None, status: str | None,
                    kind: str | None, connection_id: int | None) -> tuple[list[Job], str | None]:
    """A page of the shop's jobs, newest first, and the cursor of the next page."""
    stmt = select(Job).where(Job.shop_id == shop_id)
    before = decode_cursor(cursor)
    if before is not None:
        stmt = stmt.where(Job.id < before)
    for column, value in ((Job.status, status), (Job.kind, kind), (Job.connection_id, connection_id)):
        if value is not None:
            stmt = stmt.where(column == value)
    rows = list(await session.scalars(stmt.order_by(Job.id.desc()).limit(limit + 1)))
    return page(rows, limit)


async def get_job(session: AsyncSession, shop_id: int, job_id: int) -> Job:
    job = await session.scalar(select(Job).where(Job.id == job_id, Job.shop_id == shop_id))
    if job is None:
        raise not_found("job", job_id)
    return job
