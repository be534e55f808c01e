"""A read of a workload's pods for the API (`pod-read/<workload id>/<request id>`): a pod's log
or the workload's Service, through the cluster's execution driver.

Routes make no network calls of their own, so the API runs this one-activity workflow and waits
for its result; the activity runs on the workloads queue, next to the workload's other driver
calls. No retries beyond two quick attempts: the caller is waiting.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from activities.workload import PodRead, PodReadResult, WorkloadActivities
    from domain.failures import NON_RETRYABLE


@workflow.defn(name="PodRead")
class PodReadWorkflow:
    """One read; the result is the workflow's result."""

    @workflow.run
    async def run(self, request: PodRead, io_queue: str) -> PodReadResult:
        result: PodReadResult = await workflow.execute_activity_method(
            WorkloadActivities.read,
            request,
            task_queue=io_queue,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=2, non_retryable_error_types=list(NON_RETRYABLE)),
        )
        return result
