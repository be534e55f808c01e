"""`fault/<id>`: one fault from injection (or the probe raising it) to its stop.

1. Applies the fault: the node gets the taint `primus-safe.<monitorId>` and a `fault` hold, so
   the scheduler places nothing there; the taints are pushed to the cluster (Kubernetes).
2. Tells the node's workspace scheduler, and when the fault's effect is NoExecute (or its monitor
   is a failover monitor) signals `failover` to every workload with pods on the node: those
   re-queue at the front while retries remain, and the held node is not offered again.
3. Waits for the `stop` signal (the API's stop and delete, or the probe clearing its own
   fault), then removes the hold and the taint, pushes the taints again, tells the scheduler,
   and on delete removes the record.

Stop and delete use signal-with-start, so they work the same on a fault whose workflow ended
(already stopped, or Failed because its node vanished): a new run closes idempotently.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.common import enter_phase, failure_message, record

with workflow.unsafe.imports_passed_through():
    from activities.fault import FaultActivities
    from domain import faults as rules
    from domain import workload_lifecycle as life
    from domain.failures import NON_RETRYABLE
    from domain.scheduling import CHANGED_SIGNAL, scheduler_workflow_id

CLOSED = "Closed"
REMOVED = "Removed"

PUSH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=list(NON_RETRYABLE),
)


@workflow.defn(name="Fault")
class FaultWorkflow:
    """Applies one fault, holds it open until stopped, then releases the node."""

    def __init__(self) -> None:
        self._stop = False
        self._remove = False
        self._step = "starting"

    @workflow.signal(name=rules.STOP_SIGNAL)
    def stop(self, remove: bool) -> None:
        """Close the fault; `remove` also deletes its record."""
        self._stop = True
        self._remove = self._remove or remove

    @workflow.query
    def current_step(self) -> str:
        return self._step

    def _show(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**{step}**")

    @workflow.run
    async def run(self, params: rules.FaultWorkflowInput) -> str:
        if not self._stop:
            self._show("applying: taint and hold the node")
            applied: rules.AppliedFault = await record(FaultActivities.apply, params)
            enter_phase(applied.phase)
            if applied.phase == rules.SUCCEEDED:
                await self._push(params, applied.node_id, applied.cluster_id)
                await self._tell_scheduler(
                    applied.workspace_id, f"fault {applied.fault_id} on {applied.node_id}"
                )
                if applied.failover:
                    await self._fail_over(applied)
            elif not applied.closed:
                return applied.phase  # the node is gone: nothing to hold
            self._show(f"open on {applied.node_id}: waiting for signal '{rules.STOP_SIGNAL}'")
            await workflow.wait_condition(lambda: self._stop)
        self._show("closing: removing the hold and the taint")
        released: rules.ReleasedFault = await record(FaultActivities.close, params.fault_id)
        if released.released:
            await self._push(params, released.node_id, released.cluster_id)
        await self._tell_scheduler(released.workspace_id, f"fault {params.fault_id} stopped")
        if self._remove:
            await record(FaultActivities.remove, params.fault_id)
            return REMOVED
        return CLOSED

    async def _push(self, params: rules.FaultWorkflowInput, node_id: str, cluster_id: str) -> None:
        """Push the node's taints to its cluster; a failure is logged, never fatal (the hold keeps
        the scheduler off the node either way)."""
        if not node_id or not cluster_id:
            return
        self._show(f"pushing the taints of {node_id} to cluster {cluster_id}")
        try:
            await workflow.execute_activity_method(
                FaultActivities.push_taints,
                rules.TaintPush(node_id=node_id, cluster_id=cluster_id),
                task_queue=params.io_queue,
                start_to_close_timeout=timedelta(seconds=60),
                retry_policy=PUSH_RETRY,
            )
        except ActivityError as err:
            workflow.logger.warning("taints of %s not pushed: %s", node_id, failure_message(err)[1])

    async def _tell_scheduler(self, workspace_id: str, reason: str) -> None:
        if not workspace_id:
            return
        handle = workflow.get_external_workflow_handle(scheduler_workflow_id(workspace_id))
        try:
            await handle.signal(CHANGED_SIGNAL, reason)
        except Exception:  # not running: its next start or periodic cycle sees the node
            workflow.logger.info("workspace scheduler of %s not running", workspace_id)

    async def _fail_over(self, applied: rules.AppliedFault) -> None:
        message = f"node {applied.node_id} has {rules.hold_message(applied.monitor_id, applied.message)}"
        for workload_id in applied.workloads:
            self._show(f"failing over {workload_id}")
            handle = workflow.get_external_workflow_handle(life.workload_workflow_id(workload_id))
            try:
                await handle.signal(life.FAILOVER_SIGNAL, message)
            except Exception:  # it ended meanwhile
                workflow.logger.info("workload %s has no running workflow", workload_id)
