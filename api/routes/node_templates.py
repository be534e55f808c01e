"""Node templates (create, list, get, delete) and the addon catalogue (list)."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from pathlib import Path
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError

from api.deps import Admin, CurrentUser, Paging, Session
from api.routes.aliases import custom_router
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.node_templates import (
    AddonTemplateView,
    CreateNodeTemplateRequest,
    CreateNodeTemplateResponse,
    NodeTemplateView,
)
from db import node_templates as db
from db.node_templates import NodeTemplate
from domain.addon_catalogue import PACKAGE, Addon, catalogue
from domain.errors import Conflict, InUse, NotFound
from domain.timefmt import format_time, utcnow

router = APIRouter(tags=["node templates"], responses=ERROR_RESPONSES)


def template_view(template: NodeTemplate) -> NodeTemplateView:
    """The API view of a template."""
    return NodeTemplateView(template_id=template.id, add_on_templates=list(template.addons))


@custom_router.post(
    "/nodetemplates",
    response_model=CreateNodeTemplateResponse,
    operation_id="createNodeTemplateCustom",
    summary="Create a node template (admin; the documented /api/custom path)",
    responses=ERROR_RESPONSES,
)
@router.post(
    "/nodetemplates",
    response_model=CreateNodeTemplateResponse,
    operation_id="createNodeTemplate",
    summary="Create a node template (admin)",
)
async def create_node_template(
    body: CreateNodeTemplateRequest, _: Admin, session: Session
) -> CreateNodeTemplateResponse:
    """The id is the normalized templateId (or name); every addon must be in the catalogue."""
    template_id = body.template_id_normalized
    if await db.get_template(session, template_id=template_id) is not None:
        raise Conflict(f"node template {template_id} already exists")
    raw_name = body.template_id if body.template_id is not None else body.name or ""
    session.add(
        NodeTemplate(
            id=template_id,
            display_name=raw_name.strip(),
            addons=list(body.add_on_templates),
            created_at=utcnow(),
        )
    )
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict(f"node template {template_id} already exists") from exc
    return CreateNodeTemplateResponse(id=template_id)


@router.get("/nodetemplates", response_model=ListResponse[NodeTemplateView], summary="List node templates")
async def list_node_templates(
    _: CurrentUser, session: Session, page: Paging
) -> ListResponse[NodeTemplateView]:
    """All templates, sorted by id."""
    total, templates = await db.list_templates(session, limit=page.limit, offset=page.offset)
    return ListResponse[NodeTemplateView](total_count=total, items=[template_view(t) for t in templates])


async def _template(session: Session, template_id: str) -> NodeTemplate:
    template = await db.get_template(session, template_id=template_id)
    if template is None:
        raise NotFound("NodeTemplate", template_id)
    return template


@router.get("/nodetemplates/{TemplateId}", response_model=NodeTemplateView, summary="Get a node template")
async def get_node_template(TemplateId: str, _: CurrentUser, session: Session) -> NodeTemplateView:
    """One template."""
    return template_view(await _template(session, TemplateId))


@router.delete("/nodetemplates/{TemplateId}", response_model=None, summary="Delete a node template (admin)")
async def delete_node_template(TemplateId: str, _: Admin, session: Session) -> None:
    """Refused while nodes use the template."""
    template = await _template(session, TemplateId)
    users = await db.template_users(session, template_id=template.id)
    if users:
        raise InUse(f"node template {template.id} is used by nodes: {', '.join(users[:10])}")
    await session.delete(template)
    await session.commit()


ADDON_TYPE = "script"
"""Every shipped addon is a bash script (upstream's catalogue also has `helm` charts)."""


def addon_view(addon: Addon) -> AddonTemplateView:
    return AddonTemplateView(
        addon_template_id=addon.name,
        name=addon.name,
        description=addon.description,
        gpu_chip=addon.gpu_chip,
        type=ADDON_TYPE,
        version=hashlib.sha256(addon.script.encode()).hexdigest()[:12],
        category="gpu" if addon.gpu_chip else "system",
        creation_time=_shipped_at(),
    )


@cache
def _shipped_at() -> str:
    """When the catalogue was installed (the package directory's time): the addons' creation time."""
    folder = resources.files(PACKAGE)
    return format_time(datetime.fromtimestamp(Path(str(folder)).stat().st_mtime, UTC))


@router.get(
    "/addontemplates", response_model=ListResponse[AddonTemplateView], summary="List the addon catalogue"
)
async def list_addon_templates(
    _: CurrentUser,
    addon_type: Annotated[
        str | None, Query(alias="type", max_length=64, description="Comma list of types (script)")
    ] = None,
) -> ListResponse[AddonTemplateView]:
    """Every addon a node template may name, sorted by name; `type` keeps those of the types given."""
    types = {t.strip() for t in (addon_type or "").split(",") if t.strip()}
    items = [addon_view(a) for a in catalogue().values() if not types or ADDON_TYPE in types]
    return ListResponse[AddonTemplateView](total_count=len(items), items=items)
