"""Deletes an image: stop its import, delete its manifest from the internal registry, remove it.

One workflow per image (`image-delete/<image id>`), started by `DELETE /images/{id}` after it
recorded the request (`deleting_at`), so the API already treats the image as gone. Every step is
an idempotent activity on the images task queue, called by name so this module imports nothing
but `domain`. A manifest the registry refuses to delete (4xx) ends the workflow as failed with the
record kept, hidden; a repeated DELETE starts the deletion again.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError

from workflows.common import DB_RETRY, enter_phase, failure_message

with workflow.unsafe.imports_passed_through():
    from domain.failures import FINAL_REGISTRY
    from domain.images import (
        ACTIVITY_CANCEL_IMPORT,
        ACTIVITY_DELETE_MANIFEST,
        ACTIVITY_REMOVE_IMAGE,
        DeleteImageInput,
        DeleteImageResult,
        ManifestOutcome,
        delete_workflow_id,
    )

DELETE_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=60),
    maximum_attempts=20,
    non_retryable_error_types=list(FINAL_REGISTRY),
)
"""Deleting the manifest: an unreachable registry is retried for about a quarter of an hour."""

workflow_id = delete_workflow_id


@workflow.defn(name="ImageDelete")
class ImageDeleteWorkflow:
    """CancellingImport -> DeletingManifest -> RemovingRecord -> Deleted (or Failed)."""

    def __init__(self) -> None:
        self._phase = "Pending"

    @workflow.query
    def phase(self) -> str:
        """The step the deletion is at."""
        return self._phase

    @workflow.run
    async def run(self, params: DeleteImageInput) -> DeleteImageResult:
        step = timedelta(seconds=params.step_timeout_seconds)
        self._enter("CancellingImport")
        cancelled: bool = await workflow.execute_activity(
            ACTIVITY_CANCEL_IMPORT,
            params.image_id,
            task_queue=params.activity_queue,
            start_to_close_timeout=step * 3,
            heartbeat_timeout=timedelta(seconds=10),
            retry_policy=DB_RETRY,
            result_type=bool,
        )
        self._enter("DeletingManifest")
        try:
            manifest: ManifestOutcome = await workflow.execute_activity(
                ACTIVITY_DELETE_MANIFEST,
                params.image_id,
                task_queue=params.activity_queue,
                start_to_close_timeout=step,
                retry_policy=DELETE_RETRY,
                result_type=str,
            )
        except ActivityError as err:
            kind, message = failure_message(err)
            self._enter("Failed")
            raise ApplicationError(
                f"the image's manifest could not be deleted: {message}", type=kind, non_retryable=True
            ) from err
        self._enter("RemovingRecord")
        removed: bool = await workflow.execute_activity(
            ACTIVITY_REMOVE_IMAGE,
            params.image_id,
            task_queue=params.activity_queue,
            start_to_close_timeout=step,
            retry_policy=DB_RETRY,
            result_type=bool,
        )
        self._enter("Deleted")
        return DeleteImageResult(
            image_id=params.image_id, import_cancelled=cancelled, manifest=manifest, removed=removed
        )

    def _enter(self, phase: str) -> None:
        """Set the phase (and the PrimusPhase search attribute)."""
        self._phase = phase
        enter_phase(phase)
