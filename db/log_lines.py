"""The log store: every line a workload's pods printed, and our own services' log records.

One row per line. Workload lines carry the workload, its dispatch count, pod, node, container and
stream, and `seq`, the line's position in that pod container's output: collection resumes after
the highest stored `seq` and the unique key drops a line sent twice. Service lines (the API's and
the worker's structured logs) have `service` set and no workload.

Written by the log collection activities and the service log handler; read by the log search
(`db.log_search`). Retention deletes by `at` (`ix_log_lines_at`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime

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
