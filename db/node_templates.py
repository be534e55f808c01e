"""Node templates: ordered lists of addons installed on nodes."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.nodes import node_ids_using


class NodeTemplate(Base):
    """A template naming addons from the shipped catalogue, in install order."""

    __tablename__ = "node_templates"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(253))
    addons: Mapped[list[str]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def get_template(session: AsyncSession, *, template_id: str) -> NodeTemplate | None:
    """The template with `template_id`, or None."""
    return await session.get(NodeTemplate, template_id)


async def list_templates(session: AsyncSession, *, limit: int, offset: int) -> tuple[int, list[NodeTemplate]]:
    """The total count and one page of templates, sorted by id."""
    total = (await session.execute(select(func.count()).select_from(NodeTemplate))).scalar_one()
    rows = await session.execute(select(NodeTemplate).order_by(NodeTemplate.id).limit(limit).offset(offset))
    return int(total), list(rows.scalars())


async def template_users(session: AsyncSession, *, template_id: str) -> list[str]:
    """Ids of the nodes using the template; a template in use cannot be deleted."""
    return await node_ids_using(session, "template_id", template_id)
