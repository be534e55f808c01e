"""Nodes: register, list, get, patch, delete, logs. Onboarding runs in the `node/<id>` workflow."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from datetime import timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError, OperationalError
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.deps import OFFSET_MAX, SINCE_SECONDS_MAX, Admin, Caller, CurrentUser, LimitOrAll, Session, State
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.nodes import (
    CreateNodeRequest,
    CreateNodeResponse,
    NodeBrief,
    NodeDetail,
    NodeItem,
    NodeLogs,
    NodeWorkloadRef,
    TaintView,
    UpdateNodeRequest,
    WorkspaceRef,
)
from db import logs
from db import nodes as db
from db import workspaces as workspace_db
from db.faults import open_taint_keys
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node
from db.scheduling import NodeUse, usage_on_nodes
from db.secrets import Secret
from domain import nodes as rules
from domain.errors import Conflict, Forbidden, Invalid, NotFound, not_found
from domain.logs import LogResource, format_line
from domain.node_flavors import FlavorSpec, available_resources, total_resources
from domain.timefmt import format_time, utcnow
from workflows.common import PHASE, RESOURCE_ID, RESOURCE_TYPE, USER
from workflows.node import NodeWorkflow, NodeWorkflowInput, workflow_id

router = APIRouter(tags=["nodes"], responses=ERROR_RESPONSES)

DEFAULT_LIMIT = 100
INSERT_ATTEMPTS = 6


# --- views ---------------------------------------------------------------------------------------


def _resources(
    state: State, flavor: NodeFlavor | None, uses: Sequence[NodeUse] = ()
) -> tuple[dict[str, int], dict[str, int]]:
    """Total resources, and what is left after the system reserve and the admitted workloads."""
    if flavor is None:
        return {}, {}
    spec = FlavorSpec.model_validate(flavor.spec)
    avail = available_resources(spec, state.settings.reserve_percents())
    for use in uses:
        avail = {name: amount - use.resources.get(name, 0) for name, amount in avail.items()}
    return total_resources(spec), avail


def _available(node: Node) -> tuple[bool, str]:
    available, reason = rules.availability(
        phase=node.phase,
        step=node.step,
        facts_problem=node.facts_problem,
        addons_installed=node.is_addons_installed,
        taints=node.taints,
        holds=node.hold_list(),
    )
    if not available and node.message and not node.step:
        reason = node.message
    return available, reason


def node_item(
    state: State,
    node: Node,
    flavor: NodeFlavor | None,
    workspace_name: str = "",
    uses: Sequence[NodeUse] = (),
) -> NodeItem:
    """The full list view of a node (`workspace_name`: the display name of its workspace; `uses`:
    what admitted workloads hold on it)."""
    total, avail = _resources(state, flavor, uses)
    available, message = _available(node)
    return NodeItem(
        node_id=node.id,
        node_name=node.node_name,
        internal_ip=node.private_ip,
        cluster_id=node.cluster_id,
        workspace=WorkspaceRef(id=node.workspace_id, name=workspace_name or node.workspace_id),
        phase=node.phase,
        available=available,
        message=message,
        total_resources=total,
        avail_resources=avail,
        creation_time=format_time(node.created_at),
        workloads=[
            NodeWorkloadRef(id=u.workload_id, user_id=u.user_id, workspace_id=u.workspace_id) for u in uses
        ],
        is_control_plane=node.is_control_plane,
        is_addons_installed=node.is_addons_installed,
    )


def node_detail(
    state: State,
    node: Node,
    flavor: NodeFlavor | None,
    workspace_name: str = "",
    uses: Sequence[NodeUse] = (),
) -> NodeDetail:
    """One node with its spec; taint keys shown without the system prefix."""
    return NodeDetail(
        **dict(node_item(state, node, flavor, workspace_name, uses)),
        flavor_id=node.flavor_id,
        template_id=node.template_id,
        taints=[
            TaintView(
                key=t["key"].removeprefix(rules.TAINT_PREFIX), value=t.get("value", ""), effect=t["effect"]
            )
            for t in node.taints
        ],
        customer_labels=dict(node.labels),
        last_startup_time=format_time(node.boot_time),
        public_ip=node.public_ip,
        port=node.port,
        ssh_secret_id=node.ssh_secret_id,
        host_key_fingerprint=node.host_key_fingerprint,
        local=node.local,
        phase_changed_time=format_time(node.phase_changed_at),
        last_probe_time=format_time(node.last_probe_at),
    )


async def _usable(session: Session, caller: Caller) -> list[str]:
    """The workspaces a non-admin caller may use (granted, managed, default)."""
    return await workspace_db.accessible_ids(session, user_id=caller.id, granted=caller.user.workspaces)


async def can_see(session: Session, caller: Caller, node: Node) -> bool:
    """Admins see every node; others the nodes bound to one of the workspaces they may use."""
    if caller.is_admin:
        return True
    return bool(node.workspace_id) and node.workspace_id in await _usable(session, caller)


async def _visible(session: Session, caller: Caller, node_id: str) -> Node:
    node = await db.get_node(session, node_id=node_id)
    if node is None or not await can_see(session, caller, node):
        raise not_found("Node", node_id)
    return node


# --- references ----------------------------------------------------------------------------------


async def _check_references(
    session: Session, *, flavor_id: str | None, template_id: str | None, secret_id: str | None
) -> None:
    """404 naming the missing flavor, template or secret; 400 for a secret that is not ssh."""
    if flavor_id is not None and await session.get(NodeFlavor, flavor_id) is None:
        raise NotFound("NodeFlavor", flavor_id)
    if template_id is not None and await session.get(NodeTemplate, template_id) is None:
        raise NotFound("NodeTemplate", template_id)
    if secret_id is not None:
        secret = await session.get(Secret, secret_id)
        if secret is None:
            raise NotFound("Secret", secret_id)
        if secret.type != "ssh":
            raise Invalid(f"sshSecretId: secret {secret_id} is of type {secret.type}, not ssh")


async def _check_local(session: Session, state: State, body: CreateNodeRequest) -> None:
    """A local node runs commands as the worker's user on the worker's machine: only the embedded
    platform (`primus-safe up`, dev mode) has its worker here, and only one such node exists."""
    if not state.settings.dev_mode:
        raise Invalid(
            "local: local nodes exist only under `primus-safe up`, whose worker runs on this machine"
        )
    if body.hostname:
        raise Invalid("hostname: a local node keeps this machine's host name")
    if body.ssh_secret_id is not None:
        raise Invalid("sshSecretId: a local node is reached without SSH")
    if await db.get_node(session, node_id=rules.LOCAL_NODE_ID, include_deleting=True) is not None:
        raise Conflict(f"the local node {rules.LOCAL_NODE_ID} already exists")


async def _check_ip_free(session: Session, private_ip: str, node_id: str | None = None) -> None:
    other = await db.get_node_by_ip(session, private_ip=private_ip)
    if other is not None and other.id != node_id:
        raise Conflict(f"node {other.id} already has privateIP {private_ip}")


# --- workflow ------------------------------------------------------------------------------------


async def _tell_workflow(
    state: State, node: Node, *, start_from: rules.Step | None, signal: str, arg: Any = None
) -> None:
    """Signal the node's workflow, starting it if it is not running (signal-with-start)."""
    await state.temporal.start_workflow(
        NodeWorkflow.run,
        NodeWorkflowInput(
            node_id=node.id,
            ssh_queue=state.settings.queues.ssh,
            start_from=start_from,
            deleting=signal == "delete",
            timings=state.settings.node_timings(),
        ),
        id=workflow_id(node.id),
        task_queue=state.settings.queues.control,
        start_signal=signal,
        start_signal_args=[] if arg is None else [arg],
        search_attributes=_attributes(node),
    )


