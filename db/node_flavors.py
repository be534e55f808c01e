"""Node flavors: the hardware shape of a class of nodes."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, String, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.nodes import node_ids_using


class NodeFlavor(Base):
    """A flavor; `spec` holds cpu, memory, gpu, rootDisk, dataDisk and extendedResources as sent."""

    __tablename__ = "node_flavors"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    display_name: Mapped[str] = mapped_column(String(253))
    spec: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def get_flavor(session: AsyncSession, *, flavor_id: str) -> NodeFlavor | None:
    """The flavor with `flavor_id`, or None."""
    return await session.get(NodeFlavor, flavor_id)


async def list_flavors(session: AsyncSession, *, limit: int, offset: int) -> tuple[int, list[NodeFlavor]]:
    """The total count and one page of flavors, sorted by id."""
    total = (await session.execute(select(func.count()).select_from(NodeFlavor))).scalar_one()
    rows = await session.execute(select(NodeFlavor).order_by(NodeFlavor.id).limit(limit).offset(offset))
    return int(total), list(rows.scalars())


async def flavor_users(session: AsyncSession, *, flavor_id: str) -> list[str]:
    """Ids of the nodes using the flavor; a flavor in use cannot be deleted."""
    return await node_ids_using(session, "flavor_id", flavor_id)
