"""A workload's whole lifecycle (`workload/<id>`), from submission to clean-up.

1. Waits for its dependencies (all must succeed; one that fails fails it) and for its `start`
   cron time (a durable timer: it is not queued meanwhile, so it blocks nobody).
2. Queues itself in its workspace's queue and waits for the scheduler's `admitted` signal with
   the placement of every pod.
3. Dispatches through the cluster's execution driver (io queue) and watches the pods with a
   heartbeating activity until the run ends.
4. A failed run, a hang of a supervised run or a fault on one of its nodes goes back to the
   front of the queue while `dispatchCount <= maxRetry`, else the workload fails with the
   failing pods' exit codes and last log lines. A preemption (`evicted`) re-queues it normally.
5. `stop` (Update) and the timeout end it as Stopped; `delete` (Update) stops it and hides the
   record; after the end the queue entry is withdrawn, dependents are told, and the driver's
   objects are removed once `ttlSecondsAfterFinished` has passed.

Every status change is an activity (`db.workload_status`). The current step is the workflow's
details and the PrimusPhase search attribute, so the Temporal UI shows where it waits.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

from workflows.common import enter_phase, failure_message, record, refused

with workflow.unsafe.imports_passed_through():
    from activities.scheduler import SchedulerActivities
    from activities.workload import FailoverNote, PatchNote, WaitingNote, WorkloadActivities
    from domain import workload_lifecycle as life
    from domain.failures import NON_RETRYABLE
    from domain.scheduling import (
        ADMITTED_SIGNAL,
        CHANGED_SIGNAL,
        EVICTED_SIGNAL,
        Placement,
        QueueRequest,
        scheduler_workflow_id,
    )

DEPENDENCY_RECHECK = timedelta(seconds=60)
IO_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=8,
    non_retryable_error_types=list(NON_RETRYABLE),
)
RERUN_CLEANUP_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_attempts=3,
    non_retryable_error_types=list(NON_RETRYABLE),
)
"""Removing the pods of a failed run before the next: bounded, so a node that stopped answering
(the usual reason for a failover) delays the rerun by seconds, not minutes. What stays behind on
it is removed again when the workload ends."""
WATCH_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    non_retryable_error_types=list(NON_RETRYABLE),
)
"""The watch retries for as long as the cluster is away (a worker restart resumes it)."""


async def _wait(condition: Callable[[], bool], limit: timedelta | float | None) -> None:
    """Wait until `condition` holds or `limit` has passed (a durable timer), whichever is first."""
    with contextlib.suppress(TimeoutError):
        await workflow.wait_condition(condition, timeout=limit)


@dataclass(frozen=True)
class _Rerun:
    """Another run follows: `why` it does; `requeued` when the scheduler queued it again itself
    (an eviction), `rollout` for a patch rolled out (no failover is recorded)."""

    plan: life.Plan
    why: str
    requeued: bool = False
    rollout: bool = False


@workflow.defn(name="Workload")
class WorkloadWorkflow:
    """One workload, submitted to cleaned up."""

    @workflow.init
    def __init__(self, params: life.WorkloadWorkflowInput) -> None:
        self._params = params
        self._placements: list[Placement] | None = None
        self._evicted = ""
        self._fault = ""
        self._stop = ""
        self._delete = False
        self._dependency_ended = False
        self._patches: list[life.PatchRequest] = []
        self._ended = False
        self._hidden = False
        self._waited = False
        self._step = "Starting"
        self._deadline: float | None = None
        self._started_at: float | None = None

    # --- messages ----------------------------------------------------------------------------

    @workflow.signal(name=ADMITTED_SIGNAL)
    def admitted(self, placements: list[Placement]) -> None:
        """The scheduler admitted the workload with these pod placements."""
        self._placements = placements

    @workflow.signal(name=EVICTED_SIGNAL)
    def evicted(self, reason: str) -> None:
        """A higher-priority workload preempted it; it is queued again."""
        self._evicted = reason or "the workload is preempted"
        self._placements = None

    @workflow.signal(name=life.FAILOVER_SIGNAL)
    def failover(self, message: str) -> None:
        """A node it runs on has a fault."""
        self._fault = message or "a node of the workload has a fault"

    @workflow.signal(name=life.DEPENDENCY_SIGNAL)
    def dependency_ended(self, workload_id: str) -> None:
        """A workload it waits for ended."""
        self._dependency_ended = True

    @workflow.update(name=life.STOP_UPDATE)
    async def stop(self, message: str) -> None:
        """Stop it; answers once the record says Stopped (or it had ended already)."""
        if not self._stop:
            self._stop = message or "the workload is stopped"
        await workflow.wait_condition(lambda: self._ended)

    @workflow.update(name=life.DELETE_UPDATE)
    async def delete(self, message: str) -> None:
        """Stop it if it runs and hide the record; answers once the record is hidden."""
        self._delete = True
        if not self._stop:
            self._stop = message or "the workload is deleted"
        await workflow.wait_condition(lambda: self._hidden)

    @workflow.update(name=life.PATCH_UPDATE)
    async def patch(self, patch: life.PatchRequest) -> None:
        """Apply a validated patch: written into the spec now, acted on by the lifecycle."""
        if self._ended or self._stop:
            raise refused("the workload has ended: only running or pending workloads can be edited")
        await record(
            WorkloadActivities.apply_patch, PatchNote(workload_id=self._params.workload_id, patch=patch)
        )
        self._patches.append(patch)

    @workflow.query
    def current_step(self) -> str:
        """Where the lifecycle stands (what it waits for)."""
        return self._step

    # --- helpers -----------------------------------------------------------------------------

    def _show(self, step: str, phase: str | None = None) -> None:
        self._step = step
        workflow.set_current_details(f"**{step}**")
        if phase is not None:
            enter_phase(phase)

    async def _io(self, method: Any, arg: Any, retry: RetryPolicy = IO_RETRY) -> Any:
        return await workflow.execute_activity_method(
            method,
            arg,
            task_queue=self._params.io_queue,
            start_to_close_timeout=timedelta(seconds=self._params.io_timeout_seconds),
            retry_policy=retry,
        )

    async def _try_io(self, method: Any, arg: Any, retry: RetryPolicy = IO_RETRY) -> str:
        """A driver call whose failure (after its retries) must not end the workflow: "" when it
        succeeded, else why it failed (also logged)."""
        try:
            await self._io(method, arg, retry)
        except ActivityError as err:
            message = failure_message(err)[1]
            workflow.logger.warning(
                "%s failed for %s: %s", method.__name__, self._params.workload_id, message
            )
            return message
        return ""

    async def _tell_scheduler(self, reason: str) -> None:
        handle = workflow.get_external_workflow_handle(scheduler_workflow_id(self._params.workspace_id))
        try:
            await handle.signal(CHANGED_SIGNAL, reason)
        except Exception:  # not running: its periodic start by the API or a cycle will see the queue
            workflow.logger.info("workspace scheduler of %s not running", self._params.workspace_id)

    def _queue_request(self, plan: life.Plan, *, failed_over: bool) -> QueueRequest:
        return QueueRequest(
            workload_id=plan.workload_id,
            workspace_id=plan.workspace_id,
            user_id=plan.user_id,
            priority=plan.priority,
            request=plan.request,
            replicas=plan.replicas,
            specified_nodes=plan.specified_nodes,
            required_labels=plan.required_labels,
            tolerate_all=plan.tolerate_all,
            failed_over=failed_over,
        )

    async def _enqueue(self, plan: life.Plan, *, failed_over: bool, why: str) -> None:
        await record(SchedulerActivities.enqueue, self._queue_request(plan, failed_over=failed_over))
        await self._tell_scheduler(why)

    async def _requeue(self, plan: life.Plan, *, failed_over: bool, why: str) -> None:
        """Give back what it holds and queue it again (front of the queue when `failed_over`)."""
        await record(SchedulerActivities.withdraw, plan.workload_id)
        await self._enqueue(plan, failed_over=failed_over, why=why)

    async def _waiting(self, message: str) -> None:
        self._waited = True
        await record(
            WorkloadActivities.set_waiting, WaitingNote(workload_id=self._params.workload_id, message=message)
        )

    def _timed_out(self) -> bool:
        return self._deadline is not None and workflow.time() >= self._deadline

    def _seconds_left(self) -> float | None:
        return None if self._deadline is None else max(self._deadline - workflow.time(), 0.0)

    # --- the lifecycle -----------------------------------------------------------------------

    @workflow.run
    async def run(self, params: life.WorkloadWorkflowInput) -> str:
        plan = await record(WorkloadActivities.load, params.workload_id)
        if plan.phase in life.ENDED_PHASES:  # started again to delete an ended workload
            self._ended = True
            return await self._after_end(plan, plan.phase, plan.dispatch_count > 0)
        finish = await self._before_queue(plan)
        if finish is None:
            finish = await self._dispatches(plan)
        self._show(f"ending: {finish.phase}", finish.phase)
        dependents = await record(WorkloadActivities.finish, finish)  # and gives back its queue entry
        self._ended = True
        await self._tell_scheduler(f"{plan.workload_id} ended")
        if finish.phase == life.STOPPED and finish.dispatch_count > 0:
            await self._try_io(WorkloadActivities.remove_pods, plan.workload_id)
        for dependent in dependents:
            handle = workflow.get_external_workflow_handle(life.workload_workflow_id(dependent))
            try:
                await handle.signal(life.DEPENDENCY_SIGNAL, plan.workload_id)
            except Exception:
                workflow.logger.info("dependent %s has no workflow", dependent)
        return await self._after_end(plan, finish.phase, finish.dispatch_count > 0)

    def _stopped(self, dispatch_count: int) -> life.Finish:
        return life.Finish(
            workload_id=self._params.workload_id,
            phase=life.STOPPED,
            condition=life.ADMIN_STOPPED,
            message=self._stop,
            dispatch_count=dispatch_count,
        )

    async def _before_queue(self, plan: life.Plan) -> life.Finish | None:
        """Dependencies and the start time; a Finish when the workload ends before queuing."""
        while plan.dependencies and not self._stop:
            state: life.DependencyState = await record(WorkloadActivities.dependencies, plan.workload_id)
            if state.failed:
                return life.Finish(
                    workload_id=plan.workload_id,
                    phase=life.FAILED,
                    condition=life.ADMIN_FAILED,
                    message=state.failed,
                )
            if not state.waiting:
                break
            self._show(state.waiting, life.PENDING)
            await self._waiting(state.waiting)
            self._dependency_ended = False
            await _wait(lambda: self._dependency_ended or bool(self._stop), DEPENDENCY_RECHECK)
        if plan.start_at is not None and not self._stop:
            wait = (plan.start_at - workflow.now()).total_seconds()
            if wait > 0:
                message = f"Waiting for start time {plan.start_at.strftime('%Y-%m-%dT%H:%M:%SZ')}"
                self._show(message, life.PENDING)
                await self._waiting(message)
                await _wait(lambda: bool(self._stop), timedelta(seconds=wait))
        if self._stop:
            return self._stopped(plan.dispatch_count)
        if self._waited:
            await self._waiting("")
        return None

    async def _dispatches(self, plan: life.Plan) -> life.Finish:
        """Queue, admission, dispatch and watch, again after each failover, until it ends."""
        count = plan.dispatch_count
        await self._enqueue(plan, failed_over=False, why=f"{plan.workload_id} submitted")
        while True:
            self._show("waiting for admission (signal 'admitted')", life.PENDING)
            await workflow.wait_condition(
                lambda: self._placements is not None or bool(self._stop) or bool(self._patches)
            )
            if self._stop:
                return self._stopped(count)
            if self._placements is None:  # a patch while queued: the scheduler sees the new request
                plan = await self._take_patches(plan, queued=True)
                continue
            placements, self._placements = self._placements, None
            self._evicted = self._fault = ""  # about an earlier run: this admission supersedes them
            count += 1
            self._show(f"dispatching run {count}", life.PENDING)
            dispatch = life.Dispatch(
                workload_id=plan.workload_id, dispatch_count=count, placements=placements
            )
            refused_by_cluster = await self._try_io(WorkloadActivities.dispatch, dispatch)
            if self._started_at is None:
                self._started_at = workflow.time()
                self._deadline = self._started_at + plan.timeout if plan.timeout > 0 else None
            if refused_by_cluster:
                outcome = self._failed_run(plan, count, f"dispatch failed: {refused_by_cluster}")
            else:
                outcome = await self._watch(plan, count)
            if isinstance(outcome, life.Finish):
                return outcome
            plan = outcome.plan
            await self._try_io(WorkloadActivities.remove_pods, plan.workload_id, RERUN_CLEANUP_RETRY)
            if not outcome.rollout:
                note = FailoverNote(workload_id=plan.workload_id, dispatch_count=count, message=outcome.why)
                await record(WorkloadActivities.failover, note)
            if not outcome.requeued:
                await self._requeue(plan, failed_over=True, why=f"{plan.workload_id}: {outcome.why}")

    async def _watch(self, plan: life.Plan, count: int) -> life.Finish | _Rerun:
        """Watch run `count` until it ends or something interrupts it: the Finish, or why
        another run follows."""
        hang = self._params.hang_seconds if plan.supervised else 0
        watch = workflow.start_activity_method(
            WorkloadActivities.watch,
            life.Watch(
                workload_id=plan.workload_id,
                dispatch_count=count,
                poll_seconds=self._params.poll_seconds,
                idle_poll_seconds=min(10.0, self._params.watch_heartbeat_seconds / 3),
                hang_seconds=hang,
                long_running=plan.kind in life.LONG_RUNNING_KINDS,
            ),
            task_queue=self._params.io_queue,
            start_to_close_timeout=timedelta(days=3650),
            heartbeat_timeout=timedelta(seconds=self._params.watch_heartbeat_seconds),
            retry_policy=WATCH_RETRY,
        )
        self._show(f"run {count}: watching the pods (activity workload.watch)", life.RUNNING)
        while True:
            await _wait(
                lambda: (
                    watch.done()
                    or bool(self._stop or self._evicted or self._fault or self._patches)
                    or self._timed_out()
                ),
                self._seconds_left(),
            )
            if not watch.done():
                if self._patches and not (self._stop or self._evicted or self._fault or self._timed_out()):
                    rollout = any(p.changes_pods() for p in self._patches)
                    plan = await self._take_patches(plan, queued=False)
                    if rollout and plan.kind in life.LONG_RUNNING_KINDS:
                        await record(WorkloadActivities.updating, plan.workload_id)
                        await self._cancel(watch)
                        return _Rerun(plan, "the workload is rolling out a change", rollout=True)
                    continue
                await self._cancel(watch)
                if self._stop:
                    return self._stopped(count)
                if self._timed_out():
                    self._stop = f"the workload timed out after {plan.timeout} s"
                    return self._stopped(count)
                if self._evicted:
                    why, self._evicted = self._evicted, ""
                    return _Rerun(plan, why, requeued=True)
                why, self._fault = self._fault, ""
                return self._failed_run(plan, count, why)
            try:
                result: life.WatchResult = watch.result()
            except ActivityError as err:
                result = life.WatchResult(outcome="Failed", message=failure_message(err)[1])
            if result.outcome == "Succeeded":
                return life.Finish(
                    workload_id=plan.workload_id,
                    phase=life.SUCCEEDED,
                    condition=life.K8S_SUCCEEDED,
                    message=result.message,
                    dispatch_count=count,
                )
            return self._failed_run(plan, count, result.message or result.outcome)

    def _failed_run(self, plan: life.Plan, count: int, why: str) -> life.Finish | _Rerun:
        if count <= plan.max_retry:
            return _Rerun(plan, f"the workload is doing the failover: {why}")
        detail = f"failed after {count} run{'s' if count != 1 else ''}: {why}"
        return life.Finish(
            workload_id=plan.workload_id,
            phase=life.FAILED,
            condition=life.ADMIN_FAILED,
            message=detail,
            dispatch_count=count,
        )

    async def _cancel(self, watch: asyncio.Task[Any]) -> None:
        watch.cancel()
        with contextlib.suppress(ActivityError, CancelledError, asyncio.CancelledError):
            await watch

    async def _take_patches(self, plan: life.Plan, *, queued: bool) -> life.Plan:
        """Fold the patches into the plan (re-read from the record); a queued workload whose
        request changed is queued again with it."""
        patches, self._patches = self._patches, []
        fresh: life.Plan = await record(WorkloadActivities.load, plan.workload_id)
        if any(p.timeout is not None for p in patches) and self._started_at is not None:
            self._deadline = self._started_at + fresh.timeout if fresh.timeout > 0 else None
        if queued and any(p.changes_request() for p in patches):
            await self._requeue(fresh, failed_over=False, why=f"{plan.workload_id} patched")
        return fresh.model_copy(update={"dispatch_count": plan.dispatch_count})

    async def _after_end(self, plan: life.Plan, phase: str, dispatched: bool) -> str:
        """Keep the pods (and their logs) for the TTL, then remove them; hide the record on delete."""
        self._show(f"{phase}: keeping the pods for {plan.ttl_seconds} s", phase)
        if plan.ttl_seconds > 0 and not self._delete:
            await _wait(lambda: self._delete, timedelta(seconds=plan.ttl_seconds))
        if self._delete:
            await record(WorkloadActivities.mark_deleted, plan.workload_id)
            self._hidden = True
        if dispatched:  # never dispatched: there is nothing on the cluster (which may be gone)
            await self._try_io(WorkloadActivities.remove_pods, plan.workload_id)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return "deleted" if self._delete else phase
