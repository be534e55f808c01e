"""The scheduled check of the internal registry (`system/registry-stats`).

One run pings the registry, counts its catalogue and records both in `registry_stats`, which
`GET /harbor/stats` reads: the request itself never talks to the registry.
"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from domain.failures import NON_RETRYABLE
    from domain.images import ACTIVITY_REGISTRY_STATS, RegistryCheck, RegistryStatsInput

SCHEDULE_ID = "system/registry-stats"


@workflow.defn(name="RegistryStats")
class RegistryStatsWorkflow:
    """One check; returns what was recorded."""

    @workflow.run
    async def run(self, params: RegistryStatsInput) -> RegistryCheck:
        check: RegistryCheck = await workflow.execute_activity(
            ACTIVITY_REGISTRY_STATS,
            task_queue=params.activity_queue,
            start_to_close_timeout=timedelta(seconds=params.timeout_seconds),
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=1),
                maximum_interval=timedelta(seconds=10),
                maximum_attempts=3,
                non_retryable_error_types=list(NON_RETRYABLE),
            ),
            result_type=RegistryCheck,
        )
        return check
