"""Ops jobs: create (addon, dumplog, reboot), list, get, stop, delete; reboot logs of a node.

Route -> `opsjob/<id>` workflow (`workflows/ops_job.py`) -> `activities/ops_job.py` and the
node SSH steps in `activities/node.py` -> the `ops_jobs` table (`db/ops_jobs.py`, written after
creation by `db/ops_job_status.py`). The route selects the job's nodes (so "no node selected"
is a 400 before anything starts) and records them on the job.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import string
from datetime import datetime, timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Query
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.deps import Admin, Caller, CurrentUser, Session, State
from api.routes.workspaces import access
from api.schemas import ops_jobs as views
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.schemas.nodes import NodeLogs
from db import logs
from db import ops_jobs as db
from db.node_templates import get_template
from db.nodes import Node, get_node, list_nodes
from db.ops_jobs import JobFilter, OpsJob
from db.workloads import get_workload
from db.workspaces import bound_nodes, get_workspace
from domain import addon_catalogue
from domain import ops_jobs as rules
from domain import quantity as q
from domain.errors import Busy, Forbidden, Invalid, NotFound, not_found
from domain.logs import LogResource, format_line
from domain.names import is_dns1123_label, normalize_name
from domain.timefmt import format_time, parse_time, utcnow
from workflows.common import CLUSTER, KIND, PHASE, RESOURCE_ID, RESOURCE_TYPE, USER, WORKSPACE
from workflows.ops_job import OpsJobWorkflow

router = APIRouter(tags=["ops jobs"], responses=ERROR_RESPONSES)
SUFFIX = string.ascii_lowercase + string.digits


# --- create ----------------------------------------------------------------------------------------


async def _selected_nodes(
    session: Session, caller: Caller, inputs: list[rules.JobInput]
) -> tuple[list[Node], str]:
    """The nodes the inputs select (node, else workload, else workspace, else cluster) and the
    workspace they came from ("" unless a workload or workspace selected them)."""
    node_ids = rules.input_values(inputs, "node")
    if node_ids:
        nodes = []
        for node_id in node_ids:
            node = await get_node(session, node_id=node_id)
            if node is None:
                raise not_found("Node", node_id)
            nodes.append(node)
        return nodes, ""
    for workload_id in rules.input_values(inputs, "workload")[:1]:
        workload = await get_workload(session, workload_id=workload_id)
        if workload is None:
            raise not_found("Workload", workload_id)
        last = workload.nodes[-1] if workload.nodes else []
        found = [n for n in [await get_node(session, node_id=i) for i in last] if n is not None]
        return found, workload.workspace_id
    for workspace_id in rules.input_values(inputs, "workspace")[:1]:
        workspace = await get_workspace(session, workspace_id=workspace_id)
        if workspace is None:
            raise not_found("Workspace", workspace_id)
        return await bound_nodes(session, workspace_id=workspace_id), workspace_id
    for cluster_id in rules.input_values(inputs, "cluster")[:1]:
        nodes = await list_nodes(session, cluster_id=cluster_id)
        if not nodes:
            raise NotFound("Cluster", cluster_id)
        return list(nodes), ""
    return [], ""


async def _addons(session: Session, state: State, inputs: list[rules.JobInput]) -> list[str]:
    """The addons an addon job runs: `addon.template` names, then each `node.template`'s."""
    override: Path | None = state.settings.node_addon_dir
    names = rules.input_values(inputs, "addon.template")
    for name in names:
        if addon_catalogue.get_addon(name) is None and not (override and (override / f"{name}.sh").is_file()):
            raise NotFound("AddonTemplate", name)
    for template_id in rules.input_values(inputs, "node.template"):
        template = await get_template(session, template_id=template_id)
        if template is None:
            raise NotFound("NodeTemplate", template_id)
        names += [a for a in template.addons if a not in names]
    if not names:
        raise Invalid("either addon.template or node.template must be specified in the job.")
    return names


def _preflight_spec(body: views.CreateOpsJobRequest) -> dict[str, Any]:
    """The check workload's fields, validated (all three are required for preflight)."""
    if not body.resource or not body.image or not body.entry_point:
        raise Invalid("resource, image and entryPoint must be specified for a preflight job")
    try:
        base64.b64decode(body.entry_point, validate=True).decode()
    except (binascii.Error, UnicodeDecodeError) as exc:
        raise Invalid("entryPoint must be base64-encoded text") from exc
    resource = {k: str(v) for k, v in body.resource.items() if k != "replica" and v not in (None, "")}
    for name, value in resource.items():
        if name not in ("cpu", "gpu", "memory", "ephemeralStorage", "sharedMemory"):
            raise Invalid(
                f"resource.{name} is not a resource (cpu, gpu, memory, ephemeralStorage, sharedMemory)"
            )
        if not q.is_quantity(value) or q.parse(value) < 0:
            raise Invalid(f"resource.{name}: {value!r} is not a valid quantity")
    if "cpu" not in resource or "memory" not in resource:
        raise Invalid("resource.cpu and resource.memory are required for a preflight job")
    for path in body.hostpath:
        if not path.startswith("/"):
            raise Invalid(f"hostpath {path!r} must be absolute")
    return {
        "resource": resource,
        "image": body.image,
        "entryPoint": body.entry_point,
        "env": dict(body.env),
        "hostpath": list(body.hostpath),
    }


