"""Ops job activities: the job's record (control queue) and the dumplog archive (ssh queue,
through the cluster's execution driver). The per-node SSH steps of addon and reboot jobs are
`NodeActivities.job_addons` / `job_reboot` (they share the node SSH machinery).

Status changes go through `db.ops_job_status`; each is idempotent, so a retried activity
records nothing twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import tarfile
import time
from pathlib import Path

from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.execution import DriverUnavailable, cluster_driver
from db import ops_job_status
from db.encryption import SecretBox
from db.nodes import get_node
from db.ops_jobs import OpsJob
from db.scheduling import usage_on_nodes
from db.session import SessionFactory
from db.workloads import get_workload
from domain import ops_jobs as rules
from domain.errors import NotFound
from domain.failures import Failure
from domain.timefmt import utcnow
from domain.workloads import (
    GroupVersionKind,
    PodAssignment,
    WorkloadDispatch,
    WorkloadResource,
    WorkloadSpec,
    main_container,
)
from drivers.execution import DriverError


class NodeRecord(rules.NodeOutcome):
    job_id: str


class OpsJobActivities:
    """Holds the database, the secret box and where dumplog archives go."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, archive_dir: Path) -> None:
        self._sessions = sessions
        self._box = box
        self._archive_dir = archive_dir

    @activity.defn(name="ops_job.start")
    async def start(self, job_id: str) -> bool:
        async with self._sessions() as session, session.begin():
            return await ops_job_status.start(session, job_id=job_id, now=utcnow())

    @activity.defn(name="ops_job.record_node")
    async def record_node(self, record: NodeRecord) -> bool:
        async with self._sessions() as session, session.begin():
            return await ops_job_status.record_node(
                session,
                job_id=record.job_id,
                node_id=record.node_id,
                ok=record.ok,
                message=record.message,
                now=utcnow(),
            )

    @activity.defn(name="ops_job.finish")
    async def finish(self, end: rules.JobEnd) -> bool:
        async with self._sessions() as session, session.begin():
            return await ops_job_status.finish(session, end=end, now=utcnow())

    @activity.defn(name="ops_job.mark_deleted")
    async def mark_deleted(self, job_id: str) -> bool:
        async with self._sessions() as session, session.begin():
            return await ops_job_status.mark_deleted(session, job_id=job_id, now=utcnow())

    @activity.defn(name="ops_job.node_busy")
    async def node_busy(self, node_id: str) -> list[str]:
        """The workloads holding resources on the node (a `securityUpgrade` job waits for none)."""
        async with self._sessions() as session:
            node = await get_node(session, node_id=node_id)
            if node is None:
                return []
            usage = await usage_on_nodes(session, [node])
        return sorted({use.workload_id for use in usage.get(node_id, [])})

    @activity.defn(name="ops_job.dump_logs")
    async def dump_logs(self, request: rules.DumpRequest) -> list[rules.JobInput]:
        """Collect the workload's pod logs (its last dispatch) into `<archive dir>/<job>.tar.gz`,
        one `<pod>.log` per pod; the outputs say where and how big."""
        async with self._sessions() as session:
            workload = await get_workload(session, workload_id=request.workload_id, include_deleted=True)
        if workload is None:
            raise ApplicationError(
                f"workload {request.workload_id} not found", type=Failure.NOT_FOUND, non_retryable=True
            )
        pods = [p["name"] for p in workload.pods if p.get("name")]
        if not pods:
            raise ApplicationError(
                f"the log of workload({workload.id}) is not found: it has no pods",
                type=Failure.NOT_FOUND,
                non_retryable=True,
            )
        try:
            driver = await cluster_driver(self._sessions, self._box, workload.cluster_id)
        except DriverUnavailable as exc:
            raise ApplicationError(str(exc), type=Failure.CLUSTER_UNAVAILABLE) from exc
        logs: dict[str, bytes] = {}
        try:
            for pod in pods:
                activity.heartbeat(pod)
                try:
                    text = await asyncio.to_thread(
                        driver.read_log, workload.workspace_id, pod, container=main_container(workload.kind)
                    )
                except NotFound:
                    text = ""
                logs[pod] = text.encode()
        except DriverError as exc:
            raise ApplicationError(f"reading the logs: {exc}", type=Failure.CLUSTER_UNAVAILABLE) from exc
        finally:
            driver.close()
        self._archive_dir.mkdir(parents=True, exist_ok=True)
        path = self._archive_dir / f"{request.job_id}.tar.gz"
        partial = path.with_suffix(".partial")
        with tarfile.open(partial, "w:gz") as archive:
            for pod, data in logs.items():
                info = tarfile.TarInfo(f"{workload.id}/{pod}.log")
                info.size, info.mtime = len(data), int(time.time())
                archive.addfile(info, io.BytesIO(data))
        partial.replace(path)  # a retry rewrites the same archive
        lines = sum(data.count(b"\n") for data in logs.values())
        return [
            rules.JobInput(name="endpoint", value=str(path)),
            rules.JobInput(name="size", value=str(path.stat().st_size)),
            rules.JobInput(name="summary", value=f"{len(logs)} pods, {lines} lines"),
        ]

    @activity.defn(name="ops_job.preflight")
    async def preflight(self, job_id: str) -> list[rules.NodeOutcome]:
        """Run the job's check workload on each of its nodes through the cluster's driver (one pod
        per node, privileged on Kubernetes), wait until every pod ended, and turn each pod's
        `[ERROR]`/`[SUCCESS]` lines into its node's outcome; the pods are removed afterwards
        (also when the job is stopped). Re-applying after a retry changes nothing."""
        async with self._sessions() as session:
            job = await session.get(OpsJob, job_id)
        if job is None:
            raise ApplicationError(f"ops job {job_id} not found", type=Failure.NOT_FOUND, non_retryable=True)
        spec = job.spec
        workload = WorkloadSpec(
            display_name=job.name,
            workspace_id=rules.PREFLIGHT_NAMESPACE,
            group_version_kind=GroupVersionKind(kind="PyTorchJob", version="v1"),
            image=str(spec["image"]),
            entry_point=str(spec["entryPoint"]),
            resource=WorkloadResource(**spec["resource"], replica=len(job.node_ids)),
            env=dict(spec.get("env", {})),
            hostpath=list(spec.get("hostpath", [])),
            is_tolerate_all=job.is_tolerate_all,
        )
        dispatch = WorkloadDispatch(
            workload_id=job.id,
            namespace=rules.PREFLIGHT_NAMESPACE,
            spec=workload,
            cluster_id=job.cluster_id,
            user_name=job.user_name,
            privileged=True,
            assignments=[PodAssignment(node=n) for n in job.node_ids],
        )
        try:
            driver = await cluster_driver(self._sessions, self._box, job.cluster_id, only_nodes=job.node_ids)
        except DriverUnavailable as exc:
            raise ApplicationError(str(exc), type=Failure.CLUSTER_UNAVAILABLE) from exc
        try:
            await asyncio.to_thread(driver.ensure_namespace, rules.PREFLIGHT_NAMESPACE)
            await asyncio.to_thread(driver.apply, dispatch)
            while True:
                pods = await asyncio.to_thread(driver.list_pods, rules.PREFLIGHT_NAMESPACE, job.id)
                ended = [p for p in pods if p.phase in ("Succeeded", "Failed")]
                activity.heartbeat(f"{len(ended)}/{len(job.node_ids)} checks ended")
                if pods and len(ended) >= len(job.node_ids):
                    break
                await asyncio.sleep(2)
            outcomes = []
            for pod in sorted(pods, key=lambda p: p.node):
                try:
                    log = await asyncio.to_thread(
                        driver.read_log,
                        rules.PREFLIGHT_NAMESPACE,
                        pod.name,
                        container=main_container("PyTorchJob"),
                    )
                except NotFound:
                    log = ""
                lines = rules.check_lines(log)
                ok = pod.phase == "Succeeded" and not any("[ERROR]" in line for line in lines)
                outcomes.append(rules.NodeOutcome(node_id=pod.node, ok=ok, message=json.dumps(lines)))
            return outcomes
        except DriverError as exc:
            raise ApplicationError(f"preflight: {exc}", type=Failure.CLUSTER_UNAVAILABLE) from exc
        finally:
            with contextlib.suppress(DriverError, NotFound):
                await asyncio.to_thread(driver.delete, rules.PREFLIGHT_NAMESPACE, job.id, "PyTorchJob")
            driver.close()
