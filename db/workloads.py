"""Workloads: the submitted spec, the lifecycle's status, and the queries the API lists them with.

Status fields (`phase`, `message`, `dispatch_count`, `conditions`, `pods`, `nodes`, `ranks`,
`start_time`, `end_time`, `deletion_time`, `is_deleted`) are changed only through
`db.workload_status` (called from the workload's activities). The API inserts the record
(`add_workload`); the spec changes only through the workload workflow's patch activity.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ColumnElement, Index, Integer, String, Text, and_, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from domain import workload_lifecycle as life
from domain.workloads import WorkloadSpec


class Workload(Base):
    """One submitted workload and where its lifecycle stands."""

    __tablename__ = "workloads"
    __table_args__ = (
        # the list's default order, without and with a workspace filter: a page reads its rows only
        Index("ix_workloads_live_created", "is_deleted", "created_at", "id"),
        Index("ix_workloads_workspace_live_created", "workspace_id", "is_deleted", "created_at", "id"),
        Index("ix_workloads_live_started", "is_deleted", "start_time", "id"),
    )

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(63))
    description: Mapped[str] = mapped_column(String(4096), default="")
    workspace_id: Mapped[str] = mapped_column(String(63), index=True)
    cluster_id: Mapped[str] = mapped_column(String(63), index=True)
    user_id: Mapped[str] = mapped_column(String(80), index=True, default="")
    user_name: Mapped[str] = mapped_column(String(80), default="")
    kind: Mapped[str] = mapped_column(String(32), index=True)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    """The normalised `WorkloadSpec` (defaults applied), as the API accepted it."""
    gpu_resource_name: Mapped[str] = mapped_column(String(63), default="")

    phase: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    dispatch_count: Mapped[int] = mapped_column(Integer, default=0)
    conditions: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    pods: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    nodes: Mapped[list[list[str]]] = mapped_column(JSON, default=list)
    """The nodes of each dispatch (index 0 = dispatch 1)."""
    ranks: Mapped[list[list[str]]] = mapped_column(JSON, default=list)

    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    start_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    end_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    deletion_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    is_deleted: Mapped[bool] = mapped_column(Boolean, default=False, index=True)

    def spec_model(self) -> WorkloadSpec:
        """The stored spec as the domain value."""
        return WorkloadSpec.model_validate(self.spec)

    @property
    def ended(self) -> bool:
        return self.phase in life.ENDED_PHASES


class WorkloadDependency(Base):
    """`workload_id` waits for `depends_on` to succeed (one row per entry of `dependencies`)."""

    __tablename__ = "workload_dependencies"

    workload_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    depends_on: Mapped[str] = mapped_column(String(63), primary_key=True, index=True)


def add_workload(session: AsyncSession, workload: Workload) -> None:
    """Record a new workload (phase Pending) and its dependencies."""
    session.add(workload)
    for dep in dict.fromkeys(workload.spec.get("dependencies") or []):
        session.add(WorkloadDependency(workload_id=workload.id, depends_on=dep))


async def get_workload(
    session: AsyncSession, *, workload_id: str, include_deleted: bool = False
) -> Workload | None:
    """The workload (None when missing, or deleted unless `include_deleted`)."""
    workload = await session.get(Workload, workload_id, populate_existing=True)
    if workload is None or (workload.is_deleted and not include_deleted):
        return None
    return workload


async def get_many(session: AsyncSession, *, workload_ids: Sequence[str]) -> dict[str, Workload]:
    """The named workloads that exist (deleted ones included), by id."""
    if not workload_ids:
        return {}
    rows = (await session.execute(select(Workload).where(Workload.id.in_(list(workload_ids))))).scalars()
    return {w.id: w for w in rows}


async def dependents(session: AsyncSession, *, workload_id: str) -> list[str]:
    """Workloads that wait for this one and have not ended."""
    query = (
        select(WorkloadDependency.workload_id)
        .join(Workload, Workload.id == WorkloadDependency.workload_id)
        .where(WorkloadDependency.depends_on == workload_id, Workload.phase.not_in(life.ENDED_PHASES))
    )
    return list((await session.execute(query)).scalars())


async def active_in_cluster(session: AsyncSession, *, cluster_id: str) -> list[str]:
    """Ids of the cluster's workloads that have not ended (a cluster delete waits for none)."""
    query = select(Workload.id).where(
        Workload.cluster_id == cluster_id,
        Workload.phase.not_in(life.ENDED_PHASES),
        Workload.is_deleted.is_(False),
    )
    return list((await session.execute(query.order_by(Workload.id))).scalars())


@dataclass(frozen=True)
class WorkloadFilter:
    """The list filters of `GET /workloads` (fuzzy ones match substrings)."""

    workspace_ids: Sequence[str] | None = None
    """Restrict to these workspaces (the caller's visible ones); None: every workspace."""
    workspace_id: str = ""
    cluster_id: str = ""
    user_id: str = ""
    user_name: str = ""
    phases: Sequence[str] = ()
    kinds: Sequence[str] = ()
    description: str = ""
    workload_id: str = ""
    since: datetime | None = None
    until: datetime | None = None


SORT_COLUMNS = {
    "create_time": Workload.created_at,
    "creation_time": Workload.created_at,
    "start_time": Workload.start_time,
    "end_time": Workload.end_time,
    "priority": Workload.priority,
    "workload_id": Workload.id,
    "display_name": Workload.display_name,
    "phase": Workload.phase,
    "user_name": Workload.user_name,
    "workspace_id": Workload.workspace_id,
}


def _like(value: str) -> str:
    escaped = value.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _where(f: WorkloadFilter) -> ColumnElement[bool]:
    clauses: list[ColumnElement[bool]] = [Workload.is_deleted.is_(False)]
    if f.workspace_ids is not None:
        clauses.append(Workload.workspace_id.in_(list(f.workspace_ids)))
    exact = (
        (Workload.workspace_id, f.workspace_id),
        (Workload.cluster_id, f.cluster_id),
        (Workload.user_id, f.user_id),
    )
    clauses += [column == value for column, value in exact if value]
    fuzzy = (
        (Workload.user_name, f.user_name),
        (Workload.description, f.description),
        (Workload.id, f.workload_id),
    )
    clauses += [column.like(_like(value), escape="\\") for column, value in fuzzy if value]
    if f.phases:
        clauses.append(Workload.phase.in_(list(f.phases)))
    if f.kinds:
        clauses.append(Workload.kind.in_(list(f.kinds)))
    if f.since is not None:
        clauses.append(Workload.created_at >= f.since)
    if f.until is not None:
        clauses.append(Workload.created_at <= f.until)
    return and_(*clauses)


async def list_workloads(
    session: AsyncSession, f: WorkloadFilter, *, offset: int, limit: int, sort_by: str, ascending: bool
) -> tuple[int, list[Workload]]:
    """One page of the matching workloads and the total count (ignoring the page)."""
    where = _where(f)
    total = (await session.execute(select(func.count()).select_from(Workload).where(where))).scalar_one()
    column = SORT_COLUMNS[sort_by]
    order = column.asc() if ascending else column.desc()
    tie = Workload.id.asc() if ascending else Workload.id.desc()
    query = select(Workload).where(where).order_by(order, tie).offset(offset).limit(limit)
    return int(total), list((await session.execute(query)).scalars())
