"""Web shell sessions: one row per shell opened in a pod, written by the API that relays it.

A row is inserted before the terminal opens (the per-user limit is checked against the open
rows in the same transaction), marked alive every `HEARTBEAT_SECONDS` while it runs, and ended
with the reason, exit code and bytes relayed. A row left open by a process that died stops
counting once it is stale (`STALE_AFTER_SECONDS`) and is listed as `Lost`.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from sqlalchemy import BigInteger, ColumnElement, Index, Integer, String, func, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.users import User
from domain.webshell import STALE_AFTER_SECONDS

REASON_LENGTH = 255


class WebShellSession(Base):
    """A web shell session: who, where, when, how long and how it ended."""

    __tablename__ = "webshell_sessions"
    __table_args__ = (
        Index("ix_webshell_sessions_user_open", "user_id", "ended_at"),
        Index("ix_webshell_sessions_started", "started_at", "id"),
        Index("ix_webshell_sessions_workload", "workload_id", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(80))
    user_name: Mapped[str] = mapped_column(String(80), default="")
    workload_id: Mapped[str] = mapped_column(String(63))
    workspace_id: Mapped[str] = mapped_column(String(63), default="")
    cluster_id: Mapped[str] = mapped_column(String(63), default="")
    pod: Mapped[str] = mapped_column(String(253))
    node: Mapped[str] = mapped_column(String(253), default="")
    container: Mapped[str] = mapped_column(String(63), default="")
    cmd: Mapped[str] = mapped_column(String(8), default="sh")
    client: Mapped[str] = mapped_column(String(64), default="")
    """The client's address as the API saw it."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    alive_at: Mapped[datetime] = mapped_column(UTCDateTime)
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    end_reason: Mapped[str] = mapped_column(String(REASON_LENGTH), default="")
    exit_code: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    input_bytes: Mapped[int] = mapped_column(BigInteger, default=0)
    output_bytes: Mapped[int] = mapped_column(BigInteger, default=0)

    def state(self, now: datetime) -> str:
        """`Open`, `Ended`, or `Lost` (open but not marked alive for too long)."""
        if self.ended_at is not None:
            return "Ended"
        return "Lost" if _stale(self.alive_at, now) else "Open"


def _stale(alive_at: datetime, now: datetime) -> bool:
    return alive_at <= now - timedelta(seconds=STALE_AFTER_SECONDS)


def _open_of(user_id: str, now: datetime) -> ColumnElement[bool]:
    cutoff = now - timedelta(seconds=STALE_AFTER_SECONDS)
    return (
        (WebShellSession.user_id == user_id)
        & WebShellSession.ended_at.is_(None)
        & (WebShellSession.alive_at > cutoff)
    )


async def count_open(session: AsyncSession, *, user_id: str, now: datetime) -> int:
    """The user's sessions that are open (and alive)."""
    total = await session.scalar(
        select(func.count()).select_from(WebShellSession).where(_open_of(user_id, now))
    )
    return int(total or 0)


async def start(session: AsyncSession, row: WebShellSession, *, limit: int) -> bool:
    """Insert `row` (its `started_at`/`alive_at` set) unless its user already has `limit` open
    sessions; False (and nothing written) when over. The caller commits.

    On PostgreSQL the user's row is locked first, so concurrent opens of one user are counted one
    after the other; SQLite has one writer at a time (the insert comes before the count)."""
    await session.execute(select(User.id).where(User.id == row.user_id).with_for_update())
    session.add(row)
    await session.flush()
    if await count_open(session, user_id=row.user_id, now=row.started_at) <= limit:
        return True
    await session.delete(row)
    await session.flush()
    return False


async def mark_alive(session: AsyncSession, *, session_id: int, now: datetime) -> None:
    """The session still runs."""
    await session.execute(
        update(WebShellSession)
        .where(WebShellSession.id == session_id, WebShellSession.ended_at.is_(None))
        .values(alive_at=now)
    )


async def finish(
    session: AsyncSession,
    *,
    session_id: int,
    now: datetime,
    reason: str,
    exit_code: int | None = None,
    input_bytes: int = 0,
    output_bytes: int = 0,
) -> None:
    """Record how the session ended (once: a second call changes nothing)."""
    await session.execute(
        update(WebShellSession)
        .where(WebShellSession.id == session_id, WebShellSession.ended_at.is_(None))
        .values(
            ended_at=now,
            alive_at=now,
            end_reason=reason[:REASON_LENGTH],
            exit_code=exit_code,
            input_bytes=input_bytes,
            output_bytes=output_bytes,
        )
    )


async def list_sessions(
    session: AsyncSession,
    *,
    user_id: str = "",
    workload_id: str = "",
    limit: int = 100,
    offset: int = 0,
) -> tuple[Sequence[WebShellSession], int]:
    """Sessions, newest first, and how many match in all."""
    conditions: list[ColumnElement[bool]] = []
    if user_id:
        conditions.append(WebShellSession.user_id == user_id)
    if workload_id:
        conditions.append(WebShellSession.workload_id == workload_id)
    total = await session.scalar(select(func.count()).select_from(WebShellSession).where(*conditions))
    rows = (
        await session.scalars(
            select(WebShellSession)
            .where(*conditions)
            .order_by(WebShellSession.started_at.desc(), WebShellSession.id.desc())
            .limit(limit)
            .offset(offset)
        )
    ).all()
    return rows, int(total or 0)
