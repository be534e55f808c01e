"""`opsjob/<id>`: one ops job from start to its end, stop or timeout.

- **addon**: the job's addons on its nodes in batches of `batchCount` (sorted by node id); each
  node is one `node.job_addons` activity (summary: the node) whose lines go to the node's log;
  with `securityUpgrade` a node waits until it runs no workload. The job fails once the failed
  nodes reach int(nodes x (1 - availableRatio)) (at least 1), naming the node and its output.
- **reboot**: every node rebooted at once (`node.job_reboot`: held unavailable, waits until it
  went away and answers again).
- **preflight**: a check pod on every node through the driver (`ops_job.preflight`); each pod's
  `[ERROR]`/`[SUCCESS]` lines are its node's output.
- **dumplog**: the workload's pod logs into an archive (`ops_job.dump_logs`).

Each node's outcome is recorded as it ends (`ops_job.record_node`); finished nodes are in the
history, so a worker killed mid-batch resumes with the next node, never re-running one. The
`stop` signal and the timeout (`timeoutSecond`) cancel what runs (the SSH command is dropped)
and end the job Failed with upstream's messages.
"""

from __future__ import annotations

import asyncio
import contextlib
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError
from temporalio.workflow import ActivityCancellationType

from workflows.common import enter_phase, failure_message, record

with workflow.unsafe.imports_passed_through():
    from activities.node import NodeActivities
    from activities.ops_job import NodeRecord, OpsJobActivities
    from domain import ops_jobs as rules
    from domain.failures import NON_RETRYABLE

SSH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=2),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE),
)


