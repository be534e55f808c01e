"""Image imports: start one (a workflow), report and read its per-layer progress."""

from __future__ import annotations

import asyncio
import base64
import binascii
import uuid
from datetime import timedelta

from fastapi import APIRouter
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from temporalio.client import WithStartWorkflowOperation, WorkflowUpdateFailedError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.exceptions import ApplicationError
from temporalio.service import RPCError

from api.deps import Caller, CurrentUser, Session, State
from api.routes.images import ImageId, api_status
from api.schemas.common import ERROR_RESPONSES
from api.schemas.images import (
    ImportDetails,
    ImportImageRequest,
    ImportImageResponse,
    ImportProgressRequest,
    LayerDetail,
)
from api.state import AppState
from api.workflow_calls import update_running
from db import images as db
from db.image_registries import ImageRegistry, default_registry
from db.images import Image, ImageImportJob
from domain.errors import Conflict, Forbidden, InternalError, Invalid, NotFound
from domain.failures import Failure
from domain.image_registries import registry_address
from domain.images import (
    IMPORT_EXISTS,
    IMPORT_FAILED,
    IMPORT_STARTED,
    STATUS_FAILED,
    STATUS_IMPORTING,
    BadReference,
    ExternalProgress,
    ImageReference,
    ImportSpec,
    RestartImport,
    SourceCheck,
    SourceVerdict,
    has_host,
    hostname_refusal,
    parse_reference,
    registry_location,
    target_reference,
)
from domain.timefmt import utcnow
from primus_safe.settings import Settings
from workflows.common import RESOURCE_ID, RESOURCE_TYPE, USER
from workflows.image_import import ImageImportWorkflow, workflow_id
from workflows.source_check import SourceCheckWorkflow

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)

ALREADY = "Image already existed. We don't need to import it again"
RESTART_ATTEMPTS = 40
SOURCE_CHECK_TIMEOUT = timedelta(seconds=90)
"""How long an import request waits for the source check (two attempts of at most 40 s)."""
RESTART_PAUSE_SECONDS = 0.05
"""A failed image's last import run may still be ending: ask again for up to about two seconds."""


async def _source_reference(session: Session, body: ImportImageRequest) -> tuple[ImageReference, int | None]:
    """The full source reference and the image registry it names (if one does)."""
    registry: ImageRegistry | None = None
    text = body.source.strip()
    try:
        explicit = has_host(text)
        if body.source_registry is not None:
            registry = await db.registry_by_name(session, name=body.source_registry.strip())
            prefix = registry_address(registry.url) if registry else body.source_registry.strip().rstrip("/")
            if explicit:
                raise Invalid("source names its registry host; leave sourceRegistry out or drop the host")
            text = f"{prefix}/{text}"
        elif not explicit:
            registry = await default_registry(session)
            if registry is not None:
                text = f"{registry_address(registry.url)}/{text}"
        ref = parse_reference(text)
    except BadReference as exc:
        raise Invalid(f"source: {exc}") from exc
    if registry is None:
        registry = await db.registry_for_host(session, host=ref.host)
    return ref, registry.id if registry else None


def _refuse_literal_address(settings: Settings, ref: ImageReference, registry_id: int | None) -> None:
    """400 for a source host whose name alone is refused (metadata names, literal link-local
    addresses in any spelling; loopback and private ones unless an image registry names the host
    or it is the internal registry). Names are resolved by the source check, not here."""
    internal = (
        registry_location(settings.images_internal_registry)[0] if settings.images_internal_registry else ""
    )
    trusted = registry_id is not None or ref.host == internal or settings.images_allow_loopback_sources
    try:
        why = hostname_refusal(ref.host, allow_private=trusted)
    except BadReference as exc:
        raise Invalid(f"source: {exc}") from exc
    if why:
        raise Invalid(f"source: {why}")


async def _check_source(state: AppState, ref: ImageReference, registry_id: int | None) -> SourceVerdict:
    """Whether the source manifest exists and is readable, and its digest (nothing is written);
    asked of the `source-check/<id>` workflow (the route itself talks only to Temporal)."""
    verdict: SourceVerdict = await state.temporal.execute_workflow(
        SourceCheckWorkflow.run,
        args=[SourceCheck(source=str(ref), registry_id=registry_id), state.settings.queues.images],
        id=f"source-check/{uuid.uuid4().hex[:16]}",
        task_queue=state.settings.queues.control,
        execution_timeout=SOURCE_CHECK_TIMEOUT,
    )
    if verdict.refused:
        raise Invalid(verdict.problem)
    return verdict


def _answer(state: int, message: str, already: int = 0, image_id: int = 0) -> ImportImageResponse:
    return ImportImageResponse(state=state, message=message, already_image_id=already, image_id=image_id)


