"""Images in the internal registry, their import jobs, per-blob copy progress, registry checks.

An image's status (`Importing` -> `Ready` | `Failed`, a failed one reset to `Importing`, removal)
changes only through the guarded transitions below, each called from one activity; the API writes
the record when an import is requested and the deletion request (`deleting_at`), nothing more.
An image with `deleting_at` set is gone for the API: lists and lookups leave it out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

from sqlalchemy import (
    JSON,
    BigInteger,
    ColumnElement,
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
from db.encryption import SecretBox
from db.image_registries import ImageRegistry, get_registry, registry_credentials
from db.secrets import list_secrets, load_image_credentials
from domain.images import (
    LAYER_DONE,
    STATUS_READY,
    RegistryCheck,
    registry_location,
)
from domain.secrets import registry_host


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
    deleting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    """When deletion was requested; the `image-delete/<id>` workflow then removes the row."""


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
    progress: Mapped[int] = mapped_column(Integer, default=0)
    """Percent done (0..100), from the copy or from an external copier's report."""
    status: Mapped[str] = mapped_column(String(16), default="pending")
    upload_url: Mapped[str] = mapped_column(Text, default="")
    """The target's upload session after the last chunk sent (`bytes_done` bytes): where a retry resumes."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


class RegistryStats(Base):
    """The last check of a registry by the `system/registry-stats` schedule (one row per host)."""

    __tablename__ = "registry_stats"

    registry_host: Mapped[str] = mapped_column(String(255), primary_key=True)
    status: Mapped[str] = mapped_column(String(16))
    """`healthy` when `GET /v2/` answered, else `unhealthy`."""
    message: Mapped[str] = mapped_column(Text, default="")
    repositories: Mapped[int | None] = mapped_column(Integer, nullable=True, default=None)
    """Repositories in the registry's catalogue (None when it could not be listed)."""
    checked_at: Mapped[datetime] = mapped_column(UTCDateTime)


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
    """List filters: substring of the tag, ready or not (None: both), exact creator name."""

    tag: str | None = None
    ready: bool | None = None
    user_name: str | None = None


async def get_image(session: AsyncSession, *, image_id: int, include_deleting: bool = False) -> Image | None:
    """The image with `image_id`, or None (also when its deletion was requested, unless asked)."""
    image = await session.get(Image, image_id)
    if image is None or (image.deleting_at is not None and not include_deleting):
        return None
    return image


async def get_image_by_tag(
    session: AsyncSession, *, tag: str, include_deleting: bool = False
) -> Image | None:
    """The image stored under the full reference `tag`, or None (as `get_image`)."""
    image = (await session.execute(select(Image).where(Image.tag == tag))).scalar_one_or_none()
    if image is None or (image.deleting_at is not None and not include_deleting):
        return None
    return image


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
    conditions: list[ColumnElement[bool]] = [Image.deleting_at.is_(None)]
    if where.tag:
        escaped = where.tag.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        conditions.append(Image.tag.like(f"%{escaped}%", escape="\\"))
    if where.ready is not None:
        conditions.append((Image.status == STATUS_READY) if where.ready else (Image.status != STATUS_READY))
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
    """Whether another image in the same repository, not being deleted, points at the same manifest."""
    query = select(func.count()).where(
        Image.registry_host == registry_host,
        Image.repository == repository,
        Image.digest == digest,
        Image.id != exclude_id,
        Image.deleting_at.is_(None),
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
            Image.deleting_at.is_(None),
            Image.id != exclude_image_id,
            ImageLayer.digest == digest,
            ImageLayer.status.in_(LAYER_DONE),
        )
        .limit(1)
    )
    return (await session.execute(query)).scalar_one_or_none()


@dataclass(frozen=True)
class SourceEndpoint:
    """Where and how to reach a source registry; the password is kept out of `repr`."""

    host: str
    scheme: str | None
    username: str
    password: str = field(repr=False)
    insecure: bool
    registry_id: int | None


async def registry_for_host(session: AsyncSession, *, host: str) -> ImageRegistry | None:
    """The image registry whose URL names `host` (first by id), if any."""
    for registry in (await session.execute(select(ImageRegistry).order_by(ImageRegistry.id))).scalars():
        try:
            if registry_location(registry.url)[0] == host:
                return registry
        except ValueError:
            continue
    return None


