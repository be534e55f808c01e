"""Users' SSH public keys."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from sqlalchemy import Boolean, ForeignKey, Integer, String, Text, UniqueConstraint, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


class PublicKey(Base):
    """An OpenSSH public key of one user; `status` false disables it."""

    __tablename__ = "public_keys"
    __table_args__ = (UniqueConstraint("user_id", "fingerprint", name="uq_public_keys_user_fingerprint"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(128), default="")
    description: Mapped[str] = mapped_column(String(1024), default="")
    public_key: Mapped[str] = mapped_column(Text)
    key_type: Mapped[str] = mapped_column(String(32))
    fingerprint: Mapped[str] = mapped_column(String(128))
    status: Mapped[bool] = mapped_column(Boolean, default=True)
    create_time: Mapped[datetime] = mapped_column(UTCDateTime)
    update_time: Mapped[datetime] = mapped_column(UTCDateTime)


SortColumn = Literal["createTime", "updateTime"]
_SORT_COLUMNS = {"createTime": PublicKey.create_time, "updateTime": PublicKey.update_time}


async def get_user_key(session: AsyncSession, *, user_id: str, key_id: int) -> PublicKey | None:
    """Key `key_id` when it belongs to `user_id`, else None (another user's key looks missing)."""
    key = await session.get(PublicKey, key_id)
    return key if key is not None and key.user_id == user_id else None


async def find_user_key(session: AsyncSession, *, user_id: str, fingerprint: str) -> PublicKey | None:
    """The key of `user_id` with this fingerprint, or None."""
    query = select(PublicKey).where(PublicKey.user_id == user_id, PublicKey.fingerprint == fingerprint)
    return (await session.execute(query)).scalar_one_or_none()


async def list_user_keys(
    session: AsyncSession,
    *,
    user_id: str,
    sort_by: SortColumn = "createTime",
    descending: bool = True,
    limit: int,
    offset: int,
) -> tuple[int, list[PublicKey]]:
    """(total, one page) of the user's keys, ordered by `sort_by` then id in the same direction."""
    column = _SORT_COLUMNS[sort_by]
    order = (column.desc(), PublicKey.id.desc()) if descending else (column.asc(), PublicKey.id.asc())
    mine = PublicKey.user_id == user_id
    total = (await session.execute(select(func.count()).select_from(PublicKey).where(mine))).scalar_one()
    page = await session.execute(select(PublicKey).where(mine).order_by(*order).limit(limit).offset(offset))
    return int(total), list(page.scalars())


async def enabled_keys(session: AsyncSession, *, user_id: str) -> list[PublicKey]:
    """The user's keys with status true: the ones an SSH login may use."""
    query = select(PublicKey).where(PublicKey.user_id == user_id, PublicKey.status.is_(True))
    return list((await session.execute(query.order_by(PublicKey.id))).scalars())