def _job_id(name: str) -> str:
    return f"{name}-{''.join(secrets.choice(SUFFIX) for _ in range(5))}"


def _attributes(job: OpsJob) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "opsjob"),
            SearchAttributePair(RESOURCE_ID, job.id),
            SearchAttributePair(KIND, job.type),
            SearchAttributePair(CLUSTER, job.cluster_id),
            SearchAttributePair(WORKSPACE, job.workspace_id),
            SearchAttributePair(PHASE, job.phase),
            SearchAttributePair(USER, job.user_id),
        ]
    )


def _workflow_input(state: State, job: OpsJob) -> rules.OpsJobWorkflowInput:
    settings = state.settings
    workload = rules.input_values([rules.JobInput(**i) for i in job.inputs], "workload")
    return rules.OpsJobWorkflowInput(
        job_id=job.id,
        type=job.type,
        node_ids=list(job.node_ids),
        addons=list(job.spec.get("addons", [])),
        workload_id=workload[0] if workload else "",
        timeout_seconds=job.timeout_second,
        batch_count=job.batch_count,
        available_ratio=job.available_ratio,
        security_upgrade=job.security_upgrade,
        ssh_queue=settings.queues.ssh,
        idle_poll_seconds=settings.ops_job_idle_poll_seconds,
        reboot_wait_seconds=settings.ops_job_reboot_wait_seconds,
        heartbeat_seconds=settings.node_heartbeat_timeout_seconds,
    )


@router.post("/opsjobs", response_model=views.CreateOpsJobResponse, summary="Create an ops job")
async def create_ops_job(
    body: views.CreateOpsJobRequest, caller: CurrentUser, session: Session, state: State
) -> views.CreateOpsJobResponse:
    """Validates the job and selects its nodes, records it Pending and starts `opsjob/<id>`."""
    name = normalize_name(body.name)
    if not name:
        raise Invalid("the job name is empty")
    if len(name) > 57 or not is_dns1123_label(name):
        raise Invalid("the job name must be a lower-case DNS label of at most 57 characters")
    if not body.type:
        raise Invalid("the job type is empty")
    if body.type not in rules.JOB_TYPES:
        raise Invalid(f"unsupported ops job type({body.type}): one of {', '.join(rules.JOB_TYPES)}")
    job_type: rules.JobType = body.type
    if not body.inputs:
        raise Invalid("the job inputs is empty")
    for item in body.inputs:
        if item.name not in rules.INPUT_NAMES:
            raise Invalid(f"input {item.name!r} is not one of {', '.join(rules.INPUT_NAMES)}")
    if job_type in rules.ADMIN_ONLY and not caller.is_admin:
        raise Forbidden(f"{job_type} jobs need a system administrator")
    if body.batch_count is not None and body.batch_count < 1:
        raise Invalid("batchCount must be at least 1")
    ratio = 1.0 if body.available_ratio is None else body.available_ratio
    if not 0.0 <= ratio <= 1.0:
        raise Invalid("availableRatio must be between 0 and 1")
    inputs = [rules.JobInput(name=i.name, value=i.value) for i in body.inputs]
    workspace_id, cluster_id, nodes = "", "", []
    spec: dict[str, Any] = {}
    if job_type == "preflight":
        spec = _preflight_spec(body)
    if job_type == "dumplog":
        workloads = rules.input_values(inputs, "workload")
        if not workloads:
            raise Invalid("workload must be specified in the job.")
        workload = await get_workload(session, workload_id=workloads[0])
        if workload is None:
            raise not_found("Workload", workloads[0])
        workspace = await get_workspace(session, workspace_id=workload.workspace_id)
        if workspace is None or not await access(session, caller, workspace):
            raise not_found("Workload", workloads[0])
        running = [
            j
            for j in (await db.running_jobs(session, job_type="dumplog"))
            if workloads[0] in j.inputs_of("workload")
        ]
        if running:
            raise Busy(f"another ops job ({running[0].id}) is running, job.type: dumplog")
        workspace_id, cluster_id = workload.workspace_id, workload.cluster_id
    else:
        selected, workspace_id = await _selected_nodes(session, caller, inputs)
        excluded = set(body.excluded_nodes)
        nodes = [n for n in selected if n.id not in excluded]
        if not nodes:
            raise Invalid("the nodes of ops-job is not specified")
        clusters = {n.cluster_id for n in nodes}
        if job_type == "addon" and len(clusters) > 1:
            raise Invalid("The nodes to be operated must belong to the same cluster.")
        cluster_id = sorted(clusters)[0]
        if job_type == "reboot":
            local = [n.id for n in nodes if n.local]
            if local and not body.force:
                raise Forbidden(
                    f"node {local[0]} is the machine this platform runs on: rebooting it stops the platform "
                    "(set force to do it anyway)"
                )
        if job_type == "addon":
            spec["addons"] = await _addons(session, state, inputs)
            wanted = {n.id for n in nodes}
            for other in await db.running_jobs(session, job_type="addon"):
                shared = sorted(wanted & set(other.node_ids))
                if shared:
                    raise Busy(f"another ops job ({other.id}) is running on {shared[0]}, job.type: addon")
    now = utcnow()
    job = OpsJob(
        id=_job_id(name),
        name=name,
        type=job_type,
        inputs=[i.model_dump() for i in inputs],
        node_ids=[n.id for n in nodes],
        excluded_nodes=list(body.excluded_nodes),
        cluster_id=cluster_id,
        workspace_id=workspace_id,
        user_id=caller.id,
        user_name=caller.user.name,
        phase=rules.PENDING,
        timeout_second=body.timeout_second
        if body.timeout_second > 0
        else state.settings.ops_job_timeout_seconds,
        ttl_seconds_after_finished=body.ttl_seconds_after_finished
        if body.ttl_seconds_after_finished > 0
        else state.settings.ops_job_ttl_seconds,
        batch_count=body.batch_count or 1,
        available_ratio=ratio,
        security_upgrade=body.security_upgrade,
        is_tolerate_all=body.is_tolerate_all,
        spec=spec,
        created_at=now,
        updated_at=now,
    )
    session.add(job)
    await session.commit()
    try:
        await state.temporal.start_workflow(
            OpsJobWorkflow.run,
            _workflow_input(state, job),
            id=rules.job_workflow_id(job.id),
            task_queue=state.settings.queues.control,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=_attributes(job),
            static_summary=f"{job.type} job {job.id} on {len(job.node_ids)} nodes",
        )
    except BaseException:
        await session.delete(job)
        await session.commit()
        raise
    return views.CreateOpsJobResponse(job_id=job.id)


