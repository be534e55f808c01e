"""One operation-log store for every resource: nodes, clusters and (next) faults and ops jobs.

Lines are keyed by resource type and id; they are written by the resource's activities and read
by its `.../logs` endpoint. There is no foreign key (the owner is polymorphic): deleting a
resource deletes its lines in the same transaction (`delete_lines`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, delete, insert, literal, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from domain.logs import MAX_LINE, LogResource


class OperationLog(Base):
    """One line printed by an operation on a resource (a step, command output, a verdict)."""

    __tablename__ = "operation_logs"
    __table_args__ = (
        Index("ix_operation_logs_resource", "resource_type", "resource_id", "id"),
        Index("ix_operation_logs_created_at", "created_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    resource_type: Mapped[str] = mapped_column(String(16))
    resource_id: Mapped[str] = mapped_column(String(63))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(String(8), default="INFO")
    line: Mapped[str] = mapped_column(Text)


OWNER_TABLES = {LogResource.NODE: "nodes", LogResource.CLUSTER: "clusters"}
"""The table holding each kind of owner (lines of a deleted owner are not kept)."""


class OwnerGone(Exception):
    """The resource the lines belong to no longer exists (the caller's transaction rolls back)."""


async def append(
    session: AsyncSession,
    *,
    resource: LogResource,
    resource_id: str,
    lines: Sequence[str],
    at: datetime,
    level: str = "INFO",
) -> None:
    """Insert lines of a resource that must still exist; raises `OwnerGone` otherwise.

    The insert comes first and the existence check second, so on SQLite the transaction starts
    as a writer and never has to upgrade a read snapshot (which fails at once under contention).
    """
    add_lines(session, resource=resource, resource_id=resource_id, lines=lines, at=at, level=level)
    await session.flush()
    owners = Base.metadata.tables[OWNER_TABLES[resource]]
    found = await session.scalar(select(literal(1)).select_from(owners).where(owners.c.id == resource_id))
    if found is None:
        raise OwnerGone(f"{resource.value} {resource_id}")


async def insert_lines(
    session: AsyncSession,
    *,
    resource: LogResource,
    resource_id: str,
    lines: Sequence[tuple[datetime, str, str]],
) -> None:
    """Insert (when, level, text) lines of one resource in one statement. The caller knows the
    owner exists (a status write on it in the same transaction applied)."""
    if not lines:
        return
    rows = [
        {
            "resource_type": resource.value,
            "resource_id": resource_id,
            "created_at": at,
            "level": level,
            "line": text[:MAX_LINE],
        }
        for at, level, text in lines
    ]
    await session.execute(insert(OperationLog), rows)


def add_lines(
    session: AsyncSession,
    *,
    resource: LogResource,
    resource_id: str,
    lines: Sequence[str],
    at: datetime,
    level: str = "INFO",
) -> None:
    """Queue log lines of one resource for insertion (the caller commits)."""
    session.add_all(
        [
            OperationLog(
                resource_type=resource.value,
                resource_id=resource_id,
                created_at=at,
                level=level,
                line=line[:MAX_LINE],
            )
            for line in lines
        ]
    )


async def tail(
    session: AsyncSession,
    *,
    resource: LogResource,
    resource_id: str,
    count: int,
    since: datetime | None = None,
) -> list[OperationLog]:
    """The last `count` lines of a resource (oldest first), only those at or after `since` when given."""
    query = select(OperationLog).where(
        OperationLog.resource_type == resource.value, OperationLog.resource_id == resource_id
    )
    if since is not None:
        query = query.where(OperationLog.created_at >= since)
    rows = await session.execute(query.order_by(OperationLog.id.desc()).limit(count))
    return list(reversed(list(rows.scalars())))


async def delete_lines(session: AsyncSession, *, resource: LogResource, resource_id: str) -> None:
    """Delete every line of a resource (with the resource itself, in the caller's transaction)."""
    await session.execute(
        delete(OperationLog).where(
            OperationLog.resource_type == resource.value, OperationLog.resource_id == resource_id
        )
    )


async def purge_before(session: AsyncSession, *, before: datetime) -> int:
    """Delete every line older than `before` (log retention); returns how many went."""
    result = await session.execute(delete(OperationLog).where(OperationLog.created_at < before))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
