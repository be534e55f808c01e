"""The scheduled probe (`system/node-probe`): every node's SSH reachability, checked in parallel.

Each probe activity moves an onboarded node between Ready and SSHFailed and records when and
why; this workflow then tells the node's own workflow (to mirror the phase in its search
attributes, or to retry an onboarding that failed because the node was unreachable).
"""

from __future__ import annotations

import asyncio
from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy, SearchAttributePair, TypedSearchAttributes
from temporalio.exceptions import ActivityError
from temporalio.workflow import ParentClosePolicy

from workflows.common import DB_RETRY, PHASE, RESOURCE_ID, RESOURCE_TYPE
from workflows.fault import FaultWorkflow

with workflow.unsafe.imports_passed_through():
    from activities.node import NodeActivities
    from domain import nodes as rules
    from domain.faults import STOP_SIGNAL, FaultWorkflowInput, fault_workflow_id
    from workflows.node import workflow_id

SCHEDULE_ID = "system/node-probe"


@workflow.defn(name="NodeProbe")
class NodeProbeWorkflow:
    """One probe pass over all nodes, at most `concurrency` SSH logins at a time."""

    @workflow.run
    async def run(self, params: rules.ProbeInput) -> rules.ProbeSummary:
        ids = await workflow.execute_activity_method(
            NodeActivities.probe_targets,
            None,
            start_to_close_timeout=timedelta(seconds=60),
            retry_policy=DB_RETRY,
        )
        gate = asyncio.Semaphore(max(params.concurrency, 1))
        outcomes = await asyncio.gather(*(self._probe(gate, node_id, params) for node_id in ids))
        summary = rules.ProbeSummary(probed=len(ids))
        for outcome in outcomes:
            if outcome is None:
                continue
            summary.reachable += int(outcome.reachable)
            handle = workflow.get_external_workflow_handle(workflow_id(outcome.node_id))
            try:
                if outcome.changed:
                    summary.changed.append(outcome.node_id)
                    await handle.signal("observed", outcome.phase)
                if outcome.restart_onboarding:
                    await handle.signal("reconfigure", "reach")
            except Exception:  # the node's workflow may be gone (node deleted meanwhile)
                workflow.logger.warning("cannot signal the workflow of node %s", outcome.node_id)
            await self._faults(outcome, params)
        return summary

    async def _probe(
        self, gate: asyncio.Semaphore, node_id: str, params: rules.ProbeInput
    ) -> rules.ProbeOutcome | None:
        async with gate:
            try:
                return await workflow.execute_activity_method(
                    NodeActivities.probe,
                    node_id,
                    task_queue=params.ssh_queue,
                    start_to_close_timeout=timedelta(seconds=params.timings.connect_timeout * 4 + 10),
                    retry_policy=RetryPolicy(maximum_attempts=1),
                )
            except ActivityError:
                return None

    async def _faults(self, outcome: rules.ProbeOutcome, params: rules.ProbeInput) -> None:
        """Start the workflows of the faults the probe raised, stop those it cleared."""
        for fault_id in outcome.raised_faults:
            await workflow.start_child_workflow(
                FaultWorkflow.run,
                FaultWorkflowInput(
                    fault_id=fault_id, io_queue=params.ssh_queue, failover_monitors=params.failover_monitors
                ),
                id=fault_workflow_id(fault_id),
                parent_close_policy=ParentClosePolicy.ABANDON,
                search_attributes=TypedSearchAttributes(
                    [
                        SearchAttributePair(RESOURCE_TYPE, "fault"),
                        SearchAttributePair(RESOURCE_ID, fault_id),
                        SearchAttributePair(PHASE, "Pending"),
                    ]
                ),
                static_summary=f"Fault on node {outcome.node_id} (raised by the probe)",
            )
        for fault_id in outcome.cleared_faults:
            handle = workflow.get_external_workflow_handle(fault_workflow_id(fault_id))
            try:
                await handle.signal(STOP_SIGNAL, False)
            except Exception:
                workflow.logger.warning("fault %s has no running workflow", fault_id)