def _already(image: Image, digest: str) -> ImportImageResponse:
    """State 2 when `image` holds (or is still fetching) what the source points at now; else 0:
    the source moved on, and the existing image is not silently replaced."""
    if not image.digest or image.digest == digest:
        return _answer(IMPORT_EXISTS, ALREADY, image.id)
    return _answer(
        IMPORT_FAILED,
        f"image {image.id} ({image.tag}) holds digest {image.digest} of {image.source}, which now "
        f"points at digest {digest}; delete image {image.id} to import it again",
    )


def _being_deleted(tag: str) -> ImportImageResponse:
    return _answer(IMPORT_FAILED, f"image {tag} is being deleted; import it again once it is gone")


@router.post("/images:import", response_model=ImportImageResponse, summary="Import an image (asynchronous)")
async def import_image(
    body: ImportImageRequest, caller: CurrentUser, session: Session, state: State
) -> ImportImageResponse:
    """Starts the `image-import/<id>` workflow copying the source into the internal registry."""
    settings = state.settings
    ref, registry_id = await _source_reference(session, body)
    _refuse_literal_address(settings, ref, registry_id)
    if not settings.images_internal_registry:
        return _answer(IMPORT_FAILED, "no internal registry is configured (PRIMUS_IMAGES_INTERNAL_REGISTRY)")
    try:
        target = target_reference(registry_location(settings.images_internal_registry)[0], ref)
    except BadReference as exc:
        raise Invalid(f"source: {exc}") from exc
    existing = await db.get_image_by_tag(session, tag=str(target), include_deleting=True)
    if existing is not None and existing.deleting_at is not None:
        return _being_deleted(str(target))
    if existing is not None and existing.status != STATUS_FAILED and existing.source != str(ref):
        return _answer(IMPORT_FAILED, f"{target} holds image {existing.id}, imported from {existing.source}")
    await session.commit()  # no transaction stays open while the source is checked
    verdict = await _check_source(state, ref, registry_id)
    if verdict.problem:
        return _answer(IMPORT_FAILED, verdict.problem)
    if existing is not None and existing.status != STATUS_FAILED:
        return _already(existing, verdict.digest)
    if existing is not None:
        return await _import_again(state, session, caller, existing.id, ref, target, registry_id)
    image = await _record_import(session, caller, ref, target, registry_id)
    if image is None:
        again = await db.get_image_by_tag(session, tag=str(target))
        return _answer(IMPORT_EXISTS, ALREADY, again.id if again else 0)
    try:
        await state.temporal.start_workflow(
            ImageImportWorkflow.run,
            _spec(state, caller, image.id, ref, target, registry_id),
            id=workflow_id(image.id),
            task_queue=state.settings.queues.control,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Import {ref} -> {target}",
            search_attributes=_search_attributes(caller, image.id),
        )
    except RPCError as exc:
        await session.execute(sql_delete(Image).where(Image.id == image.id))
        await session.commit()
        raise InternalError(f"the import could not be started: {exc.message}") from exc
    return _answer(IMPORT_STARTED, "Image import started", image_id=image.id)


async def _record_import(
    session: Session, caller: Caller, ref: ImageReference, target: ImageReference, registry_id: int | None
) -> Image | None:
    """Write the new image (Importing) and its job; None when a concurrent request created it first."""
    now = utcnow()
    image = Image(
        tag=str(target),
        registry_host=target.host,
        repository=target.repository,
        image_tag=target.tag,
        source=str(ref),
        description=f"Import from {ref}",
        status=STATUS_IMPORTING,
        message="",
        digest="",
        size=0,
        arch="",
        os="",
        platforms={},
        include_type="import",
        created_by=caller.id,
        created_by_name=caller.user.name,
        created_at=now,
        updated_at=now,
    )
    session.add(image)
    try:
        await session.flush()
        session.add(
            ImageImportJob(
                image_id=image.id,
                workflow_id=workflow_id(image.id),
                source_ref=str(ref),
                target_ref=str(target),
                source_registry_id=registry_id,
                started_at=now,
            )
        )
        await session.commit()
    except IntegrityError:
        await session.rollback()
        return None
    return image


