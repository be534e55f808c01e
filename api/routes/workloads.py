"""Workloads: create, list, get, patch, delete, stop, batch delete/stop, clone, pod logs, pod
containers and the Service. Each workload's lifecycle is its `workload/<id>` workflow; the API
validates, authorises, records the submission and starts the workflow, and sends it the `stop`,
`delete` and `patch` Updates. Pod logs and the Service are read through the `PodRead` workflow
(routes make no network calls of their own).

Who may do what: every user of the workspace sees its workloads; the submitter, the workspace's
managers and admins change them; others get 404 (not their workspace) or 403 (not theirs).
"""

from __future__ import annotations

import base64
import binascii
import uuid
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Annotated, Any

from fastapi import APIRouter, Query
from sqlalchemy.exc import IntegrityError
from temporalio.client import WithStartWorkflowOperation
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from activities.workload import PodRead, PodReadResult
from api.deps import SINCE_SECONDS_MAX, Caller, CurrentUser, Session, State
from api.routes.aliases import custom_router
from api.routes.workspaces import Access, access, visible_workspace
from api.schemas import workloads as views
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.workflow_calls import tell_scheduler, update_with_start
from db import workloads as db
from db.node_flavors import NodeFlavor
from db.nodes import list_nodes
from db.scheduling import QueueEntry, entries_for, get_entry
from db.workloads import Workload, WorkloadFilter
from db.workspaces import Workspace, get_workspace, list_workspaces
from domain import quantity as q
from domain import workload_lifecycle as life
from domain import workspaces as ws_rules
from domain.errors import Conflict, Forbidden, Invalid, NotFound
from domain.names import is_dns1123_label
from domain.node_flavors import FlavorSpec, available_resources
from domain.pods import PodStatus
from domain.scheduling import QUEUED
from domain.timefmt import format_time, parse_time, utcnow
from domain.workloads import (
    CronJob,
    GroupVersionKind,
    HealthCheck,
    ServiceSpec,
    WorkloadResource,
    WorkloadSpec,
    decode_entry_point,
    main_container,
    with_defaults,
)
from workflows.common import CLUSTER, KIND, PHASE, RESOURCE_ID, RESOURCE_TYPE, USER, WORKSPACE
from workflows.pod_read import PodReadWorkflow
from workflows.workload import WorkloadWorkflow

router = APIRouter(tags=["workloads"], responses=ERROR_RESPONSES)

SHELLS = ["bash", "sh", "zsh"]
MAX_CRON_AHEAD = timedelta(days=365) - timedelta(minutes=1)
READ_TIMEOUT = timedelta(seconds=40)
ID_ATTEMPTS = 5


# --- access --------------------------------------------------------------------------------------


async def _visible(session: Session, caller: Caller, workload_id: str) -> tuple[Workload, Access]:
    """The workload and the caller's access to its workspace; invisible ones are missing (404)."""
    workload = await db.get_workload(session, workload_id=workload_id)
    if workload is None:
        raise NotFound("Workload", workload_id)
    workspace = await get_workspace(session, workspace_id=workload.workspace_id)
    role = (
        await access(session, caller, workspace)
        if workspace is not None
        else ("admin" if caller.is_admin else "")
    )
    if not role:
        raise NotFound("Workload", workload_id)
    return workload, role


async def visible_workload(session: Session, caller: Caller, workload_id: str) -> Workload:
    """The workload when the caller may see it, else 404 (for the routes of other modules)."""
    workload, _ = await _visible(session, caller, workload_id)
    return workload


async def _changeable(session: Session, caller: Caller, workload_id: str, verb: str) -> Workload:
    """The workload, when the caller submitted it, manages its workspace or is an admin."""
    workload, role = await _visible(session, caller, workload_id)
    if role not in ("admin", "manager") and workload.user_id != caller.id:
        raise Forbidden(f"The user is not allowed to {verb} workload {workload_id}")
    return workload


async def _visible_workspaces(session: Session, caller: Caller) -> list[str] | None:
    if caller.is_admin:
        return None
    return [w.id for w in await list_workspaces(session) if await access(session, caller, w)]


# --- validation ----------------------------------------------------------------------------------


