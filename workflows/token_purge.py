"""Scheduled clean-up of expired and revoked login tokens (started by a Temporal Schedule)."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

from workflows.common import DB_RETRY

with workflow.unsafe.imports_passed_through():
    from activities.users import UserActivities

SCHEDULE_ID = "system/token-purge"


@workflow.defn(name="TokenPurge")
class TokenPurgeWorkflow:
    """One purge pass; returns how many tokens were deleted."""

    @workflow.run
    async def run(self) -> int:
        return await workflow.execute_activity_method(
            UserActivities.purge_expired_tokens,
            None,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=DB_RETRY,
        )
