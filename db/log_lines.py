"""The log store: every line a workload's pods printed, and our own services' log records.

One row per line. Workload lines carry the workload, its dispatch count, pod, node, container and
stream, and `seq`, the line's position in that pod container's output: collection resumes after
the highest stored `seq` and the unique key drops a line sent twice. Service lines (the API's and
the worker's structured logs) have `service` set and no workload.

Written by the log collection activities and the service log handler; read by the log search
(`db.log_search`). Retention deletes by `at` (`ix_log_lines_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint, delete, func, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from domain.logs import MAX_LINE

ROW_ID = BigInteger().with_variant(Integer(), "sqlite")
"""64-bit ids on PostgreSQL; on SQLite an INTEGER PRIMARY KEY is the rowid (what FTS5 joins on)."""


class LogLine(Base):
    """One line of a pod's output (or one record of a service's log)."""

    __tablename__ = "log_lines"
    __table_args__ = (
        UniqueConstraint(
            "workload_id", "dispatch_count", "pod", "container", "stream", "seq", name="uq_log_lines_position"
        ),
        Index("ix_log_lines_workload", "workload_id", "at", "id"),
        Index("ix_log_lines_pod", "workload_id", "pod", "at", "id"),
        Index("ix_log_lines_service", "service", "at", "id"),
        Index("ix_log_lines_at", "at"),
    )

    id: Mapped[int] = mapped_column(ROW_ID, primary_key=True, autoincrement=True)
    workload_id: Mapped[str] = mapped_column(String(63), default="")
    service: Mapped[str] = mapped_column(String(32), default="")
    dispatch_count: Mapped[int] = mapped_column(Integer, default=0)
    pod: Mapped[str] = mapped_column(String(253), default="")
    node: Mapped[str] = mapped_column(String(253), default="")
    container: Mapped[str] = mapped_column(String(63), default="")
    stream: Mapped[str] = mapped_column(String(8), default="stdout")
    seq: Mapped[int] = mapped_column(BigInteger, default=0)
    at: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(String(8), default="")
    line: Mapped[str] = mapped_column(Text)


POSITION = ["workload_id", "dispatch_count", "pod", "container", "stream", "seq"]


@dataclass(frozen=True)
class NewLine:
    """A line to store. Workload lines set the workload fields and `seq`; service lines `service`."""

    at: datetime
    line: str
    workload_id: str = ""
    service: str = ""
    dispatch_count: int = 0
    pod: str = ""
    node: str = ""
    container: str = ""
    stream: str = "stdout"
    seq: int = 0
    level: str = ""


async def add_lines(session: AsyncSession, lines: Sequence[NewLine]) -> None:
    """Insert `lines` in the caller's transaction; a line whose position is already stored is
    skipped (a collection retried after a worker restart sends some lines again)."""
    if not lines:
        return
    rows = [
        {
            "workload_id": n.workload_id,
            "service": n.service,
            "dispatch_count": n.dispatch_count,
            "pod": n.pod,
            "node": n.node,
            "container": n.container,
            "stream": n.stream,
            "seq": n.seq,
            "at": n.at,
            "level": n.level,
            "line": n.line[:MAX_LINE],
        }
        for n in lines
    ]
    await session.execute(_insert(session).on_conflict_do_nothing(index_elements=POSITION), rows)


async def last_positions(
    session: AsyncSession, *, workload_id: str, dispatch_count: int
) -> dict[tuple[str, str, str], int]:
    """The highest stored `seq` per (pod, container, stream) of one dispatch: where a resumed
    collection starts."""
    rows = await session.execute(
        select(LogLine.pod, LogLine.container, LogLine.stream, func.max(LogLine.seq))
        .where(LogLine.workload_id == workload_id, LogLine.dispatch_count == dispatch_count)
        .group_by(LogLine.pod, LogLine.container, LogLine.stream)
    )
    return {(pod, container, stream): int(seq) for pod, container, stream, seq in rows}


def _insert(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(LogLine)


async def purge_batch(session: AsyncSession, *, before: datetime, batch: int) -> int:
    """Delete up to `batch` of the oldest lines older than `before` (log retention, through
    `ix_log_lines_at`); returns how many went. Callers loop, one transaction per batch, so a
    large purge never holds the database (SQLite's one writer) for long."""
    oldest = select(LogLine.id).where(LogLine.at < before).order_by(LogLine.at).limit(batch)
    result = await session.execute(delete(LogLine).where(LogLine.id.in_(oldest.scalar_subquery())))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