def _quantity(field: str, value: str, *, allow_empty: bool = True) -> None:
    if value == "" and allow_empty:
        return
    if not q.is_quantity(value) or q.parse(value) < 0:
        raise Invalid(f"{field}: {value!r} is not a valid quantity (e.g. 8, 500m, 256Gi)")


def _check_entry_point(entry_point: str) -> None:
    text = entry_point.strip()
    try:
        decoded = base64.b64decode(text, validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise Invalid("entryPoint must be the base64 encoding of the start command") from exc
    if not text or not decoded.strip():
        raise Invalid("entryPoint is required (base64 of the start command)")


def _check_resources(res: views.ResourceBody | views.UpdateWorkloadRequest, prefix: str) -> None:
    for name in ("cpu", "gpu", "memory", "ephemeral_storage", "shared_memory"):
        value = getattr(res, name)
        if value is not None:
            required = name in ("cpu", "memory") and isinstance(res, views.ResourceBody)
            _quantity(f"{prefix}{q_name(name)}", value, allow_empty=not required)


def q_name(field: str) -> str:
    """The camelCase name of a resource field."""
    head, *rest = field.split("_")
    return head + "".join(part.title() for part in rest)


def _check_probe(name: str, probe: views.HealthCheckBody | None) -> None:
    if probe is None:
        return
    if not probe.path.startswith("/"):
        raise Invalid(f"{name}.path must be an absolute HTTP path")
    if not 1 <= probe.port <= 65535:
        raise Invalid(f"{name}.port must be in 1-65535")


def _check_service(service: views.ServiceBody | None) -> None:
    if service is None:
        return
    if service.protocol.upper() not in ("TCP", "UDP"):
        raise Invalid("service.protocol must be TCP or UDP")
    if not 1 <= service.port <= 65535 or not 1 <= service.target_port <= 65535:
        raise Invalid("service.port and service.targetPort must be in 1-65535")
    if service.node_port and not 30000 <= service.node_port <= 32767:
        raise Invalid("service.nodePort must be in 30000-32767")


def _check_env(env: dict[str, str]) -> None:
    for name in env:
        if (
            not name
            or not (name[0].isalpha() or name[0] == "_")
            or not all(c.isalnum() or c in "_.-" for c in name)
        ):
            raise Invalid(f"env: {name!r} is not a valid variable name")


def _check_cron(cron_jobs: Sequence[views.CronJobBody], now: datetime) -> None:
    for i, cron in enumerate(cron_jobs):
        if cron.action not in ("", "start"):
            raise Invalid(f"cronJobs[{i}].action {cron.action!r} is not supported (only start)")
        try:
            at = parse_time(cron.schedule)
        except ValueError as exc:
            raise Invalid(
                f"cronJobs[{i}].schedule {cron.schedule!r} is not a time like 2026-01-02T15:04:05Z"
            ) from exc
        if at <= now or at > now + MAX_CRON_AHEAD:
            raise Invalid(f"cronJobs[{i}].schedule must be in the future and within a year")


async def _flavor_allocatable(
    session: Session, state: State, workspace: Workspace
) -> tuple[dict[str, int], str]:
    flavor = await session.get(NodeFlavor, workspace.flavor_id)
    if flavor is None:
        return {}, ""
    spec = FlavorSpec.model_validate(flavor.spec)
    gpu_name = spec.gpu.resource_name if spec.gpu is not None else q.AMD_GPU
    return dict(available_resources(spec, state.settings.reserve_percents())), gpu_name


async def _check_specified_nodes(
    session: Session, workspace: Workspace, nodes: Sequence[str], kind: str
) -> None:
    if kind == "Authoring" and len(nodes) > 1:
        raise Invalid("the authoring can only be created with one node")
    bound = {n.id for n in await list_nodes(session, workspace_id=workspace.id)}
    for node in nodes:
        if node not in bound:
            raise Invalid(f"specifiedNodes: node {node} is not in workspace {workspace.id}")


async def _check_dependencies(session: Session, caller: Caller, dependencies: Sequence[str]) -> None:
    for dep in dependencies:
        await _visible(session, caller, dep)


def _spec(body: views.CreateWorkloadRequest) -> WorkloadSpec:
    data = body.model_dump(
        exclude={"liveness", "readiness", "service", "cron_jobs", "resource", "group_version_kind"}
    )
    return WorkloadSpec(
        **data,
        group_version_kind=GroupVersionKind(**body.group_version_kind.model_dump()),
        resource=WorkloadResource(**body.resource.model_dump()),
        liveness=HealthCheck(**_probe(body.liveness)) if body.liveness else None,
        readiness=HealthCheck(**_probe(body.readiness)) if body.readiness else None,
        service=ServiceSpec(**body.service.model_dump()) if body.service else None,
        cron_jobs=[CronJob(schedule=c.schedule, action=c.action or "start") for c in body.cron_jobs],
    )


def _probe(probe: views.HealthCheckBody) -> dict[str, Any]:
    """Upstream's defaults for zero fields: 600 s initial delay, 3 s period, 3 failures."""
    data = probe.model_dump()
    for name, default in (("initial_delay_seconds", 600), ("period_seconds", 3), ("failure_threshold", 3)):
        data[name] = data[name] or default
    return data


# --- views ---------------------------------------------------------------------------------------


def _pod_view(pod: dict[str, Any]) -> views.PodView:
    status = PodStatus.model_validate(pod)
    return views.PodView(
        pod_id=status.name,
        phase=status.phase,
        node_name=status.node,
        k8s_node_name=status.node,
        admin_node_name=status.node,
        start_time=format_time(status.start_time),
        end_time=format_time(status.end_time),
        host_ip=status.host_ip,
        pod_ip=status.pod_ip,
        rank=status.rank,
        containers=[
            views.ContainerView(name=c.name, reason=c.reason, message=c.message, exit_code=c.exit_code)
            for c in status.containers
        ],
    )


def _pending_view(workload: Workload, entry: QueueEntry | None) -> tuple[int, str]:
    """(queue position, message): the scheduler's position and reason while queued."""
    if workload.phase == life.PENDING and entry is not None and entry.state == QUEUED:
        return entry.position, entry.reason or workload.message
    return 0, workload.message


def workload_item(workload: Workload, entry: QueueEntry | None, now: datetime) -> views.WorkloadItem:
    """The list view of a workload."""
    spec = workload.spec_model()
    position, message = _pending_view(workload, entry)
    res = spec.resource
    return views.WorkloadItem(
        workload_id=workload.id,
        display_name=workload.display_name,
        description=workload.description,
        workspace_id=workload.workspace_id,
        cluster_id=workload.cluster_id,
        user_id=workload.user_id,
        user_name=workload.user_name,
        phase=workload.phase,
        priority=workload.priority,
        resource=views.ResourceView(
            cpu=res.cpu,
            gpu=res.gpu,
            memory=res.memory,
            ephemeral_storage=res.ephemeral_storage,
            shared_memory=res.shared_memory,
            replica=res.replica,
        ),
        group_version_kind=views.GroupVersionKindView(
            kind=spec.kind, version=spec.group_version_kind.version
        ),
        creation_time=format_time(workload.created_at),
        start_time=format_time(workload.start_time),
        end_time=format_time(workload.end_time or workload.deletion_time),
        deletion_time=format_time(workload.deletion_time),
        runtime=life.runtime(workload.start_time, workload.end_time, now),
        scheduler_order=position,
        queue_position=position,
        dispatch_count=workload.dispatch_count,
        is_tolerate_all=spec.is_tolerate_all,
        timeout=spec.timeout,
        seconds_until_timeout=life.seconds_until_timeout(
            spec.timeout, workload.start_time, now, workload.ended
        ),
        message=message,
    )


def workload_detail(
    workload: Workload, entry: QueueEntry | None, now: datetime, step: str
) -> views.WorkloadDetail:
    """The detail view: the list fields plus spec, conditions, pods, nodes and ranks."""
    spec = workload.spec_model()
    labels = dict(spec.customer_labels)
    hostnames = labels.pop("kubernetes.io/hostname", "")
    entry_point = spec.entry_point if spec.kind == "Authoring" else decode_entry_point(spec.entry_point)
    return views.WorkloadDetail(
        **dict(workload_item(workload, entry, now)),
        image=spec.image,
        entry_point=entry_point,
        is_supervised=spec.is_supervised,
        max_retry=spec.max_retry,
        ttl_seconds_after_finished=spec.ttl_seconds_after_finished,
        env=dict(spec.env),
        conditions=[views.ConditionView.model_validate(c) for c in workload.conditions],
        pods=[_pod_view(p) for p in workload.pods],
        nodes=[list(n) for n in workload.nodes],
        ranks=[list(r) for r in workload.ranks],
        customer_labels=labels,
        specified_nodes=hostnames.split() if hostnames else list(spec.specified_nodes),
        liveness=spec.liveness.model_dump() if spec.liveness else None,
        readiness=spec.readiness.model_dump() if spec.readiness else None,
        service=spec.service.model_dump() if spec.service else None,
        dependencies=list(spec.dependencies),
        cron_jobs=[c.model_dump() for c in spec.cron_jobs],
        current_step=step,
    )


# --- workflow ------------------------------------------------------------------------------------


def _attributes(workload: Workload) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "workload"),
            SearchAttributePair(RESOURCE_ID, workload.id),
            SearchAttributePair(WORKSPACE, workload.workspace_id),
            SearchAttributePair(CLUSTER, workload.cluster_id),
            SearchAttributePair(USER, workload.user_id),
            SearchAttributePair(KIND, workload.kind),
            SearchAttributePair(PHASE, workload.phase),
        ]
    )


