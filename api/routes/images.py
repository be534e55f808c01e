"""Images: list, delete, import (a workflow), import progress and details, registry statistics."""

from __future__ import annotations

import base64
import binascii
import contextlib
from collections import OrderedDict
from typing import Annotated, Literal

import httpx
from fastapi import APIRouter, Path, Query
from sqlalchemy import delete as sql_delete
from sqlalchemy.exc import IntegrityError
from temporalio.client import WorkflowHandle
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy
from temporalio.service import RPCError

from api.deps import Caller, CurrentUser, Session, State
from api.schemas.common import ERROR_RESPONSES
from api.schemas.images import (
    Artifact,
    FlatImage,
    GroupedImages,
    HarborComponent,
    HarborStats,
    ImageGroup,
    ImportDetails,
    ImportImageRequest,
    ImportImageResponse,
    ImportProgressRequest,
    LayerDetail,
)
from api.state import AppState
from db import images as db
from db.image_registries import ImageRegistry, default_registry
from db.images import Image, ImageImportJob, ImageLayer
from domain.errors import Forbidden, InternalError, Invalid, NotFound
from domain.image_registries import registry_address
from domain.images import (
    IMPORT_EXISTS,
    IMPORT_FAILED,
    IMPORT_STARTED,
    STATUS_FAILED,
    STATUS_IMPORTING,
    BadReference,
    ImageReference,
    ImportSpec,
    has_host,
    parse_reference,
    registry_location,
    target_reference,
)
from domain.timefmt import format_time, unix_seconds, utcnow
from drivers.oci_registry import (
    AddressRefused,
    RegistryAuthError,
    RegistryClient,
    RegistryError,
    address_guard,
    registry_usage,
)
from primus_safe.settings import Settings
from workflows.common import RESOURCE_ID, RESOURCE_TYPE, USER
from workflows.image_import import ImageImportWorkflow, workflow_id

ImageId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Image id")]

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)


def api_status(status: str) -> Literal["ready", "importing", "failed"]:
    """The contract's lower-case status of a stored one."""
    return {"Ready": "ready", "Failed": "failed"}.get(status, "importing")  # type: ignore[return-value]


def internal_client(settings: Settings) -> RegistryClient | None:
    """A client for the internal registry, or None when none is configured."""
    if not settings.images_internal_registry:
        return None
    host, scheme = registry_location(settings.images_internal_registry)
    return RegistryClient(
        host,
        username=settings.images_internal_username,
        password=settings.images_internal_password,
        insecure=settings.images_internal_insecure,
        scheme=scheme,
        timeout=settings.images_request_timeout_seconds,
    )


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


# ---- import -----------------------------------------------------------------------------------


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


async def _check_source(
    state: AppState, session: Session, ref: ImageReference, registry_id: int | None
) -> str:
    """ "" when the source manifest exists and is readable, else why not (nothing is written)."""
    endpoint = await db.source_endpoint(
        session, state.box, host=ref.host, api_host=ref.api_host, registry_id=registry_id
    )
    await session.commit()  # no transaction stays open across the registry round trip
    guard = address_guard(allow_loopback=state.settings.images_allow_loopback_sources)
    client = RegistryClient(
        endpoint.host,
        username=endpoint.username,
        password=endpoint.password,
        insecure=endpoint.insecure,
        scheme=endpoint.scheme,
        timeout=min(30.0, state.settings.images_request_timeout_seconds),
        guard=guard,
    )
    async with client:
        try:
            if await client.manifest_digest(ref.repository, ref.reference) is None:
                return f"source image {ref} not found"
        except AddressRefused as exc:
            raise Invalid(f"source: {exc}") from exc
        except RegistryAuthError:
            return f"authentication to {ref.host} failed: check the registry's credentials"
        except RegistryError as exc:
            return f"source registry {ref.host} refused the request: {exc}"
        except httpx.HTTPError as exc:
            return f"source registry {ref.host} is unreachable: {exc.__class__.__name__}"
    return ""


def _answer(state: int, message: str, already: int = 0, image_id: int = 0) -> ImportImageResponse:
    return ImportImageResponse(state=state, message=message, already_image_id=already, image_id=image_id)


@router.post("/images:import", response_model=ImportImageResponse, summary="Import an image (asynchronous)")
async def import_image(
    body: ImportImageRequest, caller: CurrentUser, session: Session, state: State
) -> ImportImageResponse:
    """Starts the `image-import/<id>` workflow copying the source into the internal registry."""
    settings = state.settings
    ref, registry_id = await _source_reference(session, body)
    if not settings.images_internal_registry:
        return _answer(IMPORT_FAILED, "no internal registry is configured (PRIMUS_IMAGES_INTERNAL_REGISTRY)")
    target = target_reference(registry_location(settings.images_internal_registry)[0], ref)
    existing = await db.get_image_by_tag(session, tag=str(target))
    if existing is not None and existing.status != STATUS_FAILED:
        return _answer(IMPORT_EXISTS, "Image already existed. We don't need to import it again", existing.id)
    problem = await _check_source(state, session, ref, registry_id)
    if problem:
        return _answer(IMPORT_FAILED, problem)
    image = await _record_import(session, caller, ref, target, registry_id, existing)
    if image is None:
        again = await db.get_image_by_tag(session, tag=str(target))
        return _answer(
            IMPORT_EXISTS, "Image already existed. We don't need to import it again", again.id if again else 0
        )
    try:
        await _start_workflow(state, caller, image, ref, target, registry_id)
    except RPCError as exc:
        await session.execute(sql_delete(Image).where(Image.id == image.id))
        await session.commit()
        raise InternalError(f"the import could not be started: {exc.message}") from exc
    return _answer(IMPORT_STARTED, "Image import started", image_id=image.id)


