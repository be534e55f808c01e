"""`source-check/<request id>`: before an import starts, is the source manifest there?

`POST /images:import` answers at once whether the source can be imported (upstream's state 2
with the reason otherwise). Routes make no network calls of their own, so the API runs this
one-activity workflow on the images queue and waits for its verdict. Two quick attempts: the
caller is waiting.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.image_import import ImageImportActivities
    from domain.failures import NON_RETRYABLE
    from domain.images import SourceCheck, SourceVerdict


@workflow.defn(name="SourceCheck")
class SourceCheckWorkflow:
    """One check; the verdict is the workflow's result."""

    @workflow.run
    async def run(self, check: SourceCheck, images_queue: str) -> SourceVerdict:
        verdict: SourceVerdict = await workflow.execute_activity_method(
            ImageImportActivities.check_source,
            check,
            task_queue=images_queue,
            start_to_close_timeout=timedelta(seconds=40),
            retry_policy=RetryPolicy(maximum_attempts=2, non_retryable_error_types=list(NON_RETRYABLE)),
        )
        return verdict
