"""Workspaces: create, list, get (live quotas), patch, delete, add/remove nodes. Work runs in the
`workspace/<id>` workflow; the API validates, authorises, records the request and starts or
updates it. Node bindings and the phase are written by that workflow's activities: the create
and node requests wait for its `claim`/`nodes` update's verdict, no route writes a status."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Annotated, Literal

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.deps import Admin, Caller, CurrentUser, Session, State
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.workspace_queue import QueuedItem, WorkspaceQueue
from api.schemas.workspaces import (
    CreateWorkspaceRequest,
    CreateWorkspaceResponse,
    ManagerRef,
    UpdateWorkspaceRequest,
    VolumeSpec,
    VolumeView,
    WorkspaceDetail,
    WorkspaceItem,
    WorkspaceNodesRequest,
)
from api.workflow_calls import AlreadyRunning, tell_scheduler, update_running, update_with_start
from db import clusters as cluster_db
from db import nodes as node_db
from db import workspaces as db
from db.node_flavors import NodeFlavor
from db.nodes import Node
from db.scheduling import entries_of, scheduler_nodes
from db.secrets import Secret
from db.users import User
from db.workspaces import Workspace, WorkspaceImageSecret, WorkspaceManager
from domain import workspaces as rules
from domain.clusters import READY as CLUSTER_READY
from domain.errors import Conflict, Forbidden, Invalid, NotFound, not_found
from domain.node_flavors import FlavorSpec, total_resources
from domain.scheduling import ADMITTED, QUEUED, free_resources
from domain.timefmt import format_time, utcnow
from domain.workloads import WorkspaceVolume
from workflows.common import CLUSTER, PHASE, RESOURCE_ID, RESOURCE_TYPE, USER, WORKSPACE
from workflows.workspace import WorkspaceWorkflow

router = APIRouter(tags=["workspaces"], responses=ERROR_RESPONSES)

Access = Literal["admin", "manager", "member", ""]


# --- access --------------------------------------------------------------------------------------


async def access(session: Session, caller: Caller, workspace: Workspace) -> Access:
    """What the caller is to the workspace: admin, manager, member (granted or default), or nothing."""
    if caller.is_admin:
        return "admin"
    if caller.id in workspace.manager_ids:
        return "manager"
    if workspace.is_default or workspace.id in caller.user.workspaces:
        return "member"
    return ""


async def visible_workspace(session: Session, caller: Caller, workspace_id: str) -> tuple[Workspace, Access]:
    """The workspace and the caller's access; workspaces the caller may not use are reported missing."""
    workspace = await db.get_workspace(session, workspace_id=workspace_id)
    role = await access(session, caller, workspace) if workspace is not None else ""
    if workspace is None or not role:
        raise not_found("Workspace", workspace_id)
    return workspace, role


async def _managing(session: Session, caller: Caller, workspace_id: str, verb: str) -> Workspace:
    """The workspace, when the caller manages it or is an admin; 403 for mere members."""
    workspace, role = await visible_workspace(session, caller, workspace_id)
    if role not in ("admin", "manager"):
        raise Forbidden(f"The user is not allowed to {verb} workspace")
    return workspace


# --- views ---------------------------------------------------------------------------------------


def _flavor_resources(flavor: NodeFlavor | None) -> dict[str, int]:
    return total_resources(FlavorSpec.model_validate(flavor.spec)) if flavor is not None else {}


async def admitted_pods(session: Session, workspace: Workspace) -> list[rules.AdmittedPod]:
    """The pods of the workspace's admitted workloads with their placement and request."""
    return [
        rules.AdmittedPod(
            workload_id=e.workload_id, node_id=pod["node_id"], request=dict(pod.get("resources", {}))
        )
        for e in await entries_of(session, workspace_id=workspace.id)
        if e.state == ADMITTED
        for pod in e.placement
    ]


