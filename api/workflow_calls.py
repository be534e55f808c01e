"""Requests that need the resource workflow's answer: update-with-start, mapped to API errors.

A route that must tell its caller "accepted" or "refused" (a node joining a cluster, a cluster
claiming its nodes) starts the resource's workflow, or finds it running, and sends it an Update
whose handler runs the guarded status transition as an activity. The route then answers with
what the workflow said, never having written the status itself.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

from temporalio.client import (
    Client,
    WithStartWorkflowOperation,
    WorkflowHandle,
    WorkflowUpdateFailedError,
    WorkflowUpdateRPCTimeoutOrCancelledError,
)
from temporalio.exceptions import ApplicationError, WorkflowAlreadyStartedError
from temporalio.service import RPCError, RPCStatusCode

from domain.errors import Conflict, InternalError
from domain.failures import Failure
from domain.scheduling import CHANGED_SIGNAL, SchedulerInput, scheduler_workflow_id
from workflows.workspace_scheduler import WorkspaceSchedulerWorkflow, search_attributes

ANSWER_TIMEOUT = timedelta(seconds=30)
"""How long a request waits for the worker's answer before giving up."""


class AlreadyRunning(Exception):
    """The workflow id is taken by a running workflow and the start asked to fail then."""


@contextlib.contextmanager
def _answers() -> Iterator[None]:
    """Map an Update's failures to API errors: a refusal (`Conflict` raised by the handler or
    its validator) is a 409 with its message, anything else or a silent worker a 500 saying so."""
    try:
        yield
    except WorkflowUpdateFailedError as exc:
        cause = exc.cause
        if isinstance(cause, ApplicationError) and cause.type == Failure.CONFLICT:
            raise Conflict(cause.message) from exc
        message = cause.message if isinstance(cause, ApplicationError) else str(cause or exc)
        raise InternalError(f"the request failed in its workflow: {message}") from exc
    except WorkflowUpdateRPCTimeoutOrCancelledError as exc:
        raise InternalError(
            f"no worker answered within {ANSWER_TIMEOUT.seconds} s (is `primus-safe worker` running?); "
            "the request stays with its workflow and runs when a worker takes it"
        ) from exc


async def update_with_start(
    client: Client, update: Any, arg: Any, start: WithStartWorkflowOperation[Any, Any]
) -> Any:
    """Send `update(arg)` to the workflow `start` describes (starting it if needed) and return its
    result. Refusals are 409s (see `_answers`); an id taken under `FAIL` raises AlreadyRunning."""
    try:
        with _answers():
            return await client.execute_update_with_start_workflow(
                update, arg, start_workflow_operation=start, rpc_timeout=ANSWER_TIMEOUT
            )
    except WorkflowAlreadyStartedError as exc:
        with contextlib.suppress(WorkflowAlreadyStartedError):
            await start.workflow_handle()  # retrieve the start's own copy of the error
        raise AlreadyRunning(str(exc)) from exc


async def update_running(handle: WorkflowHandle[Any, Any], update: Any, arg: Any, *, not_running: str) -> Any:
    """Send `update(arg)` to a workflow that must be running; `not_running` is the 409's message
    when it is not (never started, or ended)."""
    try:
        with _answers():
            return await handle.execute_update(update, arg, rpc_timeout=ANSWER_TIMEOUT)
    except RPCError as exc:
        if exc.status == RPCStatusCode.NOT_FOUND:
            raise Conflict(not_running) from exc
        raise


async def tell_scheduler(
    client: Client, *, workspace_id: str, reason: str, task_queue: str, period_seconds: int
) -> None:
    """Signal `workspace-scheduler/<id>` that its queue or capacity changed, starting it if it does
    not run (signal-with-start: one scheduler per workspace, whoever comes first)."""
    await client.start_workflow(
        WorkspaceSchedulerWorkflow.run,
        SchedulerInput(workspace_id=workspace_id, period_seconds=period_seconds),
        id=scheduler_workflow_id(workspace_id),
        task_queue=task_queue,
        start_signal=CHANGED_SIGNAL,
        start_signal_args=[reason],
        search_attributes=search_attributes(workspace_id),
        static_summary=f"Scheduler of workspace {workspace_id}",
    )
