"""Workspaces, their managers and image secrets, and the queries about who may use them.

Status fields (`phase`, `message`) are changed only through `db.workspace_status` (guarded
transitions called from activities); the API writes the spec, managers, image secrets and the
deletion request (`deleting_at`). Which nodes serve a workspace is node status
(`nodes.workspace_id`, written by `db.node_status`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, delete, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db.base import Base, UTCDateTime
from db.nodes import Node
from db.scheduling import entries_of
from db.secrets import Secret
from domain.scheduling import ADMITTED
from domain.workloads import WorkspaceVolume


class Workspace(Base):
    """A share of one cluster's nodes of one flavor, with its queue and volumes."""

    __tablename__ = "workspaces"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    name: Mapped[str] = mapped_column(String(63))
    cluster_id: Mapped[str] = mapped_column(String(63), index=True)
    flavor_id: Mapped[str] = mapped_column(String(63), index=True)
    description: Mapped[str] = mapped_column(String(4096), default="")
    replica: Mapped[int] = mapped_column(Integer, default=0)
    """The target node count."""
    queue_policy: Mapped[str] = mapped_column(String(16), default="fifo")
    scopes: Mapped[list[str]] = mapped_column(JSON, default=list)
    volumes: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    enable_preempt: Mapped[bool] = mapped_column(Boolean, default=False)
    is_default: Mapped[bool] = mapped_column(Boolean, default=False)

    phase: Mapped[str] = mapped_column(String(16))
    message: Mapped[str] = mapped_column(String(1024), default="")

    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)

    managers: Mapped[list[WorkspaceManager]] = relationship(
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="WorkspaceManager.user_id",
    )
    image_secrets: Mapped[list[WorkspaceImageSecret]] = relationship(
        lazy="selectin",
        cascade="all, delete-orphan",
        passive_deletes=True,
        order_by="WorkspaceImageSecret.secret_id",
    )

    def volume_list(self) -> list[WorkspaceVolume]:
        """The volumes as domain values."""
        return [WorkspaceVolume.model_validate(v) for v in self.volumes]

    @property
    def manager_ids(self) -> list[str]:
        return [m.user_id for m in self.managers]

    @property
    def image_secret_ids(self) -> list[str]:
        return [s.secret_id for s in self.image_secrets]


class WorkspaceManager(Base):
    """A user who manages a workspace (and so may use it)."""

    __tablename__ = "workspace_managers"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(80), primary_key=True, index=True)


class WorkspaceImageSecret(Base):
    """An image secret the workspace's pods pull with."""

    __tablename__ = "workspace_image_secrets"

    workspace_id: Mapped[str] = mapped_column(
        ForeignKey("workspaces.id", ondelete="CASCADE"), primary_key=True
    )
    secret_id: Mapped[str] = mapped_column(String(63), primary_key=True, index=True)


async def get_workspace(session: AsyncSession, *, workspace_id: str) -> Workspace | None:
    """The workspace with `workspace_id` (also while it is being deleted), or None."""
    return await session.get(Workspace, workspace_id)


async def list_workspaces(session: AsyncSession, *, cluster_id: str | None = None) -> list[Workspace]:
    """Every workspace (of one cluster when given), sorted by id."""
    query = select(Workspace).order_by(Workspace.id)
    if cluster_id:
        query = query.where(Workspace.cluster_id == cluster_id)
    return list((await session.execute(query)).scalars())


async def existing_ids(session: AsyncSession, ids: Sequence[str]) -> set[str]:
    """Which of `ids` are workspaces."""
    if not ids:
        return set()
    rows = await session.execute(select(Workspace.id).where(Workspace.id.in_(list(ids))))
    return set(rows.scalars())


async def names(session: AsyncSession, ids: Sequence[str]) -> dict[str, str]:
    """Display names of the workspaces among `ids` that exist."""
    if not ids:
        return {}
    rows = await session.execute(select(Workspace.id, Workspace.name).where(Workspace.id.in_(list(ids))))
    return {row[0]: row[1] for row in rows}


async def managed_by(session: AsyncSession, *, user_id: str) -> list[str]:
    """Ids of the workspaces `user_id` manages, sorted."""
    rows = await session.execute(
        select(WorkspaceManager.workspace_id)
        .where(WorkspaceManager.user_id == user_id)
        .order_by(WorkspaceManager.workspace_id)
    )
    return list(rows.scalars())