def _input(state: State, workload: Workload) -> life.WorkloadWorkflowInput:
    settings = state.settings
    return life.WorkloadWorkflowInput(
        workload_id=workload.id,
        workspace_id=workload.workspace_id,
        io_queue=settings.queues.workloads,
        poll_seconds=settings.workload_poll_seconds,
        hang_seconds=settings.workload_hang_seconds,
        io_timeout_seconds=settings.workload_io_timeout_seconds,
    )


def _start_options(state: State, workload: Workload) -> dict[str, Any]:
    return {
        "id": life.workload_workflow_id(workload.id),
        "task_queue": state.settings.queues.control,
        "id_conflict_policy": WorkflowIDConflictPolicy.USE_EXISTING,
        "search_attributes": _attributes(workload),
        "static_summary": f"{workload.kind} {workload.id} in {workload.workspace_id}",
    }


async def _start(state: State, workload: Workload) -> None:
    await state.temporal.start_workflow(
        WorkloadWorkflow.run, _input(state, workload), **_start_options(state, workload)
    )


async def _tell(state: State, workload: Workload, update: Any, arg: Any) -> None:
    """Send an Update to the workload's workflow, starting it again when it has ended (so an
    ended workload can still be deleted)."""
    await update_with_start(
        state.temporal,
        update,
        arg,
        WithStartWorkflowOperation(
            WorkloadWorkflow.run, _input(state, workload), **_start_options(state, workload)
        ),
    )


