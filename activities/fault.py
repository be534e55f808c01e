"""Fault activities: apply and close a fault in the database (control queue), push the node's
taints to its cluster (io queue, through the cluster's execution driver).

Status changes go through `db.fault_status` (which owns the node's fault taints and holds);
all of them are idempotent, so a retried activity applies or closes nothing twice.
"""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.execution import DriverUnavailable, cluster_driver
from db import fault_status
from db.clusters import get_cluster
from db.encryption import SecretBox
from db.faults import get_fault
from db.nodes import get_node
from db.scheduling import usage_on_nodes
from db.session import SessionFactory
from domain import faults as rules
from domain.errors import NotFound
from domain.failures import Failure
from domain.timefmt import utcnow
from drivers.execution import DriverError, NodeTaint


class FaultActivities:
    """Holds the database and the secret box (for the cluster's driver)."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, request_timeout: float = 30) -> None:
        self._sessions = sessions
        self._box = box
        self._timeout = request_timeout

    @activity.defn(name="fault.apply")
    async def apply(self, params: rules.FaultWorkflowInput) -> rules.AppliedFault:
        """Taint the node and hold it unavailable; say which workloads run there and whether
        they are to be failed over."""
        async with self._sessions() as session, session.begin():
            fault = await get_fault(session, fault_id=params.fault_id)
            if fault is None:
                raise ApplicationError(
                    f"fault {params.fault_id} not found", type=Failure.NOT_FOUND, non_retryable=True
                )
            applied = await fault_status.apply(session, fault=fault, now=utcnow())
            node = await get_node(session, node_id=fault.node_id)
            result = rules.AppliedFault(
                fault_id=fault.id,
                node_id=fault.node_id,
                monitor_id=fault.monitor_id,
                message=fault.message,
                phase=rules.SUCCEEDED if applied else fault.phase,
                closed=not fault.is_open,
            )
            if not applied or node is None:
                if not result.closed:
                    result.phase = rules.FAILED
                return result
            usage = await usage_on_nodes(session, [node])
            result.workspace_id = node.workspace_id
            result.cluster_id = node.cluster_id
            result.workloads = sorted({use.workload_id for use in usage.get(node.id, [])})
            result.failover = rules.fails_over(fault.effect, fault.monitor_id, params.failover_monitors)
            return result

    @activity.defn(name="fault.close")
    async def close(self, fault_id: str) -> rules.ReleasedFault:
        """Stop the fault: hold and taint gone (unless another open fault of the monitor keeps
        the taint), `deletionTime` set. A fault already gone is fine."""
        async with self._sessions() as session, session.begin():
            fault = await get_fault(session, fault_id=fault_id)
            if fault is None:
                return rules.ReleasedFault(fault_id=fault_id)
            released = await fault_status.close(session, fault=fault, now=utcnow())
            node = await get_node(session, node_id=fault.node_id)
            return rules.ReleasedFault(
                fault_id=fault_id,
                node_id=fault.node_id,
                workspace_id=node.workspace_id if node else "",
                cluster_id=node.cluster_id if node else "",
                released=released,
            )

    @activity.defn(name="fault.remove")
    async def remove(self, fault_id: str) -> bool:
        """Delete the record of a closed fault."""
        async with self._sessions() as session, session.begin():
            return await fault_status.remove(session, fault_id=fault_id)

    @activity.defn(name="fault.push_taints")
    async def push_taints(self, push: rules.TaintPush) -> None:
        """Replace the node's `primus-safe.` taints on its cluster with the platform's (Kubernetes;
        host clusters have no node objects). A node not (yet) in the cluster is fine."""
        async with self._sessions() as session:
            node = await get_node(session, node_id=push.node_id)
            cluster = await get_cluster(session, cluster_id=push.cluster_id)
        if node is None or cluster is None or not cluster.kubeconfig_encrypted:
            return  # hosts clusters have no node objects: the platform's records are the truth
        try:
            driver = await cluster_driver(
                self._sessions, self._box, push.cluster_id, request_timeout=self._timeout
            )
        except DriverUnavailable as exc:
            raise ApplicationError(str(exc), type=Failure.NOT_FOUND, non_retryable=True) from exc
        taints = [
            NodeTaint(key=t["key"], value=t.get("value", ""), effect=t.get("effect", "NoSchedule"))
            for t in node.taints
        ]
        try:
            await asyncio.to_thread(driver.sync_node, node.id, taints=taints)
        except NotFound:
            return
        except DriverError as exc:
            retry = exc.status is None or exc.status >= 500
            raise ApplicationError(str(exc), type=Failure.INVALID, non_retryable=not retry) from exc
        finally:
            driver.close()