async def _quota(session: Session, workspace: Workspace) -> rules.WorkspaceQuota:
    nodes = await db.bound_nodes(session, workspace_id=workspace.id)
    flavors: dict[str, dict[str, int]] = {}
    for flavor_id in {n.flavor_id for n in nodes}:
        flavors[flavor_id] = _flavor_resources(await session.get(NodeFlavor, flavor_id))
    bound = [
        rules.BoundNode(node_id=n.id, resources=flavors[n.flavor_id], available=n.availability()[0])
        for n in nodes
    ]
    return rules.quota(workspace.replica, bound, await admitted_pods(session, workspace))


async def _managers(session: Session, workspace: Workspace) -> list[ManagerRef]:
    refs = []
    for user_id in workspace.manager_ids:
        user = await session.get(User, user_id)
        if user is not None and user.deleting_at is None:
            refs.append(ManagerRef(id=user.id, name=user.name))
    return refs


def _volume_view(volume: WorkspaceVolume) -> VolumeView:
    return VolumeView(
        type=volume.type,
        mount_path=volume.mount_path,
        host_path=volume.host_path,
        sub_path=volume.sub_path,
        access_mode=volume.access_mode,
        capacity=volume.capacity,
        selector=dict(volume.selector),
        storage_class=volume.storage_class,
    )


async def workspace_item(
    session: Session, workspace: Workspace, quota: rules.WorkspaceQuota
) -> WorkspaceItem:
    """The list view of a workspace (node counts from live state)."""
    return WorkspaceItem(
        workspace_id=workspace.id,
        workspace_name=workspace.name,
        cluster_id=workspace.cluster_id,
        flavor_id=workspace.flavor_id,
        user_id=workspace.created_by,
        target_node_count=quota.target_node_count,
        current_node_count=quota.current_node_count,
        abnormal_node_count=quota.abnormal_node_count,
        phase=rules.display_phase(
            workspace.phase,
            deleting=workspace.deleting_at is not None,
            current_nodes=quota.current_node_count,
            abnormal_nodes=quota.abnormal_node_count,
        ),
        message=workspace.message,
        creation_time=format_time(workspace.created_at),
        description=workspace.description,
        queue_policy=workspace.queue_policy,
        scopes=list(workspace.scopes),
        volumes=[_volume_view(v) for v in workspace.volume_list()],
        enable_preempt=workspace.enable_preempt,
        managers=await _managers(session, workspace),
        is_default=workspace.is_default,
    )


async def workspace_detail(session: Session, workspace: Workspace) -> WorkspaceDetail:
    """One workspace with its quotas, computed from the bound nodes and admitted workloads now."""
    quota = await _quota(session, workspace)
    item = await workspace_item(session, workspace, quota)
    return WorkspaceDetail(
        **dict(item),
        total_quota=quota.total,
        avail_quota=quota.avail,
        used_quota=quota.used,
        abnormal_quota=quota.abnormal,
        used_node_count=quota.used_node_count,
        image_secret_ids=workspace.image_secret_ids,
    )


# --- checks --------------------------------------------------------------------------------------


async def _check_managers(session: Session, user_ids: Sequence[str]) -> None:
    for user_id in user_ids:
        user = await session.get(User, user_id)
        if user is None or user.deleting_at is not None:
            raise NotFound("User", user_id)


async def _image_secrets(session: Session, secret_ids: Sequence[str]) -> list[str]:
    """The requested image secrets (each must exist and be of type image) plus every secret
    bound to all workspaces."""
    for secret_id in secret_ids:
        secret = await session.get(Secret, secret_id)
        if secret is None:
            raise NotFound("Secret", secret_id)
        if secret.type != "image":
            raise Invalid(f"imageSecretIds: secret {secret_id} is of type {secret.type}, not image")
    return sorted({*secret_ids, *await db.image_secrets_bound_to_all(session)})


def _volumes(specs: Sequence[VolumeSpec], existing: Sequence[WorkspaceVolume] = ()) -> list[WorkspaceVolume]:
    try:
        return rules.resolve_volumes([s.as_request() for s in specs], existing)
    except rules.VolumeError as exc:
        raise Invalid(str(exc)) from exc