async def _step(state: State, workload_id: str) -> str:
    handle = state.temporal.get_workflow_handle(life.workload_workflow_id(workload_id))
    try:
        return str(await handle.query(WorkloadWorkflow.current_step, rpc_timeout=timedelta(seconds=2)))
    except Exception:  # ended or no worker: the record says the rest
        return ""


async def _read(state: State, request: PodRead) -> PodReadResult:
    result: PodReadResult = await state.temporal.execute_workflow(
        PodReadWorkflow.run,
        args=[request, state.settings.queues.workloads],
        id=f"pod-read/{request.workload_id}/{uuid.uuid4().hex[:12]}",
        task_queue=state.settings.queues.control,
        execution_timeout=READ_TIMEOUT,
    )
    return result


# --- endpoints -----------------------------------------------------------------------------------


@router.post("/workloads", response_model=views.CreateWorkloadResponse, summary="Create a workload")
async def create_workload(
    body: views.CreateWorkloadRequest, caller: CurrentUser, session: Session, state: State
) -> views.CreateWorkloadResponse:
    """Validates the spec against the workspace (scope, flavor, nodes, dependencies), records the
    workload Pending and starts its lifecycle workflow."""
    workspace, role = await visible_workspace(session, caller, body.workspace_id)
    if workspace.deleting_at is not None or workspace.phase == ws_rules.DELETING:
        raise Conflict(f"workspace {workspace.id} is being deleted")
    if (
        not body.display_name
        or len(body.display_name) > life.MAX_DISPLAY_NAME
        or not is_dns1123_label(body.display_name)
    ):
        raise Invalid("displayName must be a lower-case DNS label of at most 45 characters")
    if not body.image.strip():
        raise Invalid("image is required")
    _check_entry_point(body.entry_point)
    _check_resources(body.resource, "resource.")
    if body.resource.replica < 1 and not body.specified_nodes:
        raise Invalid("resource.replica must be at least 1")
    _check_probe("liveness", body.liveness)
    _check_probe("readiness", body.readiness)
    _check_service(body.service)
    _check_env(body.env)
    now = utcnow()
    _check_cron(body.cron_jobs, now)
    kind = body.group_version_kind.kind
    scope = life.scope_of(kind)
    if workspace.scopes and scope not in workspace.scopes:
        raise Forbidden(f"The workspace only supports {workspace.scopes} and does not support {scope}")
    if body.priority == 2 and role not in ("admin", "manager"):
        raise Forbidden("priority 2 (high) needs a manager of the workspace or an administrator")
    await _check_specified_nodes(session, workspace, body.specified_nodes, kind)
    await _check_dependencies(session, caller, body.dependencies)
    spec = with_defaults(_spec(body))
    allocatable, gpu_name = await _flavor_allocatable(session, state, workspace)
    if allocatable:
        problem = life.exceeds_flavor(life.request_per_pod(spec, gpu_name, allocatable), allocatable)
        if problem:
            raise Invalid(problem)
    workload = await _record_new(session, caller, body, workspace, spec, gpu_name, now)
    try:
        await _start(state, workload)
    except BaseException:
        await session.delete(workload)
        await session.commit()
        raise
    await tell_scheduler(
        state.temporal,
        workspace_id=workspace.id,
        reason=f"{workload.id} submitted",
        task_queue=state.settings.queues.control,
        period_seconds=state.settings.scheduler_period_seconds,
    )
    return views.CreateWorkloadResponse(workload_id=workload.id)