async def _import_again(
    state: AppState,
    session: Session,
    caller: Caller,
    image_id: int,
    ref: ImageReference,
    target: ImageReference,
    registry_id: int | None,
) -> ImportImageResponse:
    """Import a failed image again under its id: the new run's `restart` update resets it (the
    image's one writer is the workflow) before this answers, so it already reads `importing`."""
    reset = RestartImport(
        image_id=image_id,
        source=str(ref),
        target=str(target),
        source_registry_id=registry_id,
        user_id=caller.id,
        user_name=caller.user.name,
    )
    # Built once: the loop expires the session's objects, the caller's user among them.
    spec = _spec(state, caller, image_id, ref, target, registry_id, restart=True)
    attributes = _search_attributes(caller, image_id)
    for _ in range(RESTART_ATTEMPTS):
        start = WithStartWorkflowOperation(
            ImageImportWorkflow.run,
            spec,
            id=workflow_id(image_id),
            task_queue=state.settings.queues.control,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            static_summary=f"Import {ref} -> {target} again",
            search_attributes=attributes,
        )
        try:
            if await state.temporal.execute_update_with_start_workflow(
                ImageImportWorkflow.restart, reset, start_workflow_operation=start
            ):
                return _answer(IMPORT_STARTED, "Image import started", image_id=image_id)
        except WorkflowUpdateFailedError as exc:
            cause = exc.cause
            if not (isinstance(cause, ApplicationError) and cause.type == Failure.BUSY):
                raise InternalError(f"the import could not be started: {cause or exc}") from exc
        except RPCError as exc:
            raise InternalError(f"the import could not be started: {exc.message}") from exc
        session.expire_all()  # not reset (or another run is there): what is the image now?
        now = await db.get_image_by_tag(session, tag=str(target), include_deleting=True)
        await session.commit()
        if now is None or now.deleting_at is not None:
            return _being_deleted(str(target))
        if now.status != STATUS_FAILED:  # a concurrent request imports it already
            return _answer(IMPORT_EXISTS, ALREADY, now.id)
        await asyncio.sleep(RESTART_PAUSE_SECONDS)  # its last run is still ending
    raise InternalError("the image's previous import is still ending; try again")


def _spec(
    state: AppState,
    caller: Caller,
    image_id: int,
    ref: ImageReference,
    target: ImageReference,
    registry_id: int | None,
    restart: bool = False,
) -> ImportSpec:
    settings = state.settings
    return ImportSpec(
        image_id=image_id,
        source=str(ref),
        target=str(target),
        source_registry_id=registry_id,
        user_id=caller.id,
        activity_queue=settings.queues.images,
        parallel_layers=settings.images_parallel_layers,
        step_timeout_seconds=int(max(30, settings.images_request_timeout_seconds * 2)),
        blob_timeout_seconds=settings.images_blob_timeout_seconds,
        heartbeat_timeout_seconds=settings.images_heartbeat_timeout_seconds,
        restart=restart,
    )


def _search_attributes(caller: Caller, image_id: int) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "image"),
            SearchAttributePair(RESOURCE_ID, str(image_id)),
            SearchAttributePair(USER, caller.id),
        ]
    )


# ---- progress and details ----------------------------------------------------------------------


def _decode_tag(name: str) -> str:
    try:
        tag = base64.b64decode(name + "=" * (-len(name) % 4), altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise Invalid("name must be the URL-safe base64 of the image's full tag") from exc
    if not tag:
        raise Invalid("name must be the URL-safe base64 of the image's full tag")
    return tag


@router.put(
    "/images:import/{name}/progress",
    response_model=None,
    summary="Report import progress from an external copier (name: URL-safe base64 of the tag)",
)
async def update_import_progress(
    name: str, body: ImportProgressRequest, caller: CurrentUser, session: Session, state: State
) -> None:
    """The image's creator or an admin reports per-blob status and percent; the import workflow
    records it (409 once the import has ended)."""
    tag = _decode_tag(name)
    image = await db.get_image_by_tag(session, tag=tag)
    if image is None:
        raise NotFound("Image", tag)
    if not (caller.is_admin or caller.id == image.created_by):
        raise Forbidden("only the image's creator or an administrator may report its progress")
    if await db.get_import_job(session, image_id=image.id) is None:
        raise NotFound("ImageImportJob", image.id)
    known = {layer.digest for layer in await db.layers_of(session, image_id=image.id)}
    foreign = sorted(set(body.layers_detail) - known)
    if foreign:
        more = f" (and {len(foreign) - 1} more)" if len(foreign) > 1 else ""
        raise Invalid(f"layersDetail: {foreign[0]}{more} is not a blob of image {tag}")
    await session.commit()  # no transaction stays open across the Temporal call
    report = ExternalProgress(
        image_id=image.id,
        layers={digest: (item.status, item.progress) for digest, item in body.layers_detail.items()},
    )
    handle = state.temporal.get_workflow_handle(workflow_id(image.id))
    recorded = await update_running(
        handle, ImageImportWorkflow.report_progress, report, not_running=f"the import of {tag} has ended"
    )
    if not recorded:
        raise Conflict(f"the import of {tag} has ended")


@router.get(
    "/images/{id}/importing-details", response_model=ImportDetails, summary="Per-layer progress of an import"
)
async def importing_details(id: ImageId, _: CurrentUser, session: Session) -> ImportDetails:
    """Every blob of the import with its status and percent, live while the import runs."""
    image = await db.get_image(session, image_id=id)
    if image is None:
        raise NotFound("Image", id)
    if await db.get_import_job(session, image_id=id) is None:
        raise NotFound("ImageImportJob", id)
    layers = await db.layers_of(session, image_id=id)
    return ImportDetails(
        layers_detail={
            layer.digest: LayerDetail(status=layer.status, progress=min(100, int(layer.progress)))
            for layer in layers
        },
        status=api_status(image.status),
        message=image.message,
    )
