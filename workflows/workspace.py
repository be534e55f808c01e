"""The workspace workflow (`workspace/<id>`).

The creating request waits on the `claim` update, which binds `replica` free nodes of the
workspace's flavor and cluster (all or none; refused, and the record discarded, when there are
too few). The run then prepares the namespace through the cluster's execution driver (a PVC per
pfs volume and the pull secrets on Kubernetes; nothing on plain hosts) and moves the workspace
Creating -> Running. It then serves `nodes` updates (add or remove nodes, by id or by count,
answered accepted or refused), `reconfigure` signals (volumes or image secrets changed: the
namespace is prepared again) and the `delete` signal: the workspace becomes Deleting, its
namespace is removed, its nodes unbound and the record removed.

Every status change is an activity (`db.workspace_status`, `db.node_status`); the workflow keeps
the PrimusPhase search attribute on the current step (the API sets the others).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError

from workflows.common import enter_phase, failure_message, record, refused

with workflow.unsafe.imports_passed_through():
    from activities.workspace import WorkspaceActivities
    from domain import workspaces as rules
    from domain.failures import NON_RETRYABLE

REFUSED = "Refused"


async def _on_cluster(method: Any, arg: Any, params: rules.WorkspaceWorkflowInput) -> Any:
    """A namespace activity on the io queue: the cluster's API server may be slow or away."""
    return await workflow.execute_activity_method(
        method,
        arg,
        task_queue=params.io_queue,
        start_to_close_timeout=timedelta(seconds=params.io_timeout_seconds),
        retry_policy=RetryPolicy(
            initial_interval=timedelta(seconds=1),
            backoff_coefficient=2.0,
            maximum_interval=timedelta(seconds=30),
            maximum_attempts=5,
            non_retryable_error_types=list(NON_RETRYABLE),
        ),
    )


