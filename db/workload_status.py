"""The one writer of a workload's status (and of its spec after creation): guarded transitions,
called only from the workload workflow's activities.

Phases: Pending -> Running -> Succeeded | Failed | Stopped; Running -> Updating -> Running for
Deployments and StatefulSets; a failover or eviction goes back to Pending. An ended workload
never changes phase again. Each function returns False when its guard did not hold (the
workload is gone, already ended, or the change was already made), so a retried activity is a
no-op.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.workloads import Workload
from domain import workload_lifecycle as life
from domain.pods import PodStatus
from domain.timefmt import format_time
from domain.workloads import CronJob, WorkloadSpec


async def _live(session: AsyncSession, workload_id: str) -> Workload | None:
    """The workload, locked for the transaction, unless it has ended."""
    workload = await session.get(Workload, workload_id, populate_existing=True, with_for_update=True)
    if workload is None or workload.phase in life.ENDED_PHASES:
        return None
    return workload


def _condition(workload: Workload, kind: str, message: str, dispatch_count: int, now: datetime) -> None:
    entry = life.Condition(
        type=kind,
        reason=life.reason_of(dispatch_count),
        message=message[:1024],
        last_transition_time=format_time(now),
    )
    workload.conditions = life.add_condition(workload.conditions, entry)


def _touch(workload: Workload, now: datetime) -> bool:
    workload.updated_at = now
    return True


async def set_waiting(session: AsyncSession, *, workload_id: str, message: str, now: datetime) -> bool:
    """Why a Pending workload is not queued yet (dependencies, start time); "" clears it."""
    workload = await _live(session, workload_id)
    if workload is None or workload.phase != life.PENDING or workload.message == message:
        return False
    workload.message = message[:2000]
    return _touch(workload, now)


async def scheduled(session: AsyncSession, *, workload_id: str, dispatch_count: int, now: datetime) -> bool:
    """The scheduler admitted it for dispatch `dispatch_count` (AdminScheduled)."""
    workload = await _live(session, workload_id)
    if workload is None or workload.dispatch_count >= dispatch_count:
        return False
    workload.message = ""
    _condition(workload, life.ADMIN_SCHEDULED, "the workload is scheduled", dispatch_count, now)
    return _touch(workload, now)


async def dispatched(
    session: AsyncSession, *, workload_id: str, dispatch_count: int, nodes: Sequence[str], now: datetime
) -> bool:
    """Its pods were sent to the cluster (AdminDispatched); the first dispatch starts the clock."""
    workload = await _live(session, workload_id)
    if workload is None or workload.dispatch_count >= dispatch_count:
        return False
    workload.dispatch_count = dispatch_count
    workload.nodes = [*workload.nodes[: dispatch_count - 1], list(dict.fromkeys(nodes))]
    workload.ranks = workload.ranks[: dispatch_count - 1]
    workload.pods = []
    if workload.start_time is None:
        workload.start_time = now
    _condition(workload, life.ADMIN_DISPATCHED, "the workload is dispatched", dispatch_count, now)
    return _touch(workload, now)


async def record_pods(
    session: AsyncSession, *, workload_id: str, dispatch_count: int, pods: Sequence[PodStatus], now: datetime
) -> bool:
    """The pods of the current dispatch as the driver sees them; Pending or Updating -> Running
    once every pod runs (K8sRunning). False when nothing changed."""
    workload = await _live(session, workload_id)
    if workload is None or workload.dispatch_count != dispatch_count:
        return False
    shown = [p.model_dump(mode="json") for p in pods]
    running = bool(pods) and all(p.phase in ("Running", "Succeeded") for p in pods)
    promote = running and workload.phase in (life.PENDING, life.UPDATING)
    if shown == workload.pods and not promote:
        return False
    workload.pods = shown
    nodes, ranks = life.nodes_and_ranks(pods)
    if nodes:
        workload.nodes = [*workload.nodes[: dispatch_count - 1], nodes]
        workload.ranks = [*workload.ranks[: dispatch_count - 1], ranks]
    if promote:
        workload.phase = life.RUNNING
        workload.message = ""
        _condition(workload, life.K8S_RUNNING, "the workload is running", dispatch_count, now)
    return _touch(workload, now)


async def failover(
    session: AsyncSession, *, workload_id: str, dispatch_count: int, message: str, now: datetime
) -> bool:
    """Dispatch `dispatch_count` failed (or was preempted) and goes back to the queue (AdminFailover)."""
    workload = await _live(session, workload_id)
    if workload is None or workload.dispatch_count != dispatch_count:
        return False
    if any(
        c.get("type") == life.ADMIN_FAILOVER and c.get("reason") == life.reason_of(dispatch_count)
        for c in workload.conditions
    ):
        return False
    workload.phase = life.PENDING
    workload.message = message[:2000]
    _condition(workload, life.ADMIN_FAILOVER, message, dispatch_count, now)
    return _touch(workload, now)


async def updating(session: AsyncSession, *, workload_id: str, now: datetime) -> bool:
    """A running Deployment or StatefulSet rolls out a change: Running -> Updating."""
    workload = await _live(session, workload_id)
    if workload is None or workload.phase != life.RUNNING:
        return False
    workload.phase = life.UPDATING
    _condition(workload, life.K8S_UPDATING, "the workload is updating", workload.dispatch_count, now)
    return _touch(workload, now)


async def finish(session: AsyncSession, *, finish: life.Finish, now: datetime) -> bool:
    """The lifecycle ended: Succeeded, Failed or Stopped, with its condition and message."""
    if finish.phase not in life.ENDED_PHASES:
        raise ValueError(f"{finish.phase} is not a final phase")
    workload = await _live(session, finish.workload_id)
    if workload is None:
        return False
    workload.phase = finish.phase
    workload.message = finish.message[:2000]
    workload.end_time = now
    _condition(workload, finish.condition, finish.message, workload.dispatch_count, now)
    return _touch(workload, now)


async def mark_deleted(session: AsyncSession, *, workload_id: str, now: datetime) -> bool:
    """Hide an ended workload from the API (the record is kept, with its deletion time)."""
    workload = await session.get(Workload, workload_id, populate_existing=True, with_for_update=True)
    if workload is None or workload.is_deleted or workload.phase not in life.ENDED_PHASES:
        return False
    workload.is_deleted = True
    workload.deletion_time = now
    return _touch(workload, now)


def _patched_spec(spec: WorkloadSpec, patch: life.PatchRequest) -> dict[str, Any]:
    data = spec.model_copy(deep=True)
    res = data.resource
    for name in ("cpu", "gpu", "memory", "ephemeral_storage", "shared_memory"):
        value = getattr(patch, name)
        if value is not None:
            setattr(res, name, value)
    if patch.replica is not None:
        res.replica = patch.replica
    for name in ("priority", "image", "entry_point", "description", "timeout", "max_retry", "env"):
        value = getattr(patch, name)
        if value is not None:
            setattr(data, name, value)
    if patch.cron_jobs is not None:
        data.cron_jobs = [CronJob.model_validate(c) for c in patch.cron_jobs]
    return data.model_dump(mode="json")


async def apply_patch(
    session: AsyncSession, *, workload_id: str, patch: life.PatchRequest, now: datetime
) -> bool:
    """Write a validated patch into the spec (and the priority and description columns)."""
    workload = await _live(session, workload_id)
    if workload is None:
        return False
    workload.spec = _patched_spec(workload.spec_model(), patch)
    if patch.priority is not None:
        workload.priority = patch.priority
    if patch.description is not None:
        workload.description = patch.description
    return _touch(workload, now)
