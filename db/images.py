"""Images in the internal registry, their import jobs and the per-blob copy progress of an import."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    ForeignKey,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    update,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from domain.images import LAYER_DONE, STATUS_READY


class Image(Base):
    """An image in the internal registry; `tag` is the full reference `host/repository:tag`."""

    __tablename__ = "images"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tag: Mapped[str] = mapped_column(String(512), unique=True)
    registry_host: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    image_tag: Mapped[str] = mapped_column(String(128))
    source: Mapped[str] = mapped_column(String(1024), default="")
    description: Mapped[str] = mapped_column(String(1024), default="")
    status: Mapped[str] = mapped_column(String(16), index=True)
    message: Mapped[str] = mapped_column(Text, default="")
    digest: Mapped[str] = mapped_column(String(80), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    arch: Mapped[str] = mapped_column(String(32), default="")
    os: Mapped[str] = mapped_column(String(32), default="")
    platforms: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    """`{"linux/amd64": {"digest": ..., "size": ...}}` for every platform of the image."""
    include_type: Mapped[str] = mapped_column(String(16), default="import")
    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_by_name: Mapped[str] = mapped_column(String(63), default="", index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class ImageImportJob(Base):
    """The import that produced an image: where from, which workflow, when."""

    __tablename__ = "image_import_jobs"

    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), primary_key=True)
    workflow_id: Mapped[str] = mapped_column(String(255))
    source_ref: Mapped[str] = mapped_column(String(1024))
    target_ref: Mapped[str] = mapped_column(String(1024))
    source_registry_id: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    """The image registry whose credentials are used (no foreign key: deleting it keeps images)."""
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


class ImageLayer(Base):
    """One blob (layer or config) of an import, with its copy status and bytes done."""

    __tablename__ = "image_layers"
    __table_args__ = (UniqueConstraint("image_id", "digest", name="uq_image_layers_image_digest"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    image_id: Mapped[int] = mapped_column(ForeignKey("images.id", ondelete="CASCADE"), index=True)
    digest: Mapped[str] = mapped_column(String(80), index=True)
    media_type: Mapped[str] = mapped_column(String(255), default="")
    size: Mapped[int] = mapped_column(BigInteger, default=0)
    bytes_done: Mapped[int] = mapped_column(BigInteger, default=0)
    status: Mapped[str] = mapped_column(String(16), default="pending")
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


OrderColumn = Literal["created_at", "id", "tag", "status", "size", "updated_at"]
ORDER_COLUMNS: dict[str, Any] = {
    "created_at": Image.created_at,
    "id": Image.id,
    "tag": Image.tag,
    "status": Image.status,
    "size": Image.size,
    "updated_at": Image.updated_at,
}


@dataclass(frozen=True)
class ImageFilter:
    """List filters: substring of the tag, exact status, exact creator name."""

    tag: str | None = None
    status: str | None = None
    user_name: str | None = None


async def get_image(session: AsyncSession, *, image_id: int) -> Image | None:
    """The image with `image_id`, or None."""
    return await session.get(Image, image_id)


async def get_image_by_tag(session: AsyncSession, *, tag: str) -> Image | None:
    """The image stored under the full reference `tag`, or None."""
    return (await session.execute(select(Image).where(Image.tag == tag))).scalar_one_or_none()


async def get_import_job(session: AsyncSession, *, image_id: int) -> ImageImportJob | None:
    """The import job of an image, or None."""
    return await session.get(ImageImportJob, image_id)


async def list_images(
    session: AsyncSession,
    *,
    where: ImageFilter,
    order_by: str = "created_at",
    descending: bool = True,
    limit: int,
    offset: int,
) -> tuple[int, list[Image]]:
    """(total matches, one page), ordered by `order_by` then id in the same direction."""
    conditions = []
    if where.tag:
        escaped = where.tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Image.tag.like(f"%{escaped}%", escape="\\"))
    if where.status:
        conditions.append(Image.status == where.status)
    if where.user_name:
        conditions.append(Image.created_by_name == where.user_name)
    column = ORDER_COLUMNS[order_by]
    order = (column.desc(), Image.id.desc()) if descending else (column.asc(), Image.id.asc())
    total = (await session.execute(select(func.count()).select_from(Image).where(*conditions))).scalar_one()
    page = await session.execute(
        select(Image).where(*conditions).order_by(*order).limit(limit).offset(offset)
    )
    return int(total), list(page.scalars())


async def layers_of(session: AsyncSession, *, image_id: int) -> list[ImageLayer]:
    """The blobs of an import in the order they were planned."""
    query = select(ImageLayer).where(ImageLayer.image_id == image_id).order_by(ImageLayer.id)
    return list((await session.execute(query)).scalars())


async def same_manifest_elsewhere(
    session: AsyncSession, *, registry_host: str, repository: str, digest: str, exclude_id: int
) -> bool:
    """Whether another image in the same repository points at the same manifest digest."""
    query = select(func.count()).where(
        Image.registry_host == registry_host,
        Image.repository == repository,
        Image.digest == digest,
        Image.id != exclude_id,
    )
    return bool((await session.execute(query)).scalar_one())


async def mount_candidate(
    session: AsyncSession, *, registry_host: str, digest: str, exclude_image_id: int
) -> str | None:
    """A repository of the same registry already holding blob `digest` (from a finished import)."""
    query = (
        select(Image.repository)
        .join(ImageLayer, ImageLayer.image_id == Image.id)
        .where(
            Image.registry_host == registry_host,
            Image.status == STATUS_READY,
            Image.id != exclude_image_id,
            ImageLayer.digest == digest,
            ImageLayer.status.in_(LAYER_DONE),
        )
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


async def set_layer_progress(
    session: AsyncSession, *, image_id: int, digest: str, status: str, bytes_done: int, now: datetime
) -> int:
    """Record a blob's status and bytes done; returns rows changed (0 when the image is gone)."""
    result = await session.execute(
        update(ImageLayer)
        .where(ImageLayer.image_id == image_id, ImageLayer.digest == digest)
        .values(status=status, bytes_done=bytes_done, updated_at=now)
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
