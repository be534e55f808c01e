"""Search attributes and retry policies shared by every workflow."""

from __future__ import annotations

from collections.abc import Awaitable
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributeKey
from temporalio.exceptions import ActivityError, ApplicationError

with workflow.unsafe.imports_passed_through():
    from domain.failures import NON_RETRYABLE as FINAL_FAILURES
    from domain.failures import Failure

FINAL_FAILURES_CONFLICT = Failure.CONFLICT

RESOURCE_TYPE = SearchAttributeKey.for_keyword("PrimusResourceType")
RESOURCE_ID = SearchAttributeKey.for_keyword("PrimusResourceId")
PHASE = SearchAttributeKey.for_keyword("PrimusPhase")
USER = SearchAttributeKey.for_keyword("PrimusUser")
WORKSPACE = SearchAttributeKey.for_keyword("PrimusWorkspace")
CLUSTER = SearchAttributeKey.for_keyword("PrimusCluster")
KIND = SearchAttributeKey.for_keyword("PrimusKind")
"""The workload kind (PyTorchJob, Deployment, ...) of `workload/<id>` workflows."""

SEARCH_ATTRIBUTE_NAMES = [k.name for k in (RESOURCE_TYPE, RESOURCE_ID, PHASE, USER, WORKSPACE, CLUSTER, KIND)]

DB_RETRY = RetryPolicy(
    initial_interval=timedelta(seconds=1),
    backoff_coefficient=2.0,
    maximum_interval=timedelta(seconds=30),
    maximum_attempts=10,
    non_retryable_error_types=list(FINAL_FAILURES),
)
"""For short database activities: transient failures retry, bad input and refusals do not."""


def failure_message(err: BaseException) -> tuple[str, str]:
    """(failure kind, readable message) of the root cause of an activity failure."""
    cause: BaseException | None = err
    while isinstance(cause, ActivityError) and cause.cause is not None:
        cause = cause.cause
    if isinstance(cause, ApplicationError):
        return cause.type or "Error", cause.message
    cause = cause or err
    return type(cause).__name__, str(cause) or type(cause).__name__


def enter_phase(phase: str) -> None:
    """Show `phase` as the workflow's PrimusPhase search attribute (the Temporal UI filters on it)."""
    workflow.upsert_search_attributes([PHASE.value_set(phase)])


async def record(method: Any, arg: Any) -> Any:
    """A short database activity on the workflow's own (control) queue."""
    return await workflow.execute_activity_method(
        method, arg, start_to_close_timeout=timedelta(seconds=30), retry_policy=DB_RETRY
    )


async def run_guarded(step: Awaitable[Any]) -> str:
    """Run a guarded-transition activity: "" when it applied, else why it was refused."""
    try:
        await step
    except ActivityError as err:
        return failure_message(err)[1]
    return ""


def refused(message: str) -> ApplicationError:
    """The error an Update handler raises to refuse a request (the API answers 409 with it)."""
    return ApplicationError(message, type=FINAL_FAILURES_CONFLICT, non_retryable=True)
