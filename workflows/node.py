"""The node entity workflow (`node/<id>`): onboarding steps, reconfiguration, deletion.

Registration starts it. It reaches the node, sets its host name and discovers facts (one
activity, one SSH connection), installs the template's addons, then waits for signals:
`reconfigure(step)` re-runs from that step (a changed IP/port/secret from `reach`, a changed
flavor from `facts`, a changed template from `addons`), `observed(phase)` mirrors a probe
verdict into the search attributes, `delete` stops any step in flight and removes the node.
The current step is in the heartbeat details of the running activity; the query and the
PrimusPhase search attribute name the activity's first step (`InstallingAddons` while addons
run).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from datetime import timedelta
from typing import Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, CancelledError

from workflows.common import DB_RETRY, PHASE, enter_phase, failure_message

with workflow.unsafe.imports_passed_through():
    from activities.node import NodeActivities
    from domain import nodes as rules
    from domain.failures import FINAL_SSH, Failure


class NodeWorkflowInput(BaseModel):
    """Which node, where to start (None = just wait), the SSH task queue and the activity timings."""

    node_id: str
    ssh_queue: str
    start_from: rules.Step | None = "reach"
    deleting: bool = False
    timings: rules.NodeTimings = Field(default_factory=rules.NodeTimings)


ONE_SSH_PASS = "node-onboarding-one-ssh-pass"
"""Patch: reach, host name and facts run as one activity (`node.prepare`) and the outcome is a
local activity; runs before it ran one activity per step and `node.finish` on the control queue."""


def workflow_id(node_id: str) -> str:
    """One workflow per node; a repeated request cannot start a twin."""
    return f"node/{node_id}"


def earlier(a: rules.Step | None, b: rules.Step | None) -> rules.Step | None:
    """The earlier of two restart points (None = no restart requested)."""
    if a is None:
        return b
    if b is None:
        return a
    return a if rules.STEPS.index(a) <= rules.STEPS.index(b) else b


@workflow.defn(name="Node")
class NodeWorkflow:
    """Drives one node through its onboarding steps and keeps it in step with its spec."""

    def __init__(self) -> None:
        self._step = "Waiting"
        self._pending: rules.Step | None = None
        self._deleting = False
        self._timings = rules.NodeTimings()
        self._ssh_queue = ""

    @workflow.query
    def current_step(self) -> str:
        """The step being worked on, or the last phase when idle."""
        return self._step

    @workflow.signal
    def reconfigure(self, start_from: rules.Step) -> None:
        """Re-run onboarding from `start_from` (after the pass in flight, if any)."""
        self._pending = earlier(self._pending, start_from)

    @workflow.signal
    def observed(self, phase: str) -> None:
        """The probe moved the node to `phase`."""
        self._enter(phase)

    @workflow.signal
    def delete(self) -> None:
        """Stop whatever runs and remove the node."""
        self._deleting = True

    @workflow.run
    async def run(self, params: NodeWorkflowInput) -> str:
        self._timings = params.timings
        self._ssh_queue = params.ssh_queue
        self._pending = earlier(self._pending, params.start_from)
        self._deleting = self._deleting or params.deleting
        while True:
            if self._deleting:
                return await self._remove(params.node_id)
            if self._pending is not None:
                start, self._pending = self._pending, None
                task = asyncio.ensure_future(self._onboard(params.node_id, start))
                await workflow.wait_condition(lambda t=task: t.done() or self._deleting)  # type: ignore[misc]
                if not task.done():
                    task.cancel()
                with contextlib.suppress(asyncio.CancelledError, CancelledError, ActivityError):
                    await task
                continue
            await workflow.wait_condition(
                lambda: (
                    self._pending is not None
                    or self._deleting
                    or workflow.info().is_continue_as_new_suggested()
                )
            )
            if self._pending is None and not self._deleting:
                await workflow.wait_condition(workflow.all_handlers_finished)
                workflow.continue_as_new(
                    NodeWorkflowInput(
                        node_id=params.node_id,
                        ssh_queue=self._ssh_queue,
                        start_from=None,
                        timings=self._timings,
                    )
                )

    async def _onboard(self, node_id: str, start: rules.Step) -> None:
        if workflow.patched(ONE_SSH_PASS):
            await self._onboard_in_one_pass(node_id, start)
            return
        steps = rules.STEPS[rules.STEPS.index(start) :]
        try:
            for step in steps:
                self._enter(rules.STEP_TITLES[step])
                if step == "reach":
                    await self._ssh(NodeActivities.reach, node_id)
                elif step == "hostname":
                    await self._ssh(NodeActivities.set_hostname, node_id)
                elif step == "facts":
                    await self._ssh(NodeActivities.discover_facts, node_id)
                else:
                    await self._ssh(NodeActivities.install_addons, node_id, long=True)
        except ActivityError as err:
            if self._deleting:
                raise
            kind, message = failure_message(err)
            phase = rules.SSH_FAILED
            if kind == Failure.HOSTNAME_FAILED:
                phase = rules.HOSTNAME_FAILED
            elif kind in (Failure.ADDON_FAILED, Failure.NOT_FOUND) and step == "addons":
                phase = rules.READY  # reachable; the message says which addon failed
            await self._finish(node_id, phase, message)
            return
        await self._finish(node_id, rules.READY, "")

    async def _onboard_in_one_pass(self, node_id: str, start: rules.Step) -> None:
        """reach + host name + facts in one activity over one connection, then the addons; the
        outcome is recorded by a local activity."""
        step = start
        try:
            if start in rules.PREPARE_STEPS:
                self._enter(rules.STEP_TITLES[start], only_if_changed=True)  # registration sets it
                await self._ssh(
                    NodeActivities.prepare, rules.PrepareInput(node_id=node_id, start=start), steps=3
                )
            step = "addons"
            self._enter(rules.STEP_TITLES[step])
            await self._ssh(NodeActivities.install_addons, node_id, long=True)
        except ActivityError as err:
            if self._deleting:
                raise
            await self._finish(node_id, *self._outcome(err, step), local=True)
            return
        await self._finish(node_id, rules.READY, "", local=True)

    @staticmethod
    def _outcome(err: ActivityError, step: str) -> tuple[str, str]:
        """The phase and message a failed pass ends in: a failed addon leaves the node Ready."""
        kind, message = failure_message(err)
        if kind == Failure.HOSTNAME_FAILED:
            return rules.HOSTNAME_FAILED, message
        if kind in (Failure.ADDON_FAILED, Failure.NOT_FOUND) and step == "addons":
            return rules.READY, message  # reachable; the message says which addon failed
        return rules.SSH_FAILED, message

    async def _ssh(
        self,
        method: Callable[[NodeActivities, Any], Awaitable[Any]],
        arg: Any,
        *,
        long: bool = False,
        steps: int = 1,
    ) -> Any:
        t = self._timings
        # short steps: dial + a command of at most 60 s each; addons: bounded by heartbeats, then this
        short = timedelta(seconds=t.connect_timeout * 2 + 60 * steps + 30)
        return await workflow.execute_activity_method(
            method,
            arg,
            task_queue=self._ssh_queue,
            start_to_close_timeout=timedelta(seconds=t.command_timeout * 4) if long else short,
            heartbeat_timeout=timedelta(seconds=t.heartbeat_timeout) if long else None,
            retry_policy=RetryPolicy(
                initial_interval=timedelta(seconds=t.retry_interval),
                backoff_coefficient=2.0,
                maximum_interval=timedelta(seconds=max(t.retry_interval * 4, 1)),
                maximum_attempts=t.unreachable_attempts,
                non_retryable_error_types=list(FINAL_SSH),
            ),
        )

    async def _finish(self, node_id: str, phase: str, message: str, *, local: bool = False) -> None:
        outcome = rules.FinishInput(node_id=node_id, phase=phase, message=message)
        if local:  # one database write: no round trip through a task queue
            await workflow.execute_local_activity_method(
                NodeActivities.finish,
                outcome,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
        else:
            await workflow.execute_activity_method(
                NodeActivities.finish,
                outcome,
                start_to_close_timeout=timedelta(seconds=30),
                retry_policy=DB_RETRY,
            )
        self._enter(phase)

    async def _remove(self, node_id: str) -> str:
        self._enter("Deleting")
        await workflow.execute_activity_method(
            NodeActivities.delete,
            node_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=DB_RETRY,
        )
        self._enter("Deleted")
        return "deleted"

    def _enter(self, step: str, *, only_if_changed: bool = False) -> None:
        """The step (or phase) the node is at now: the query's answer and the PrimusPhase attribute
        (with `only_if_changed`, not upserted again when it already is; patched path only)."""
        self._step = step
        if only_if_changed and workflow.info().typed_search_attributes.get(PHASE) == step:
            return
        enter_phase(step)