async def _check_flavor(session: Session, cluster_id: str, flavor_id: str) -> None:
    """404 for an unknown flavor; 400 for a flavor whose nodes are all in other clusters."""
    if await session.get(NodeFlavor, flavor_id) is None:
        raise NotFound("NodeFlavor", flavor_id)
    clusters = {n.cluster_id for n in await node_db.list_nodes(session, flavor_id=flavor_id) if n.cluster_id}
    if clusters and cluster_id not in clusters:
        raise Invalid(
            f"flavor {flavor_id} belongs to cluster {', '.join(sorted(clusters))}, not {cluster_id}: "
            "none of its nodes is in this cluster"
        )


async def _check_free(session: Session, workspace: Workspace, wanted: int) -> None:
    """409 with the counts when fewer than `wanted` free available nodes exist (the claim re-checks)."""
    if wanted <= 0:
        return
    free = [
        n
        for n in await db.free_nodes(session, cluster_id=workspace.cluster_id, flavor_id=workspace.flavor_id)
        if n.availability()[0]
    ]
    if len(free) >= wanted:
        return
    of_flavor = await node_db.list_nodes(
        session, cluster_id=workspace.cluster_id, flavor_id=workspace.flavor_id
    )
    elsewhere = sum(1 for n in of_flavor if n.workspace_id and n.workspace_id != workspace.id)
    raise Conflict(
        rules.shortage_message(
            flavor_id=workspace.flavor_id,
            cluster_id=workspace.cluster_id,
            wanted=wanted,
            free=len(free),
            of_flavor=len(of_flavor),
            in_other_workspaces=elsewhere,
        )
    )


# --- workflow ------------------------------------------------------------------------------------


def _attributes(workspace: Workspace, phase: str, user: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "workspace"),
            SearchAttributePair(RESOURCE_ID, workspace.id),
            SearchAttributePair(WORKSPACE, workspace.id),
            SearchAttributePair(CLUSTER, workspace.cluster_id),
            SearchAttributePair(PHASE, phase),
            SearchAttributePair(USER, user),
        ]
    )


def _workflow_input(state: State, workspace: Workspace, *, create: bool) -> rules.WorkspaceWorkflowInput:
    return rules.WorkspaceWorkflowInput(
        workspace_id=workspace.id, io_queue=state.settings.queues.ssh, create=create, deleting=not create
    )


async def _change_nodes(state: State, workspace: Workspace, change: rules.NodesChange) -> rules.NodesChanged:
    handle = state.temporal.get_workflow_handle(rules.workspace_workflow_id(workspace.id))
    changed: rules.NodesChanged = await update_running(
        handle,
        WorkspaceWorkflow.nodes,
        change,
        not_running=f"the workspace {workspace.id} is not running; try again shortly",
    )
    return changed


async def _tell_scheduler(state: State, workspace_id: str, reason: str) -> None:
    """The queue's capacity or rules changed: `workspace-scheduler/<id>` runs a cycle (and
    starts, with the workspace's first change)."""
    await tell_scheduler(
        state.temporal,
        workspace_id=workspace_id,
        reason=reason,
        task_queue=state.settings.queues.control,
        period_seconds=state.settings.scheduler_period_seconds,
    )


async def _reconfigure(state: State, workspace: Workspace) -> None:
    handle = state.temporal.get_workflow_handle(rules.workspace_workflow_id(workspace.id))
    await handle.signal(WorkspaceWorkflow.reconfigure)


# --- endpoints -----------------------------------------------------------------------------------