# --- read ------------------------------------------------------------------------------------------


def job_item(job: OpsJob) -> views.OpsJobItem:
    return views.OpsJobItem(**_item_fields(job))


def _item_fields(job: OpsJob) -> dict[str, object]:
    return {
        "job_id": job.id,
        "job_name": job.name,
        "cluster_id": job.cluster_id,
        "workspace_id": job.workspace_id,
        "user_id": job.user_id,
        "user_name": job.user_name,
        "type": job.type,
        "phase": job.phase or rules.PENDING,
        "creation_time": format_time(job.created_at),
        "start_time": format_time(job.started_at),
        "end_time": format_time(job.ended_at),
        "deletion_time": format_time(job.deleted_at),
        "timeout_second": job.timeout_second,
    }


def job_detail(job: OpsJob) -> views.OpsJobDetail:
    nodes = []
    for node_id in job.node_ids:
        result = job.node_results.get(node_id)
        if result is None:
            phase = rules.RUNNING if job.phase == rules.RUNNING else rules.PENDING
            nodes.append(views.JobNodeView(node_id=node_id, phase=phase, message="", time=""))
        else:
            phase = rules.SUCCEEDED if result.get("ok") else rules.FAILED
            nodes.append(
                views.JobNodeView(
                    node_id=node_id,
                    phase=phase,
                    message=str(result.get("message", "")),
                    time=str(result.get("at", "")),
                )
            )
    spec = job.spec
    return views.OpsJobDetail(
        **_item_fields(job),
        conditions=[views.JobCondition(**c) for c in job.conditions],
        inputs=[views.JobInputView(**i) for i in job.inputs],
        outputs=[views.JobInputView(**o) for o in job.outputs],
        env=dict(spec.get("env", {})),
        resource=spec.get("resource"),
        image=str(spec.get("image", "")),
        entry_point=str(spec.get("entryPoint", "")),
        is_tolerate_all=job.is_tolerate_all,
        hostpath=list(spec.get("hostpath", [])),
        message=job.message,
        nodes=nodes,
        excluded_nodes=list(job.excluded_nodes),
        batch_count=job.batch_count,
        available_ratio=job.available_ratio,
        security_upgrade=job.security_upgrade,
        ttl_seconds_after_finished=job.ttl_seconds_after_finished,
    )


def _time(text: str, field: str) -> datetime | None:
    if not text:
        return None
    try:
        return parse_time(text)
    except ValueError as exc:
        raise Invalid(f"{field} {text!r} is not a time like 2006-01-02T15:04:05.000Z") from exc