async def _record_import(
    session: Session,
    caller: Caller,
    ref: ImageReference,
    target: ImageReference,
    registry_id: int | None,
    failed: Image | None,
) -> Image | None:
    """Write the image (Importing) and its job; a failed image is reset and imported again.
    None when a concurrent request created the same image first."""
    now = utcnow()
    if failed is not None:
        image = failed
        await session.execute(sql_delete(ImageLayer).where(ImageLayer.image_id == image.id))
        await session.execute(sql_delete(ImageImportJob).where(ImageImportJob.image_id == image.id))
        image.status, image.message, image.updated_at = STATUS_IMPORTING, "", now
        image.created_by, image.created_by_name = caller.id, caller.user.name
    else:
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


async def _start_workflow(
    state: AppState,
    caller: Caller,
    image: Image,
    ref: ImageReference,
    target: ImageReference,
    registry_id: int | None,
) -> WorkflowHandle[ImageImportWorkflow, object]:
    settings = state.settings
    spec = ImportSpec(
        image_id=image.id,
        source=str(ref),
        target=str(target),
        source_registry_id=registry_id,
        user_id=caller.id,
        activity_queue=settings.queues.images,
        parallel_layers=settings.images_parallel_layers,
        step_timeout_seconds=int(max(30, settings.images_request_timeout_seconds * 2)),
        blob_timeout_seconds=settings.images_blob_timeout_seconds,
        heartbeat_timeout_seconds=settings.images_heartbeat_timeout_seconds,
    )
    return await state.temporal.start_workflow(
        ImageImportWorkflow.run,
        spec,
        id=workflow_id(image.id),
        task_queue=settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        static_summary=f"Import {ref} -> {target}",
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(RESOURCE_TYPE, "image"),
                SearchAttributePair(RESOURCE_ID, str(image.id)),
                SearchAttributePair(USER, caller.id),
            ]
        ),
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
    name: str, body: ImportProgressRequest, caller: CurrentUser, session: Session
) -> None:
    """The image's creator or an admin reports per-blob status and percent."""
    tag = _decode_tag(name)
    image = await db.get_image_by_tag(session, tag=tag)
    if image is None:
        raise NotFound("Image", tag)
    if not (caller.is_admin or caller.id == image.created_by):
        raise Forbidden("only the image's creator or an administrator may report its progress")
    if await db.get_import_job(session, image_id=image.id) is None:
        raise NotFound("ImageImportJob", image.id)
    await db.record_external_progress(
        session,
        image_id=image.id,
        layers={digest: (item.status, item.progress) for digest, item in body.layers_detail.items()},
        now=utcnow(),
    )
    await session.commit()


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


# ---- delete -----------------------------------------------------------------------------------


async def _delete_manifest(settings: Settings, image: Image) -> None:
    """Remove the image's manifest from the internal registry (a 404 there is fine)."""
    client = internal_client(settings)
    if client is None or registry_location(settings.images_internal_registry or "")[0] != image.registry_host:
        return
    async with client:
        try:
            await client.delete_manifest(image.repository, image.digest)
        except (RegistryError, httpx.HTTPError) as exc:
            raise InternalError(
                f"the image's manifest could not be deleted from the registry: {exc}"
            ) from exc


@router.delete("/images/{id}", response_model=None, summary="Delete an image: its manifest and record")
async def delete_image(id: ImageId, caller: CurrentUser, session: Session, state: State) -> None:
    """Admins or the image's creator. A running import is cancelled first."""
    image = await db.get_image(session, image_id=id)
    if image is None:
        raise NotFound("Image", id)
    if not (caller.is_admin or caller.id == image.created_by):
        raise Forbidden("only the image's creator or an administrator may delete it")
    shared = bool(image.digest) and await db.same_manifest_elsewhere(
        session,
        registry_host=image.registry_host,
        repository=image.repository,
        digest=image.digest,
        exclude_id=id,
    )
    await session.commit()  # no transaction stays open across Temporal and registry calls
    if image.status == STATUS_IMPORTING:
        with contextlib.suppress(RPCError):
            await state.temporal.get_workflow_handle(workflow_id(id)).cancel()
    if image.digest and not shared:
        await _delete_manifest(state.settings, image)
    await session.execute(sql_delete(Image).where(Image.id == id))
    await session.commit()


# ---- statistics -------------------------------------------------------------------------------


@router.get("/harbor/stats", response_model=HarborStats, summary="Statistics of the internal registry")
async def harbor_stats(_: CurrentUser, state: State) -> HarborStats:
    """Health, repositories and storage of the internal registry; Harbor's project counts are 0."""
    client = internal_client(state.settings)
    if client is None:
        return HarborStats(
            status="unhealthy",
            components=[HarborComponent(name="registry", status="not configured")],
            private_project_count=0,
            public_project_count=0,
            private_repo_count=0,
            public_repo_count=0,
            total_storage=0,
        )
    async with client:
        try:
            await client.ping()
            repositories, storage = await registry_usage(client)
            health = "healthy"
        except (RegistryError, httpx.HTTPError):
            repositories, storage, health = 0, 0, "unhealthy"
    private = bool(state.settings.images_internal_username)
    return HarborStats(
        status=health,
        components=[
            HarborComponent(name="registry", status=health),
            HarborComponent(name="database", status="healthy"),
        ],
        private_project_count=0,
        public_project_count=0,
        private_repo_count=repositories if private else 0,
        public_repo_count=0 if private else repositories,
        total_storage=storage,
    )