@router.post("/workspaces", response_model=CreateWorkspaceResponse, summary="Create a workspace (admin)")
async def create_workspace(
    body: CreateWorkspaceRequest, caller: Admin, session: Session, state: State
) -> CreateWorkspaceResponse:
    """Checks every reference and that `replica` free nodes exist, records the workspace
    `Creating` and starts its workflow, whose claim binds the nodes (or refuses: nothing stays)."""
    workspace_id = rules.workspace_id(body.cluster_id, body.name)
    if workspace_id in rules.RESERVED_IDS:
        raise Invalid(f"the workspace id {workspace_id} is reserved")
    cluster = await cluster_db.get_cluster(session, cluster_id=body.cluster_id)
    if cluster is None:
        raise not_found("Cluster", body.cluster_id)
    if cluster.deleting_at is not None or cluster.phase != CLUSTER_READY:
        raise Conflict(f"the cluster {cluster.id} is not ready (phase {cluster.phase})")
    await _check_flavor(session, cluster.id, body.flavor_id)
    await _check_managers(session, body.managers)
    secrets = await _image_secrets(session, body.image_secret_ids)
    volumes = _volumes(body.volumes)
    if await db.get_workspace(session, workspace_id=workspace_id) is not None:
        raise Conflict(f"workspace {workspace_id} already exists")
    now = utcnow()
    workspace = Workspace(
        id=workspace_id,
        name=body.name,
        cluster_id=cluster.id,
        flavor_id=body.flavor_id,
        description=body.description,
        replica=body.replica,
        queue_policy=body.queue_policy,
        scopes=rules.default_scopes(body.scopes),
        volumes=[v.model_dump() for v in volumes],
        enable_preempt=body.enable_preempt,
        is_default=body.is_default,
        phase=rules.CREATING,
        message="",
        created_by=caller.id,
        created_at=now,
        updated_at=now,
        managers=[WorkspaceManager(workspace_id=workspace_id, user_id=u) for u in body.managers],
        image_secrets=[WorkspaceImageSecret(workspace_id=workspace_id, secret_id=s) for s in secrets],
    )
    await _check_free(session, workspace, body.replica)
    session.add(workspace)
    try:
        await session.commit()
    except IntegrityError as exc:
        await session.rollback()
        raise Conflict(f"workspace {workspace_id} already exists") from exc
    start = WithStartWorkflowOperation(
        WorkspaceWorkflow.run,
        _workflow_input(state, workspace, create=True),
        id=rules.workspace_workflow_id(workspace_id),
        task_queue=state.settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
        search_attributes=_attributes(workspace, rules.CREATING, caller.id),
    )
    try:
        await update_with_start(state.temporal, WorkspaceWorkflow.claim, workspace_id, start)
    except AlreadyRunning as exc:
        await _undo_create(session, workspace_id)
        raise Conflict(f"workspace {workspace_id} is still being removed; try again shortly") from exc
    except Conflict:
        raise  # refused by the claim, which discarded the record
    except BaseException:
        await _undo_create(session, workspace_id)
        raise
    await _tell_scheduler(state, workspace_id, "workspace created")
    return CreateWorkspaceResponse(workspace_id=workspace_id)


async def _undo_create(session: Session, workspace_id: str) -> None:
    await session.rollback()
    await db.discard_workspace(session, workspace_id=workspace_id)
    await session.commit()


@router.get("/workspaces", response_model=ListResponse[WorkspaceItem], summary="List workspaces")
async def list_workspaces(
    caller: CurrentUser,
    session: Session,
    cluster_id: Annotated[str | None, Query(alias="clusterId", max_length=63)] = None,
) -> ListResponse[WorkspaceItem]:
    """Workspaces the caller may use (admins: all), sorted by id."""
    items = []
    for workspace in await db.list_workspaces(session, cluster_id=cluster_id):
        if await access(session, caller, workspace):
            items.append(await workspace_item(session, workspace, await _quota(session, workspace)))
    return ListResponse[WorkspaceItem](total_count=len(items), items=items)


@router.get("/workspaces/{WorkspaceId}", response_model=WorkspaceDetail, summary="Get a workspace")
async def get_workspace(WorkspaceId: str, caller: CurrentUser, session: Session) -> WorkspaceDetail:
    """One workspace with live quotas; workspaces the caller may not use are reported missing."""
    workspace, _ = await visible_workspace(session, caller, WorkspaceId)
    return await workspace_detail(session, workspace)