@workflow.defn(name="Workspace")
class WorkspaceWorkflow:
    """Creates one workspace, changes its nodes and namespace, and tears it down when asked."""

    def __init__(self) -> None:
        self._step = "Pending"
        self._deleting = False
        self._reconfigure = False
        self._claim: asyncio.Task[str] | None = None
        self._lock = asyncio.Lock()
        self._params: rules.WorkspaceWorkflowInput | None = None

    @workflow.query
    def current_step(self) -> str:
        """The step being worked on, or the last phase."""
        return self._step

    @workflow.signal
    def delete(self) -> None:
        """Tear the workspace down."""
        self._deleting = True

    @workflow.signal
    def reconfigure(self) -> None:
        """The volumes or image secrets changed: prepare the namespace again."""
        self._reconfigure = True

    @workflow.update
    async def claim(self, workspace_id: str) -> None:
        """Bind the target nodes (the creating request waits for this); refused (Conflict) when
        there are too few free nodes, and the record is then discarded."""
        refusal = await self._claiming(workspace_id)
        if refusal:
            raise refused(refusal)

    def _claiming(self, workspace_id: str) -> asyncio.Task[str]:
        if self._claim is None:
            self._claim = asyncio.ensure_future(self._claim_nodes(workspace_id))
        return self._claim

    async def _claim_nodes(self, workspace_id: str) -> str:
        try:
            await record(WorkspaceActivities.claim_nodes, workspace_id)
        except ActivityError as err:
            return failure_message(err)[1]
        return ""

    @workflow.update
    async def nodes(self, change: rules.NodesChange) -> rules.NodesChanged:
        """Add or remove nodes, all or none; refused (Conflict) with the reason."""
        if self._deleting:
            raise refused(f"the workspace {change.workspace_id} is being deleted")
        async with self._lock:
            try:
                changed: rules.NodesChanged = await record(WorkspaceActivities.change_nodes, change)
            except ActivityError as err:
                raise refused(failure_message(err)[1]) from err
            if self._params is not None and changed.node_ids:
                await self._label(changed.node_ids, change.action == "add", self._params)
        return changed

    async def _label(self, node_ids: list[str], bound: bool, params: rules.WorkspaceWorkflowInput) -> None:
        """The nodes' workspace label on the cluster follows the binding; a failure is noted (the
        next namespace preparation labels every bound node again)."""
        labels = rules.NodeLabels(workspace_id=params.workspace_id, node_ids=node_ids, bound=bound)
        try:
            await _on_cluster(WorkspaceActivities.label_nodes, labels, params)
        except ActivityError as err:
            message = f"labelling nodes {', '.join(node_ids)} failed: {failure_message(err)[1]}"
            await record(
                WorkspaceActivities.note,
                rules.WorkspaceNote(workspace_id=params.workspace_id, message=message),
            )

    def _enter(self, step: str) -> None:
        self._step = step
        enter_phase(step)

    @workflow.run
    async def run(self, params: rules.WorkspaceWorkflowInput) -> str:
        self._params = params
        self._deleting = self._deleting or params.deleting
        if params.create:
            if await self._claiming(params.workspace_id):
                self._enter(REFUSED)
                await workflow.wait_condition(workflow.all_handlers_finished)
                return REFUSED.lower()
            if not self._deleting:
                self._enter(rules.CREATING)
                if await self._prepare(params):
                    await record(WorkspaceActivities.finish, params.workspace_id)
                    self._enter(rules.RUNNING)
        while True:
            await workflow.wait_condition(
                lambda: self._deleting or self._reconfigure or workflow.info().is_continue_as_new_suggested()
            )
            if self._deleting:
                if await self._teardown(params):
                    await workflow.wait_condition(workflow.all_handlers_finished)
                    return "deleted"
                self._deleting = False
                continue
            if self._reconfigure:
                self._reconfigure = False
                if await self._prepare(params):
                    # a creation whose namespace failed before ends here once it succeeds
                    await record(WorkspaceActivities.finish, params.workspace_id)
                    self._enter(rules.RUNNING)
                continue
            await workflow.wait_condition(workflow.all_handlers_finished)
            workflow.continue_as_new(params.model_copy(update={"create": False, "deleting": False}))

    async def _prepare(self, params: rules.WorkspaceWorkflowInput) -> bool:
        """Prepare the namespace; on failure record why (a `reconfigure` retries) and return False."""
        self._enter("PreparingNamespace")
        try:
            await _on_cluster(WorkspaceActivities.prepare_namespace, params.workspace_id, params)
        except ActivityError as err:
            message = f"preparing the namespace failed: {failure_message(err)[1]}"
            await record(
                WorkspaceActivities.note,
                rules.WorkspaceNote(workspace_id=params.workspace_id, message=message),
            )
            self._enter("NamespaceFailed")
            return False
        await record(
            WorkspaceActivities.note, rules.WorkspaceNote(workspace_id=params.workspace_id, message="")
        )
        return True

    async def _teardown(self, params: rules.WorkspaceWorkflowInput) -> bool:
        """Deleting, namespace removed, nodes unbound, record removed. False (the reason recorded,
        the workspace left Deleting) when the namespace cannot be removed: deleting again retries."""
        self._enter(rules.DELETING)
        await record(WorkspaceActivities.begin_delete, params.workspace_id)
        self._enter("RemovingNamespace")
        async with self._lock:
            try:
                await _on_cluster(WorkspaceActivities.remove_namespace, params.workspace_id, params)
            except ActivityError as err:
                message = f"removing the namespace failed: {failure_message(err)[1]}; delete again to retry"
                note = rules.WorkspaceNote(workspace_id=params.workspace_id, message=message)
                await record(WorkspaceActivities.note, note)
                self._enter("NamespaceFailed")
                return False
            self._enter("RemovingRecord")
            await record(WorkspaceActivities.remove, params.workspace_id)
        self._enter("Deleted")
        return True
