"""Scheduler activities: one cycle over a workspace's queue, enqueue and withdraw for workloads.

A cycle loads the snapshot (the workspace's queue settings, its nodes with their allocatable
resources, availability and taints, and its queue entries), runs the pure `decide`, and writes
the decision in one transaction through `db.queue_status`. It returns every admission or
eviction whose workflow has not been told yet, so a cycle retried after its worker died tells
them too, and nothing is admitted twice (entries already admitted are running in the snapshot).
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

from temporalio import activity

from db import queue_status
from db.scheduling import queue_state, scheduler_nodes
from db.session import SessionFactory
from db.workspaces import Workspace
from domain import scheduler as s
from domain.config import Source, current
from domain.node_flavors import ReservePercents
from domain.scheduling import CycleResult, Notice, QueueRequest
from domain.timefmt import utcnow


@contextlib.contextmanager
def collector_paused() -> Iterator[None]:
    """The garbage collector off while a cycle loads and decides: it builds some 40,000 objects
    for a 10,000-entry queue, none in a reference cycle, and each of the collections they would
    trigger walks the worker's whole heap (tens of ms each, as the survivors pile up). It runs
    once afterwards instead. Left alone when someone else already turned it off."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class SchedulerActivities:
    """Cycles and queue entries; `reserve` is read at each cycle (settings may change)."""

    def __init__(self, sessions: SessionFactory, reserve: Source[ReservePercents]) -> None:
        self._sessions = sessions
        self._reserve = reserve

    @activity.defn(name="scheduler.cycle")
    async def cycle(self, workspace_id: str) -> CycleResult:
        """Decide over the workspace's queue and record the decision; `gone` once it is deleted."""
        with collector_paused():
            return await self._cycle(workspace_id)

    async def _cycle(self, workspace_id: str) -> CycleResult:
        async with self._sessions() as session, session.begin():
            workspace = await session.get(Workspace, workspace_id, populate_existing=True)
            if workspace is None:
                return CycleResult(gone=True)
            nodes = await scheduler_nodes(session, workspace_id=workspace_id, reserve=current(self._reserve))
            queue = await queue_state(session, workspace_id=workspace_id)
            policy: s.QueuePolicy = "balance" if workspace.queue_policy == "balance" else "fifo"
            settings = s.Workspace(
                id=workspace_id, queue_policy=policy, enable_preempt=workspace.enable_preempt
            )
            decision = s.decide(
                s.Snapshot(workspace=settings, nodes=nodes, queued=queue.queued, running=queue.running)
            )
            written = await queue_status.apply_decision(
                session, workspace_id=workspace_id, decision=decision, now=utcnow(), shown=queue.shown
            )
            notices = await queue_status.unnotified(session, workspace_id=workspace_id)
        return CycleResult(
            notices=notices,
            admitted=len(decision.admissions),
            evicted=len(decision.evicted),
            pending=len(decision.pending),
            written=written,
        )

    @activity.defn(name="scheduler.mark_notified")
    async def mark_notified(self, notices: list[Notice]) -> None:
        """The workflows of these admissions and evictions were told."""
        async with self._sessions() as session, session.begin():
            await queue_status.mark_notified(session, notices=notices, now=utcnow())

    @activity.defn(name="scheduler.enqueue")
    async def enqueue(self, request: QueueRequest) -> bool:
        """Queue a workload (idempotent: False when it already has an entry)."""
        async with self._sessions() as session, session.begin():
            return await queue_status.enqueue(session, request=request, now=utcnow())

    @activity.defn(name="scheduler.withdraw")
    async def withdraw(self, workload_id: str) -> bool:
        """Remove a workload's entry (it ended or was stopped), freeing what it held."""
        async with self._sessions() as session, session.begin():
            return await queue_status.withdraw(session, workload_id=workload_id)
