"""Ops jobs: the record of each job, its inputs, selected nodes, per-node progress and outputs.

The API records a job (phase Pending) with the nodes it selected; everything after that goes
through `db.ops_job_status` from the job's activities.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ColumnElement, Float, Integer, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


class OpsJob(Base):
    """One ops job; `deleted_at` is when it was deleted (hidden from lists)."""

    __tablename__ = "ops_jobs"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    type: Mapped[str] = mapped_column(String(16), index=True)
    inputs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    node_ids: Mapped[list[str]] = mapped_column(JSON, default=list)
    """The nodes it works on, selected at creation."""
    excluded_nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    cluster_id: Mapped[str] = mapped_column(String(63), default="", index=True)
    workspace_id: Mapped[str] = mapped_column(String(63), default="")
    user_id: Mapped[str] = mapped_column(String(80), default="")
    user_name: Mapped[str] = mapped_column(String(80), default="")
    phase: Mapped[str] = mapped_column(String(16), default="Pending")
    message: Mapped[str] = mapped_column(String(2048), default="")
    conditions: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    outputs: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    node_results: Mapped[dict[str, dict[str, Any]]] = mapped_column(JSON, default=dict)
    """node id -> {"ok": bool, "message": str, "at": time}: what the job did there."""
    timeout_second: Mapped[int] = mapped_column(Integer, default=0)
    ttl_seconds_after_finished: Mapped[int] = mapped_column(Integer, default=0)
    batch_count: Mapped[int] = mapped_column(Integer, default=1)
    available_ratio: Mapped[float] = mapped_column(Float, default=1.0)
    security_upgrade: Mapped[bool] = mapped_column(Boolean, default=False)
    is_tolerate_all: Mapped[bool] = mapped_column(Boolean, default=False)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """Preflight fields as given (resource, image, entryPoint, env, hostpath)."""
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    started_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    expired_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    """When its `ttlSecondsAfterFinished` passed and its artifacts (a dumplog archive) were removed."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def inputs_of(self, name: str) -> list[str]:
        """The values of its inputs called `name`."""
        return [i["value"] for i in self.inputs if i.get("name") == name]


SORT_COLUMNS = {
    "create_time": OpsJob.created_at,
    "creation_time": OpsJob.created_at,
    "start_time": OpsJob.started_at,
    "end_time": OpsJob.ended_at,
    "job_id": OpsJob.id,
    "type": OpsJob.type,
    "phase": OpsJob.phase,
}


@dataclass(frozen=True)
class JobFilter:
    since: datetime
    until: datetime
    cluster_id: str = ""
    user_name: str = ""
    phase: str = ""
    type: str = ""
    user_id: str | None = None
    """Only this user's jobs (regular users); None: everyone's."""


async def get_job(session: AsyncSession, *, job_id: str, include_deleted: bool = False) -> OpsJob | None:
    job = await session.get(OpsJob, job_id)
    if job is None or (job.deleted_at is not None and not include_deleted):
        return None
    return job


async def list_jobs(
    session: AsyncSession, filters: JobFilter, *, offset: int, limit: int, sort_by: str, ascending: bool
) -> tuple[int, Sequence[OpsJob]]:
    conditions: list[ColumnElement[bool]] = [
        OpsJob.deleted_at.is_(None),
        OpsJob.created_at >= filters.since,
        OpsJob.created_at <= filters.until,
    ]
    if filters.cluster_id:
        conditions.append(OpsJob.cluster_id == filters.cluster_id)
    if filters.user_name:
        escaped = filters.user_name.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(OpsJob.user_name.like(f"%{escaped}%", escape="\\"))
    if filters.phase:
        conditions.append(OpsJob.phase == filters.phase)
    if filters.type:
        conditions.append(OpsJob.type == filters.type)
    if filters.user_id is not None:
        conditions.append(OpsJob.user_id == filters.user_id)
    total = (await session.execute(select(func.count()).select_from(OpsJob).where(*conditions))).scalar_one()
    column = SORT_COLUMNS[sort_by]
    order = column.asc() if ascending else column.desc()
    tie = OpsJob.id.asc() if ascending else OpsJob.id.desc()
    rows = await session.execute(
        select(OpsJob).where(*conditions).order_by(order, tie).offset(offset).limit(limit)
    )
    return total, rows.scalars().all()


async def running_jobs(session: AsyncSession, *, job_type: str) -> Sequence[OpsJob]:
    """Jobs of the type that have not ended (a node is in one addon job at a time, a workload
    in one dumplog job)."""
    query = select(OpsJob).where(OpsJob.type == job_type, OpsJob.phase.in_(["Pending", "Running"]))
    return (await session.execute(query)).scalars().all()


async def expiring_jobs(session: AsyncSession, *, now: datetime) -> list[OpsJob]:
    """Ended jobs whose `ttlSecondsAfterFinished` has passed and that are not expired yet."""
    query = select(OpsJob).where(
        OpsJob.ended_at.is_not(None), OpsJob.expired_at.is_(None), OpsJob.ttl_seconds_after_finished > 0
    )
    rows = (await session.execute(query)).scalars().all()
    return [
        j
        for j in rows
        if j.ended_at is not None and (now - j.ended_at).total_seconds() >= j.ttl_seconds_after_finished
    ]
