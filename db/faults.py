"""Faults: one row per monitor finding on a node, open until stopped (`deleted_at`).

The API records a fault it is asked to inject (phase Pending); everything after that, applying
it, closing it and removing the record, goes through `db.fault_status` from the fault's
activities. A node's deletion removes its faults (foreign key cascade), as upstream's garbage
collection does.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import ColumnElement, ForeignKey, Index, String, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.nodes import Node
from domain import faults as rules


class Fault(Base):
    """A fault; `deleted_at` is when it was stopped (the contract's `deletionTime`)."""

    __tablename__ = "faults"
    __table_args__ = (Index("ix_faults_node_monitor_open", "node_id", "monitor_id", "deleted_at"),)

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"))
    monitor_id: Mapped[str] = mapped_column(String(63))
    message: Mapped[str] = mapped_column(String(1024), default="")
    action: Mapped[str] = mapped_column(String(16), default="taint")
    effect: Mapped[str] = mapped_column(String(16), default="NoSchedule")
    phase: Mapped[str] = mapped_column(String(16), default="Pending")
    cluster_id: Mapped[str] = mapped_column(String(63), default="", index=True)
    source: Mapped[str] = mapped_column(String(16), default="api")
    """Who raised it: `api` (injected by an administrator) or `probe` (the node probe)."""
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)

    @property
    def is_open(self) -> bool:
        return self.deleted_at is None


async def new_fault(
    session: AsyncSession,
    *,
    fault_id: str,
    node_id: str,
    monitor_id: str,
    message: str,
    effect: str,
    cluster_id: str,
    source: str,
    created_by: str,
    now: datetime,
) -> Fault:
    """Record a new open fault (phase Pending) in the caller's transaction: the API for an
    injection, the probe for its own."""
    fault = Fault(
        id=fault_id,
        node_id=node_id,
        monitor_id=monitor_id,
        message=message[: rules.MAX_MESSAGE],
        action=rules.TAINT,
        effect=effect,
        phase=rules.PENDING,
        cluster_id=cluster_id,
        source=source,
        created_by=created_by,
        created_at=now,
        updated_at=now,
    )
    session.add(fault)
    await session.flush()
    return fault


SORT_COLUMNS = {
    "create_time": Fault.created_at,
    "creation_time": Fault.created_at,
    "delete_time": Fault.deleted_at,
    "deletion_time": Fault.deleted_at,
    "node_id": Fault.node_id,
    "monitor_id": Fault.monitor_id,
}


@dataclass(frozen=True)
class FaultFilter:
    """`GET /faults` filters; `workspace_ids` limits to nodes serving those workspaces (None: all)."""

    node_id: str = ""
    monitor_ids: Sequence[str] = ()
    cluster_id: str = ""
    only_open: bool = False
    workspace_ids: Sequence[str] | None = field(default=None)


async def get_fault(session: AsyncSession, *, fault_id: str) -> Fault | None:
    return await session.get(Fault, fault_id)


async def open_fault(session: AsyncSession, *, node_id: str, monitor_id: str) -> Fault | None:
    """The node's open fault of that monitor, if any (at most one is opened per pair)."""
    query = select(Fault).where(
        Fault.node_id == node_id, Fault.monitor_id == monitor_id, Fault.deleted_at.is_(None)
    )
    return (await session.execute(query.order_by(Fault.created_at).limit(1))).scalars().first()


async def open_taint_keys(session: AsyncSession, *, node_id: str) -> set[str]:
    """The taint keys the node's open faults own (a node PATCH keeps them)."""
    rows = await session.execute(
        select(Fault.monitor_id).where(Fault.node_id == node_id, Fault.deleted_at.is_(None)).distinct()
    )
    return {rules.taint_key(monitor_id) for (monitor_id,) in rows}


async def list_faults(
    session: AsyncSession, filters: FaultFilter, *, offset: int, limit: int, sort_by: str, ascending: bool
) -> tuple[int, Sequence[Fault]]:
    """The total matching `filters` and one page of them."""
    conditions: list[ColumnElement[bool]] = []
    if filters.node_id:
        escaped = filters.node_id.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Fault.node_id.like(f"%{escaped}%", escape="\\"))
    if filters.monitor_ids:
        conditions.append(or_(*(Fault.monitor_id == m for m in filters.monitor_ids)))
    if filters.cluster_id:
        conditions.append(Fault.cluster_id == filters.cluster_id)
    if filters.only_open:
        conditions.append(Fault.deleted_at.is_(None))
    if filters.workspace_ids is not None:
        serving = select(Node.id).where(Node.workspace_id.in_(list(filters.workspace_ids)))
        conditions.append(Fault.node_id.in_(serving))
    total = (await session.execute(select(func.count()).select_from(Fault).where(*conditions))).scalar_one()
    column = SORT_COLUMNS[sort_by]
    order = column.asc() if ascending else column.desc()
    tie = Fault.id.asc() if ascending else Fault.id.desc()
    rows = await session.execute(
        select(Fault).where(*conditions).order_by(order, tie).offset(offset).limit(limit)
    )
    return total, rows.scalars().all()
