"""Imports an image into the internal registry: resolve, copy blobs in parallel, push manifests.

One workflow per image (`image-import/<image id>`). Blobs are copied by heartbeating activities
on the images task queue, at most `parallel_layers` at once; a retried copy resumes where the
last attempt's heartbeat left it and never re-sends a blob the target already holds. Manifests
go last (platform manifests, then the index under the tag), so a half-copied image is never
visible under its tag.
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from workflows.common import PHASE

with workflow.unsafe.imports_passed_through():
    from activities.image_import import ImageImportActivities
    from domain.images import (
        STATUS_FAILED,
        STATUS_READY,
        BlobCopy,
        BlobPlan,
        FinishImport,
        ImportResult,
        ImportSpec,
        PushManifests,
        ResolveInput,
    )

NON_RETRYABLE = ["AuthenticationFailed", "NotFound", "Invalid", "RegistryRejected"]

REGISTRY_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=5,
    non_retryable_error_types=NON_RETRYABLE,
)
"""Registry steps: transient failures retry a few times; refusals fail at once."""


def workflow_id(image_id: int) -> str:
    """One import per image: a repeated request cannot start a twin."""
    return f"image-import/{image_id}"


def failure_message(err: BaseException) -> str:
    """The readable root cause of an activity failure."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.message
    return str(cause or err)


@workflow.defn(name="ImageImport")
class ImageImportWorkflow:
    """Resolve -> copy blobs -> push manifests -> Ready (or Failed with the cause)."""

    def __init__(self) -> None:
        self._phase = "Pending"
        self._blobs: dict[str, str] = {}

    @workflow.query
    def progress(self) -> dict[str, str]:
        """Phase and the outcome of each blob finished so far."""
        return {"phase": self._phase, **self._blobs}

    @workflow.run
    async def run(self, spec: ImportSpec) -> ImportResult:
        step = timedelta(seconds=spec.step_timeout_seconds)
        try:
            self._advance("Resolving")
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
            self._advance("CopyingLayers")
            await self._copy_all(spec, plan.blobs)
            self._advance("PushingManifests")
            digest = await workflow.execute_activity_method(
                ImageImportActivities.push_manifests,
                PushManifests(image_id=spec.image_id, target=spec.target, manifests=plan.manifests),
                task_queue=spec.activity_queue,
                start_to_close_timeout=step,
                retry_policy=REGISTRY_RETRY,
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise  # the image was deleted: the workflow ends as cancelled
            message = failure_message(err)
            await self._finish(spec, STATUS_FAILED, message)
            return ImportResult(image_id=spec.image_id, status=STATUS_FAILED, message=message)
        await self._finish(spec, STATUS_READY, "")
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
        self._advance(status)
        await workflow.execute_activity_method(
            ImageImportActivities.finish,
            FinishImport(image_id=spec.image_id, status=status, message=message),
            task_queue=spec.activity_queue,
            start_to_close_timeout=timedelta(seconds=spec.step_timeout_seconds),
            retry_policy=RetryPolicy(
                maximum_attempts=10,
                maximum_interval=timedelta(seconds=30),
                non_retryable_error_types=["Invalid"],
            ),
        )

    def _show_details(self) -> None:
        done = sum(1 for s in self._blobs.values() if s in ("completed", "skipped", "mounted"))
        lines = [f"**{self._phase}**: {done}/{len(self._blobs)} blobs done", ""]
        lines += [f"- `{digest[:19]}` {state}" for digest, state in self._blobs.items()]
        workflow.set_current_details("\n".join(lines))

    def _advance(self, phase: str) -> None:
        self._phase = phase
        workflow.upsert_search_attributes([PHASE.value_set(phase)])
        self._show_details()
