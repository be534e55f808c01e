"""Clusters: create, list, get, protect, delete, add/remove nodes, logs. Work runs in `cluster/<id>` and
`node-manage/<nodeId>` workflows; the API validates, records the request and starts them. Binding
nodes (claim) and their Managing/Unmanaging phases are set by those workflows' Updates, whose
answers the requests wait for: no route writes a status."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import (
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
)

from api.deps import SINCE_SECONDS_MAX, Admin, CurrentUser, Paging, Session, State
from api.routes.aliases import custom_router
from api.schemas.clusters import (
    ClusterDetail,
    ClusterItem,
    ClusterLogs,
    CreateClusterRequest,
    CreateClusterResponse,
    ManageNodesRequest,
    ManageNodesResponse,
    UpdateClusterRequest,
)
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.workflow_calls import AlreadyRunning, update_with_start
from db import clusters as db
from db import logs
from db import nodes as node_db
from db.clusters import Cluster
from db.nodes import Node
from db.secrets import Secret
from domain import clusters as rules
from domain.errors import Conflict, Invalid, NotFound, not_found
from domain.logs import LogResource, format_line
from domain.names import normalize_name
from domain.nodes import CLUSTER_BUSY_PHASES
from domain.timefmt import format_time, utcnow
from workflows.cluster import ClusterWorkflow, NodeManageWorkflow
from workflows.common import CLUSTER, PHASE, RESOURCE_ID, RESOURCE_TYPE, USER

router = APIRouter(tags=["clusters"], responses=ERROR_RESPONSES)

PREVIOUS_RUN_WAIT = 10.0
"""Seconds a join or leave waits for the node's previous node-manage run to complete."""


# --- views ---------------------------------------------------------------------------------------


def _phase(cluster: Cluster) -> str:
    return rules.DELETING if cluster.deleting_at is not None else cluster.phase


def cluster_item(cluster: Cluster) -> ClusterItem:
    """The list view of a cluster."""
    return ClusterItem(
        cluster_id=cluster.id,
        user_id=cluster.created_by,
        phase=_phase(cluster),
        is_protected=cluster.is_protected,
        creation_time=format_time(cluster.created_at),
    )


def cluster_detail(cluster: Cluster) -> ClusterDetail:
    """One cluster with its spec (never its kubeconfig)."""
    return ClusterDetail(
        **dict(cluster_item(cluster)),
        description=cluster.description,
        endpoint=cluster.endpoint,
        ssh_secret_id=cluster.ssh_secret_id,
        image_secret_id=cluster.image_secret_id,
        nodes=list(cluster.control_plane_nodes),
        kube_spray_image=cluster.kube_spray_image,
        kube_pods_subnet=cluster.kube_pods_subnet,
        kube_service_address=cluster.kube_service_address,
        kube_network_plugin=cluster.kube_network_plugin,
        kubernetes_version=cluster.kube_version,
        kube_api_server_args=dict(cluster.kube_api_server_args),
        labels=dict(cluster.labels),
        provisioner=cluster.provisioner,
        message=cluster.message,
        step=cluster.step,
    )


async def _get(session: Session, cluster_id: str) -> Cluster:
    cluster = await db.get_cluster(session, cluster_id=cluster_id)
    if cluster is None:
        raise not_found("Cluster", cluster_id)
    return cluster


# --- checks --------------------------------------------------------------------------------------


async def _check_secret(session: Session, secret_id: str, kind: str, field: str) -> None:
    secret = await session.get(Secret, secret_id)
    if secret is None:
        raise NotFound("Secret", secret_id)
    if secret.type != kind:
        raise Invalid(f"{field}: secret {secret_id} is of type {secret.type}, not {kind}")


async def _usable_node(session: Session, node_id: str) -> Node:
    """A registered node that is Ready, idle and in no cluster (the claim re-checks it)."""
    node = await node_db.get_node(session, node_id=node_id)
    if node is None:
        raise not_found("Node", node_id)
    refusal = rules.manage_refusal(node, cluster_id="", action="add")
    if refusal:
        raise Conflict(refusal)
    return node


