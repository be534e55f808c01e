"""Users and their API tokens."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, ForeignKey, Integer, String, select, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


class User(Base):
    """A person or script using the platform. Passwords are argon2 hashes."""

    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(80), primary_key=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    email: Mapped[str] = mapped_column(String(254), default="", index=True)
    type: Mapped[str] = mapped_column(String(16), default="default")
    roles: Mapped[list[str]] = mapped_column(JSON, default=list)
    workspaces: Mapped[list[str]] = mapped_column(JSON, default=list)
    password_hash: Mapped[str] = mapped_column(String(255))
    restricted_type: Mapped[int] = mapped_column(Integer, default=0)
    avatar_url: Mapped[str] = mapped_column(String(2048), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    """Set when deletion was requested; the clean-up workflow removes the row."""


class UserToken(Base):
    """A login token, stored only as its SHA-256 hash."""

    __tablename__ = "user_tokens"

    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime, index=True)
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


async def get_user(session: AsyncSession, *, user_id: str, include_deleting: bool = False) -> User | None:
    """The user with `user_id`; users being deleted only when asked for."""
    user = await session.get(User, user_id)
    if user is None or (user.deleting_at is not None and not include_deleting):
        return None
    return user


async def get_user_by_name(session: AsyncSession, *, name: str) -> User | None:
    """The user called `name`, whatever its state."""
    return (await session.execute(select(User).where(User.name == name))).scalar_one_or_none()


async def list_users(
    session: AsyncSession,
    *,
    name: str | None = None,
    email: str | None = None,
) -> list[User]:
    """Live users matching the exact filters, oldest first."""
    query = select(User).where(User.deleting_at.is_(None)).order_by(User.created_at, User.id)
    if name:
        query = query.where(User.name == name)
    if email:
        query = query.where(User.email == email)
    return list((await session.execute(query)).scalars())


async def count_admins(session: AsyncSession) -> int:
    """How many live users hold the system-admin role."""
    users = await list_users(session)
    return sum(1 for u in users if "system-admin" in u.roles)


async def revoke_tokens(session: AsyncSession, *, user_id: str, now: datetime) -> None:
    """Revoke every live token of a user."""
    await session.execute(
        update(UserToken)
        .where(UserToken.user_id == user_id, UserToken.revoked_at.is_(None))
        .values(revoked_at=now)
    )
