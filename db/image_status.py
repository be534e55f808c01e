"""The one writer of an image's status: its import's progress and outcome, and its removal.

An image's status is `status`, `message`, what resolving recorded (digest, platforms, size) and
its layers' `status`/`bytes_done`/`progress`/`upload_url`. The import workflow's activities
change them through these functions only, each guarded by the state it expects (an import that
ended is never reopened, a removal needs a recorded deletion request). The API records requests
(`db.images.request_deletion`) and reads; it never calls this module.

The caller owns the transaction (and commits).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import case, delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from db.images import Image, ImageImportJob, ImageLayer, layers_of
from domain.images import LAYER_DONE, STATUS_FAILED, STATUS_IMPORTING, STATUS_READY, ImageStatus


async def record_plan(
    session: AsyncSession,
    *,
    image_id: int,
    digest: str,
    platforms: dict[str, dict[str, Any]],
    blobs: Sequence[tuple[str, str, int]],
    now: datetime,
    present: Collection[str] = (),
) -> bool:
    """What resolving found: the top digest, the platforms (amd64 first for size, os and arch)
    and a row per blob (digest, media type, size) not yet known: skipped when its digest is in
    `present` (the target holds it), else pending. A known row of a `present` blob not done yet
    becomes skipped too. False when the image is gone."""
    image = await session.get(Image, image_id)
    if image is None:
        return False
    chosen = platforms.get("linux/amd64") or next(iter(platforms.values()), {})
    image.digest = digest
    image.platforms = platforms
    image.size = int(chosen.get("size", 0))
    image.os, image.arch = str(chosen.get("os", "")), str(chosen.get("arch", ""))
    image.updated_at = now
    known = {layer.digest: layer for layer in await layers_of(session, image_id=image_id)}
    for blob_digest, media_type, size in blobs:
        there = blob_digest in present
        layer = known.get(blob_digest)
        if layer is None:
            session.add(
                ImageLayer(
                    image_id=image_id,
                    digest=blob_digest,
                    media_type=media_type,
                    size=size,
                    bytes_done=size if there else 0,
                    progress=100 if there else 0,
                    status="skipped" if there else "pending",
                    upload_url="",
                    updated_at=now,
                )
            )
        elif there and layer.status not in LAYER_DONE:
            layer.status, layer.bytes_done, layer.progress = "skipped", layer.size, 100
            layer.upload_url, layer.updated_at = "", now
    return True


async def set_layer_progress(
    session: AsyncSession,
    *,
    image_id: int,
    digest: str,
    status: str,
    bytes_done: int,
    now: datetime,
    upload_url: str = "",
) -> int:
    """Record a blob's status, bytes done and upload session; returns rows changed (0: image gone)."""
    result = await session.execute(
        update(ImageLayer)
        .where(ImageLayer.image_id == image_id, ImageLayer.digest == digest)
        .values(
            status=status,
            bytes_done=bytes_done,
            upload_url=upload_url,
            progress=case((ImageLayer.size > 0, (bytes_done * 100) // ImageLayer.size), else_=100),
            updated_at=now,
        )
    )
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


async def record_external_progress(
    session: AsyncSession, *, image_id: int, layers: dict[str, tuple[str, int]], now: datetime
) -> bool:
    """Store per-blob (status, percent) reported by an external copier; blobs that are not the
    image's are ignored (the API refuses them). False (nothing stored) when the image is not
    Importing."""
    image = await session.get(Image, image_id)
    if image is None or image.status != STATUS_IMPORTING or image.deleting_at is not None:
        return False
    known = {layer.digest: layer for layer in await layers_of(session, image_id=image_id)}
    for digest, (status, progress) in layers.items():
        layer = known.get(digest)
        if layer is None:
            continue
        layer.status, layer.progress, layer.updated_at = status, progress, now
        layer.bytes_done = layer.size * progress // 100
    return True


async def finish_import(
    session: AsyncSession, *, image_id: int, status: ImageStatus, message: str, now: datetime
) -> bool:
    """Importing -> Ready or Failed (with the reason); layers still open fail with a failed import.
    False when the image is not Importing (removed, or already finished)."""
    if status not in (STATUS_READY, STATUS_FAILED):
        raise ValueError(f"an import ends Ready or Failed, not {status}")
    result = await session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == STATUS_IMPORTING)
        .values(status=status, message=message[:4000], updated_at=now)
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    await session.execute(
        update(ImageImportJob).where(ImageImportJob.image_id == image_id).values(finished_at=now)
    )
    if status == STATUS_FAILED:
        await session.execute(
            update(ImageLayer)
            .where(ImageLayer.image_id == image_id, ImageLayer.status.in_(("pending", "downloading")))
            .values(status="failed", updated_at=now)
        )
    return True


async def restart_import(
    session: AsyncSession, *, image_id: int, job: ImageImportJob, user_id: str, user_name: str, now: datetime
) -> bool:
    """Failed -> Importing for a new import by `user_id`: message, layers and the old job cleared,
    `job` recorded. False when the image is not Failed (or its deletion was requested)."""
    result = await session.execute(
        update(Image)
        .where(Image.id == image_id, Image.status == STATUS_FAILED, Image.deleting_at.is_(None))
        .values(
            status=STATUS_IMPORTING, message="", updated_at=now, created_by=user_id, created_by_name=user_name
        )
    )
    if not result.rowcount:  # type: ignore[attr-defined]
        return False
    await session.execute(delete(ImageLayer).where(ImageLayer.image_id == image_id))
    await session.execute(delete(ImageImportJob).where(ImageImportJob.image_id == image_id))
    session.add(job)
    return True


async def remove_image(session: AsyncSession, *, image_id: int) -> bool:
    """Deletion requested -> gone: the row with its job and layers. False when it is not there or
    its deletion was never requested."""
    result = await session.execute(delete(Image).where(Image.id == image_id, Image.deleting_at.is_not(None)))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def set_layer_percent(session: AsyncSession, *, image_id: int, digest: str, progress: int) -> None:
    """Show a blob's progress (percent) without touching its resumable upload offset."""
    await session.execute(
        update(ImageLayer)
        .where(
            ImageLayer.image_id == image_id, ImageLayer.digest == digest, ImageLayer.status == "downloading"
        )
        .values(progress=progress)
    )