@router.patch("/workspaces/{WorkspaceId}", response_model=None, summary="Update a workspace (managers)")
async def update_workspace(
    WorkspaceId: str, body: UpdateWorkspaceRequest, caller: CurrentUser, session: Session, state: State
) -> None:
    """Partial update by the workspace's managers or an admin. A new `replica` binds or frees
    nodes through the workflow first (refused with the counts when too few are free or idle);
    changed volumes or image secrets make the workflow prepare the namespace again."""
    workspace = await _managing(session, caller, WorkspaceId, "update")
    if workspace.deleting_at is not None:
        raise Conflict(f"the workspace {workspace.id} is being deleted")
    if body.flavor_id is not None and body.flavor_id != workspace.flavor_id:
        raise Invalid(f"the flavor of workspace {workspace.id} is {workspace.flavor_id} and cannot change")
    volumes = _volumes(body.volumes, workspace.volume_list()) if body.volumes is not None else None
    if body.managers is not None:
        await _check_managers(session, body.managers)
    secrets = (
        await _image_secrets(session, body.image_secret_ids) if body.image_secret_ids is not None else None
    )
    if body.replica is not None and body.replica != workspace.replica:
        current = len(await db.bound_nodes(session, workspace_id=workspace.id))
        diff = body.replica - current
        if diff > 0:
            await _check_free(session, workspace, diff)
        await session.commit()  # no transaction across the Temporal call
        change = rules.NodesChange(
            workspace_id=workspace.id,
            action="add" if diff >= 0 else "remove",
            count=abs(diff),
            replica=body.replica,
        )
        await _change_nodes(state, workspace, change)
        workspace = await _managing(session, caller, WorkspaceId, "update")
    reconfigure = False
    if body.description is not None:
        workspace.description = body.description
    if body.queue_policy is not None:
        workspace.queue_policy = body.queue_policy
    if body.scopes is not None:
        workspace.scopes = rules.default_scopes(body.scopes)
    if body.enable_preempt is not None:
        workspace.enable_preempt = body.enable_preempt
    if body.is_default is not None:
        workspace.is_default = body.is_default
    if volumes is not None:
        new = [v.model_dump() for v in volumes]
        reconfigure = reconfigure or new != workspace.volumes
        workspace.volumes = new
    if body.managers is not None:
        workspace.managers = [WorkspaceManager(workspace_id=workspace.id, user_id=u) for u in body.managers]
    if secrets is not None:
        reconfigure = reconfigure or secrets != workspace.image_secret_ids
        workspace.image_secrets = [
            WorkspaceImageSecret(workspace_id=workspace.id, secret_id=s) for s in secrets
        ]
    workspace.updated_at = utcnow()
    await session.commit()
    if reconfigure:
        await _reconfigure(state, workspace)
    await _tell_scheduler(state, workspace.id, "workspace changed")


@router.delete("/workspaces/{WorkspaceId}", response_model=None, summary="Delete a workspace (managers)")
async def delete_workspace(WorkspaceId: str, caller: CurrentUser, session: Session, state: State) -> None:
    """Refused (409) while workloads are pending or running; the workflow then removes the
    namespace, unbinds the nodes and removes the record."""
    workspace = await _managing(session, caller, WorkspaceId, "delete")
    workloads = await db.active_workloads(session, workspace_id=workspace.id)
    if workloads:
        raise Conflict(
            f"workloads {', '.join(workloads)} are pending or running in workspace {workspace.id}; "
            "stop them first"
        )
    if workspace.deleting_at is None:
        workspace.deleting_at = utcnow()
    await session.commit()  # on a retry too: the signal below starts the teardown again
    try:
        await state.temporal.start_workflow(
            WorkspaceWorkflow.run,
            _workflow_input(state, workspace, create=False),
            id=rules.workspace_workflow_id(workspace.id),
            task_queue=state.settings.queues.control,
            start_signal="delete",
            search_attributes=_attributes(workspace, rules.DELETING, caller.id),
        )
    except BaseException:
        workspace.deleting_at = None
        await session.commit()
        raise