async def default_ids(session: AsyncSession) -> list[str]:
    """Ids of the workspaces every user may use (`isDefault`), sorted."""
    rows = await session.execute(
        select(Workspace.id).where(Workspace.is_default.is_(True)).order_by(Workspace.id)
    )
    return list(rows.scalars())


async def accessible_ids(session: AsyncSession, *, user_id: str, granted: Sequence[str]) -> list[str]:
    """Ids of the existing workspaces a user may use: granted ones, managed ones, default ones."""
    wanted = {*granted, *await managed_by(session, user_id=user_id)}
    rows = await session.execute(
        select(Workspace.id)
        .where(or_(Workspace.id.in_(list(wanted)), Workspace.is_default.is_(True)))
        .order_by(Workspace.id)
    )
    return list(rows.scalars())


async def image_secrets_bound_to_all(session: AsyncSession) -> list[str]:
    """Ids of the image secrets every workspace gets (`bindAllWorkspaces`)."""
    rows = await session.execute(
        select(Secret.id)
        .where(Secret.type == "image", Secret.bind_all_workspaces.is_(True))
        .order_by(Secret.id)
    )
    return list(rows.scalars())


async def workspaces_using_secret(session: AsyncSession, *, secret_id: str) -> list[str]:
    """Ids of the workspaces pulling with `secret_id`."""
    rows = await session.execute(
        select(WorkspaceImageSecret.workspace_id)
        .where(WorkspaceImageSecret.secret_id == secret_id)
        .order_by(WorkspaceImageSecret.workspace_id)
    )
    return list(rows.scalars())


async def bound_nodes(session: AsyncSession, *, workspace_id: str) -> list[Node]:
    """The live nodes serving the workspace, sorted by id."""
    query = (
        select(Node).where(Node.workspace_id == workspace_id, Node.deleting_at.is_(None)).order_by(Node.id)
    )
    return list((await session.execute(query)).scalars())


async def free_nodes(session: AsyncSession, *, cluster_id: str, flavor_id: str) -> list[Node]:
    """Live nodes of the cluster and flavor serving no workspace, sorted by id (availability is
    the caller's check: `domain.nodes.availability`)."""
    query = (
        select(Node)
        .where(
            Node.cluster_id == cluster_id,
            Node.flavor_id == flavor_id,
            Node.workspace_id == "",
            Node.deleting_at.is_(None),
        )
        .order_by(Node.id)
    )
    return list((await session.execute(query)).scalars())


async def active_workloads(session: AsyncSession, *, workspace_id: str) -> list[str]:
    """Ids of the workspace's workloads that are queued or admitted (a workspace with any cannot
    be deleted)."""
    return [e.workload_id for e in await entries_of(session, workspace_id=workspace_id)]


async def pods_on_node(session: AsyncSession, *, node_id: str) -> list[str]:
    """Ids of the admitted workloads with a pod on the node (such a node leaves its workspace only
    with `force`)."""
    node = await session.get(Node, node_id)
    if node is None or not node.workspace_id:
        return []
    return sorted(
        e.workload_id
        for e in await entries_of(session, workspace_id=node.workspace_id)
        if e.state == ADMITTED and any(p.get("node_id") == node_id for p in e.placement)
    )


async def delete_workspace(session: AsyncSession, *, workspace_id: str) -> bool:
    """Remove a workspace marked for deletion with its managers and secrets; returns whether a row went."""
    marked = await session.execute(
        select(Workspace.id).where(Workspace.id == workspace_id, Workspace.deleting_at.is_not(None))
    )
    if marked.first() is None:
        return False
    return await discard_workspace(session, workspace_id=workspace_id)


async def discard_workspace(session: AsyncSession, *, workspace_id: str) -> bool:
    """Remove a workspace whose creation was refused (nothing was bound)."""
    await session.execute(delete(WorkspaceManager).where(WorkspaceManager.workspace_id == workspace_id))
    await session.execute(
        delete(WorkspaceImageSecret).where(WorkspaceImageSecret.workspace_id == workspace_id)
    )
    result = await session.execute(delete(Workspace).where(Workspace.id == workspace_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]
