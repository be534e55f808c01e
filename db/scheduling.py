"""The workspace queues: one row per workload waiting for admission or admitted.

Rows are written only through `db.queue_status` (enqueue and withdraw by the workload's
activities, decisions by the scheduler's cycle activity); the API reads them.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Boolean, Integer, String, Text, cast, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime
from db.node_flavors import NodeFlavor
from db.nodes import Node, NodeHold
from domain import nodes as node_rules
from domain import scheduler as s
from domain.node_flavors import FlavorSpec, ReservePercents, available_resources
from domain.nodes import Hold, UnavailableReason
from domain.scheduling import ADMITTED, Placement, QueueRow


@dataclass(frozen=True)
class NodeUse:
    """What one admitted workload holds on a node."""

    workload_id: str
    user_id: str
    workspace_id: str
    resources: dict[str, int]


class QueueEntry(Base):
    """A workload in its workspace's queue (state `Queued`) or holding resources (`Admitted`)."""

    __tablename__ = "workload_queue"

    workload_id: Mapped[str] = mapped_column(String(63), primary_key=True)
    workspace_id: Mapped[str] = mapped_column(String(63), index=True)
    user_id: Mapped[str] = mapped_column(String(80), default="")
    state: Mapped[str] = mapped_column(String(16))
    priority: Mapped[int] = mapped_column(Integer, default=0)
    submitted_at: Mapped[datetime] = mapped_column(UTCDateTime)
    request: Mapped[dict[str, int]] = mapped_column(JSON, default=dict)
    """Per pod, in base units."""
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    specified_nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    required_labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    tolerate_all: Mapped[bool] = mapped_column(Boolean, default=False)
    failed_over: Mapped[bool] = mapped_column(Boolean, default=False)
    waiting: Mapped[str] = mapped_column(String(1024), default="")
    placement: Mapped[list[dict[str, Any]]] = mapped_column(JSON, default=list)
    position: Mapped[int] = mapped_column(Integer, default=0)
    """1-based queue position while Queued (`schedulerOrder`); 0 before the first cycle."""
    reason: Mapped[str] = mapped_column(String(1024), default="")
    """Why it is still queued, as the last cycle found."""
    admitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)
    notified: Mapped[bool] = mapped_column(Boolean, default=True)
    """False while the workload's workflow has not been told of its admission or eviction."""
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)

    def row(self) -> QueueRow:
        """The entry as the snapshot builder reads it."""
        return QueueRow(
            workload_id=self.workload_id,
            state=self.state,
            priority=self.priority,
            submitted_at=self.submitted_at,
            request=dict(self.request),
            replicas=self.replicas,
            specified_nodes=list(self.specified_nodes),
            required_labels=dict(self.required_labels),
            tolerate_all=self.tolerate_all,
            failed_over=self.failed_over,
            waiting=self.waiting,
            placement=[Placement.model_validate(p) for p in self.placement],
        )


async def entries_of(session: AsyncSession, *, workspace_id: str) -> Sequence[QueueEntry]:
    """Every entry of the workspace, queued ones in queue position order."""
    query = (
        select(QueueEntry)
        .where(QueueEntry.workspace_id == workspace_id)
        .order_by(QueueEntry.state, QueueEntry.position, QueueEntry.workload_id)
    )
    return (await session.execute(query)).scalars().all()


async def get_entry(session: AsyncSession, *, workload_id: str) -> QueueEntry | None:
    """The queue entry of a workload, if it has one."""
    return await session.get(QueueEntry, workload_id)


async def entries_for(session: AsyncSession, *, workload_ids: Sequence[str]) -> dict[str, QueueEntry]:
    """The queue entries of the given workloads that have one, by workload id (one query)."""
    if not workload_ids:
        return {}
    rows = await session.execute(select(QueueEntry).where(QueueEntry.workload_id.in_(list(workload_ids))))
    return {e.workload_id: e for e in rows.scalars()}


async def scheduler_nodes(
    session: AsyncSession, *, workspace_id: str, reserve: ReservePercents
) -> list[s.Node]:
    """The nodes serving the workspace as the decision sees them: allocatable after the reserve,
    availability apart from taints (judged per workload), and their taints. One Core query (a
    cycle reads every node: ORM objects with their holds cost ten times as much)."""
    c = Node.__table__.c
    rows = await session.execute(
        select(
            c.id,
            c.flavor_id,
            c.phase,
            c.step,
            c.facts_problem,
            c.addons_installed,
            c.addons_template_id,
            c.template_id,
            _as_text(c.labels).label("labels"),
            _as_text(c.taints).label("taints"),
            c.deleting_at,
        ).where(c.workspace_id == workspace_id)
    )
    nodes = rows.all()
    holds: dict[str, list[Hold]] = {}
    held = await session.execute(
        select(NodeHold.node_id, NodeHold.reason, NodeHold.ref, NodeHold.message)
        .join(Node, Node.id == NodeHold.node_id)
        .where(Node.workspace_id == workspace_id)
    )
    for node_id, reason, ref, message in held:
        holds.setdefault(node_id, []).append(Hold(reason=UnavailableReason(reason), ref=ref, message=message))
    flavor_ids = sorted({n.flavor_id for n in nodes})
    flavors = (await session.execute(select(NodeFlavor).where(NodeFlavor.id.in_(flavor_ids)))).scalars()
    allocatable = {f.id: flavor_allocatable(f, reserve) for f in flavors}
    result = []
    for n in nodes:
        available, _ = node_rules.availability(
            phase=n.phase,
            step=n.step,
            facts_problem=n.facts_problem,
            addons_installed=n.addons_installed and n.addons_template_id == n.template_id,
            taints=[],
            holds=holds.get(n.id, ()),
        )
        taints = tuple(
            s.Taint(key=t.get("key", ""), value=t.get("value", ""), effect=t.get("effect", "NoSchedule"))
            for t in _json(n.taints) or ()
        )
        flavor = allocatable.get(n.flavor_id)
        result.append(
            s.Node(
                id=n.id,
                allocatable=dict(flavor or {}),
                labels=dict(_json(n.labels) or {}),
                taints=taints,
                available=available and flavor is not None and n.deleting_at is None,
            )
        )
    return result