async def _record_new(
    session: Session,
    caller: Caller,
    body: views.CreateWorkloadRequest,
    workspace: Workspace,
    spec: WorkloadSpec,
    gpu_name: str,
    now: datetime,
) -> Workload:
    """Insert the workload Pending under a fresh `<displayName>-<suffix>` id (another suffix when
    one is taken)."""
    for _ in range(ID_ATTEMPTS):
        workload = _new_record(
            life.new_workload_id(body.display_name), caller, body, workspace, spec, gpu_name, now
        )
        db.add_workload(session, workload)
        try:
            await session.commit()
        except IntegrityError:
            await session.rollback()
            continue
        return workload
    raise Conflict(f"could not find a free id for {body.display_name}; try again")


def _new_record(
    workload_id: str,
    caller: Caller,
    body: views.CreateWorkloadRequest,
    workspace: Workspace,
    spec: WorkloadSpec,
    gpu_name: str,
    now: datetime,
) -> Workload:
    return Workload(
        id=workload_id,
        display_name=body.display_name,
        description=body.description,
        workspace_id=workspace.id,
        cluster_id=workspace.cluster_id,
        user_id=caller.id,
        user_name=caller.user.name,
        kind=spec.kind,
        priority=spec.priority,
        spec=spec.model_dump(mode="json"),
        gpu_resource_name=gpu_name,
        phase=life.PENDING,
        created_at=now,
        updated_at=now,
    )


