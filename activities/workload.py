"""Workload activities: the record's transitions (control queue) and the cluster's side through
its execution driver (io queue): dispatch, watch, remove, and reads for the API.

Every transition goes through `db.workload_status` and is guarded, so a retried activity is a
no-op. The driver calls are idempotent (`apply` starts only what is missing, `delete` of what is
gone is fine). The watch heartbeats each poll with what it has seen, so after a worker restart
its retry resumes the hang clock where it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from pydantic import BaseModel
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.execution import DriverUnavailable, cluster_driver
from activities.log_collect import OutputCollector, dispatch_of
from db import queue_status, workload_status
from db import workloads as db
from db.encryption import SecretBox
from db.node_flavors import NodeFlavor
from db.session import SessionFactory
from db.workspaces import get_workspace
from domain import workload_lifecycle as life
from domain.config import LogCollectConfig
from domain.errors import NotFound
from domain.failures import Failure
from domain.node_flavors import FlavorSpec, total_resources
from domain.pods import PodStatus
from domain.timefmt import parse_time, utcnow
from domain.workloads import PodAssignment, ServiceInfo, WorkloadDispatch, main_container
from drivers.execution import DriverError, ExecutionDriver

T = TypeVar("T")
WRITE_ATTEMPTS = 6
CONCURRENT_WRITES = 8
"""Database transactions the workload activities of one worker run at once (the rest wait,
instead of exhausting the connection pool when hundreds of watches report together)."""
DRIVER_THREADS = 32

LOG_TAIL_ON_FAILURE = 5
GONE_AFTER_POLLS = 3
MORE_OUTPUT_PAUSE = 0.05


def _fail(message: str, kind: Failure, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message[:2000], type=kind, non_retryable=not retryable)


class WaitingNote(BaseModel):
    """Why a workload waits before it is queued."""

    workload_id: str
    message: str


class FailoverNote(BaseModel):
    """A dispatch that goes back to the queue."""

    workload_id: str
    dispatch_count: int
    message: str


class PatchNote(BaseModel):
    """A patch to write into the spec."""

    workload_id: str
    patch: life.PatchRequest


class PodRead(BaseModel):
    """A read of the cluster for the API: a pod's log, or the workload's Service."""

    workload_id: str
    what: str = "log"
    """`log` or `service`."""
    pod: str = ""
    container: str = ""
    tail_lines: int | None = None
    since_seconds: int | None = None


class PodReadResult(BaseModel):
    """The log text or the Service; `missing` names what was not found."""

    text: str = ""
    service: ServiceInfo | None = None
    missing: str = ""
    error: str = ""


class _WatchProgress(BaseModel):
    """What a watch heartbeats (and resumes from; the log collection resumes from the store)."""

    last_output_at: float = 0.0
    seen_pods: bool = False


class WorkloadActivities:
    """Holds the database and the secret box."""

    def __init__(
        self,
        sessions: SessionFactory,
        box: SecretBox,
        request_timeout: float = 30,
        log_collect: LogCollectConfig | None = None,
    ) -> None:
        self._sessions = sessions
        self._box = box
        self._timeout = request_timeout
        self._collect = log_collect or LogCollectConfig()
        self._writes = asyncio.Semaphore(CONCURRENT_WRITES)
        self._threads = ThreadPoolExecutor(max_workers=DRIVER_THREADS, thread_name_prefix="driver")

    async def _blocking(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Run a blocking driver call in the driver threads (not the loop's small default pool)."""
        return await asyncio.get_running_loop().run_in_executor(self._threads, partial(fn, *args, **kwargs))

    async def _write(self, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `write` in its own transaction, retrying while SQLite reports the database locked."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self._writes, self._sessions() as session, session.begin():
                    return await write(session)
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def _record(self, workload_id: str) -> db.Workload:
        async with self._sessions() as session:
            workload = await db.get_workload(session, workload_id=workload_id, include_deleted=True)
        if workload is None:
            raise _fail(f"workload {workload_id} not found", Failure.NOT_FOUND)
        return workload

    @contextlib.asynccontextmanager
    async def _driver(self, cluster_id: str, only_nodes: Sequence[str] | None = None) -> Any:
        try:
            driver = await cluster_driver(
                self._sessions, self._box, cluster_id, request_timeout=self._timeout, only_nodes=only_nodes
            )
        except DriverUnavailable as exc:
            raise _fail(str(exc), Failure.CLUSTER_UNAVAILABLE, retryable=True) from exc
        try:
            yield driver
        finally:
            await self._blocking(driver.close)

    # --- the record (control queue) ------------------------------------------------------------

    @activity.defn(name="workload.load")
    async def load(self, workload_id: str) -> life.Plan:
        """What the workflow needs of the record."""
        workload = await self._record(workload_id)
        spec = workload.spec_model()
        offered = await self._offered(workload.workspace_id)
        starts = [parse_time(c.schedule) for c in spec.cron_jobs if c.action == "start" and c.schedule]
        future = [t for t in starts if t > utcnow()]
        return life.Plan(
            workload_id=workload.id,
            workspace_id=workload.workspace_id,
            cluster_id=workload.cluster_id,
            kind=workload.kind,
            phase=workload.phase,
            dispatch_count=workload.dispatch_count,
            priority=workload.priority,
            replicas=max(spec.resource.replica, 1),
            request=life.request_per_pod(spec, workload.gpu_resource_name or "amd.com/gpu", offered),
            specified_nodes=list(spec.specified_nodes),
            required_labels={k: v for k, v in spec.customer_labels.items() if k != "kubernetes.io/hostname"},
            tolerate_all=spec.is_tolerate_all,
            user_id=workload.user_id,
            dependencies=list(spec.dependencies),
            start_at=min(future) if future else None,
            timeout=spec.timeout,
            ttl_seconds=spec.ttl_seconds_after_finished,
            max_retry=spec.max_retry,
            supervised=spec.is_supervised,
            deleted=workload.is_deleted,
        )

    async def _offered(self, workspace_id: str) -> set[str] | None:
        """The resource names the workspace's flavor declares (None: unknown, count everything)."""
        async with self._sessions() as session:
            workspace = await get_workspace(session, workspace_id=workspace_id)
            flavor = await session.get(NodeFlavor, workspace.flavor_id) if workspace else None
        return set(total_resources(FlavorSpec.model_validate(flavor.spec))) if flavor else None

    @activity.defn(name="workload.dependencies")
    async def dependencies(self, workload_id: str) -> life.DependencyState:
        """Whether every dependency succeeded, which one failed, or which one is still running."""
        workload = await self._record(workload_id)
        wanted = list(workload.spec_model().dependencies)
        async with self._sessions() as session:
            found = await db.get_many(session, workload_ids=wanted)
        for dep in wanted:
            other = found.get(dep)
            if other is None:
                return life.DependencyState(failed=f"dependency workload {dep} does not exist")
            if other.phase in (life.FAILED, life.STOPPED):
                return life.DependencyState(failed=f"dependency workload {dep} {other.phase.lower()}")
        for dep in wanted:
            if found[dep].phase != life.SUCCEEDED:
                return life.DependencyState(waiting=f"Waiting for dependency {dep} ({found[dep].phase})")
        return life.DependencyState()

    @activity.defn(name="workload.set_waiting")
    async def set_waiting(self, note: WaitingNote) -> None:
        """Show why it waits before being queued."""
        await self._write(
            lambda s: workload_status.set_waiting(
                s, workload_id=note.workload_id, message=note.message, now=utcnow()
            )
        )

    @activity.defn(name="workload.failover")
    async def failover(self, note: FailoverNote) -> None:
        """Record that the dispatch goes back to the queue (AdminFailover)."""
        await self._write(
            lambda s: workload_status.failover(
                s,
                workload_id=note.workload_id,
                dispatch_count=note.dispatch_count,
                message=note.message,
                now=utcnow(),
            )
        )

    @activity.defn(name="workload.updating")
    async def updating(self, workload_id: str) -> None:
        """Running -> Updating (a rollout of a patch)."""
        await self._write(lambda s: workload_status.updating(s, workload_id=workload_id, now=utcnow()))

    @activity.defn(name="workload.apply_patch")
    async def apply_patch(self, note: PatchNote) -> None:
        """Write a validated patch into the spec."""
        await self._write(
            lambda s: workload_status.apply_patch(
                s, workload_id=note.workload_id, patch=note.patch, now=utcnow()
            )
        )

    @activity.defn(name="workload.finish")
    async def finish(self, finish: life.Finish) -> list[str]:
        """Record the end and give back the queue entry (what it held is free at once); returns
        the workloads waiting for this one (to be told)."""

        async def write(session: AsyncSession) -> list[str]:
            await workload_status.finish(session, finish=finish, now=utcnow())
            await queue_status.withdraw(session, workload_id=finish.workload_id)
            return await db.dependents(session, workload_id=finish.workload_id)

        return await self._write(write)

    @activity.defn(name="workload.mark_deleted")
    async def mark_deleted(self, workload_id: str) -> None:
        """Hide the ended workload from the API (the record stays)."""
        await self._write(lambda s: workload_status.mark_deleted(s, workload_id=workload_id, now=utcnow()))

    # --- the cluster (io queue) ----------------------------------------------------------------

    async def _dispatch_of(self, workload: db.Workload, dispatch: life.Dispatch) -> WorkloadDispatch:
        async with self._sessions() as session:
            workspace = await get_workspace(session, workspace_id=workload.workspace_id)
        if workspace is None:
            raise _fail(f"workspace {workload.workspace_id} not found", Failure.NOT_FOUND)
        return WorkloadDispatch(
            workload_id=workload.id,
            namespace=workload.workspace_id,
            spec=workload.spec_model(),
            dispatch_count=dispatch.dispatch_count,
            cluster_id=workload.cluster_id,
            gpu_resource_name=workload.gpu_resource_name or "amd.com/gpu",
            volumes=workspace.volume_list(),
            image_pull_secrets=workspace.image_secret_ids,
            user_name=workload.user_name,
            assignments=[PodAssignment(node=p.node_id, gpus=p.gpus) for p in dispatch.placements],
        )

    @activity.defn(name="workload.dispatch")
    async def dispatch(self, dispatch: life.Dispatch) -> None:
        """Record the admission (AdminScheduled), send the dispatch's pods to the cluster where the
        scheduler put them, and record that (AdminDispatched)."""
        await self._write(
            partial(
                workload_status.scheduled,
                workload_id=dispatch.workload_id,
                dispatch_count=dispatch.dispatch_count,
                now=utcnow(),
            )
        )
        workload = await self._record(dispatch.workload_id)
        rendered = await self._dispatch_of(workload, dispatch)
        async with self._driver(workload.cluster_id) as driver:
            try:
                await self._blocking(driver.apply, rendered)
            except DriverError as exc:
                if exc.status is not None and 400 <= exc.status < 500:
                    raise _fail(f"the cluster rejected the workload: {exc}", Failure.INVALID) from exc
                raise _fail(f"dispatch failed: {exc}", Failure.CLUSTER_UNAVAILABLE, retryable=True) from exc
        await self._write(
            lambda s: workload_status.dispatched(
                s,
                workload_id=dispatch.workload_id,
                dispatch_count=dispatch.dispatch_count,
                nodes=[p.node_id for p in dispatch.placements],
                now=utcnow(),
            )
        )

    def _collector(self, workload: db.Workload, dispatch_count: int) -> OutputCollector:
        return OutputCollector(
            sessions=self._sessions,
            write=self._write,
            blocking=self._blocking,
            namespace=workload.workspace_id,
            workload_id=workload.id,
            dispatch_count=dispatch_count,
            config=self._collect,
        )

    async def _last_flush(self, driver: ExecutionDriver, workload: db.Workload) -> None:
        """Collect what the pods printed and is not stored yet, before they are removed (a run
        whose watch was cancelled: stop, failover, preemption); bounded by half the activity's
        time. Best effort: pods that cannot be read are removed all the same."""
        try:
            pods = await self._blocking(driver.list_pods, workload.workspace_id, workload.id)
        except (DriverError, NotFound) as exc:
            activity.logger.warning("cannot read the pods of %s before removing them: %s", workload.id, exc)
            return
        timeout = activity.info().start_to_close_timeout
        budget = min(self._collect.flush_seconds, timeout.total_seconds() / 2 if timeout else 60.0)
        started = time.monotonic()
        for dispatch_count in sorted({dispatch_of(p, workload.dispatch_count) for p in pods}):
            collector = self._collector(workload, dispatch_count)
            await collector.resume()
            await collector.flush(driver, pods, seconds=max(budget - (time.monotonic() - started), 0.0))

    @activity.defn(name="workload.remove_pods")
    async def remove_pods(self, workload_id: str) -> None:
        """Collect the pods' last output, then stop and remove the workload's objects and pods on
        the cluster (missing ones are fine)."""
        workload = await self._record(workload_id)
        async with self._driver(workload.cluster_id) as driver:
            await self._last_flush(driver, workload)
            try:
                await self._blocking(driver.delete, workload.workspace_id, workload.id, workload.kind)
            except DriverError as exc:
                raise _fail(
                    f"cannot remove the pods: {exc}", Failure.CLUSTER_UNAVAILABLE, retryable=True
                ) from exc

    @activity.defn(name="workload.watch")
    async def watch(self, watch: life.Watch) -> life.WatchResult:
        """Poll the dispatch's pods until it ends (jobs) or a pod fails, recording their status
        and collecting their output into the log store (all of it once the run ended).

        Heartbeats every poll; supervised workloads that print nothing for `hang_seconds`
        end as `Hung`. Runs until cancelled for Deployments and StatefulSets that keep running.
        """
        workload = await self._record(watch.workload_id)
        spec = workload.spec_model()
        expected = 1 if workload.kind == "Authoring" else max(spec.resource.replica, 1)
        details = activity.info().heartbeat_details
        progress = _WatchProgress.model_validate(details[0]) if details else _WatchProgress()
        if not progress.last_output_at:
            progress.last_output_at = time.time()
        missing_polls = 0
        shown: list[PodStatus] | None = None
        pause = watch.poll_seconds
        # only the nodes of this run: one that stopped answering after an earlier run failed over
        # from it must not stall the watch of this one
        run_nodes = (
            workload.nodes[watch.dispatch_count - 1] if len(workload.nodes) >= watch.dispatch_count else None
        )
        collector = self._collector(workload, watch.dispatch_count)
        await collector.resume()
        async with self._driver(workload.cluster_id, run_nodes) as driver:
            while True:
                pods = await self._pods(driver, workload)
                got = await collector.collect(driver, pods)
                if got.lines:
                    progress.last_output_at = time.time()
                if pods != shown:  # the first poll always writes: it may promote the phase
                    await self._write(
                        partial(
                            workload_status.record_pods,
                            workload_id=workload.id,
                            dispatch_count=watch.dispatch_count,
                            pods=pods,
                            now=utcnow(),
                        )
                    )
                    shown, pause = pods, watch.poll_seconds
                else:
                    pause = min(pause * 1.5, max(watch.idle_poll_seconds, watch.poll_seconds))
                progress.seen_pods = progress.seen_pods or bool(pods)
                missing_polls = 0 if pods else missing_polls + 1
                outcome = life.pods_outcome(pods, expected)
                if watch.long_running and outcome == "Succeeded":
                    outcome = "Failed" if any(p.phase == "Succeeded" for p in pods) else ""
                if outcome:
                    await collector.flush(
                        driver, pods, heartbeat=lambda: activity.heartbeat(progress.model_dump())
                    )
                    message = await self._outcome_message(driver, workload, pods, outcome)
                    return life.WatchResult(outcome=outcome, message=message)
                if progress.seen_pods and missing_polls >= GONE_AFTER_POLLS:
                    return life.WatchResult(outcome="Gone", message="the workload's pods disappeared")
                silent = time.time() - progress.last_output_at
                if watch.hang_seconds and silent >= watch.hang_seconds:
                    return life.WatchResult(
                        outcome="Hung",
                        message=f"no log output for {int(silent)} s (limit {watch.hang_seconds} s)",
                    )
                activity.heartbeat(progress.model_dump())
                if got.more:  # output waits: read on at once
                    pause = MORE_OUTPUT_PAUSE
                elif got.lines:
                    pause = min(pause, self._collect.interval_seconds)
                await asyncio.sleep(pause)

    async def _pods(self, driver: ExecutionDriver, workload: db.Workload) -> list[PodStatus]:
        try:
            return await self._blocking(driver.list_pods, workload.workspace_id, workload.id)
        except DriverError as exc:
            raise _fail(f"cannot read the pods: {exc}", Failure.CLUSTER_UNAVAILABLE, retryable=True) from exc

    async def _tail(self, driver: ExecutionDriver, workload: db.Workload, pod: str, lines: int) -> str:
        try:
            return await self._blocking(
                driver.read_log,
                workload.workspace_id,
                pod,
                container=main_container(workload.kind),
                tail_lines=lines,
            )
        except (DriverError, NotFound):
            return ""

    async def _outcome_message(
        self, driver: ExecutionDriver, workload: db.Workload, pods: list[PodStatus], outcome: str
    ) -> str:
        if outcome == "Succeeded":
            return "the workload succeeded"
        tails = {
            p.name: await self._tail(driver, workload, p.name, LOG_TAIL_ON_FAILURE)
            for p in life.failed_pods(pods)
        }
        return life.failure_details(
            pods, {name: " | ".join(t.strip().splitlines()) for name, t in tails.items()}
        )

    @activity.defn(name="workload.read")
    async def read(self, request: PodRead) -> PodReadResult:
        """A pod's log or the workload's Service, for the API (through `PodReadWorkflow`)."""
        workload = await self._record(request.workload_id)
        try:
            async with self._driver(workload.cluster_id) as driver:
                if request.what == "service":
                    service = await self._blocking(
                        driver.describe_service, workload.workspace_id, workload.id
                    )
                    return PodReadResult(service=service)
                text = await self._blocking(
                    driver.read_log,
                    workload.workspace_id,
                    request.pod,
                    container=request.container or main_container(workload.kind),
                    tail_lines=request.tail_lines,
                    since_seconds=request.since_seconds,
                )
                return PodReadResult(text=text)
        except NotFound as exc:
            return PodReadResult(missing=exc.message)
        except (DriverError, ApplicationError) as exc:
            return PodReadResult(error=str(exc))