def _attributes(node: Node, phase: str = "Pending") -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "node"),
            SearchAttributePair(RESOURCE_ID, node.id),
            SearchAttributePair(PHASE, phase),
            SearchAttributePair(USER, node.created_by),
        ]
    )


async def _insert(session: Session, node: Node) -> None:
    """Insert the node; 409 for a taken IP. SQLite may report the database locked while many
    nodes onboard at once: the insert is retried a few times before giving up.

    The checks' read transaction ends first (the unique IP keeps the check honest): on SQLite
    a transaction holding a read snapshot cannot become the writer once another process (the
    worker) has written since, and fails at once instead of waiting for the lock."""
    await session.commit()
    for attempt in range(INSERT_ATTEMPTS):
        session.add(node)
        try:
            await session.commit()
            return
        except IntegrityError as exc:
            await session.rollback()
            await _check_ip_free(session, node.private_ip)  # names the node that has it
            raise Conflict(f"a node with privateIP {node.private_ip} already exists") from exc
        except OperationalError as exc:
            await session.rollback()
            if "locked" not in str(exc) or attempt == INSERT_ATTEMPTS - 1:
                raise
            await asyncio.sleep(0.1 * 2**attempt)


# --- endpoints -----------------------------------------------------------------------------------


@router.post("/nodes", response_model=CreateNodeResponse, summary="Register a node (admin)")
async def create_node(
    body: CreateNodeRequest, caller: Admin, session: Session, state: State
) -> CreateNodeResponse:
    """Checks the references, records the node and starts its onboarding workflow."""
    if body.local:
        await _check_local(session, state, body)
    elif body.ssh_secret_id is None:
        raise Invalid("sshSecretId: Field required (only a local node has none)")
    await _check_references(
        session, flavor_id=body.flavor_id, template_id=body.template_id, secret_id=body.ssh_secret_id
    )
    now = utcnow()  # a taken privateIP is the unique key's 409 (_insert): no query before it
    node = Node(
        id=rules.LOCAL_NODE_ID if body.local else rules.new_node_id(body.hostname, body.private_ip),
        hostname=body.hostname or "",
        node_name=rules.LOCAL_NODE_ID if body.local else body.hostname or body.private_ip,
        private_ip=body.private_ip,
        public_ip=body.public_ip or "",
        port=body.port,
        labels=dict(body.labels or {}),
        taints=[],
        flavor_id=body.flavor_id,
        template_id=body.template_id,
        ssh_secret_id=body.ssh_secret_id or "",
        local=body.local,
        cluster_id="",
        workspace_id="",
        is_control_plane=False,
        phase="",
        step="reach",
        message="",
        addons_done=[],
        created_by=caller.id,
        created_at=now,
        updated_at=now,
    )
    await _insert(session, node)
    try:
        await state.temporal.start_workflow(
            NodeWorkflow.run,
            NodeWorkflowInput(
                node_id=node.id, ssh_queue=state.settings.queues.ssh, timings=state.settings.node_timings()
            ),
            id=workflow_id(node.id),
            task_queue=state.settings.queues.control,
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            search_attributes=_attributes(node, rules.STEP_TITLES["reach"]),  # its first step
        )
    except Exception:
        await session.delete(node)
        await session.commit()
        raise
    return CreateNodeResponse(node_id=node.id)