@router.get("/workloads", response_model=ListResponse[views.WorkloadItem], summary="List workloads")
async def list_workloads_route(
    caller: CurrentUser,
    session: Session,
    workspace_id: Annotated[str, Query(alias="workspaceId", max_length=63)] = "",
    cluster_id: Annotated[str, Query(alias="clusterId", max_length=63)] = "",
    user_id: Annotated[str, Query(alias="userId", max_length=80)] = "",
    user_name: Annotated[str, Query(alias="userName", max_length=80)] = "",
    phase: Annotated[str, Query(max_length=256, description="comma-separated")] = "",
    kind: Annotated[str, Query(max_length=256, description="comma-separated")] = "",
    description: Annotated[str, Query(max_length=256)] = "",
    workload_id: Annotated[str, Query(alias="workloadId", max_length=63)] = "",
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    sort_by: Annotated[str, Query(alias="sortBy", max_length=32)] = "create_time",
    order: Annotated[str, Query(max_length=8)] = "desc",
) -> ListResponse[views.WorkloadItem]:
    """The workloads of the workspaces the caller may use, filtered, sorted and paged."""
    if order not in ("asc", "desc"):
        raise Invalid("order must be asc or desc")
    column = sort_by.strip().lower()
    if column not in db.SORT_COLUMNS:
        raise Invalid(f"sortBy must be one of {', '.join(db.SORT_COLUMNS)}")
    phases = [p.strip() for p in phase.split(",") if p.strip()]
    kinds = [k.strip() for k in kind.split(",") if k.strip()]
    for value in phases:
        if value not in life.PHASES:
            raise Invalid(f"phase {value!r} is not one of {', '.join(life.PHASES)}")
    filters = WorkloadFilter(
        workspace_ids=await _visible_workspaces(session, caller),
        workspace_id=workspace_id,
        cluster_id=cluster_id,
        user_id=user_id,
        user_name=user_name,
        phases=phases,
        kinds=kinds,
        description=description,
        workload_id=workload_id,
        since=_time_or_none(since),
        until=_time_or_none(until),
    )
    total, rows = await db.list_workloads(
        session, filters, offset=offset, limit=limit, sort_by=column, ascending=order == "asc"
    )
    entries = await _entries(session, [w for w in rows if w.phase == life.PENDING])
    now = utcnow()
    items = [workload_item(w, entries.get(w.id), now) for w in rows]
    return ListResponse[views.WorkloadItem](total_count=total, items=items)


def _time_or_none(text: str) -> datetime | None:
    """A time filter; unparsable values are ignored, as upstream does."""
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError:
        return None


async def _entries(session: Session, workloads: Sequence[Workload]) -> dict[str, QueueEntry]:
    return await entries_for(session, workload_ids=[w.id for w in workloads])


@router.get("/workloads/{WorkloadId}", response_model=views.WorkloadDetail, summary="Get a workload")
async def get_workload_route(
    WorkloadId: str, caller: CurrentUser, session: Session, state: State
) -> views.WorkloadDetail:
    """One workload with conditions, pods, nodes and ranks, its queue position and pending reason."""
    workload, _ = await _visible(session, caller, WorkloadId)
    entry = await get_entry(session, workload_id=workload.id)
    step = "" if workload.ended else await _step(state, workload.id)
    return workload_detail(workload, entry, utcnow(), step)


@router.patch("/workloads/{WorkloadId}", summary="Change a pending or running workload")
async def update_workload(
    WorkloadId: str, body: views.UpdateWorkloadRequest, caller: CurrentUser, session: Session, state: State
) -> None:
    """Only the fields given change. After the first dispatch a job's image, entry point,
    resources and env are fixed (Deployments and StatefulSets roll the change out)."""
    workload = await _changeable(session, caller, WorkloadId, "update")
    if workload.ended:
        raise Conflict("The workload can only be edited when it is pending or running")
    spec = workload.spec_model()
    _check_resources(body, "")
    if body.entry_point is not None:
        _check_entry_point(body.entry_point)
    if body.image is not None and not body.image.strip():
        raise Invalid("image must not be empty")
    if body.env is not None:
        _check_env(body.env)
    if body.cron_jobs is not None:
        _check_cron(body.cron_jobs, utcnow())
    if body.replica is not None and spec.specified_nodes:
        raise Invalid("cannot update replica when specifying nodes")
    if body.priority == 2 and body.priority != workload.priority:
        _, role = await visible_workspace(session, caller, workload.workspace_id)
        if role not in ("admin", "manager"):
            raise Forbidden("priority 2 (high) needs a manager of the workspace or an administrator")
    patch = life.PatchRequest(**body.model_dump(exclude_none=True))
    if body.cron_jobs is not None:
        patch.cron_jobs = [{"schedule": c.schedule, "action": c.action or "start"} for c in body.cron_jobs]
    if workload.dispatch_count > 0 and workload.kind not in life.LONG_RUNNING_KINDS:
        for name in (
            "image",
            "entry_point",
            "replica",
            "cpu",
            "gpu",
            "memory",
            "ephemeral_storage",
            "shared_memory",
            "env",
        ):
            if getattr(patch, name) is not None:
                raise Forbidden(f"{q_name(name)} cannot be changed once the workload has been scheduled")
    if patch.changes_request():
        await _check_patched_fits(session, state, workload, spec, patch)
    await _tell(state, workload, WorkloadWorkflow.patch, patch)