def _check_transport(node: Node, provisioner: str, ssh_secret_id: str) -> None:
    """A remote node needs the cluster's SSH secret; a local node (this machine) needs none but
    only the `hosts` provisioner can use it."""
    if node.local and provisioner != "hosts":
        raise Invalid(
            f"the node({node.id}) is local: only the hosts provisioner can use it, not {provisioner}"
        )
    if not node.local and not ssh_secret_id:
        raise Invalid(f"sshSecretId: Field required (the node({node.id}) is reached over SSH)")


def _attributes(
    resource_type: str, resource_id: str, cluster_id: str, phase: str, user: str
) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, resource_type),
            SearchAttributePair(RESOURCE_ID, resource_id),
            SearchAttributePair(CLUSTER, cluster_id),
            SearchAttributePair(PHASE, phase),
            SearchAttributePair(USER, user),
        ]
    )


def _workflow_input(state: State, cluster: Cluster, *, create: bool) -> rules.ClusterWorkflowInput:
    return rules.ClusterWorkflowInput(
        cluster_id=cluster.id,
        provisioner=cluster.provisioner,
        ssh_queue=state.settings.queues.ssh,
        create=create,
        deleting=not create,
        timings=state.settings.cluster_timings(),
    )


# --- endpoints -----------------------------------------------------------------------------------


@router.post("/clusters", response_model=CreateClusterResponse, summary="Create a cluster (admin)")
async def create_cluster(
    body: CreateClusterRequest, caller: Admin, session: Session, state: State
) -> CreateClusterResponse:
    """Checks the nodes and secrets, records the cluster `Creating` and starts its workflow."""
    cluster_id = normalize_name(body.name)
    provisioner = body.provisioner or state.settings.cluster_provisioner
    if await db.get_cluster(session, cluster_id=cluster_id) is not None:
        raise Conflict(f"cluster {cluster_id} already exists")
    if body.ssh_secret_id is not None:
        await _check_secret(session, body.ssh_secret_id, "ssh", "sshSecretId")
    if body.image_secret_id:
        await _check_secret(session, body.image_secret_id, "image", "imageSecretId")
    for node_id in body.nodes:
        _check_transport(await _usable_node(session, node_id), provisioner, body.ssh_secret_id or "")
    now = utcnow()
    cluster = Cluster(
        id=cluster_id,
        description=body.description,
        labels=dict(body.labels),
        is_protected=body.is_protected,
        provisioner=provisioner,
        control_plane_nodes=list(body.nodes),
        ssh_secret_id=body.ssh_secret_id or "",
        image_secret_id=body.image_secret_id or "",
        kube_spray_image=body.kube_spray_image,
        kube_pods_subnet=body.kube_pods_subnet,
        kube_service_address=body.kube_service_address,
        kube_network_plugin=body.kube_network_plugin,
        kube_version=body.version,
        kube_api_server_args=dict(body.kube_api_server_args),
        phase=rules.CREATING,
        step="",
        message="",
        endpoint="",
        kubeconfig_encrypted="",
        work_dir="",
        created_by=caller.id,
        created_at=now,
        updated_at=now,
    )
    session.add(cluster)
    try:
        await session.flush()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"cluster {cluster_id} already exists") from exc
    lines = [
        f"cluster {cluster_id} requested by {caller.user.name}: provisioner {provisioner}, "
        f"control-plane nodes {', '.join(body.nodes)}"
    ]
    logs.add_lines(session, resource=LogResource.CLUSTER, resource_id=cluster_id, lines=lines, at=now)
    warning = rules.odd_count_warning(len(body.nodes))
    if warning:
        logs.add_lines(
            session,
            resource=LogResource.CLUSTER,
            resource_id=cluster_id,
            lines=[warning],
            at=now,
            level="WARN",
        )
    await session.commit()
    start = WithStartWorkflowOperation(
        ClusterWorkflow.run,
        _workflow_input(state, cluster, create=True),
        id=rules.cluster_workflow_id(cluster_id),
        task_queue=state.settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=_attributes("cluster", cluster_id, cluster_id, rules.CREATING, caller.id),
    )
    try:
        await update_with_start(state.temporal, ClusterWorkflow.claim, cluster_id, start)
    except AlreadyRunning as exc:
        await _undo_create(session, cluster_id)
        raise Conflict(f"cluster {cluster_id} is still being removed; try again shortly") from exc
    except Conflict:
        raise  # refused by the claim, which discarded the record
    except BaseException:
        await _undo_create(session, cluster_id)
        raise
    return CreateClusterResponse(cluster_id=cluster_id)