@router.get("/nodes", response_model=ListResponse[NodeItem] | ListResponse[NodeBrief])
async def list_nodes(
    caller: CurrentUser,
    session: Session,
    state: State,
    cluster_id: Annotated[str | None, Query(alias="clusterId", max_length=63)] = None,
    workspace_id: Annotated[str | None, Query(alias="workspaceId", max_length=63)] = None,
    flavor_id: Annotated[str | None, Query(alias="flavorId", max_length=63)] = None,
    node_id: Annotated[str | None, Query(alias="nodeId", max_length=63)] = None,
    available: bool | None = None,
    phase: Annotated[str | None, Query(max_length=256, description="Comma-separated phases")] = None,
    is_addons_installed: Annotated[bool | None, Query(alias="isAddonsInstalled")] = None,
    brief: bool = False,
    offset: Annotated[int, Query(ge=0, le=OFFSET_MAX)] = 0,
    limit: Annotated[LimitOrAll, Query(description="Page size, 1..10000; -1 = all")] = DEFAULT_LIMIT,
) -> ListResponse[NodeItem] | ListResponse[NodeBrief]:
    """Nodes the caller may see, sorted by id; "" for clusterId/workspaceId means unbound nodes."""
    wanted = {p.strip() for p in phase.split(",") if p.strip()} if phase else set()
    if node_id:
        nodes = [await _visible(session, caller, node_id)]
    else:
        nodes = await db.list_nodes(
            session,
            cluster_id=cluster_id,
            workspace_id=workspace_id,
            flavor_id=flavor_id,
            workspaces=None if caller.is_admin else await _usable(session, caller),
            phases=sorted(wanted) if wanted else None,
        )
    if node_id:
        nodes = [
            n
            for n in nodes
            if (cluster_id is None or n.cluster_id == cluster_id)
            and (workspace_id is None or n.workspace_id == workspace_id)
            and (not flavor_id or n.flavor_id == flavor_id)
        ]
    if wanted:
        nodes = [n for n in nodes if n.phase in wanted]  # (also for the nodeId lookup)
    if is_addons_installed is not None:
        nodes = [n for n in nodes if n.is_addons_installed == is_addons_installed]
    if available is not None:
        nodes = [n for n in nodes if _available(n)[0] == available]
    page = nodes[offset:] if limit == -1 else nodes[offset : offset + limit]
    if brief:
        return ListResponse[NodeBrief](
            total_count=len(nodes),
            items=[NodeBrief(node_id=n.id, node_name=n.node_name, internal_ip=n.private_ip) for n in page],
        )
    flavors = {f: await session.get(NodeFlavor, f) for f in {n.flavor_id for n in page}}
    names = await workspace_db.names(session, sorted({n.workspace_id for n in page if n.workspace_id}))
    usage = await usage_on_nodes(session, page)
    return ListResponse[NodeItem](
        total_count=len(nodes),
        items=[
            node_item(state, n, flavors[n.flavor_id], names.get(n.workspace_id, ""), usage.get(n.id, ()))
            for n in page
        ],
    )


