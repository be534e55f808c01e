"""The cluster workflow (`cluster/<id>`) and the node management workflow (`node-manage/<nodeId>`).

ClusterWorkflow: the creating request waits on the `claim` update, which binds the control-plane
nodes to the cluster (all or none; refused, and the record discarded, when one was taken
meanwhile). Creation then runs the provisioner over those nodes (streaming its output into the
cluster's log) and records `Ready` or `Failed` with the reason; it then waits for the `delete`
signal, which stops a creation in flight, moves the cluster to `Deleting`, resets it, unbinds its
nodes and removes the record. A failed reset leaves the cluster `Failed` with the reason, so
deleting it again retries.

NodeManageWorkflow: the request waits on the `begin` update, which moves the node to `Managing`
(joining, bound to the cluster) or `Unmanaging` (leaving), or refuses; the provisioner then runs
and the node ends Ready (bound or unbound) or ManagedFailed/UnmanagedFailed.

Every status change is an activity (`db.cluster_status`, `db.node_status`); both workflows keep
the PrimusPhase search attribute on the current step (the API sets PrimusCluster).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError
from temporalio.workflow import ActivityCancellationType

from workflows.common import enter_phase, failure_message, record, refused, run_guarded

with workflow.unsafe.imports_passed_through():
    from activities.cluster import ClusterActivities
    from domain import clusters as rules
    from domain.failures import FINAL_PROVISION

CLAIM_PATCH = "claim-nodes-in-workflow"
"""Histories from before this patch had the API bind the nodes (and mark them Managing)."""
REFUSED = "Refused"


async def _on_nodes(
    method: Callable[[ClusterActivities, Any], Awaitable[Any]],
    arg: Any,
    timings: rules.ClusterTimings,
    queue: str,
) -> Any:
    """A provisioner activity on the ssh queue: bounded by heartbeats and the provisioning timeout.
    A cancelled one is waited for, so nothing runs on the nodes once the workflow moves on."""
    t = timings
    return await workflow.execute_activity_method(
        method,
        arg,
        task_queue=queue,
        cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
        start_to_close_timeout=timedelta(seconds=t.provision_timeout + t.connect_timeout * 4),
        heartbeat_timeout=timedelta(seconds=t.heartbeat_timeout),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=t.retry_interval),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=max(t.retry_interval * 4, 1)),
            maximum_attempts=t.attempts,
            non_retryable_error_types=list(FINAL_PROVISION),
        ),
    )


@workflow.defn(name="Cluster")
class ClusterWorkflow:
    """Creates one cluster and, when asked, tears it down."""

    def __init__(self) -> None:
        self._step = "Pending"
        self._deleting = False
        self._claim: asyncio.Task[str] | None = None

    @workflow.query
    def current_step(self) -> str:
        """The step being worked on, or the last phase."""
        return self._step

    @workflow.signal
    def delete(self) -> None:
        """Stop any creation in flight and tear the cluster down."""
        self._deleting = True

    @workflow.update
    async def claim(self, cluster_id: str) -> None:
        """Bind the control-plane nodes (the creating request waits for this); refused (Conflict)
        when one was taken meanwhile, and the cluster record is then discarded."""
        refusal = await self._claiming(cluster_id)
        if refusal:
            raise refused(refusal)

    def _claiming(self, cluster_id: str) -> asyncio.Task[str]:
        """The one claim of this run, started by the update or, failing that, by the run."""
        if self._claim is None:
            self._claim = asyncio.ensure_future(
                run_guarded(record(ClusterActivities.claim_nodes, cluster_id))
            )
        return self._claim

    def _enter(self, step: str) -> None:
        """The step (or phase) the cluster is at now: the query's answer and the PrimusPhase attribute."""
        self._step = step
        enter_phase(step)

    @workflow.run
    async def run(self, params: rules.ClusterWorkflowInput) -> str:
        self._deleting = self._deleting or params.deleting
        # the claim is shared with the update: whichever runs first starts it, both see its outcome
        if params.create and workflow.patched(CLAIM_PATCH) and await self._claiming(params.cluster_id):
            self._enter(REFUSED)
            await workflow.wait_condition(workflow.all_handlers_finished)
            return REFUSED.lower()
        if params.create and not self._deleting:
            task = asyncio.ensure_future(self._create(params))
            await workflow.wait_condition(lambda: task.done() or self._deleting)
            if not task.done():
                task.cancel()
            with contextlib.suppress(asyncio.CancelledError, CancelledError):
                await task
        while True:
            await workflow.wait_condition(
                lambda: self._deleting or workflow.info().is_continue_as_new_suggested()
            )
            if self._deleting:
                if await self._teardown(params):
                    return "deleted"
                self._deleting = False
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(params.model_copy(update={"create": False, "deleting": False}))

    async def _create(self, params: rules.ClusterWorkflowInput) -> None:
        self._enter("Provisioning")
        try:
            await _on_nodes(ClusterActivities.provision, params.cluster_id, params.timings, params.ssh_queue)
        except ActivityError as err:
            if self._deleting:
                return  # cancelled by the delete signal: the teardown follows
            await self._finish(params.cluster_id, rules.FAILED, failure_message(err)[1])
            return
        await self._finish(params.cluster_id, rules.READY, "")

    async def _finish(self, cluster_id: str, phase: str, message: str) -> None:
        await record(
            ClusterActivities.finish, rules.ClusterFinish(cluster_id=cluster_id, phase=phase, message=message)
        )
        self._enter(phase)

    async def _teardown(self, params: rules.ClusterWorkflowInput) -> bool:
        """Reset, unbind and remove; False (cluster left Failed) when the reset fails."""
        self._enter(rules.DELETING)
        was = await record(ClusterActivities.begin_delete, params.cluster_id)
        self._enter("Resetting")
        try:
            await _on_nodes(ClusterActivities.reset, params.cluster_id, params.timings, params.ssh_queue)
        except ActivityError as err:
            reason = failure_message(err)[1]
            if was != rules.READY:
                # never became Ready: the reset is best effort (upstream skips it), the record goes
                note = rules.ClusterNote(
                    cluster_id=params.cluster_id, line=f"reset skipped: {reason}", level="WARN"
                )
                await record(ClusterActivities.note, note)
                return await self._remove(params.cluster_id)
            message = f"reset failed: {reason}; delete the cluster again to retry"
            await record(
                ClusterActivities.abort_delete,
                rules.ClusterFinish(cluster_id=params.cluster_id, phase=rules.FAILED, message=message),
            )
            self._enter(rules.FAILED)
            return False
        return await self._remove(params.cluster_id)

    async def _remove(self, cluster_id: str) -> bool:
        self._enter("RemovingRecord")
        await record(ClusterActivities.remove, cluster_id)
        self._enter("Deleted")
        return True


