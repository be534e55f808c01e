"""The cluster workflow (`cluster/<id>`) and the node management workflow (`node-manage/<nodeId>`).

ClusterWorkflow: creation runs the provisioner over the control-plane nodes (streaming its output
into the cluster's log), then records `Ready` (binding the nodes) or `Failed` with the reason; it
then waits for the `delete` signal, which stops a creation in flight, moves the cluster to
`Deleting`, resets it, unbinds its nodes and removes the record. A failed reset leaves the cluster
`Failed` with the reason, so deleting it again retries.

NodeManageWorkflow: one node joins (`add`: Managing -> Ready, or ManagedFailed) or leaves
(`remove`: Unmanaging -> unbound, or UnmanagedFailed) a cluster through the provisioner.

Both keep the PrimusPhase search attribute on the current step (the API sets PrimusCluster).
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

from workflows.common import DB_RETRY, PHASE

with workflow.unsafe.imports_passed_through():
    from activities.cluster import ClusterActivities
    from domain import clusters as rules
    from primus_safe.settings import Settings
    from workflows.node import failure_message

FINAL_ERRORS = [
    "ProvisionFailed",
    "AuthenticationFailed",
    "HostKeyChanged",
    "CommandFailed",
    "SSHError",
    "NotFound",
    "Invalid",
]


def cluster_timings(settings: Settings) -> rules.ClusterTimings:
    """The activity timings the settings ask for."""
    return rules.ClusterTimings(
        connect_timeout=settings.ssh_connect_timeout_seconds,
        provision_timeout=settings.cluster_provision_timeout_seconds,
        heartbeat_timeout=settings.cluster_heartbeat_timeout_seconds,
        attempts=settings.ssh_unreachable_attempts,
        retry_interval=settings.ssh_retry_interval_seconds,
    )


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
            non_retryable_error_types=FINAL_ERRORS,
        ),
    )


async def _record(method: Callable[[ClusterActivities, Any], Awaitable[Any]], arg: Any) -> Any:
    """A short database activity on the workflow's own (control) queue."""
    return await workflow.execute_activity_method(
        method, arg, start_to_close_timeout=timedelta(seconds=30), retry_policy=DB_RETRY
    )


def _show(step: str) -> None:
    workflow.upsert_search_attributes([PHASE.value_set(step)])


@workflow.defn(name="Cluster")
class ClusterWorkflow:
    """Creates one cluster and, when asked, tears it down."""

    def __init__(self) -> None:
        self._step = "Pending"
        self._deleting = False

    @workflow.query
    def current_step(self) -> str:
        """The step being worked on, or the last phase."""
        return self._step

    @workflow.signal
    def delete(self) -> None:
        """Stop any creation in flight and tear the cluster down."""
        self._deleting = True

    def _set(self, step: str) -> None:
        self._step = step
        _show(step)

    @workflow.run
    async def run(self, params: rules.ClusterWorkflowInput) -> str:
        self._deleting = self._deleting or params.deleting
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
        self._set("Provisioning")
        try:
            await _on_nodes(ClusterActivities.provision, params.cluster_id, params.timings, params.ssh_queue)
        except ActivityError as err:
            if self._deleting:
                return  # cancelled by the delete signal: the teardown follows
            await self._finish(params.cluster_id, rules.FAILED, failure_message(err)[1])
            return
        await self._finish(params.cluster_id, rules.READY, "")

    async def _finish(self, cluster_id: str, phase: str, message: str) -> None:
        await _record(
            ClusterActivities.finish, rules.ClusterFinish(cluster_id=cluster_id, phase=phase, message=message)
        )
        self._set(phase)

    async def _teardown(self, params: rules.ClusterWorkflowInput) -> bool:
        """Reset, unbind and remove; False (cluster left Failed) when the reset fails."""
        self._set(rules.DELETING)
        was = await _record(ClusterActivities.begin_delete, params.cluster_id)
        self._set("Resetting")
        try:
            await _on_nodes(ClusterActivities.reset, params.cluster_id, params.timings, params.ssh_queue)
        except ActivityError as err:
            reason = failure_message(err)[1]
            if was != rules.READY:
                # never became Ready: the reset is best effort (upstream skips it), the record goes
                note = rules.ClusterNote(
                    cluster_id=params.cluster_id, line=f"reset skipped: {reason}", level="WARN"
                )
                await _record(ClusterActivities.note, note)
                return await self._remove(params.cluster_id)
            message = f"reset failed: {reason}; delete the cluster again to retry"
            await _record(
                ClusterActivities.abort_delete,
                rules.ClusterFinish(cluster_id=params.cluster_id, phase=rules.FAILED, message=message),
            )
            self._set(rules.FAILED)
            return False
        return await self._remove(params.cluster_id)

    async def _remove(self, cluster_id: str) -> bool:
        self._set("RemovingRecord")
        await _record(ClusterActivities.remove, cluster_id)
        self._set("Deleted")
        return True


@workflow.defn(name="NodeManage")
class NodeManageWorkflow:
    """Moves one node into or out of a cluster."""

    def __init__(self) -> None:
        self._step = "Pending"

    @workflow.query
    def current_step(self) -> str:
        """The step being worked on, or the outcome."""
        return self._step

    def _set(self, step: str) -> None:
        self._step = step
        _show(step)

    @workflow.run
    async def run(self, params: rules.NodeManageInput) -> str:
        adding = params.action == "add"
        self._set(rules.MANAGING if adding else rules.UNMANAGING)
        ok, message = True, ""
        try:
            await _on_nodes(ClusterActivities.manage_node, params, params.timings, params.ssh_queue)
        except ActivityError as err:
            ok, message = False, failure_message(err)[1]
        await _record(
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
        self._set(outcome)
        return outcome
