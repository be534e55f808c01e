"""Image registries: create, list, replace, delete. Passwords are encrypted and never returned."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query
from sqlalchemy.exc import IntegrityError

from api.deps import Admin, CurrentUser, Session, State
from api.schemas.common import ERROR_RESPONSES
from api.schemas.image_registries import RegistryRequest, RegistryView
from db import image_registries as db
from db.image_registries import ImageRegistry
from domain.errors import Conflict, NotFound
from domain.timefmt import unix_seconds, utcnow

router = APIRouter(tags=["image registries"], responses=ERROR_RESPONSES)

RegistryId = Annotated[int, Path(ge=1, le=2**31 - 1, description="Registry id")]


def registry_view(registry: ImageRegistry, *, show_username: bool = True) -> RegistryView:
    """The API view of a registry (no password; the username only for administrators)."""
    return RegistryView(
        id=registry.id,
        name=registry.name,
        url=registry.url,
        username=registry.username if show_username else "",
        default=registry.is_default,
        insecure=registry.insecure,
        created_at=unix_seconds(registry.created_at),
        updated_at=unix_seconds(registry.updated_at),
    )


async def _refuse_clash(session: Session, body: RegistryRequest, exclude_id: int | None = None) -> None:
    clash = await db.find_clash(session, name=body.name, url=body.url, exclude_id=exclude_id)
    if clash is None:
        return
    if clash.name == body.name:
        raise Conflict(f"image registry {body.name} already exists")
    raise Conflict(f"the url {body.url} is already configured as image registry {clash.name}")


async def _save(session: Session, registry: ImageRegistry) -> None:
    """Keep at most one default, then commit; 409 when a concurrent request took the name, URL or default."""
    try:
        if registry.is_default:
            await db.clear_default(session, except_id=registry.id)
        await session.flush()
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"image registry {registry.name} or its url already exists") from exc


@router.post("/image-registries", response_model=RegistryView, summary="Add an image registry (admin)")
async def create_image_registry(
    body: RegistryRequest, _: Admin, session: Session, state: State
) -> RegistryView:
    """Name and URL are unique; `default: true` takes the default flag from any other registry."""
    await _refuse_clash(session, body)
    now = utcnow()
    registry = ImageRegistry(
        name=body.name,
        url=body.url,
        username=body.username,
        password_encrypted=state.box.encrypt(body.password or ""),
        is_default=body.default,
        insecure=body.insecure,
        created_at=now,
        updated_at=now,
    )
    session.add(registry)
    await _save(session, registry)
    return registry_view(registry)


@router.get("/image-registries", response_model=list[RegistryView], summary="List image registries")
async def list_image_registries(
    caller: CurrentUser,
    session: Session,
    page_num: Annotated[int, Query(alias="pageNum", ge=1, le=1_000_000, description="Page, from 1")] = 1,
    page_size: Annotated[int, Query(alias="pageSize", ge=1, le=1000, description="Page size")] = 10,
) -> list[RegistryView]:
    """A bare array, newest first; `username` is "" for callers who are not administrators."""
    rows = await db.list_registries(session, limit=page_size, offset=(page_num - 1) * page_size)
    return [registry_view(r, show_username=caller.is_admin) for r in rows]


async def _registry(session: Session, registry_id: int) -> ImageRegistry:
    registry = await db.get_registry(session, registry_id=registry_id)
    if registry is None:
        raise NotFound("ImageRegistry", registry_id)
    return registry


@router.put(
    "/image-registries/{id}", response_model=RegistryView, summary="Replace an image registry (admin)"
)
async def update_image_registry(
    id: RegistryId, body: RegistryRequest, _: Admin, session: Session, state: State
) -> RegistryView:
    """Every field is replaced, except that an omitted password keeps the stored one."""
    registry = await _registry(session, id)
    await _refuse_clash(session, body, exclude_id=registry.id)
    registry.name = body.name
    registry.url = body.url
    registry.username = body.username
    if body.password is not None:
        registry.password_encrypted = state.box.encrypt(body.password)
    registry.is_default = body.default
    registry.insecure = body.insecure
    registry.updated_at = utcnow()
    await _save(session, registry)
    return registry_view(registry)


@router.delete("/image-registries/{id}", response_model=None, summary="Delete an image registry (admin)")
async def delete_image_registry(id: RegistryId, _: Admin, session: Session) -> None:
    """Images already imported from it are kept."""
    await session.delete(await _registry(session, id))
    await session.commit()
