"""Removes a deleted user's keys, tokens and record, step by step, each step idempotent."""

from __future__ import annotations

from datetime import timedelta

from pydantic import BaseModel
from temporalio import workflow

from workflows.common import DB_RETRY, PHASE

with workflow.unsafe.imports_passed_through():
    from activities.users import UserActivities


class UserCleanupInput(BaseModel):
    """Which user to remove; `step_timeout_seconds` bounds each activity."""

    user_id: str
    step_timeout_seconds: int = 60


class UserCleanupResult(BaseModel):
    """What was removed."""

    public_keys_deleted: int
    tokens_deleted: int
    user_deleted: bool


def workflow_id(user_id: str) -> str:
    """One clean-up per user: a repeated delete cannot start a twin."""
    return f"user-cleanup/{user_id}"


@workflow.defn(name="UserCleanup")
class UserCleanupWorkflow:
    """Deletes public keys, then tokens, then the user row."""

    def __init__(self) -> None:
        self._step = "starting"

    @workflow.query
    def current_step(self) -> str:
        """The step the clean-up is at."""
        return self._step

    @workflow.run
    async def run(self, params: UserCleanupInput) -> UserCleanupResult:
        timeout = timedelta(seconds=params.step_timeout_seconds)
        self._enter("DeletingPublicKeys")
        keys = await workflow.execute_activity_method(
            UserActivities.delete_public_keys,
            params.user_id,
            start_to_close_timeout=timeout,
            retry_policy=DB_RETRY,
        )
        self._enter("RevokingTokens")
        tokens = await workflow.execute_activity_method(
            UserActivities.delete_tokens,
            params.user_id,
            start_to_close_timeout=timeout,
            retry_policy=DB_RETRY,
        )
        self._enter("DeletingUser")
        deleted = await workflow.execute_activity_method(
            UserActivities.delete_user, params.user_id, start_to_close_timeout=timeout, retry_policy=DB_RETRY
        )
        self._enter("Deleted")
        return UserCleanupResult(public_keys_deleted=keys, tokens_deleted=tokens, user_deleted=deleted)

    def _enter(self, step: str) -> None:
        """Enter `step`: the query's answer and the PrimusPhase search attribute."""
        self._step = step
        workflow.upsert_search_attributes([PHASE.value_set(step)])
