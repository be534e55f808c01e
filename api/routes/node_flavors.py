"""Node flavors: create, list, get, patch, delete, and the resources a flavor leaves for workloads."""

from __future__ import annotations

from fastapi import APIRouter
from sqlalchemy.exc import IntegrityError

from api.deps import Admin, CurrentUser, Paging, Session, State
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.node_flavors import (
    CreateNodeFlavorRequest,
    CreateNodeFlavorResponse,
    NodeFlavorView,
    UpdateNodeFlavorRequest,
)
from db import node_flavors as db
from db.node_flavors import NodeFlavor
from domain.errors import Conflict, InUse, Invalid, NotFound
from domain.names import normalize_name
from domain.node_flavors import FlavorSpec, ReservePercents, available_resources, normalized, validate_spec
from domain.timefmt import utcnow

router = APIRouter(tags=["node flavors"], responses=ERROR_RESPONSES)

_REMOVABLE = ("gpu", "root_disk", "data_disk", "extended_resources")


def flavor_view(flavor: NodeFlavor) -> NodeFlavorView:
    """The API view of a stored flavor."""
    spec = FlavorSpec.model_validate(flavor.spec)
    return NodeFlavorView(flavor_id=flavor.id, **dict(spec))


def checked(spec: FlavorSpec, *, creating: bool) -> FlavorSpec:
    """Normalize and validate a spec; 400 naming the field when it is wrong."""
    spec = normalized(spec, creating=creating)
    try:
        validate_spec(spec)
    except ValueError as exc:
        raise Invalid(str(exc)) from exc
    return spec


async def _flavor(session: Session, flavor_id: str) -> NodeFlavor:
    flavor = await db.get_flavor(session, flavor_id=flavor_id)
    if flavor is None:
        raise NotFound("NodeFlavor", flavor_id)
    return flavor


@router.post("/nodeflavors", response_model=CreateNodeFlavorResponse, summary="Create a node flavor (admin)")
async def create_node_flavor(
    body: CreateNodeFlavorRequest, _: Admin, session: Session
) -> CreateNodeFlavorResponse:
    """The id is the normalized name; ephemeral-storage defaults to rootDisk.quantity x count."""
    flavor_id = normalize_name(body.name)
    fields = body.model_dump(exclude={"name"}, exclude_none=True)
    spec = checked(FlavorSpec.model_validate(fields), creating=True)
    if await db.get_flavor(session, flavor_id=flavor_id) is not None:
        raise Conflict(f"node flavor {flavor_id} already exists")
    now = utcnow()
    session.add(
        NodeFlavor(
            id=flavor_id, display_name=body.name.strip(), spec=spec.stored(), created_at=now, updated_at=now
        )
    )
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict(f"node flavor {flavor_id} already exists") from exc
    return CreateNodeFlavorResponse(flavor_id=flavor_id)


@router.get("/nodeflavors", response_model=ListResponse[NodeFlavorView], summary="List node flavors")
async def list_node_flavors(_: CurrentUser, session: Session, page: Paging) -> ListResponse[NodeFlavorView]:
    """All flavors, sorted by id."""
    total, flavors = await db.list_flavors(session, limit=page.limit, offset=page.offset)
    return ListResponse[NodeFlavorView](total_count=total, items=[flavor_view(f) for f in flavors])


@router.get("/nodeflavors/{FlavorId}", response_model=NodeFlavorView, summary="Get a node flavor")
async def get_node_flavor(FlavorId: str, _: CurrentUser, session: Session) -> NodeFlavorView:
    """One flavor."""
    return flavor_view(await _flavor(session, FlavorId))


@router.patch("/nodeflavors/{FlavorId}", response_model=None, summary="Update a node flavor (admin)")
async def update_node_flavor(
    FlavorId: str, body: UpdateNodeFlavorRequest, _: Admin, session: Session
) -> None:
    """Only the given fields change (extendedResources is replaced whole); the result is re-validated."""
    flavor = await _flavor(session, FlavorId)
    merged = FlavorSpec.model_validate(flavor.spec).model_dump(by_alias=False)
    given = body.model_dump(include=body.model_fields_set)
    for field, value in given.items():
        if value is None and field not in _REMOVABLE:
            raise Invalid(f"{field}: must not be null")
        merged[field] = value
    merged["extended_resources"] = merged["extended_resources"] or {}
    candidate = FlavorSpec.model_validate(merged)
    spec = checked(candidate, creating=False)
    flavor.spec = spec.stored()
    flavor.updated_at = utcnow()
    await session.commit()


@router.delete("/nodeflavors/{FlavorId}", response_model=None, summary="Delete a node flavor (admin)")
async def delete_node_flavor(FlavorId: str, _: Admin, session: Session) -> None:
    """Refused while nodes use the flavor."""
    flavor = await _flavor(session, FlavorId)
    users = await db.flavor_users(session, flavor_id=flavor.id)
    if users:
        raise InUse(f"node flavor {flavor.id} is used by nodes: {', '.join(users[:10])}")
    await session.delete(flavor)
    await session.commit()


@router.get(
    "/nodeflavors/{FlavorId}/avail",
    response_model=dict[str, int],
    summary="Resources a flavor leaves for workloads (bare integer map)",
)
async def get_node_flavor_avail(
    FlavorId: str, _: CurrentUser, session: Session, state: State
) -> dict[str, int]:
    """cpu cores, memory and ephemeral-storage bytes minus the system reserve; GPUs and others as counts."""
    flavor = await _flavor(session, FlavorId)
    settings = state.settings
    reserve = ReservePercents(
        cpu=settings.cpu_reserve_percent,
        memory=settings.memory_reserve_percent,
        ephemeral_storage=settings.ephemeral_storage_reserve_percent,
    )
    return available_resources(FlavorSpec.model_validate(flavor.spec), reserve)
