"""Image registries: sources (and credentials) for image import."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Boolean, Index, Integer, String, Text, or_, select, text, update
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.encryption import SecretBox
from domain.image_registries import registry_address


class ImageRegistry(Base):
    """A registry; the password is Fernet-encrypted; at most one row is the default."""

    __tablename__ = "image_registries"
    __table_args__ = (
        Index(
            "uq_image_registries_single_default",
            "is_default",
            unique=True,
            sqlite_where=text("is_default"),
            postgresql_where=text("is_default"),
        ),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(63), unique=True)
    url: Mapped[str] = mapped_column(String(2048), unique=True)
    username: Mapped[str] = mapped_column(String(255), default="")
    password_encrypted: Mapped[str] = mapped_column(Text, default="")
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)
    insecure: Mapped[bool] = mapped_column(Boolean, default=False)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def get_registry(session: AsyncSession, *, registry_id: int) -> ImageRegistry | None:
    """The registry with `registry_id`, or None."""
    return await session.get(ImageRegistry, registry_id)


async def list_registries(session: AsyncSession, *, limit: int, offset: int) -> list[ImageRegistry]:
    """One page of registries, newest (highest id) first."""
    query = select(ImageRegistry).order_by(ImageRegistry.id.desc()).limit(limit).offset(offset)
    return list((await session.execute(query)).scalars())


async def find_clash(
    session: AsyncSession, *, name: str, url: str, exclude_id: int | None = None
) -> ImageRegistry | None:
    """Another registry with the same name or the same address (with or without a scheme), if any."""
    address = registry_address(url)
    same_url = ImageRegistry.url.in_([address, f"http://{address}", f"https://{address}"])
    query = select(ImageRegistry).where(or_(ImageRegistry.name == name, same_url))
    if exclude_id is not None:
        query = query.where(ImageRegistry.id != exclude_id)
    return (await session.execute(query.limit(1))).scalar_one_or_none()


async def clear_default(session: AsyncSession, *, except_id: int | None) -> None:
    """Unset the default flag on every registry but `except_id` (same transaction as the caller's).

    Runs without autoflush: a pending new default must not reach the database before the old
    one is cleared (a partial unique index allows one default row).
    """
    query = update(ImageRegistry).where(ImageRegistry.is_default.is_(True)).values(is_default=False)
    if except_id is not None:
        query = query.where(ImageRegistry.id != except_id)
    with session.no_autoflush:
        await session.execute(query)


async def default_registry(session: AsyncSession) -> ImageRegistry | None:
    """The default registry (where imported images are pushed), or None when none is marked."""
    query = select(ImageRegistry).where(ImageRegistry.is_default.is_(True)).order_by(ImageRegistry.id)
    return (await session.execute(query.limit(1))).scalar_one_or_none()


def registry_credentials(box: SecretBox, registry: ImageRegistry) -> tuple[str, str]:
    """(username, password) for the registry, the password decrypted; ("", "") when anonymous."""
    return registry.username, box.decrypt(registry.password_encrypted)