def flavor_allocatable(flavor: NodeFlavor | None, reserve: ReservePercents) -> dict[str, int]:
    """What workloads may use on a node of the flavor (after the system reserve)."""
    return dict(available_resources(FlavorSpec.model_validate(flavor.spec), reserve)) if flavor else {}


async def usage_on_nodes(session: AsyncSession, nodes: Sequence[Node]) -> dict[str, list[NodeUse]]:
    """Node id -> what each admitted workload holds there (for node views)."""
    wanted = {n.id for n in nodes}
    workspaces = sorted({n.workspace_id for n in nodes if n.workspace_id})
    if not workspaces:
        return {}
    rows = await session.execute(
        select(QueueEntry)
        .where(QueueEntry.workspace_id.in_(workspaces), QueueEntry.state == ADMITTED)
        .order_by(QueueEntry.workload_id)
    )
    usage: dict[str, list[NodeUse]] = {}
    for entry in rows.scalars():
        for pod in entry.placement:
            if pod.get("node_id") in wanted:
                usage.setdefault(pod["node_id"], []).append(
                    NodeUse(
                        workload_id=entry.workload_id,
                        user_id=entry.user_id,
                        workspace_id=entry.workspace_id,
                        resources=dict(pod.get("resources", {})),
                    )
                )
    return usage


@dataclass(frozen=True)
class QueueState:
    """A workspace's queue as a cycle needs it: the decision's inputs, and the positions and
    reasons now stored (so only changed ones are written back)."""

    queued: list[s.QueuedWorkload]
    running: list[s.RunningWorkload]
    shown: dict[str, tuple[int, str]]


@functools.lru_cache(maxsize=4096)
def _parse(text: str) -> Any:
    return json.loads(text)


def _json(value: Any) -> Any:
    """A JSON column read as text (SQLite) is parsed once per distinct value: queues repeat a few
    request shapes thousands of times, and the decision only reads them. Drivers that decode JSON
    themselves (asyncpg) hand over the value."""
    return _parse(value) if isinstance(value, str) else value


def _as_text(column: Any) -> Any:
    """A JSON column read as its text: CAST in SQL (psycopg decodes a json value itself, before
    any result processing: 30,000 json.loads a cycle), typed Text so nothing decodes it either."""
    return type_coerce(cast(column, Text), Text)


def _utc(value: str | datetime) -> datetime:
    """A UTCDateTime column read raw: text on SQLite, a naive datetime from psycopg."""
    return (datetime.fromisoformat(value) if isinstance(value, str) else value).replace(tzinfo=UTC)


async def queue_state(session: AsyncSession, *, workspace_id: str) -> QueueState:
    """The workspace's queue rows, read without ORM objects or per-row result processing, with
    each distinct JSON value parsed once (a cycle reads every row)."""
    c = QueueEntry.__table__.c
    rows = await session.execute(
        select(
            c.workload_id,
            c.state,
            c.priority,
            type_coerce(c.submitted_at, String).label("submitted_at"),
            _as_text(c.request).label("request"),
            c.replicas,
            _as_text(c.specified_nodes).label("specified_nodes"),
            _as_text(c.required_labels).label("required_labels"),
            c.tolerate_all,
            c.failed_over,
            c.waiting,
            _as_text(c.placement).label("placement"),
            c.position,
            c.reason,
        )
        .where(c.workspace_id == workspace_id)
        .order_by(c.workload_id)
    )
    queued: list[s.QueuedWorkload] = []
    running: list[s.RunningWorkload] = []
    shown: dict[str, tuple[int, str]] = {}
    for (
        workload_id,
        state,
        priority,
        submitted,
        request,
        replicas,
        specified_nodes,
        required_labels,
        tolerate_all,
        failed_over,
        waiting,
        placement,
        position,
        reason,
    ) in rows:
        if state == ADMITTED:
            pods = tuple(
                s.PodPlacement(
                    node_id=p["node_id"], resources=p.get("resources", {}), gpus=tuple(p.get("gpus", ()))
                )
                for p in _json(placement)
            )
            running.append(
                s.RunningWorkload(id=workload_id, priority=priority, submitted=_utc(submitted), pods=pods)
            )
            continue
        shown[workload_id] = (position, reason)
        queued.append(
            s.QueuedWorkload(
                id=workload_id,
                submitted=_utc(submitted),
                request=_json(request) or {},
                replicas=replicas,
                priority=priority,
                failed_over=bool(failed_over),
                specified_nodes=tuple(_json(specified_nodes) or ()),
                required_labels=_json(required_labels) or {},
                tolerate_all=bool(tolerate_all),
                waiting=waiting,
            )
        )
    return QueueState(queued=queued, running=running, shown=shown)
