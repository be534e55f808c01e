"""System housekeeping workflows, each started by its Temporal Schedule (pausable in the UI):
`system/log-retention` deletes old operation log lines, `system/ttl-cleanup` expires ops jobs
past their `ttlSecondsAfterFinished`. (A workload's TTL is a durable timer in its own
workflow.)"""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.common import DB_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.maintenance import MaintenanceActivities

LOG_RETENTION_SCHEDULE = "system/log-retention"
TTL_CLEANUP_SCHEDULE = "system/ttl-cleanup"


@workflow.defn(name="LogRetention")
class LogRetentionWorkflow:
    """One retention pass; returns how many lines were deleted."""

    @workflow.run
    async def run(self, retention_days: int) -> int:
        return await workflow.execute_activity_method(
            MaintenanceActivities.purge_logs,
            retention_days,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=DB_RETRY,
        )


@workflow.defn(name="TTLCleanup")
class TTLCleanupWorkflow:
    """One TTL pass; returns the ops jobs it expired."""

    @workflow.run
    async def run(self) -> list[str]:
        return await workflow.execute_activity_method(
            MaintenanceActivities.expire_ops_jobs,
            None,
            start_to_close_timeout=timedelta(minutes=10),
            retry_policy=DB_RETRY,
        )
