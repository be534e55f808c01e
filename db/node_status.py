"""The one writer of a node's status: guarded transitions, called only from activities.

A node's status is its `phase`, `step`, `message`, `phase_changed_at`, `last_probe_at`,
`onboarded`, what onboarding recorded (host key, facts, addon progress), its cluster binding
(`cluster_id`, `is_control_plane`, `workspace_id`) and its holds. Every change goes through one
function here. Each is one guarded statement (`UPDATE ... WHERE <expected state>`) returning
whether it applied, so two writers can never undo each other: the probe never moves a node in
the middle of an onboarding step, onboarding never moves a node that is joining or leaving a
cluster, and one hold (a fault, a reboot) is cleared without touching another.

The caller owns the transaction (and commits); log lines go to `db.logs` in the same one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, case, delete, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.nodes import Node, NodeHold
from domain import nodes as rules
from domain.clusters import NodeAction, manage_refusal
from domain.nodes import UnavailableReason


def _applied(result: Any) -> bool:
    return bool(result.rowcount)


def _live(node_id: str) -> ColumnElement[bool]:
    return and_(Node.id == node_id, Node.deleting_at.is_(None))


async def _set(session: AsyncSession, where: ColumnElement[bool], now: datetime, **values: Any) -> bool:
    result = await session.execute(update(Node).where(where).values(**values, updated_at=now))
    return _applied(result)


def _phase_values(phase: str, message: str, now: datetime) -> dict[str, Any]:
    """phase, message and when the phase last changed (only when it does)."""
    return {
        "phase": phase,
        "message": message[:1024],
        "phase_changed_at": case((Node.phase != phase, now), else_=Node.phase_changed_at),
    }


# --- onboarding (the node workflow) ------------------------------------------------------------


async def begin_step(session: AsyncSession, *, node_id: str, step: rules.Step, now: datetime) -> bool:
    """An onboarding step starts; False when it was already the current step (a retry)."""
    return await _set(session, and_(_live(node_id), Node.step != step), now, step=step)


async def trust_host_key(session: AsyncSession, *, node_id: str, fingerprint: str, now: datetime) -> bool:
    """Record the host key seen on first use; never replaces a trusted one."""
    where = and_(Node.id == node_id, Node.host_key_fingerprint == "")
    return await _set(session, where, now, host_key_fingerprint=fingerprint)


async def record_facts(
    session: AsyncSession,
    *,
    node_id: str,
    facts: dict[str, Any],
    problem: str,
    boot_time: datetime | None,
    now: datetime,
) -> bool:
    """What fact discovery found and how it differs from the flavor."""
    return await _set(
        session, Node.id == node_id, now, facts=facts, facts_problem=problem[:1024], boot_time=boot_time
    )


async def record_prepared(
    session: AsyncSession,
    *,
    node_id: str,
    fingerprint: str,
    facts: dict[str, Any],
    problem: str,
    boot_time: datetime | None,
    now: datetime,
) -> bool:
    """A `prepare` pass (reach, host name, facts) ended, in one statement: the host key trusted on
    first use (never replacing a trusted one), what fact discovery found, and `addons` as the
    step while the node is live. False when the node is gone."""
    return await _set(
        session,
        Node.id == node_id,
        now,
        host_key_fingerprint=case(
            (Node.host_key_fingerprint == "", fingerprint), else_=Node.host_key_fingerprint
        ),
        facts=facts,
        facts_problem=problem[:1024],
        boot_time=boot_time,
        step=case((Node.deleting_at.is_(None), "addons"), else_=Node.step),
    )


async def start_addons(session: AsyncSession, *, node_id: str, template_id: str, now: datetime) -> bool:
    """Addon progress now refers to `template_id`; progress of another template is forgotten."""
    where = and_(Node.id == node_id, Node.addons_template_id != template_id)
    return await _set(
        session, where, now, addons_template_id=template_id, addons_done=[], addons_installed=False
    )


async def record_addons(
    session: AsyncSession,
    *,
    node_id: str,
    template_id: str,
    done: Sequence[str],
    installed: bool,
    now: datetime,
    adopt: bool = False,
) -> bool:
    """The addons of `template_id` installed so far (and whether that is all of them). With
    `adopt` the progress is that template's from now on (`start_addons` and this in one
    statement); without, it is recorded only while it is."""
    where = Node.id == node_id
    if not adopt:
        where = and_(where, Node.addons_template_id == template_id)
    values: dict[str, Any] = {"addons_done": list(done), "addons_installed": installed}
    if adopt:
        values["addons_template_id"] = template_id
    return await _set(session, where, now, **values)


async def finish_onboarding(
    session: AsyncSession, *, node_id: str, phase: str, message: str, now: datetime
) -> bool:
    """An onboarding pass ended: its phase and message, step cleared, `onboarded` once Ready.

    A node joining or leaving a cluster keeps that phase (its manage workflow owns it): only
    the step is cleared then, and False is returned.
    """
    values = _phase_values(phase, message, now) | {"step": ""}
    if phase == rules.READY:
        values["onboarded"] = True
    moved = await _set(
        session, and_(Node.id == node_id, Node.phase.not_in(rules.CLUSTER_BUSY_PHASES)), now, **values
    )
    if not moved:
        await _set(session, Node.id == node_id, now, step="")
    return moved


# --- probe -------------------------------------------------------------------------------------


async def record_probe(
    session: AsyncSession,
    *,
    node_id: str,
    seen_phase: str,
    reachable: bool,
    verdict: rules.ProbeVerdict,
    now: datetime,
    health_runs: dict[str, list[int]] | None = None,
) -> tuple[int, int] | None:
    """Apply a probe verdict and count the probe in the node's runs of failed and good probes,
    only if the node is still as the probe saw it and no onboarding step runs (a step in flight
    owns the status). Returns the (failures, successes) in a row, None when the node moved.
    `health_runs` (the health monitors' runs, counted by the caller) is written with it."""
    values: dict[str, Any] = {
        "last_probe_at": now,
        "probe_failures": 0 if reachable else Node.probe_failures + 1,
        "probe_successes": Node.probe_successes + 1 if reachable else 0,
        "updated_at": now,
    }
    if verdict.phase is not None:
        values |= _phase_values(verdict.phase, verdict.message, now)
    if health_runs is not None:
        values["health_runs"] = health_runs
    where = and_(_live(node_id), Node.phase == seen_phase, Node.step == "")
    statement = (
        update(Node).where(where).values(**values).returning(Node.probe_failures, Node.probe_successes)
    )
    row = (await session.execute(statement)).first()
    return None if row is None else (row[0], row[1])


# --- clusters (the cluster and node-manage workflows) ------------------------------------------


async def claim_for_cluster(
    session: AsyncSession, *, cluster_id: str, node_ids: Sequence[str], now: datetime
) -> list[str]:
    """Bind a new cluster's control-plane nodes, all or none: returns the ids that could not be
    claimed (taken by another cluster, busy, not Ready or deleted); the caller rolls back then.
    Nodes already claimed by this cluster count as claimed (a retry)."""
    free = and_(
        Node.id.in_(node_ids),
        Node.deleting_at.is_(None),
        or_(
            Node.cluster_id == cluster_id,
            and_(Node.cluster_id == "", Node.step == "", Node.phase == rules.READY),
        ),
    )
    await session.execute(update(Node).where(free).values(cluster_id=cluster_id, updated_at=now))
    rows = await session.execute(select(Node.id).where(Node.id.in_(node_ids), Node.cluster_id == cluster_id))
    claimed = set(rows.scalars())
    return [n for n in node_ids if n not in claimed]


async def bind_control_plane(
    session: AsyncSession, *, cluster_id: str, node_ids: Sequence[str], now: datetime
) -> None:
    """The cluster is Ready: its claimed control-plane nodes become its control plane."""
    where = and_(Node.id.in_(node_ids), Node.cluster_id == cluster_id)
    await session.execute(update(Node).where(where).values(is_control_plane=True, updated_at=now))


async def release_cluster(session: AsyncSession, *, cluster_id: str, now: datetime) -> None:
    """The cluster is gone: every node bound to it is unbound, and a join or leave in progress
    (or failed) ends Ready."""
    bound = Node.cluster_id == cluster_id
    await session.execute(
        update(Node)
        .where(
            bound, Node.phase.in_((*rules.CLUSTER_BUSY_PHASES, rules.MANAGED_FAILED, rules.UNMANAGED_FAILED))
        )
        .values(phase=rules.READY, message="", phase_changed_at=now)
    )
    await session.execute(
        update(Node)
        .where(bound)
        .values(cluster_id="", is_control_plane=False, workspace_id="", updated_at=now)
    )


async def begin_manage(
    session: AsyncSession, *, node_id: str, cluster_id: str, action: NodeAction, now: datetime
) -> str:
    """Start a join (`Managing`, bound to the cluster) or a leave (`Unmanaging`); returns why it
    was refused, "" when it applied. A retry of an applied start applies again."""
    phase = rules.MANAGING if action == "add" else rules.UNMANAGING
    node = await session.get(Node, node_id, populate_existing=True)
    if node is not None and node.phase == phase and node.cluster_id == cluster_id:
        return ""  # already started (an activity retry)
    refusal = manage_refusal(node, cluster_id=cluster_id, action=action)
    if refusal:
        return refusal
    assert node is not None
    if action == "add":
        expected = and_(
            _live(node_id),
            Node.step == "",
            or_(
                and_(Node.cluster_id == "", Node.phase == rules.READY),
                and_(Node.cluster_id == cluster_id, Node.phase == rules.MANAGED_FAILED),
            ),
        )
        values: dict[str, Any] = {"cluster_id": cluster_id}
    else:
        expected = and_(
            _live(node_id),
            Node.cluster_id == cluster_id,
            Node.is_control_plane.is_(False),
            Node.phase.not_in(rules.CLUSTER_BUSY_PHASES),
        )
        values = {}
    if await _set(session, expected, now, **values, **_phase_values(phase, "", now)):
        return ""
    return f"the node({node_id}) changed meanwhile; try again"


async def finish_manage(
    session: AsyncSession,
    *,
    node_id: str,
    cluster_id: str,
    action: NodeAction,
    ok: bool,
    message: str,
    now: datetime,
) -> bool:
    """End a join or leave: Ready (bound, or unbound after a leave) or the failure phase."""
    busy = rules.MANAGING if action == "add" else rules.UNMANAGING
    failed = rules.MANAGED_FAILED if action == "add" else rules.UNMANAGED_FAILED
    phase = rules.READY if ok else failed
    values = _phase_values(phase, message, now)
    if ok and action == "remove":
        values |= {"cluster_id": "", "is_control_plane": False, "workspace_id": ""}
    where = and_(Node.id == node_id, Node.cluster_id == cluster_id, Node.phase == busy)
    return await _set(session, where, now, **values)


# --- holds (faults, reboots, ops jobs) ---------------------------------------------------------


def _insert_hold(session: AsyncSession) -> Any:
    dialect = session.get_bind().dialect.name
    return (postgresql if dialect == "postgresql" else sqlite).insert(NodeHold)


async def mark_unavailable(
    session: AsyncSession,
    *,
    node_id: str,
    reason: UnavailableReason,
    ref: str = "",
    message: str = "",
    now: datetime,
) -> bool:
    """Hold the node unavailable for `reason` (and `ref`, e.g. the fault id); False when that
    hold was already there. Holds of other reasons or refs are untouched."""
    statement = (
        _insert_hold(session)
        .values(node_id=node_id, reason=reason.value, ref=ref, message=message[:1024], created_at=now)
        .on_conflict_do_nothing(index_elements=["node_id", "reason", "ref"])
        .returning(NodeHold.node_id)
    )
    # RETURNING, not rowcount: asyncpg reports no reliable rowcount for INSERT ... ON CONFLICT.
    return (await session.execute(statement)).first() is not None


async def mark_available(
    session: AsyncSession, *, node_id: str, reason: UnavailableReason, ref: str = ""
) -> bool:
    """Clear one hold; the node stays unavailable while any other hold remains."""
    statement = delete(NodeHold).where(
        NodeHold.node_id == node_id, NodeHold.reason == reason.value, NodeHold.ref == ref
    )
    return _applied(await session.execute(statement))


# --- fault taints (the fault activities, through `db.fault_status`) -------------------------------


async def _taints_for_update(
    session: AsyncSession, node_id: str, now: datetime
) -> list[dict[str, str]] | None:
    """The node's taints, read by an UPDATE so the row stays locked until commit (SQLite starts
    its write transaction only at the first write; the API's PATCH and other faults write them
    too); None when the node is gone or being deleted."""
    statement = update(Node).where(_live(node_id)).values(updated_at=now).returning(Node.taints)
    row = (await session.execute(statement)).first()
    return None if row is None else [dict(t) for t in row[0]]


async def set_platform_taint(
    session: AsyncSession, *, node_id: str, key: str, effect: str, now: datetime
) -> bool:
    """Add (or re-set the effect of) a `primus-safe.` taint; False when the node is gone."""
    taints = await _taints_for_update(session, node_id, now)
    if taints is None:
        return False
    wanted = {"key": key, "value": "", "effect": effect}
    if wanted not in taints:
        taints = [t for t in taints if t.get("key") != key] + [wanted]
        await _set(session, Node.id == node_id, now, taints=taints)
    return True


async def clear_platform_taint(session: AsyncSession, *, node_id: str, key: str, now: datetime) -> bool:
    """Remove a taint by key; False when there was none (or the node is gone)."""
    taints = await _taints_for_update(session, node_id, now)
    if not taints or all(t.get("key") != key for t in taints):
        return False
    return await _set(session, Node.id == node_id, now, taints=[t for t in taints if t.get("key") != key])


# --- workspaces (the workspace workflow) --------------------------------------------------------


async def bind_workspace(
    session: AsyncSession,
    *,
    workspace_id: str,
    cluster_id: str,
    flavor_id: str,
    node_ids: Sequence[str],
    now: datetime,
) -> list[str]:
    """Bind nodes to a workspace, all or none: each must be live, in the workspace's cluster, of
    its flavor and serving no workspace (the expected state). Returns the ids that could not be
    bound; the caller rolls back then. Nodes already bound to this workspace count as bound (a retry)."""
    free = and_(
        Node.id.in_(node_ids),
        Node.deleting_at.is_(None),
        Node.cluster_id == cluster_id,
        Node.flavor_id == flavor_id,
        Node.workspace_id == "",
    )
    await session.execute(update(Node).where(free).values(workspace_id=workspace_id, updated_at=now))
    rows = await session.execute(
        select(Node.id).where(Node.id.in_(node_ids), Node.workspace_id == workspace_id)
    )
    bound = set(rows.scalars())
    return [n for n in node_ids if n not in bound]


async def unbind_workspace(
    session: AsyncSession, *, workspace_id: str, node_ids: Sequence[str] | None, now: datetime
) -> list[str]:
    """Unbind nodes from a workspace, all or none: each must be bound to `workspace_id` (the
    expected state); `None` unbinds every node of it. Returns the ids that were not bound to it;
    the caller rolls back then. Nodes already unbound count as unbound (a retry) only when they
    serve no workspace at all."""
    bound_here = Node.workspace_id == workspace_id
    if node_ids is None:
        await session.execute(update(Node).where(bound_here).values(workspace_id="", updated_at=now))
        return []
    rows = await session.execute(select(Node.id, Node.workspace_id).where(Node.id.in_(node_ids)))
    serving = {row[0]: row[1] for row in rows}
    refused = [n for n in node_ids if serving.get(n, "") not in (workspace_id, "")]
    await session.execute(
        update(Node).where(Node.id.in_(node_ids), bound_here).values(workspace_id="", updated_at=now)
    )
    return refused