@router.get("/nodes/{NodeId}", response_model=NodeDetail)
async def get_node(NodeId: str, caller: CurrentUser, session: Session, state: State) -> NodeDetail:
    """One node; nodes outside the caller's workspaces are reported missing."""
    node = await _visible(session, caller, NodeId)
    names = await workspace_db.names(session, [node.workspace_id] if node.workspace_id else [])
    usage = await usage_on_nodes(session, [node])
    return node_detail(
        state,
        node,
        await session.get(NodeFlavor, node.flavor_id),
        names.get(node.workspace_id, ""),
        usage.get(node.id, ()),
    )


@router.patch("/nodes/{NodeId}", response_model=None)
async def update_node(
    NodeId: str, body: UpdateNodeRequest, caller: CurrentUser, session: Session, state: State
) -> None:
    """Partial update. Members of the node's workspace may change taints and labels; admins anything."""
    node = await _visible(session, caller, NodeId)
    admin_fields = body.model_fields_set - {"taints", "labels"}
    if admin_fields and not caller.is_admin:
        raise Forbidden("only a system administrator may change a node's flavor, template, address or secret")
    await _check_references(
        session, flavor_id=body.flavor_id, template_id=body.template_id, secret_id=body.ssh_secret_id
    )
    restart: rules.Step | None = None
    if body.private_ip is not None and body.private_ip != node.private_ip:
        await _check_ip_free(session, body.private_ip, node.id)
        node.private_ip, restart = body.private_ip, "reach"
    if body.port is not None and body.port != node.port:
        node.port, restart = body.port, "reach"
    if body.ssh_secret_id is not None and body.ssh_secret_id != node.ssh_secret_id:
        node.ssh_secret_id, restart = body.ssh_secret_id, "reach"
    if body.host_key_fingerprint is not None and node.host_key_fingerprint:
        node.host_key_fingerprint, restart = "", "reach"
    if body.flavor_id is not None and body.flavor_id != node.flavor_id:
        node.flavor_id, restart = body.flavor_id, restart or "facts"
    if body.template_id is not None and body.template_id != node.template_id:
        node.template_id, restart = body.template_id, restart or "addons"
    if body.labels is not None:
        node.labels = dict(body.labels)
    if body.taints is not None:
        given = [
            {"key": rules.TAINT_PREFIX + t.key, "value": t.value, "effect": t.effect} for t in body.taints
        ]
        owned = await open_taint_keys(session, node_id=node.id)  # faults' taints go with their stop
        node.taints = [t for t in node.taints if t["key"] in owned] + [
            t for t in given if t["key"] not in owned
        ]
    node.updated_at = utcnow()
    try:
        await session.commit()
    except IntegrityError as exc:
        raise Conflict(f"a node with privateIP {body.private_ip} already exists") from exc
    if restart is not None:
        await _tell_workflow(state, node, start_from=None, signal="reconfigure", arg=restart)


@router.delete("/nodes/{NodeId}", response_model=None)
async def delete_node(NodeId: str, _: Admin, session: Session, state: State) -> None:
    """Refused while the node is bound to a cluster; the workflow stops any step and removes it."""
    node = await db.get_node(session, node_id=NodeId)
    if node is None:
        raise not_found("Node", NodeId)
    if node.is_control_plane:
        raise Forbidden(f"node {node.id} is a control-plane node and cannot be deleted")
    if node.cluster_id:
        raise Conflict(f"The node is bound to cluster {node.cluster_id} and needs to be unmanaged first")
    node.deleting_at = utcnow()
    await session.commit()
    await _tell_workflow(state, node, start_from=None, signal="delete")


@router.get("/nodes/{NodeId}/logs", response_model=NodeLogs)
async def get_node_logs(
    NodeId: str,
    _: Admin,
    session: Session,
    tail_lines: Annotated[int, Query(alias="tailLines", ge=1, le=100000)] = 1000,
    since_seconds: Annotated[int | None, Query(alias="sinceSeconds", ge=1, le=SINCE_SECONDS_MAX)] = None,
) -> NodeLogs:
    """What the node's operations printed: steps, command output, addon output, probe verdicts."""
    node = await db.get_node(session, node_id=NodeId)
    if node is None:
        raise not_found("Node", NodeId)
    since = utcnow() - timedelta(seconds=since_seconds) if since_seconds else None
    lines = await logs.tail(
        session, resource=LogResource.NODE, resource_id=node.id, count=tail_lines, since=since
    )
    return NodeLogs(
        cluster_id=node.cluster_id,
        node_id=node.id,
        pod_id=workflow_id(node.id),
        logs=[format_line(line.created_at, line.level, line.line) for line in lines],
    )