@workflow.defn(name="OpsJob")
class OpsJobWorkflow:
    """Runs one ops job; `stop` ends it (Failed, "The job is stopped")."""

    def __init__(self) -> None:
        self._stop = False
        self._hide = False
        self._step = "starting"
        self._outputs: list[rules.JobInput] = []

    @workflow.signal(name=rules.STOP_SIGNAL)
    def stop(self, hide: bool) -> None:
        """Stop the job; `hide` also marks its record deleted."""
        self._stop = True
        self._hide = self._hide or hide

    @workflow.query
    def current_step(self) -> str:
        return self._step

    def _show(self, step: str) -> None:
        self._step = step
        workflow.set_current_details(f"**{step}**")

    @workflow.run
    async def run(self, params: rules.OpsJobWorkflowInput) -> str:
        end = None
        if not self._stop and await record(OpsJobActivities.start, params.job_id):
            enter_phase(rules.RUNNING)
            work = asyncio.create_task(self._work(params))
            timeout = params.timeout_seconds if params.timeout_seconds > 0 else None
            try:
                await workflow.wait_condition(lambda: work.done() or self._stop, timeout=timeout)
            except TimeoutError:
                end = rules.JobEnd(
                    job_id=params.job_id,
                    phase=rules.FAILED,
                    message=rules.timeout_message(params.timeout_seconds),
                )
            if work.done():
                try:
                    end = work.result()
                except ActivityError as err:  # a step's record could not be written, retries spent
                    end = rules.JobEnd(
                        job_id=params.job_id,
                        phase=rules.FAILED,
                        message=f"the job could not record its progress: {failure_message(err)[1]}",
                    )
            else:
                work.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await work
        if end is None:
            end = rules.JobEnd(job_id=params.job_id, phase=rules.FAILED, message=rules.STOPPED_MESSAGE)
        end.outputs = [*self._outputs, *end.outputs]
        self._show(f"{end.phase}: {end.message}")
        if await record(OpsJobActivities.finish, end):  # False: it had ended (a run to delete it)
            enter_phase(end.phase)
        if self._hide:
            await record(OpsJobActivities.mark_deleted, params.job_id)
        return end.phase

    async def _work(self, params: rules.OpsJobWorkflowInput) -> rules.JobEnd:
        if params.type == "addon":
            return await self._addon(params)
        if params.type == "reboot":
            return await self._reboot(params)
        if params.type == "dumplog":
            return await self._dumplog(params)
        if params.type == "preflight":
            return await self._preflight(params)
        return rules.JobEnd(
            job_id=params.job_id, phase=rules.FAILED, message=f"unsupported ops job type({params.type})"
        )

    async def _node_step(
        self, params: rules.OpsJobWorkflowInput, node_id: str, method: Any, arg: Any, *, heartbeat: int
    ) -> rules.NodeOutcome:
        try:
            message: str = await workflow.execute_activity_method(
                method,
                arg,
                task_queue=params.ssh_queue,
                start_to_close_timeout=timedelta(seconds=max(params.reboot_wait_seconds, 900) + 120),
                heartbeat_timeout=timedelta(seconds=heartbeat),
                retry_policy=SSH_RETRY,
                summary=node_id,
                # a stopped job ends once its steps are (their remote commands hung up)
                cancellation_type=ActivityCancellationType.WAIT_CANCELLATION_COMPLETED,
            )
            outcome = rules.NodeOutcome(node_id=node_id, ok=True, message=str(message))
        except ActivityError as err:
            outcome = rules.NodeOutcome(node_id=node_id, ok=False, message=failure_message(err)[1])
        await record(OpsJobActivities.record_node, NodeRecord(job_id=params.job_id, **outcome.model_dump()))
        return outcome

    async def _addon(self, params: rules.OpsJobWorkflowInput) -> rules.JobEnd:
        limit = rules.max_failures(len(params.node_ids), params.available_ratio)
        groups = rules.batches(params.node_ids, params.batch_count)
        done: list[rules.NodeOutcome] = []
        for index, batch in enumerate(groups, start=1):
            self._show(f"batch {index}/{len(groups)}: {', '.join(batch)}")
            done += await asyncio.gather(*(self._addon_node(params, node_id) for node_id in batch))
            failed = [o for o in done if not o.ok]
            if len(failed) >= limit:
                first = failed[0]
                return rules.JobEnd(
                    job_id=params.job_id,
                    phase=rules.FAILED,
                    message=f"The number of failures has reached the threshold({limit}): "
                    f"node {first.node_id}: {first.message}",
                )
        failures = sum(not o.ok for o in done)
        return rules.JobEnd(
            job_id=params.job_id,
            phase=rules.SUCCEEDED,
            message=f"success: {len(done) - failures}, fail: {failures}",
        )

    async def _addon_node(self, params: rules.OpsJobWorkflowInput, node_id: str) -> rules.NodeOutcome:
        while params.security_upgrade:
            busy: list[str] = await record(OpsJobActivities.node_busy, node_id)
            if not busy:
                break
            self._show(f"{node_id}: waiting until {', '.join(busy)} end (securityUpgrade)")
            await workflow.sleep(params.idle_poll_seconds)
        step = rules.AddonStep(job_id=params.job_id, node_id=node_id, addons=params.addons)
        return await self._node_step(
            params, node_id, NodeActivities.job_addons, step, heartbeat=params.heartbeat_seconds
        )

    async def _reboot(self, params: rules.OpsJobWorkflowInput) -> rules.JobEnd:
        self._show(f"rebooting {', '.join(params.node_ids)}")
        steps = [
            rules.RebootStep(job_id=params.job_id, node_id=node_id, wait_seconds=params.reboot_wait_seconds)
            for node_id in params.node_ids
        ]
        outcomes = await asyncio.gather(
            *(
                self._node_step(
                    params, s.node_id, NodeActivities.job_reboot, s, heartbeat=params.heartbeat_seconds
                )
                for s in steps
            )
        )
        self._outputs += [rules.JobInput(name="node", value=o.node_id) for o in outcomes if o.ok]
        failed = [o for o in outcomes if not o.ok]
        if failed:
            names = "; ".join(f"{o.node_id}: {o.message}" for o in failed)
            return rules.JobEnd(job_id=params.job_id, phase=rules.FAILED, message=f"reboot failed on {names}")
        return rules.JobEnd(
            job_id=params.job_id, phase=rules.SUCCEEDED, message=f"rebooted {len(outcomes)} nodes"
        )

    async def _dumplog(self, params: rules.OpsJobWorkflowInput) -> rules.JobEnd:
        self._show(f"collecting the logs of {params.workload_id}")
        try:
            outputs: list[rules.JobInput] = await workflow.execute_activity_method(
                OpsJobActivities.dump_logs,
                rules.DumpRequest(job_id=params.job_id, workload_id=params.workload_id),
                task_queue=params.ssh_queue,
                start_to_close_timeout=timedelta(minutes=30),
                heartbeat_timeout=timedelta(seconds=120),
                retry_policy=SSH_RETRY,
            )
        except ActivityError as err:
            return rules.JobEnd(job_id=params.job_id, phase=rules.FAILED, message=failure_message(err)[1])
        return rules.JobEnd(
            job_id=params.job_id, phase=rules.SUCCEEDED, message="logs collected", outputs=outputs
        )

    async def _preflight(self, params: rules.OpsJobWorkflowInput) -> rules.JobEnd:
        self._show(f"checking {', '.join(params.node_ids)}")
        try:
            outcomes: list[rules.NodeOutcome] = await workflow.execute_activity_method(
                OpsJobActivities.preflight,
                params.job_id,
                task_queue=params.ssh_queue,
                start_to_close_timeout=timedelta(hours=6),
                heartbeat_timeout=timedelta(seconds=max(params.heartbeat_seconds, 30)),
                retry_policy=SSH_RETRY,
            )
        except ActivityError as err:
            return rules.JobEnd(job_id=params.job_id, phase=rules.FAILED, message=failure_message(err)[1])
        for outcome in outcomes:
            await record(
                OpsJobActivities.record_node, NodeRecord(job_id=params.job_id, **outcome.model_dump())
            )
        self._outputs += [rules.JobInput(name=o.node_id, value=o.message) for o in outcomes]
        failed = [o.node_id for o in outcomes if not o.ok]
        if failed:
            return rules.JobEnd(
                job_id=params.job_id, phase=rules.FAILED, message=f"checks failed on {', '.join(failed)}"
            )
        return rules.JobEnd(
            job_id=params.job_id, phase=rules.SUCCEEDED, message=f"checks passed on {len(outcomes)} nodes"
        )
