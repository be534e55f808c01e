"""Imports an image into the internal registry: resolve, copy blobs in parallel, push manifests.

One workflow per image (`image-import/<image id>`). Resolving reads the source's manifests and
asks the target which blobs it holds already; the others are copied by heartbeating activities
on the images task queue, at most `parallel_layers` at once, largest first; a retried copy
resumes where the last attempt's recorded upload left it and never re-sends a blob the target
already holds. Manifests go last (platform manifests, then the index under the tag), so a
half-copied image is never visible under its tag; the step that pushes them records the image
Ready (resolving itself, when there was nothing to copy).

Importing a failed image again starts a run with `restart` set, by update-with-start: the
`restart` update resets the image (an activity) before the request is answered, and the run
waits for it before resolving. A cancelled run (the image is being deleted) ends only after a
manifest push in flight has finished, so the deletion never races a push.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception
from temporalio.workflow import ActivityCancellationType

from workflows.common import DB_RETRY, enter_phase, failure_message

with workflow.unsafe.imports_passed_through():
    from activities.image_import import ImageImportActivities, ImportProgressActivities
    from domain.failures import FINAL_REGISTRY, Failure
    from domain.images import (
        STATUS_FAILED,
        STATUS_READY,
        BlobCopy,
        BlobPlan,
        ExternalProgress,
        FinishImport,
        ImportResult,
        ImportSpec,
        PushManifests,
        ResolveInput,
        RestartImport,
        import_workflow_id,
    )

REGISTRY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=list(FINAL_REGISTRY),
)
"""Registry steps: transient failures retry a few times; refusals fail at once."""

PUSH_WAITS_ON_CANCEL = "image-import-push-finishes-before-cancel"
"""Patch: a cancelled run waits for its manifest push to end (runs before it did not)."""

FEWER_STEPS = "image-import-fewer-steps"
"""Patch: resolving also asks the target which blobs it holds (and, when it holds them all,
pushes the manifests and records Ready itself); only missing blobs get a copy, largest first;
the push records Ready (no separate finish step). Runs before it took a copy step per blob (the
existence check inside) and a finish step after the push; their histories replay on that path."""

workflow_id = import_workflow_id


@workflow.defn(name="ImageImport")
class ImageImportWorkflow:
    """(Reset a failed image ->) resolve -> copy missing blobs -> push manifests -> Ready (or Failed)."""

    @workflow.init
    def __init__(self, spec: ImportSpec) -> None:
        self._spec = spec
        self._phase = "Pending"
        self._blobs: dict[str, str] = {}
        self._restart_taken = False
        self._reset: bool | None = None
        """Outcome of the `restart` update: None until it has run."""

    @workflow.query
    def progress(self) -> dict[str, str]:
        """Phase and the outcome of each blob finished so far."""
        return {"phase": self._phase, **self._blobs}

    @workflow.update
    async def restart(self, params: RestartImport) -> bool:
        """Reset the failed image for this run's import; False when it is not failed any more."""
        self._restart_taken = True
        try:
            self._reset = await workflow.execute_activity_method(
                ImageImportActivities.reset,
                params,
                task_queue=self._spec.activity_queue,
                start_to_close_timeout=timedelta(seconds=self._spec.step_timeout_seconds),
                retry_policy=DB_RETRY,
            )
        finally:
            if self._reset is None:
                self._reset = False
        return self._reset

    @restart.validator
    def _takes_restart(self, params: RestartImport) -> None:
        """Only a run started for a restart takes one, once: any other run is busy (or ending)."""
        if not self._spec.restart or self._restart_taken or params.image_id != self._spec.image_id:
            raise ApplicationError("this import run takes no restart; ask again", type=Failure.BUSY)

    @workflow.update
    async def report_progress(self, report: ExternalProgress) -> bool:
        """Record per-blob progress an external copier reports (`PUT .../progress`)."""
        return await workflow.execute_activity_method(
            ImportProgressActivities.record_external_progress,
            report,
            start_to_close_timeout=timedelta(seconds=self._spec.step_timeout_seconds),
            retry_policy=DB_RETRY,
        )

    @report_progress.validator
    def _takes_progress(self, report: ExternalProgress) -> None:
        """Progress is taken while the import copies, never once it has ended."""
        if report.image_id != self._spec.image_id or self._phase in (STATUS_READY, STATUS_FAILED):
            raise ApplicationError(f"the import of image {report.image_id} has ended", type=Failure.CONFLICT)

    @workflow.run
    async def run(self, spec: ImportSpec) -> ImportResult:
        if spec.restart:
            await workflow.wait_condition(lambda: self._reset is not None)
        if spec.restart and not self._reset:
            result = ImportResult(
                image_id=spec.image_id, status=STATUS_FAILED, message="not reset: not failed"
            )
        else:
            result = await self._import(spec)
        await workflow.wait_condition(workflow.all_handlers_finished)
        return result

    async def _import(self, spec: ImportSpec) -> ImportResult:
        if workflow.patched(FEWER_STEPS):
            return await self._import_in_fewer_steps(spec)
        step = timedelta(seconds=spec.step_timeout_seconds)
        try:
            self._enter("Resolving")
            plan = await workflow.execute_activity_method(
                ImageImportActivities.resolve,
                ResolveInput(
                    image_id=spec.image_id, source=spec.source, source_registry_id=spec.source_registry_id
                ),
                task_queue=spec.activity_queue,
                start_to_close_timeout=step,
                retry_policy=REGISTRY_RETRY,
            )
            self._blobs = {b.digest: "pending" for b in plan.blobs}
            self._enter("CopyingLayers")
            await self._copy_all(spec, plan.blobs)
            self._enter("PushingManifests")
            cancellation = ActivityCancellationType.TRY_CANCEL
            if workflow.patched(PUSH_WAITS_ON_CANCEL):
                cancellation = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            digest = await workflow.execute_activity_method(
                ImageImportActivities.push_manifests,
                PushManifests(image_id=spec.image_id, target=spec.target, manifests=plan.manifests),
                task_queue=spec.activity_queue,
                start_to_close_timeout=step,
                retry_policy=REGISTRY_RETRY,
                cancellation_type=cancellation,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise  # the image is being deleted: the workflow ends as cancelled
            message = failure_message(err)[1]
            await self._finish(spec, STATUS_FAILED, message)
            return ImportResult(image_id=spec.image_id, status=STATUS_FAILED, message=message)
        await self._finish(spec, STATUS_READY, "")
        return ImportResult(image_id=spec.image_id, status=STATUS_READY, digest=digest)

    async def _import_in_fewer_steps(self, spec: ImportSpec) -> ImportResult:
        """Resolve (and check the target) -> copy the missing blobs -> push and record Ready.

        Resolving may push too (every blob there already), so it runs to its end when the run is
        cancelled, as the push does."""
        step = timedelta(seconds=spec.step_timeout_seconds)
        wait = ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
        try:
            self._enter("Resolving")
            plan = await workflow.execute_activity_method(
                ImageImportActivities.resolve,
                ResolveInput(
                    image_id=spec.image_id,
                    source=spec.source,
                    source_registry_id=spec.source_registry_id,
                    target=spec.target,
                    push_when_complete=True,
                ),
                task_queue=spec.activity_queue,
                start_to_close_timeout=step,
                retry_policy=REGISTRY_RETRY,
                cancellation_type=wait,
            )
            present = set(plan.present)
            self._blobs = {b.digest: "skipped" if b.digest in present else "pending" for b in plan.blobs}
            digest = plan.pushed
            if not digest:
                missing = [b for b in plan.blobs if b.digest not in present]
                missing.sort(key=lambda b: (-b.size, b.digest))  # the long copies start first
                self._enter("CopyingLayers")
                await self._copy_all(spec, missing)
                self._enter("PushingManifests")
                digest = await workflow.execute_activity_method(
                    ImageImportActivities.push_manifests,
                    PushManifests(
                        image_id=spec.image_id, target=spec.target, manifests=plan.manifests, finish=True
                    ),
                    task_queue=spec.activity_queue,
                    start_to_close_timeout=step,
                    retry_policy=REGISTRY_RETRY,
                    cancellation_type=wait,
                )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise  # the image is being deleted: the workflow ends as cancelled
            message = failure_message(err)[1]
            await self._finish(spec, STATUS_FAILED, message)
            return ImportResult(image_id=spec.image_id, status=STATUS_FAILED, message=message)
        self._enter(STATUS_READY)  # recorded by the step that pushed
        return ImportResult(image_id=spec.image_id, status=STATUS_READY, digest=digest)

    async def _copy_all(self, spec: ImportSpec, blobs: list[BlobPlan]) -> None:
        """Copy every blob, `parallel_layers` at a time; the first failure cancels the rest."""
        bound = asyncio.Semaphore(max(1, spec.parallel_layers))

        async def copy(blob: BlobPlan) -> None:
            async with bound:
                self._blobs[blob.digest] = "copying"
                result = await workflow.execute_activity_method(
                    ImageImportActivities.copy_blob,
                    BlobCopy(
                        image_id=spec.image_id,
                        source=spec.source,
                        target=spec.target,
                        source_registry_id=spec.source_registry_id,
                        blob=blob,
                    ),
                    task_queue=spec.activity_queue,
                    start_to_close_timeout=timedelta(seconds=spec.blob_timeout_seconds),
                    heartbeat_timeout=timedelta(seconds=spec.heartbeat_timeout_seconds),
                    retry_policy=REGISTRY_RETRY,
                )
                self._blobs[blob.digest] = result.outcome
                self._show_details()

        tasks = [asyncio.create_task(copy(blob)) for blob in blobs]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def _finish(self, spec: ImportSpec, status: str, message: str) -> None:
        self._enter(status)
        await workflow.execute_activity_method(
            ImageImportActivities.finish,
            FinishImport(image_id=spec.image_id, status=status, message=message),
            task_queue=spec.activity_queue,
            start_to_close_timeout=timedelta(seconds=spec.step_timeout_seconds),
            retry_policy=RetryPolicy(
                maximum_attempts=10,
                maximum_interval=timedelta(seconds=30),
                non_retryable_error_types=[Failure.INVALID],
            ),
        )

    def _show_details(self) -> None:
        done = sum(1 for s in self._blobs.values() if s in ("completed", "skipped", "mounted"))
        lines = [f"**{self._phase}**: {done}/{len(self._blobs)} blobs done", ""]
        lines += [f"- `{digest[:19]}` {state}" for digest, state in self._blobs.items()]
        workflow.set_current_details("\n".join(lines))

    def _enter(self, phase: str) -> None:
        """Set the phase (PrimusPhase search attribute and the details shown in the UI)."""
        self._phase = phase
        enter_phase(phase)
        self._show_details()
