"""Nodes: spec, onboarding records (facts, host key, addon progress) and availability holds.

Status fields are changed only through `db.node_status` (guarded transitions called from
activities); the API writes the spec fields and the deletion request (`deleting_at`).
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, delete, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column, relationship

from db import logs
from db.base import Base, UTCDateTime
from domain.logs import LogResource
from domain.nodes import Hold, UnavailableReason, availability


class Node(Base):
    """A machine reached over SSH (or, when `local`, this machine). Spec fields are written by the
    API, status fields by activities."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    hostname: Mapped[str] = mapped_column(String(253), default="")
    """The host name to set on the machine; "" when none was given."""
    node_name: Mapped[str] = mapped_column(String(253))
    private_ip: Mapped[str] = mapped_column(String(45), unique=True)
    public_ip: Mapped[str] = mapped_column(String(45), default="")
    port: Mapped[int] = mapped_column(Integer, default=22)
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    taints: Mapped[list[dict[str, str]]] = mapped_column(JSON, default=list)
    """Stored with the `primus-safe.` key prefix."""
    flavor_id: Mapped[str] = mapped_column(String(63), index=True)
    template_id: Mapped[str] = mapped_column(String(63), index=True)
    ssh_secret_id: Mapped[str] = mapped_column(String(63), index=True)
    cluster_id: Mapped[str] = mapped_column(String(63), default="", index=True)
    workspace_id: Mapped[str] = mapped_column(String(63), default="", index=True)
    is_control_plane: Mapped[bool] = mapped_column(Boolean, default=False)
    local: Mapped[bool] = mapped_column(Boolean, default=False)
    """The node is this machine (the worker's host, `primus-safe up`): onboarding, probes and
    provisioning run through the local transport (`drivers.local`) instead of SSH, and workloads
    through `HostNode(ssh=None)`. Set at registration, never changed."""

    phase: Mapped[str] = mapped_column(String(32), default="")
    step: Mapped[str] = mapped_column(String(32), default="")
    """The onboarding step in progress; "" when the node workflow is idle."""
    message: Mapped[str] = mapped_column(String(1024), default="")
    """Why the phase is a failure phase."""
    phase_changed_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    last_probe_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    probe_failures: Mapped[int] = mapped_column(Integer, default=0)
    """Probes in a row that could not reach the node (0 after one that did)."""
    probe_successes: Mapped[int] = mapped_column(Integer, default=0)
    """Probes in a row that reached the node (0 after one that did not)."""
    health_runs: Mapped[dict[str, list[int]]] = mapped_column(JSON, default=dict)
    """Health monitor -> [failed, passed] checks in a row (the probe's hysteresis per monitor)."""
    host_key_fingerprint: Mapped[str] = mapped_column(String(128), default="")
    facts: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=None)
    facts_problem: Mapped[str] = mapped_column(String(1024), default="")
    boot_time: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    addons_template_id: Mapped[str] = mapped_column(String(63), default="")
    """The template the addon progress below refers to."""
    addons_done: Mapped[list[str]] = mapped_column(JSON, default=list)
    addons_installed: Mapped[bool] = mapped_column(Boolean, default=False)
    onboarded: Mapped[bool] = mapped_column(Boolean, default=False)
    """True once a full onboarding pass has finished (the probe may then toggle Ready/SSHFailed)."""

    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)

    holds: Mapped[list[NodeHold]] = relationship(
        lazy="selectin", cascade="all, delete-orphan", passive_deletes=True, order_by="NodeHold.reason"
    )
    """Reasons outside onboarding that keep the node unavailable (faults, reboots, ops jobs)."""

    @property
    def is_local(self) -> bool:
        """The node is this machine: reach it with the local transport / `HostNode(ssh=None)`."""
        return self.local

    @property
    def is_addons_installed(self) -> bool:
        """All addons of the node's current template are installed."""
        return self.addons_installed and self.addons_template_id == self.template_id

    def availability(self) -> tuple[bool, str]:
        """Whether workloads may use the node, and the first reason when not (`domain.nodes.availability`)."""
        return availability(
            phase=self.phase,
            step=self.step,
            facts_problem=self.facts_problem,
            addons_installed=self.is_addons_installed,
            taints=self.taints,
            holds=self.hold_list(),
        )

    def hold_list(self) -> list[Hold]:
        """The holds as domain values (for `domain.nodes.availability`)."""
        return [Hold(reason=UnavailableReason(h.reason), ref=h.ref, message=h.message) for h in self.holds]


class NodeHold(Base):
    """One reason a node is unavailable; (node, reason, ref) is unique, so holds stack and clear
    independently."""

    __tablename__ = "node_holds"

    node_id: Mapped[str] = mapped_column(ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True)
    reason: Mapped[str] = mapped_column(String(16), primary_key=True)
    ref: Mapped[str] = mapped_column(String(63), primary_key=True, default="")
    message: Mapped[str] = mapped_column(String(1024), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)


async def get_node(session: AsyncSession, *, node_id: str, include_deleting: bool = False) -> Node | None:
    """The node with `node_id`; nodes being deleted only when asked for."""
    node = await session.get(Node, node_id)
    if node is None or (node.deleting_at is not None and not include_deleting):
        return None
    return node


async def get_node_by_ip(session: AsyncSession, *, private_ip: str) -> Node | None:
    """The node (in any state) with that private IP."""
    return (await session.execute(select(Node).where(Node.private_ip == private_ip))).scalar_one_or_none()


async def list_nodes(
    session: AsyncSession,
    *,
    cluster_id: str | None = None,
    workspace_id: str | None = None,
    flavor_id: str | None = None,
    workspaces: Sequence[str] | None = None,
    phases: Sequence[str] | None = None,
) -> list[Node]:
    """Live nodes matching the column filters ("" = unbound), sorted by id.

    `workspaces` limits the result to nodes bound to one of them (non-admin visibility);
    `phases` to nodes in one of those phases.
    """
    query = select(Node).where(Node.deleting_at.is_(None)).order_by(Node.id)
    if cluster_id is not None:
        query = query.where(Node.cluster_id == cluster_id)
    if workspace_id is not None:
        query = query.where(Node.workspace_id == workspace_id)
    if flavor_id:
        query = query.where(Node.flavor_id == flavor_id)
    if workspaces is not None:
        query = query.where(Node.workspace_id.in_([w for w in workspaces if w]))
    if phases is not None:
        query = query.where(Node.phase.in_(list(phases)))
    return list((await session.execute(query)).scalars())


async def node_ids_using(session: AsyncSession, column: str, value: str) -> list[str]:
    """Ids of the nodes whose `column` (flavor_id, template_id, ssh_secret_id) equals `value`."""
    attribute = getattr(Node, column)
    rows = await session.execute(select(Node.id).where(attribute == value).order_by(Node.id))
    return list(rows.scalars())


async def delete_node(session: AsyncSession, *, node_id: str) -> bool:
    """Remove a node marked for deletion with its log lines (its holds go by cascade); returns whether
    a row went."""
    result = await session.execute(delete(Node).where(Node.id == node_id, Node.deleting_at.is_not(None)))
    if result.rowcount:  # type: ignore[attr-defined]
        await logs.delete_lines(session, resource=LogResource.NODE, resource_id=node_id)
        return True
    return False