@workflow.defn(name="NodeManage")
class NodeManageWorkflow:
    """Moves one node into or out of a cluster."""

    def __init__(self) -> None:
        self._step = "Pending"
        self._begin: asyncio.Task[str] | None = None

    @workflow.query
    def current_step(self) -> str:
        """The step being worked on, or the outcome."""
        return self._step

    @workflow.update
    async def begin(self, params: rules.NodeManageInput) -> None:
        """Move the node to Managing/Unmanaging (the request waits for this); refused (Conflict)
        when the node is not in a state to join or leave."""
        refusal = await self._beginning(params)
        if refusal:
            raise refused(refusal)

    def _beginning(self, params: rules.NodeManageInput) -> asyncio.Task[str]:
        """The one start of this run, by the update or, failing that, by the run."""
        if self._begin is None:
            self._begin = asyncio.ensure_future(
                run_guarded(record(ClusterActivities.begin_node_manage, params))
            )
        return self._begin

    def _enter(self, step: str) -> None:
        """The step the node's join or leave is at now: the query's answer and the PrimusPhase attribute."""
        self._step = step
        enter_phase(step)

    @workflow.run
    async def run(self, params: rules.NodeManageInput) -> str:
        adding = params.action == "add"
        self._enter(rules.MANAGING if adding else rules.UNMANAGING)
        if workflow.patched(CLAIM_PATCH) and await self._beginning(params):
            self._enter(REFUSED)
            await workflow.wait_condition(workflow.all_handlers_finished)
            return REFUSED
        ok, message = True, ""
        try:
            await _on_nodes(ClusterActivities.manage_node, params, params.timings, params.ssh_queue)
        except ActivityError as err:
            ok, message = False, failure_message(err)[1]
        await record(
            ClusterActivities.node_finish,
            rules.NodeManageFinish(
                node_id=params.node_id,
                cluster_id=params.cluster_id,
                action=params.action,
                ok=ok,
                message=message,
            ),
        )
        if ok:
            outcome = "Ready" if adding else "Unmanaged"
        else:
            outcome = rules.MANAGED_FAILED if adding else rules.UNMANAGED_FAILED
        self._enter(outcome)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return outcome
