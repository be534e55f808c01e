"""Images: list and delete (a workflow). Imports live in `image_import`, statistics in
`registry_stats`."""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from typing import Annotated, Literal

from fastapi import APIRouter, Path, Query
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import Caller, CurrentUser, Session, State
from api.schemas.common import ERROR_RESPONSES
from api.schemas.images import Artifact, FlatImage, GroupedImages, ImageGroup
from api.state import AppState
from db import images as db
from db.images import Image
from domain.errors import Forbidden, InternalError, Invalid, NotFound
from domain.images import DeleteImageInput
from domain.timefmt import format_time, unix_seconds, utcnow
from workflows.common import RESOURCE_ID, RESOURCE_TYPE, USER
from workflows.image_delete import ImageDeleteWorkflow, workflow_id

ImageId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Image id")]

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)


def api_status(status: str) -> Literal["ready", "importing", "failed"]:
    """The contract's lower-case status of a stored one."""
    return {"Ready": "ready", "Failed": "failed"}.get(status, "importing")  # type: ignore[return-value]


# ---- list -------------------------------------------------------------------------------------


def artifact(image: Image) -> Artifact:
    return Artifact(
        image_tag=image.image_tag,
        description=image.description,
        created_time=format_time(image.created_at),
        user_name=image.created_by_name,
        status=api_status(image.status),
        id=image.id,
        size=image.size,
        arch=image.arch,
        os=image.os,
        digest=image.digest,
        include_type=image.include_type,
    )


@router.get(
    "/images",
    response_model=GroupedImages | list[FlatImage],
    summary="List images (grouped by registry and repository, or flat)",
)
async def list_images(
    _: CurrentUser,
    session: Session,
    page_num: Annotated[int, Query(ge=0, le=1_000_000, description="0 and 1 both mean the first page")] = 0,
    page_size: Annotated[int, Query(ge=1, le=1000)] = 10,
    order_by: Annotated[str, Query(alias="orderBy", max_length=32)] = "created_at",
    order: Annotated[Literal["asc", "desc"], Query()] = "desc",
    tag: Annotated[str | None, Query(max_length=512, description="Substring of the full tag")] = None,
    ready: Annotated[bool | None, Query(description="Only ready (true) or only not ready (false)")] = None,
    user_name: Annotated[str | None, Query(alias="userName", max_length=63)] = None,
    flat: Annotated[bool, Query(description="A bare array of ready images instead of groups")] = False,
) -> GroupedImages | list[FlatImage]:
    """Every image is visible to every user (images are shared by the platform)."""
    column = order_by.strip().lower()
    if column not in db.ORDER_COLUMNS:
        raise Invalid(f"orderBy must be one of {', '.join(db.ORDER_COLUMNS)}")
    where = db.ImageFilter(tag=tag or None, ready=True if flat else ready, user_name=user_name or None)
    offset = max(0, page_num - 1) * page_size
    total, rows = await db.list_images(
        session, where=where, order_by=column, descending=order == "desc", limit=page_size, offset=offset
    )
    if flat:
        return [
            FlatImage(
                id=r.id,
                tag=r.tag,
                description=r.description,
                created_at=unix_seconds(r.created_at),
                created_by=r.created_by_name,
            )
            for r in rows
        ]
    groups: OrderedDict[tuple[str, str], list[Artifact]] = OrderedDict()
    for image in rows:
        groups.setdefault((image.registry_host, image.repository), []).append(artifact(image))
    return GroupedImages(
        total_count=total,
        images=[ImageGroup(registry_host=h, repo=r, artifacts=a) for (h, r), a in groups.items()],
    )


# ---- delete -----------------------------------------------------------------------------------


async def _start_deletion(state: AppState, caller: Caller, image_id: int) -> None:
    """Start `image-delete/<id>`, or join the one running (a repeated DELETE starts no twin)."""
    settings = state.settings
    await state.temporal.start_workflow(
        ImageDeleteWorkflow.run,
        DeleteImageInput(
            image_id=image_id,
            activity_queue=settings.queues.images,
            step_timeout_seconds=int(max(30, settings.images_request_timeout_seconds * 2)),
        ),
        id=workflow_id(image_id),
        task_queue=settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Delete image {image_id}",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(RESOURCE_TYPE, "image"),
                SearchAttributePair(RESOURCE_ID, str(image_id)),
                SearchAttributePair(USER, caller.id),
            ]
        ),
    )


@router.delete("/images/{id}", response_model=None, summary="Delete an image: its manifest and record")
async def delete_image(id: ImageId, caller: CurrentUser, session: Session, state: State) -> None:
    """Admins or the image's creator. Records the request and starts the `image-delete/<id>`
    workflow (a running import is cancelled first, then the manifest and the record go); the
    image is gone for the API at once."""
    image = await db.get_image(session, image_id=id, include_deleting=True)
    if image is None:
        raise NotFound("Image", id)
    allowed = caller.is_admin or caller.id == image.created_by
    if image.deleting_at is not None:
        await session.commit()
        if allowed:  # already being deleted: make sure its workflow runs, answer as for a deleted one
            with contextlib.suppress(RPCError):
                await _start_deletion(state, caller, id)
        raise NotFound("Image", id)
    if not allowed:
        raise Forbidden("only the image's creator or an administrator may delete it")
    requested_at = utcnow()
    recorded = await db.request_deletion(session, image_id=id, now=requested_at)
    await session.commit()  # no transaction stays open across the Temporal call
    try:
        await _start_deletion(state, caller, id)
    except RPCError as exc:
        if recorded:
            await db.withdraw_deletion(session, image_id=id, requested_at=requested_at)
            await session.commit()
        raise InternalError(f"the deletion could not be started: {exc.message}") from exc
    if not recorded:  # a concurrent DELETE recorded it first
        raise NotFound("Image", id)
