"""The one writer of an ops job's status: guarded transitions called only from its activities.

A job is Pending -> Running -> Succeeded | Failed; each node's outcome is recorded once (a
retried step finds it and changes nothing); the end is recorded once, with its condition.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import and_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.ops_jobs import OpsJob
from domain import ops_jobs as rules
from domain.timefmt import format_time


def _condition(kind: str, status: str, reason: str, message: str, now: datetime) -> dict[str, str]:
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:1024],
        "lastTransitionTime": format_time(now) + "Z",
    }


async def _locked(session: AsyncSession, job_id: str, now: datetime) -> OpsJob | None:
    """The job, its row locked until commit: a touching UPDATE first (SQLite starts its write
    transaction only at the first write, so a plain read would let concurrent node results
    overwrite each other), then a fresh read."""
    touched = await session.execute(update(OpsJob).where(OpsJob.id == job_id).values(updated_at=now))
    if not touched.rowcount:  # type: ignore[attr-defined]
        return None
    return await session.get(OpsJob, job_id, populate_existing=True)


async def start(session: AsyncSession, *, job_id: str, now: datetime) -> bool:
    """Pending -> Running (startTime set); False when it is no longer Pending."""
    job = await _locked(session, job_id, now)
    if job is None or job.phase != rules.PENDING:
        return False
    job.phase = rules.RUNNING
    job.started_at = now
    job.conditions = [*job.conditions, _condition(rules.RUNNING, "True", "Started", "job started", now)]
    job.updated_at = now
    return True


async def record_node(
    session: AsyncSession, *, job_id: str, node_id: str, ok: bool, message: str, now: datetime
) -> bool:
    """A node's outcome, once; False when it was already recorded (a retry) or the job ended."""
    job = await _locked(session, job_id, now)
    if job is None or job.phase in rules.ENDED or node_id in job.node_results:
        return False
    result: dict[str, Any] = {"ok": ok, "message": message[:2048], "at": format_time(now)}
    job.node_results = {**job.node_results, node_id: result}
    if not ok:
        job.conditions = [*job.conditions, _condition(node_id, "False", "NodeFailed", message, now)]
    job.updated_at = now
    return True


async def finish(session: AsyncSession, *, end: rules.JobEnd, now: datetime) -> bool:
    """Record the end (phase, message, outputs, JobCompleted condition); False if it had ended."""
    job = await _locked(session, end.job_id, now)
    if job is None or job.phase in rules.ENDED:
        return False
    job.phase = end.phase
    job.message = end.message[:2048]
    job.outputs = [*job.outputs, *(o.model_dump() for o in end.outputs)]
    job.started_at = job.started_at or now
    job.ended_at = now
    ok = end.phase == rules.SUCCEEDED
    job.conditions = [
        *job.conditions,
        _condition(end.phase, "True", "JobSucceeded" if ok else "JobFailed", end.message, now),
    ]
    job.updated_at = now
    return True


async def mark_deleted(session: AsyncSession, *, job_id: str, now: datetime) -> bool:
    """Hide the job from lists (the record stays)."""
    result = await session.execute(
        update(OpsJob)
        .where(and_(OpsJob.id == job_id, OpsJob.deleted_at.is_(None)))
        .values(deleted_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def expire(session: AsyncSession, *, job_id: str, now: datetime) -> bool:
    """Its TTL passed and its artifacts are gone (once)."""
    result = await session.execute(
        update(OpsJob)
        .where(and_(OpsJob.id == job_id, OpsJob.expired_at.is_(None)))
        .values(expired_at=now, updated_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