async def _check_patched_fits(
    session: Session, state: State, workload: Workload, spec: WorkloadSpec, patch: life.PatchRequest
) -> None:
    res = spec.resource.model_copy(
        update={
            k: v
            for k, v in patch.model_dump().items()
            if k in ("cpu", "gpu", "memory", "ephemeral_storage") and v is not None
        }
    )
    workspace = await get_workspace(session, workspace_id=workload.workspace_id)
    if workspace is None:
        return
    allocatable, gpu_name = await _flavor_allocatable(session, state, workspace)
    patched = spec.model_copy(update={"resource": res})
    problem = life.exceeds_flavor(life.request_per_pod(patched, gpu_name, allocatable), allocatable)
    if allocatable and problem:
        raise Invalid(problem)


async def _stop(state: State, session: Session, caller: Caller, workload_id: str, *, delete: bool) -> None:
    try:
        workload = await _changeable(session, caller, workload_id, "delete" if delete else "stop")
    except NotFound:
        if delete:
            return  # missing everywhere: nothing to delete (upstream answers 200 too)
        raise
    verb = "deleted" if delete else "stopped"
    message = f"the workload is {verb} by {caller.user.name}"
    if not delete and workload.ended:
        return
    await _tell(state, workload, WorkloadWorkflow.delete if delete else WorkloadWorkflow.stop, message)


@router.delete("/workloads/{WorkloadId}", summary="Delete a workload")
async def delete_workload(WorkloadId: str, caller: CurrentUser, session: Session, state: State) -> None:
    """Stops it if it runs, then hides it (the record is kept with its deletion time)."""
    await _stop(state, session, caller, WorkloadId, delete=True)


@router.post("/workloads/{WorkloadId}/stop", summary="Stop a workload")
@custom_router.post("/workloads/{WorkloadId}/stop", summary="Stop a workload (alias)")
async def stop_workload(WorkloadId: str, caller: CurrentUser, session: Session, state: State) -> None:
    """Stops a pending or running workload (Stopped); an ended one is left as it is."""
    await _stop(state, session, caller, WorkloadId, delete=False)


async def _batch(state: State, session: Session, caller: Caller, ids: Sequence[str], *, delete: bool) -> None:
    if not ids:
        raise Invalid("workloadIds must name at least one workload")
    errors: list[Exception] = []
    for workload_id in dict.fromkeys(ids):
        try:
            await _stop(state, session, caller, workload_id, delete=delete)
        except Exception as exc:
            errors.append(exc)
    if len(errors) == len(dict.fromkeys(ids)):
        raise errors[0]


@router.post("/workloads/delete", summary="Delete several workloads")
async def batch_delete(body: views.WorkloadIds, caller: CurrentUser, session: Session, state: State) -> None:
    """Each id as `DELETE /workloads/{id}`; 200 when at least one succeeded."""
    await _batch(state, session, caller, body.workload_ids, delete=True)


@router.post("/workloads/stop", summary="Stop several workloads")
async def batch_stop(body: views.WorkloadIds, caller: CurrentUser, session: Session, state: State) -> None:
    """Each id as `POST /workloads/{id}/stop`; 200 when at least one succeeded."""
    await _batch(state, session, caller, body.workload_ids, delete=False)


@router.post("/workloads/clone", summary="Clone workloads", response_model=list[views.CreateWorkloadResponse])
async def clone_workloads(
    body: views.WorkloadIds, caller: CurrentUser, session: Session, state: State
) -> list[views.CreateWorkloadResponse]:
    """Submit each workload again (new id, the caller as owner) through the normal create path."""
    if not body.workload_ids:
        raise Invalid("workloadIds must name at least one workload")
    created = []
    for workload_id in dict.fromkeys(body.workload_ids):
        workload, _ = await _visible(session, caller, workload_id)
        spec = workload.spec_model()
        request = views.CreateWorkloadRequest.model_validate(_clone_body(workload, spec))
        created.append(await create_workload(request, caller, session, state))
    return created