async def source_endpoint(
    session: AsyncSession, box: SecretBox, *, host: str, api_host: str, registry_id: int | None
) -> SourceEndpoint:
    """How to reach a source: the named image registry, else the one whose URL names `host`, else
    Docker-style defaults (TLS verified). Credentials come from that registry, or, when it has none,
    from the first image secret with a credential for `host`; else the pull is anonymous."""
    registry = await get_registry(session, registry_id=registry_id) if registry_id else None
    if registry is None:
        registry = await registry_for_host(session, host=host)
    location, scheme, insecure, username, password = api_host, None, False, "", ""
    if registry is not None:
        location, scheme = registry_location(registry.url)
        if location == host and host != api_host:
            location = api_host
        insecure = registry.insecure
        username, password = registry_credentials(box, registry)
    if not username:
        username, password = await secret_credentials(session, box, host=host)
    return SourceEndpoint(location, scheme, username, password, insecure, registry.id if registry else None)


async def secret_credentials(session: AsyncSession, box: SecretBox, *, host: str) -> tuple[str, str]:
    """(username, password) of the first image secret with a credential for `host`, else ("", "")."""
    _, secrets = await list_secrets(session, types=["image"], limit=1000, offset=0)
    for secret in secrets:
        for credential in load_image_credentials(box, secret):
            if registry_host(credential.server) == host:
                return credential.username, credential.password
    return "", ""


async def registry_by_name(session: AsyncSession, *, name: str) -> ImageRegistry | None:
    """The image registry called `name`, if any."""
    return (
        await session.execute(select(ImageRegistry).where(ImageRegistry.name == name))
    ).scalar_one_or_none()


async def get_layer(session: AsyncSession, *, image_id: int, digest: str) -> ImageLayer | None:
    """One blob row of an import, or None."""
    query = select(ImageLayer).where(ImageLayer.image_id == image_id, ImageLayer.digest == digest)
    return (await session.execute(query)).scalar_one_or_none()


# ---- requests (written by the API) --------------------------------------------------------------


async def request_deletion(session: AsyncSession, *, image_id: int, now: datetime) -> bool:
    """Record that the image is to be deleted; False when that was already requested."""
    result = await session.execute(
        update(Image).where(Image.id == image_id, Image.deleting_at.is_(None)).values(deleting_at=now)
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def withdraw_deletion(session: AsyncSession, *, image_id: int, requested_at: datetime) -> None:
    """Undo `request_deletion` of `requested_at` (its workflow could not be started)."""
    await session.execute(
        update(Image).where(Image.id == image_id, Image.deleting_at == requested_at).values(deleting_at=None)
    )


# ---- registry statistics ------------------------------------------------------------------------


@dataclass(frozen=True)
class ImportedUsage:
    """What was imported into one registry: repositories and distinct blob bytes of Ready images."""

    repositories: int
    storage: int


async def imported_usage(session: AsyncSession, *, registry_host: str) -> ImportedUsage:
    """Repositories holding a Ready image in `registry_host`, and the bytes of their distinct blobs
    (layers and configs of every platform; a blob shared by images counts once)."""
    ready = (Image.registry_host == registry_host, Image.status == STATUS_READY, Image.deleting_at.is_(None))
    repositories = (
        await session.execute(select(func.count(func.distinct(Image.repository))).where(*ready))
    ).scalar_one()
    blobs = (
        select(ImageLayer.digest, func.max(ImageLayer.size).label("size"))
        .join(Image, Image.id == ImageLayer.image_id)
        .where(*ready)
        .group_by(ImageLayer.digest)
        .subquery()
    )
    storage = (await session.execute(select(func.coalesce(func.sum(blobs.c.size), 0)))).scalar_one()
    return ImportedUsage(repositories=int(repositories), storage=int(storage))


async def record_registry_check(session: AsyncSession, *, check: RegistryCheck, now: datetime) -> None:
    """Keep `check` as the latest of its registry."""
    row = await session.get(RegistryStats, check.registry)
    if row is None:
        session.add(
            RegistryStats(
                registry_host=check.registry,
                status=check.status,
                message=check.message[:4000],
                repositories=check.repositories,
                checked_at=now,
            )
        )
        return
    row.status, row.message, row.repositories, row.checked_at = (
        check.status,
        check.message[:4000],
        check.repositories,
        now,
    )


async def last_registry_check(session: AsyncSession, *, registry_host: str) -> RegistryStats | None:
    """The latest recorded check of `registry_host`, or None before the first."""
    return await session.get(RegistryStats, registry_host)