async def _undo_create(session: Session, cluster_id: str) -> None:
    """Remove the record a create wrote when its workflow could not start (nothing else was bound)."""
    await session.rollback()
    await db.discard_cluster(session, cluster_id=cluster_id)
    await session.commit()


@router.get("/clusters", response_model=ListResponse[ClusterItem], summary="List clusters")
async def list_clusters(_: CurrentUser, session: Session, page: Paging) -> ListResponse[ClusterItem]:
    """Every cluster, sorted by id (any authenticated user)."""
    total, clusters = await db.list_clusters(session, limit=page.limit, offset=page.offset)
    return ListResponse[ClusterItem](total_count=total, items=[cluster_item(c) for c in clusters])


@router.get("/clusters/{ClusterId}", response_model=ClusterDetail, summary="Get a cluster")
async def get_cluster(ClusterId: str, _: CurrentUser, session: Session) -> ClusterDetail:
    """One cluster (any authenticated user)."""
    return cluster_detail(await _get(session, ClusterId))


@router.patch("/clusters/{ClusterId}", response_model=None, summary="Protect or unprotect a cluster (admin)")
async def update_cluster(ClusterId: str, body: UpdateClusterRequest, _: Admin, session: Session) -> None:
    """Only `isProtected` changes."""
    cluster = await _get(session, ClusterId)
    if body.is_protected is not None:
        cluster.is_protected = body.is_protected
        cluster.updated_at = utcnow()
    await session.commit()


@custom_router.delete(
    "/clusters/{ClusterId}",
    response_model=None,
    operation_id="deleteClusterCustom",
    summary="Delete a cluster (admin; the documented /api/custom path)",
    responses=ERROR_RESPONSES,
)
@router.delete("/clusters/{ClusterId}", response_model=None, summary="Delete a cluster (admin)")
async def delete_cluster(ClusterId: str, caller: Admin, session: Session, state: State) -> None:
    """Refused while protected, while workloads run or while nodes join or leave; the workflow
    resets the cluster, unbinds its nodes and removes it."""
    cluster = await _get(session, ClusterId)
    if cluster.is_protected:
        raise Conflict(f"the cluster {cluster.id} is protected, it can not be deleted")
    if cluster.deleting_at is not None:
        return
    workloads = await db.running_workloads(session, cluster_id=cluster.id)
    if workloads:
        raise Conflict(f"some workloads are still in progress ({', '.join(workloads)}); terminate them first")
    busy = [
        n.id
        for n in await node_db.list_nodes(session, cluster_id=cluster.id)
        if n.phase in CLUSTER_BUSY_PHASES
    ]
    if busy:
        raise Conflict(f"nodes {', '.join(busy)} are joining or leaving the cluster; try again when done")
    cluster.deleting_at = utcnow()
    await session.commit()
    try:
        await state.temporal.start_workflow(
            ClusterWorkflow.run,
            _workflow_input(state, cluster, create=False),
            id=rules.cluster_workflow_id(cluster.id),
            task_queue=state.settings.queues.control,
            start_signal="delete",
            search_attributes=_attributes("cluster", cluster.id, cluster.id, rules.DELETING, caller.id),
        )
    except BaseException:
        cluster.deleting_at = None
        await session.commit()
        raise