@router.get("/opsjobs", response_model=ListResponse[views.OpsJobItem], summary="List ops jobs")
async def list_ops_jobs(
    caller: CurrentUser,
    session: Session,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    sort_by: Annotated[str, Query(alias="sortBy", max_length=32)] = "create_time",
    order: Annotated[str, Query(max_length=8)] = "desc",
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
    cluster_id: Annotated[str, Query(alias="clusterId", max_length=63)] = "",
    user_name: Annotated[str, Query(alias="userName", max_length=80)] = "",
    phase: Annotated[str, Query(max_length=16)] = "",
    type: Annotated[str, Query(max_length=16)] = "",
) -> ListResponse[views.OpsJobItem]:
    """Jobs of the last 30 days (or `since`..`until`); regular users see their own."""
    if order not in ("asc", "desc"):
        raise Invalid("order must be asc or desc")
    column = sort_by.strip().lower()
    if column not in db.SORT_COLUMNS:
        raise Invalid(f"sortBy must be one of {', '.join(db.SORT_COLUMNS)}")
    if phase and phase not in rules.PHASES:
        raise Invalid(f"phase must be one of {', '.join(rules.PHASES)}")
    if type and type not in rules.JOB_TYPES:
        raise Invalid(f"type must be one of {', '.join(rules.JOB_TYPES)}")
    end = _time(until, "until") or utcnow()
    start = _time(since, "since") or end - timedelta(days=rules.LIST_WINDOW_DAYS)
    if start > end:
        raise Invalid("the since time is greater than until time")
    filters = JobFilter(
        since=start,
        until=end,
        cluster_id=cluster_id,
        user_name=user_name,
        phase=phase,
        type=type,
        user_id=None if caller.is_admin else caller.id,
    )
    total, rows = await db.list_jobs(
        session, filters, offset=offset, limit=limit, sort_by=column, ascending=order == "asc"
    )
    return ListResponse[views.OpsJobItem](total_count=total, items=[job_item(j) for j in rows])


async def _visible(session: Session, caller: Caller, job_id: str) -> OpsJob:
    job = await db.get_job(session, job_id=job_id)
    if job is None or (not caller.is_admin and job.user_id != caller.id):
        raise NotFound("OpsJob", job_id)
    return job


@router.get("/opsjobs/{JobId}", response_model=views.OpsJobDetail, summary="Get an ops job")
async def get_ops_job(JobId: str, caller: CurrentUser, session: Session) -> views.OpsJobDetail:
    """The job with its conditions, per-node progress and outputs."""
    return job_detail(await _visible(session, caller, JobId))


# --- stop and delete -------------------------------------------------------------------------------


async def _stop(session: Session, state: State, caller: Caller, job_id: str, *, hide: bool) -> None:
    job = await _visible(session, caller, job_id)
    await state.temporal.start_workflow(
        OpsJobWorkflow.run,
        _workflow_input(state, job),
        id=rules.job_workflow_id(job.id),
        task_queue=state.settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=rules.STOP_SIGNAL,
        start_signal_args=[hide],
        search_attributes=_attributes(job),
    )


@router.post("/opsjobs/{JobId}/stop", response_model=None, summary="Stop an ops job")
async def stop_ops_job(JobId: str, caller: CurrentUser, session: Session, state: State) -> None:
    """Stop the job (its running steps are cancelled); it ends Failed, "The job is stopped"."""
    await _stop(session, state, caller, JobId, hide=False)


@router.delete("/opsjobs/{JobId}", response_model=None, summary="Delete an ops job")
async def delete_ops_job(JobId: str, caller: CurrentUser, session: Session, state: State) -> None:
    """Stop the job and hide it from lists (the record is kept with its `deletionTime`)."""
    await _stop(session, state, caller, JobId, hide=True)


@router.get("/nodes/{NodeId}/reboot/logs", response_model=NodeLogs, summary="Reboot log lines of a node")
async def get_reboot_logs(
    NodeId: str,
    _: Admin,
    session: Session,
    tail_lines: Annotated[int, Query(alias="tailLines", ge=1, le=100000)] = 1000,
) -> NodeLogs:
    """The node's log lines written by reboot jobs (upstream's undocumented endpoint)."""
    node = await get_node(session, node_id=NodeId)
    if node is None:
        raise not_found("Node", NodeId)
    lines = await logs.tail(session, resource=LogResource.NODE, resource_id=node.id, count=100000)
    chosen = [line for line in lines if line.line.startswith(rules.REBOOT_LOG_PREFIX)][-tail_lines:]
    return NodeLogs(
        cluster_id=node.cluster_id,
        node_id=node.id,
        pod_id=f"node/{node.id}",
        logs=[format_line(line.created_at, line.level, line.line) for line in chosen],
    )
