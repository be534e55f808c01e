"""Faults: injection (admin; an addition), list with the contract's filters, stop and delete.

Route -> `fault/<id>` workflow (`workflows/fault.py`) -> `activities/fault.py` -> the `faults`
table (`db/faults.py`, written after creation by `db/fault_status.py`). Stop and delete signal
the workflow (signal-with-start, so a fault whose workflow ended is closed by a new run) and
answer at once.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import APIRouter, Query
from temporalio.common import SearchAttributePair, TypedSearchAttributes, WorkflowIDConflictPolicy

from api.deps import Admin, Caller, CurrentUser, Session, State
from api.routes.workspaces import access
from api.schemas import faults as views
from api.schemas.common import ERROR_RESPONSES, ListResponse
from db import faults as db
from db.faults import Fault, FaultFilter
from db.nodes import get_node
from db.workspaces import list_workspaces
from domain import faults as rules
from domain.errors import Conflict, Invalid, NotFound, not_found
from domain.timefmt import format_time, utcnow
from workflows.common import CLUSTER, PHASE, RESOURCE_ID, RESOURCE_TYPE, USER
from workflows.fault import FaultWorkflow

router = APIRouter(tags=["faults"], responses=ERROR_RESPONSES)


def fault_item(fault: Fault) -> views.FaultItem:
    return views.FaultItem(
        id=fault.id,
        node_id=fault.node_id,
        monitor_id=fault.monitor_id,
        message=fault.message,
        action=fault.action,
        effect=fault.effect,
        phase=fault.phase,
        cluster_id=fault.cluster_id,
        source=fault.source,
        creation_time=format_time(fault.created_at),
        deletion_time=format_time(fault.deleted_at),
    )


def _workflow_input(state: State, fault_id: str) -> rules.FaultWorkflowInput:
    return rules.FaultWorkflowInput(
        fault_id=fault_id,
        io_queue=state.settings.queues.ssh,
        failover_monitors=list(state.settings.fault_failover_monitors),
    )


def _attributes(fault: Fault, user: str) -> TypedSearchAttributes:
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "fault"),
            SearchAttributePair(RESOURCE_ID, fault.id),
            SearchAttributePair(CLUSTER, fault.cluster_id),
            SearchAttributePair(PHASE, fault.phase),
            SearchAttributePair(USER, user),
        ]
    )


@router.post("/faults", response_model=views.CreateFaultResponse, summary="Inject a fault (an addition)")
async def create_fault(
    body: views.CreateFaultRequest, caller: Admin, session: Session, state: State
) -> views.CreateFaultResponse:
    """Taint a node as a monitor would: the node is held unavailable until the fault is stopped,
    and for NoExecute (or a failover monitor) its workloads are failed over."""
    problem = rules.monitor_id_problem(body.monitor_id)
    if problem:
        raise Invalid(problem)
    if body.action not in rules.ACTIONS:
        raise Invalid(f"action must be one of {', '.join(rules.ACTIONS)}")
    node = await get_node(session, node_id=body.node_id)
    if node is None:
        raise not_found("Node", body.node_id)
    existing = await db.open_fault(session, node_id=node.id, monitor_id=body.monitor_id)
    if existing is not None:
        raise Conflict(
            f"node {node.id} already has an open fault of monitor {body.monitor_id}: {existing.id}"
        )
    fault = await db.new_fault(
        session,
        fault_id=str(uuid.uuid4()),
        node_id=node.id,
        monitor_id=body.monitor_id,
        message=body.message,
        effect=body.effect,
        cluster_id=node.cluster_id,
        source="api",
        created_by=caller.id,
        now=utcnow(),
    )
    await session.commit()
    try:
        await state.temporal.start_workflow(
            FaultWorkflow.run,
            _workflow_input(state, fault.id),
            id=rules.fault_workflow_id(fault.id),
            task_queue=state.settings.queues.control,
            id_conflict_policy=WorkflowIDConflictPolicy.FAIL,
            search_attributes=_attributes(fault, caller.id),
            static_summary=f"Fault {fault.monitor_id} on node {fault.node_id}",
        )
    except BaseException:
        await session.delete(fault)
        await session.commit()
        raise
    return views.CreateFaultResponse(id=fault.id)


async def _usable_workspaces(session: Session, caller: Caller) -> list[str] | None:
    if caller.is_admin:
        return None
    return [w.id for w in await list_workspaces(session) if await access(session, caller, w)]


@router.get("/faults", response_model=ListResponse[views.FaultItem], summary="List faults")
async def list_faults(
    caller: CurrentUser,
    session: Session,
    offset: Annotated[int, Query(ge=0, le=2**31 - 1)] = 0,
    limit: Annotated[int, Query(ge=1, le=10000)] = 100,
    sort_by: Annotated[str, Query(alias="sortBy", max_length=32)] = "create_time",
    order: Annotated[str, Query(max_length=8)] = "desc",
    node_id: Annotated[str, Query(alias="nodeId", max_length=63, description="substring")] = "",
    monitor_id: Annotated[str, Query(alias="monitorId", max_length=1024, description="comma-separated")] = "",
    cluster_id: Annotated[str, Query(alias="clusterId", max_length=63)] = "",
    only_open: Annotated[bool, Query(alias="onlyOpen")] = False,
) -> ListResponse[views.FaultItem]:
    """Faults, newest first; regular users see those of nodes serving their workspaces."""
    if order not in ("asc", "desc"):
        raise Invalid("order must be asc or desc")
    column = sort_by.strip().lower()
    if column not in db.SORT_COLUMNS:
        raise Invalid(f"sortBy must be one of {', '.join(db.SORT_COLUMNS)}")
    filters = FaultFilter(
        node_id=node_id,
        monitor_ids=[m.strip() for m in monitor_id.split(",") if m.strip()],
        cluster_id=cluster_id,
        only_open=only_open,
        workspace_ids=await _usable_workspaces(session, caller),
    )
    total, rows = await db.list_faults(
        session, filters, offset=offset, limit=limit, sort_by=column, ascending=order == "asc"
    )
    return ListResponse[views.FaultItem](total_count=total, items=[fault_item(f) for f in rows])


async def _stop(session: Session, state: State, fault_id: str, *, remove: bool) -> None:
    fault = await db.get_fault(session, fault_id=fault_id)
    if fault is None:
        raise NotFound("Fault", fault_id)
    await state.temporal.start_workflow(
        FaultWorkflow.run,
        _workflow_input(state, fault.id),
        id=rules.fault_workflow_id(fault.id),
        task_queue=state.settings.queues.control,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
        start_signal=rules.STOP_SIGNAL,
        start_signal_args=[remove],
        search_attributes=_attributes(fault, fault.created_by),
        static_summary=f"Fault {fault.monitor_id} on node {fault.node_id}",
    )


@router.post("/faults/{FaultId}/stop", response_model=None, summary="Stop a fault")
async def stop_fault(FaultId: str, _: Admin, session: Session, state: State) -> None:
    """Close the fault: its taint and hold go (the node is schedulable again unless another open
    fault holds it); the record stays with its `deletionTime`."""
    await _stop(session, state, FaultId, remove=False)


@router.delete("/faults/{FaultId}", response_model=None, summary="Delete a fault")
async def delete_fault(FaultId: str, _: Admin, session: Session, state: State) -> None:
    """Stop the fault and remove its record."""
    await _stop(session, state, FaultId, remove=True)