@router.post("/workspaces/{WorkspaceId}/nodes", response_model=None, summary="Add or remove nodes (managers)")
async def manage_workspace_nodes(
    WorkspaceId: str, body: WorkspaceNodesRequest, caller: CurrentUser, session: Session, state: State
) -> None:
    """Every node is checked first (nothing changes when one is refused): it must exist, be of the
    workspace's cluster and flavor, and (add) serve no other workspace or (remove) serve this one
    and run no pod unless `force`. The workflow binds or unbinds them, all or none, and moves the
    target node count with them."""
    workspace = await _managing(session, caller, WorkspaceId, "update")
    if workspace.deleting_at is not None:
        raise Conflict(f"the workspace {workspace.id} is being deleted")
    for node_id in body.node_ids:
        node = await session.get(Node, node_id)
        if node is None or node.deleting_at is not None:
            raise not_found("Node", node_id)
        if body.action == "add":
            if node.workspace_id and node.workspace_id != workspace.id:
                raise Conflict(f"the node({node_id}) is bound for {node.workspace_id}. it can't be added")
            if node.cluster_id != workspace.cluster_id:
                raise Invalid(
                    f"the node({node_id}) is in cluster {node.cluster_id or '(none)'}, "
                    f"not in the workspace's cluster {workspace.cluster_id}"
                )
            if node.flavor_id != workspace.flavor_id:
                raise Invalid(
                    f"the flavor({node.flavor_id}) of the node({node_id}) and the workspace's "
                    f"flavor({workspace.flavor_id}) do not match"
                )
        elif node.workspace_id and node.workspace_id != workspace.id:
            raise Conflict(f"the node({node_id}) does not belong to workspace {workspace.id}")
    await session.commit()
    change = rules.NodesChange(
        workspace_id=workspace.id, action=body.action, node_ids=list(body.node_ids), force=body.force
    )
    await _change_nodes(state, workspace, change)
    await _tell_scheduler(state, workspace.id, f"nodes {body.action}")


@router.get(
    "/workspaces/{WorkspaceId}/queue",
    response_model=WorkspaceQueue,
    summary="The workspace's pending workloads in order, with position and reason",
)
async def get_queue(WorkspaceId: str, caller: CurrentUser, session: Session, state: State) -> WorkspaceQueue:
    """Pending workloads in queue order (failed-over, priority, submit time), each with its
    position and the exact reason it waits, and the workspace's free resources."""
    workspace, _ = await visible_workspace(session, caller, WorkspaceId)
    entries = await entries_of(session, workspace_id=workspace.id)
    nodes = await scheduler_nodes(
        session, workspace_id=workspace.id, reserve=state.settings.reserve_percents()
    )
    usable = {n.id: n.allocatable for n in nodes if n.available}
    queued = sorted(
        (e for e in entries if e.state == QUEUED),
        key=lambda e: (e.position == 0, e.position, e.submitted_at, e.workload_id),
    )
    items = [
        QueuedItem(
            workload_id=e.workload_id,
            position=e.position,
            scheduler_order=e.position,
            queue_position=e.position,
            priority=e.priority,
            replica=e.replicas,
            request=dict(e.request),
            reason=e.reason or "waiting for the scheduler's next cycle",
            submitted_at=format_time(e.submitted_at),
        )
        for e in queued
    ]
    return WorkspaceQueue(
        workspace_id=workspace.id,
        queue_policy=workspace.queue_policy,
        enable_preempt=workspace.enable_preempt,
        free_resources=free_resources(usable, [e.row() for e in entries]),
        admitted_count=len(entries) - len(queued),
        total_count=len(items),
        items=items,
    )