def _clone_body(workload: Workload, spec: WorkloadSpec) -> dict[str, Any]:
    data = spec.model_dump(by_alias=True, mode="json", exclude={"hostpath"})
    data["displayName"] = workload.display_name
    data["description"] = workload.description
    data["workspaceId"] = workload.workspace_id
    labels = data.get("customerLabels", {})
    labels.pop("kubernetes.io/hostname", None)
    for name in ("liveness", "readiness", "service"):
        if data.get(name) is None:
            data.pop(name, None)
    now = utcnow()
    data["cronJobs"] = [c for c in data.get("cronJobs", []) if _future(c.get("schedule", ""), now)]
    return data


def _future(schedule: str, now: datetime) -> bool:
    try:
        return parse_time(schedule) > now
    except ValueError:
        return False


@router.get(
    "/workloads/{WorkloadId}/pods/{PodId}/logs", response_model=views.PodLogsResponse, summary="A pod's log"
)
@custom_router.get(
    "/workloads/{WorkloadId}/pods/{PodId}/logs",
    response_model=views.PodLogsResponse,
    summary="A pod's log (alias)",
)
async def pod_logs(
    WorkloadId: str,
    PodId: str,
    caller: CurrentUser,
    session: Session,
    state: State,
    tail_lines: Annotated[int, Query(alias="tailLines", ge=1, le=100000)] = 1000,
    container: Annotated[str, Query(max_length=63)] = "",
    since_seconds: Annotated[int | None, Query(alias="sinceSeconds", ge=1, le=SINCE_SECONDS_MAX)] = None,
) -> views.PodLogsResponse:
    """The last `tailLines` lines of the pod's main container (or `container`)."""
    workload, _ = await _visible(session, caller, WorkloadId)
    result = await _read(
        state,
        PodRead(
            workload_id=workload.id,
            pod=PodId,
            container=container or main_container(workload.kind),
            tail_lines=tail_lines,
            since_seconds=since_seconds,
        ),
    )
    _raise_read_errors(result, PodId)
    lines = result.text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return views.PodLogsResponse(
        workload_id=workload.id, pod_id=PodId, namespace=workload.workspace_id, logs=lines
    )


def _raise_read_errors(result: PodReadResult, what: str) -> None:
    if result.missing:
        raise NotFound("Pod", what, message=result.missing)
    if result.error:
        raise Conflict(f"the cluster could not answer: {result.error}")


@router.get(
    "/workloads/{WorkloadId}/pods/{PodId}/containers",
    response_model=views.PodContainersResponse,
    summary="A pod's containers",
)
@custom_router.get(
    "/workloads/{WorkloadId}/pods/{PodId}/containers",
    response_model=views.PodContainersResponse,
    summary="A pod's containers (alias)",
)
async def pod_containers(
    WorkloadId: str, PodId: str, caller: CurrentUser, session: Session
) -> views.PodContainersResponse:
    """The pod's containers as last seen, and the shells the web shell can start."""
    workload, _ = await _visible(session, caller, WorkloadId)
    for pod in workload.pods:
        status = PodStatus.model_validate(pod)
        if status.name == PodId:
            names = [c.name for c in status.containers] or [main_container(workload.kind)]
            return views.PodContainersResponse(
                containers=[views.ContainerName(name=n) for n in names], shells=SHELLS
            )
    raise NotFound("Pod", PodId)


@router.get("/workloads/{name}/service", response_model=views.ServiceView, summary="The workload's Service")
@custom_router.get(
    "/workloads/{name}/service", response_model=views.ServiceView, summary="The workload's Service (alias)"
)
async def workload_service(
    name: str, caller: CurrentUser, session: Session, state: State
) -> views.ServiceView:
    """The Service in front of the workload's pods (404 when it has none)."""
    workload, _ = await _visible(session, caller, name)
    result = await _read(state, PodRead(workload_id=workload.id, what="service"))
    _raise_read_errors(result, name)
    if result.service is None:
        raise NotFound("Service", name)
    info = result.service
    return views.ServiceView(
        service_name=info.service_name,
        service_type=info.service_type,
        cluster_ip=info.cluster_ip,
        ports=[
            views.ServicePortView(
                name=p.name,
                port=p.port,
                target_port=p.target_port,
                node_port=p.node_port,
                protocol=p.protocol,
            )
            for p in info.ports
        ],
        selector=dict(info.selector),
    )
