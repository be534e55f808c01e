"""The scheduler of one workspace (`workspace-scheduler/<workspace id>`).

It turns "the queue or the capacity changed" signals (a workload submitted, finished or stopped,
a node faulted, recovered, added or removed, the workspace patched) into scheduling cycles. A
burst of signals while a cycle runs becomes one more cycle, not one per signal; a periodic cycle
runs anyway, so a lost signal cannot strand the queue. Each cycle is one activity (decide and
record in one transaction); the workflow then tells the admitted and evicted workloads'
workflows and marks them told. It continues as new after `cycles_per_run` cycles or when
Temporal suggests it, carrying a pending signal over, and ends when the workspace is gone.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta

from temporalio import workflow
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from workflows.common import DB_RETRY, PHASE, RESOURCE_ID, RESOURCE_TYPE, WORKSPACE, enter_phase

with workflow.unsafe.imports_passed_through():
    from activities.scheduler import SchedulerActivities
    from domain.scheduling import (
        ADMITTED_SIGNAL,
        CHANGED_SIGNAL,
        EVICTED_SIGNAL,
        CycleResult,
        Notice,
        SchedulerInput,
        scheduler_workflow_id,
    )

workflow_id = scheduler_workflow_id


def search_attributes(workspace_id: str) -> TypedSearchAttributes:
    """What the Temporal UI filters a scheduler by (type, workspace, phase)."""
    return TypedSearchAttributes(
        [
            SearchAttributePair(RESOURCE_TYPE, "workspace-scheduler"),
            SearchAttributePair(RESOURCE_ID, workspace_id),
            SearchAttributePair(WORKSPACE, workspace_id),
            SearchAttributePair(PHASE, "Waiting"),
        ]
    )


def workload_workflow_id(workload_id: str) -> str:
    """The id of a workload's lifecycle workflow (the workload issue starts it)."""
    return f"workload/{workload_id}"


@workflow.defn(name="WorkspaceScheduler")
class WorkspaceSchedulerWorkflow:
    """Coalesced cycles over one workspace's queue, signal-driven and periodic."""

    @workflow.init
    def __init__(self, params: SchedulerInput) -> None:
        self._changed = params.changed
        self._reasons: list[str] = []
        self._cycles = 0
        self._last = CycleResult()

    @workflow.signal(name=CHANGED_SIGNAL)
    def changed(self, reason: str) -> None:
        """Something that may let a workload in (or force one out) happened."""
        self._changed = True
        if len(self._reasons) < 20:
            self._reasons.append(reason)

    @workflow.query
    def last_cycle(self) -> CycleResult:
        """What the last cycle did."""
        return self._last

    @workflow.run
    async def run(self, params: SchedulerInput) -> None:
        period = timedelta(seconds=params.period_seconds)
        while True:
            enter_phase("Waiting")
            with contextlib.suppress(TimeoutError):  # the period passed: a periodic cycle
                await workflow.wait_condition(lambda: self._changed, timeout=period)
            why = ", ".join(self._reasons) or ("periodic" if not self._changed else "start")
            self._changed, self._reasons = False, []
            enter_phase("Deciding")
            result = await workflow.execute_activity_method(
                SchedulerActivities.cycle,
                params.workspace_id,
                start_to_close_timeout=timedelta(seconds=params.timeout_seconds),
                retry_policy=DB_RETRY,
                summary=f"cycle: {why}"[:200],
            )
            self._cycles += 1
            self._last = result
            workflow.set_current_details(
                f"**cycle {self._cycles}** ({why}): {result.admitted} admitted, "
                f"{result.evicted} evicted, {result.pending} pending"
            )
            if result.gone:
                enter_phase("Gone")
                return
            if result.notices:
                await self._notify(result.notices, params)
            if result.evicted:  # the victims are queued again: place them in the queue at once
                self.changed("after preemption")
            if self._cycles >= params.cycles_per_run or workflow.info().is_continue_as_new_suggested():
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(params.model_copy(update={"changed": self._changed}))

    async def _notify(self, notices: list[Notice], params: SchedulerInput) -> None:
        """Tell each workload's workflow, all at once (one workflow task however many were
        admitted); one that does not exist (yet, or any more) is skipped."""

        async def tell(notice: Notice) -> None:
            handle = workflow.get_external_workflow_handle(workload_workflow_id(notice.workload_id))
            try:
                if notice.admitted:
                    await handle.signal(ADMITTED_SIGNAL, notice.placements)
                else:
                    await handle.signal(EVICTED_SIGNAL, "preempted by a higher-priority workload")
            except Exception:
                workflow.logger.info("no workflow for workload %s to tell", notice.workload_id)

        await asyncio.gather(*(tell(n) for n in notices))
        await workflow.execute_activity_method(
            SchedulerActivities.mark_notified,
            notices,
            start_to_close_timeout=timedelta(seconds=params.timeout_seconds),
            retry_policy=DB_RETRY,
        )