@router.post(
    "/clusters/{ClusterId}/nodes", response_model=ManageNodesResponse, summary="Add or remove nodes (admin)"
)
async def manage_cluster_nodes(
    ClusterId: str, body: ManageNodesRequest, caller: Admin, session: Session, state: State
) -> ManageNodesResponse:
    """Every node is checked first (nothing starts when one is refused); each accepted node gets a
    `node-manage/<nodeId>` workflow. Nodes already where they should be count as done."""
    cluster = await _get(session, ClusterId)
    if cluster.deleting_at is not None or cluster.phase != rules.READY:
        raise Conflict(f"the cluster {cluster.id} is not ready (phase {_phase(cluster)})")
    adding = body.action == "add"
    todo: list[str] = []  # nodes to join (or join again after a failure) or to leave
    done = 0  # nodes already where they should be
    for node_id in body.node_ids:
        node = await node_db.get_node(session, node_id=node_id)
        if node is None:
            raise not_found("Node", node_id)
        in_place = (
            node.cluster_id == cluster.id and node.phase not in (rules.MANAGED_FAILED, *CLUSTER_BUSY_PHASES)
            if adding
            else not node.cluster_id
        )
        if in_place:
            done += 1
            continue
        refusal = rules.manage_refusal(node, cluster_id=cluster.id, action=body.action)
        if refusal:
            raise Conflict(refusal)
        if adding:
            _check_transport(node, cluster.provisioner, cluster.ssh_secret_id)
        todo.append(node_id)
    if not todo:
        return ManageNodesResponse(total_count=len(body.node_ids), success_count=done)
    line = f"{body.action} nodes {', '.join(todo)}"
    logs.add_lines(session, resource=LogResource.CLUSTER, resource_id=cluster.id, lines=[line], at=utcnow())
    await session.commit()
    started = await _start_node_workflows(state, cluster, todo, body.action, caller.id)
    return ManageNodesResponse(total_count=len(body.node_ids), success_count=done + started)


async def _start_node_workflows(
    state: State, cluster: Cluster, node_ids: list[str], action: rules.NodeAction, user: str
) -> int:
    """Start one node-manage workflow per node, all at once, each answering whether its node
    started to join or leave. Returns how many did; when none did, the first refusal is the answer."""

    async def begin(node_id: str) -> None:
        params = rules.NodeManageInput(
            node_id=node_id,
            cluster_id=cluster.id,
            action=action,
            provisioner=cluster.provisioner,
            ssh_queue=state.settings.queues.ssh,
            timings=state.settings.cluster_timings(),
        )
        workflow_id = rules.node_manage_workflow_id(node_id)
        for attempt in range(2):
            start = WithStartWorkflowOperation(
                NodeManageWorkflow.run,
                params,
                id=workflow_id,
                task_queue=state.settings.queues.control,
                id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
                search_attributes=_attributes(
                    "node-manage",
                    node_id,
                    cluster.id,
                    rules.MANAGING if action == "add" else rules.UNMANAGING,
                    user,
                ),
            )
            try:
                await update_with_start(state.temporal, NodeManageWorkflow.begin, params, start)
                return
            except AlreadyRunning as exc:
                if attempt:
                    raise Conflict(f"the node({node_id}) is already joining or leaving a cluster") from exc
            # The node is not joining or leaving (checked above), so its last run has recorded
            # its outcome and is only completing: wait for that, then start the new one.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    state.temporal.get_workflow_handle(workflow_id).result(), PREVIOUS_RUN_WAIT
                )

    outcomes = await asyncio.gather(*(begin(n) for n in node_ids), return_exceptions=True)
    failures = [o for o in outcomes if isinstance(o, BaseException)]
    started = len(outcomes) - len(failures)
    unexpected = [f for f in failures if not isinstance(f, Conflict)]
    if unexpected:
        raise unexpected[0]
    if failures and not started:
        raise failures[0]
    return started


@router.get("/clusters/{ClusterId}/logs", response_model=ClusterLogs, summary="Cluster log (admin)")
async def get_cluster_logs(
    ClusterId: str,
    _: Admin,
    session: Session,
    tail_lines: Annotated[int, Query(alias="tailLines", ge=1, le=100000)] = 1000,
    since_seconds: Annotated[int | None, Query(alias="sinceSeconds", ge=1, le=SINCE_SECONDS_MAX)] = None,
) -> ClusterLogs:
    """What creating, changing and tearing down the cluster printed (provisioner output included)."""
    cluster = await _get(session, ClusterId)
    since = utcnow() - timedelta(seconds=since_seconds) if since_seconds else None
    lines = await logs.tail(
        session, resource=LogResource.CLUSTER, resource_id=cluster.id, count=tail_lines, since=since
    )
    return ClusterLogs(
        cluster_id=cluster.id,
        pod_id=rules.cluster_workflow_id(cluster.id),
        logs=[format_line(line.created_at, line.level, line.line) for line in lines],
    )
