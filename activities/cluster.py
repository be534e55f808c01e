"""Cluster activities: provisioner runs over SSH (ssh queue) and the cluster's records (control queue).

Provisioner runs are idempotent (the hosts checks and kubespray playbooks may be repeated), stream
every printed line into the cluster's log while they run, and heartbeat the step and the number of
lines streamed; a retried attempt says it resumes and runs the step again. Credentials are read
and decrypted here, never passed through workflow inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import clusters as db
from db import nodes as node_db
from db.clusters import Cluster
from db.encryption import DecryptionError, SecretBox
from db.nodes import Node
from db.secrets import ssh_credentials
from db.session import SessionFactory
from domain import clusters as rules
from domain.errors import PrimusError
from domain.nodes import READY as NODE_READY
from domain.secrets import SSHCredentials
from domain.timefmt import utcnow
from drivers.provisioners import (
    HostsProvisioner,
    KubesprayProvisioner,
    NodeAccess,
    Provisioner,
    ProvisionFailed,
)
from drivers.ssh import SSHError, SSHTarget, Unreachable
from primus_safe.settings import Settings

T = TypeVar("T")
LOG_FLUSH_SECONDS = 0.5


def _fail(message: str, kind: str, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message[:2000], type=kind, non_retryable=not retryable)


def _translate(err: BaseException) -> ApplicationError:
    """Provisioner and SSH failures as activity errors: only unreachable hosts are retried."""
    if isinstance(err, ProvisionFailed):
        return _fail(err.reason, "ProvisionFailed")
    if isinstance(err, SSHError):
        return _fail(err.reason, err.kind, retryable=isinstance(err, Unreachable))
    raise err


def cluster_node(node: Node, *, control_plane: bool) -> rules.ClusterNode:
    """The provisioner's view of a node: its inventory name is the host name, else the node id."""
    return rules.ClusterNode(
        node_id=node.id,
        hostname=node.hostname or node.id,
        private_ip=node.private_ip,
        public_ip=node.public_ip,
        port=node.port,
        host_key_fingerprint=node.host_key_fingerprint,
        is_control_plane=control_plane,
    )


class ClusterActivities:
    """Holds the database, the secret box, settings and the thread pool for blocking SSH calls."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, settings: Settings) -> None:
        self._sessions = sessions
        self._box = box
        self._settings = settings
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cluster-ssh")

    # --- loading ----------------------------------------------------------------------------------

    async def _cluster(self, cluster_id: str) -> Cluster:
        async with self._sessions() as session:
            cluster = await db.get_cluster(session, cluster_id=cluster_id)
        if cluster is None:
            raise _fail(f"cluster {cluster_id} not found", "NotFound")
        return cluster

    async def _nodes(self, cluster: Cluster, *, extra: str | None = None) -> list[Node]:
        """The cluster's nodes: its control-plane nodes first, then every node bound to it."""
        async with self._sessions() as session:
            bound = await node_db.list_nodes(session, cluster_id=cluster.id)
            wanted = [*cluster.control_plane_nodes, *([extra] if extra else [])]
            by_id = {n.id: n for n in bound}
            for node_id in wanted:
                if node_id not in by_id:
                    node = await node_db.get_node(session, node_id=node_id, include_deleting=True)
                    if node is not None:
                        by_id[node.id] = node
        control = [by_id[n] for n in cluster.control_plane_nodes if n in by_id]
        return control + [n for n in by_id.values() if n.id not in cluster.control_plane_nodes]

    async def _credentials(self, cluster: Cluster) -> SSHCredentials:
        try:
            async with self._sessions() as session:
                return await ssh_credentials(session, self._box, secret_id=cluster.ssh_secret_id)
        except PrimusError as exc:
            raise _fail(f"ssh secret {cluster.ssh_secret_id}: {exc.message}", "Invalid") from exc
        except DecryptionError as exc:
            raise _fail(str(exc), "Invalid") from exc

    def _access(self, cluster: Cluster, nodes: list[Node], creds: SSHCredentials) -> list[NodeAccess]:
        control_plane = set(cluster.control_plane_nodes)
        return [
            NodeAccess(
                node=cluster_node(n, control_plane=n.id in control_plane),
                ssh=SSHTarget(
                    host=n.private_ip,
                    port=n.port,
                    username=creds.username,
                    password=creds.password,
                    private_key_pem=creds.private_key_pem,
                    known_fingerprint=n.host_key_fingerprint or None,
                ),
            )
            for n in nodes
        ]

    def _provisioner(self, cluster: Cluster, creds: SSHCredentials) -> Provisioner:
        connect = self._settings.ssh_connect_timeout_seconds
        limit = self._settings.cluster_provision_timeout_seconds
        if cluster.provisioner == "kubespray":
            try:
                return KubesprayProvisioner(
                    cluster.id,
                    options=rules.KubesprayOptions(
                        image=cluster.kube_spray_image,
                        pods_subnet=cluster.kube_pods_subnet,
                        service_range=cluster.kube_service_address,
                        network_plugin=cluster.kube_network_plugin,
                        kube_version=cluster.kube_version,
                        api_server_args=dict(cluster.kube_api_server_args),
                    ),
                    container_run=self._settings.node_commands.get("container_run") or [],
                    ssh_user=creds.username,
                    ssh_private_key=creds.private_key_pem,
                    connect_timeout=connect,
                    command_timeout=limit,
                )
            except ProvisionFailed as err:
                raise _translate(err) from err
        return HostsProvisioner(cluster.id, connect_timeout=connect, command_timeout=limit)

    # --- records ----------------------------------------------------------------------------------

    async def _update_cluster(self, cluster_id: str, **values: Any) -> None:
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Cluster).where(Cluster.id == cluster_id).values(**values, updated_at=utcnow())
            )

    async def _log(self, cluster_id: str, *lines: str, level: str = "INFO", node_id: str = "") -> None:
        """Append lines to the cluster's log (and the node's, for node operations)."""
        now = utcnow()
        with contextlib.suppress(IntegrityError):
            async with self._sessions() as session, session.begin():
                db.add_log(session, cluster_id=cluster_id, lines=lines, at=now, level=level)
        if node_id:
            with contextlib.suppress(IntegrityError):
                async with self._sessions() as session, session.begin():
                    node_db.add_log(session, node_id=node_id, lines=lines, at=now, level=level)

    async def _streamed(
        self,
        cluster_id: str,
        step: str,
        provisioner: Provisioner,
        work: Callable[[Callable[[str], None]], T],
        *,
        node_id: str = "",
    ) -> T:
        """Run a blocking provisioner call, storing each printed line while it runs; heartbeats progress."""
        details = activity.info().heartbeat_details
        previous = details[0] if details and isinstance(details[0], dict) else None
        if previous:
            await self._log(
                cluster_id,
                f"resuming {step} after an interrupted attempt ({previous.get('lines', 0)} lines streamed); "
                "the step is idempotent and runs again",
                node_id=node_id,
            )
        loop = asyncio.get_running_loop()
        lines: asyncio.Queue[str] = asyncio.Queue()
        streamed = 0

        def on_line(line: str) -> None:
            loop.call_soon_threadsafe(lines.put_nowait, line)

        job = loop.run_in_executor(self._threads, lambda: work(on_line))
        while True:
            try:
                done, _ = await asyncio.wait({job}, timeout=LOG_FLUSH_SECONDS)
            except asyncio.CancelledError:
                await self._stop(cluster_id, step, provisioner, job, node_id)
                raise
            batch = []
            while not lines.empty():
                batch.append(lines.get_nowait())
            if batch:
                streamed += len(batch)
                await self._log(cluster_id, *batch, node_id=node_id)
            activity.heartbeat({"step": step, "lines": streamed})
            if done:
                break
        try:
            return job.result()
        except (ProvisionFailed, SSHError) as err:
            await self._log(cluster_id, f"{step} failed: {err}", level="ERROR", node_id=node_id)
            raise _translate(err) from err

    async def _stop(
        self, cluster_id: str, step: str, provisioner: Provisioner, job: asyncio.Future[Any], node_id: str
    ) -> None:
        """The workflow cancelled the step: close its SSH sessions and wait until the call has ended."""
        provisioner.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(
                asyncio.shield(job), timeout=self._settings.ssh_connect_timeout_seconds * 3
            )
        await self._log(cluster_id, f"{step} cancelled", level="WARN", node_id=node_id)

    # --- provisioning (ssh queue) -----------------------------------------------------------------

    @activity.defn(name="cluster.provision")
    async def provision(self, cluster_id: str) -> rules.ProvisionResult:
        """Provision the control-plane nodes; store the endpoint, kubeconfig and work dir."""
        cluster = await self._cluster(cluster_id)
        if cluster.step != "Provisioning":
            await self._update_cluster(cluster_id, step="Provisioning")
            await self._log(cluster_id, f"provisioning with {cluster.provisioner} started")
        creds = await self._credentials(cluster)
        nodes = await self._nodes(cluster)
        control = [n for n in self._access(cluster, nodes, creds) if n.node.is_control_plane]
        if len(control) != len(cluster.control_plane_nodes):
            raise _fail("a control-plane node of the cluster no longer exists", "NotFound")
        provisioner = self._provisioner(cluster, creds)
        result = await self._streamed(
            cluster_id, "Provisioning", provisioner, lambda sink: provisioner.create(control, sink)
        )
        await self._update_cluster(
            cluster_id,
            endpoint=result.endpoint,
            work_dir=result.work_dir,
            kubeconfig_encrypted=self._box.encrypt(result.kubeconfig) if result.kubeconfig else "",
        )
        return rules.ProvisionResult(endpoint=result.endpoint, kubeconfig_stored=bool(result.kubeconfig))

    @activity.defn(name="cluster.reset")
    async def reset(self, cluster_id: str) -> None:
        """Undo the cluster on every node bound to it (the provisioner's reset)."""
        cluster = await self._cluster(cluster_id)
        await self._update_cluster(cluster_id, step="Resetting")
        creds = await self._credentials(cluster)
        nodes = self._access(cluster, await self._nodes(cluster), creds)
        if not nodes:
            await self._log(cluster_id, "no nodes left to reset")
            return
        provisioner = self._provisioner(cluster, creds)
        await self._streamed(
            cluster_id, "Resetting", provisioner, lambda sink: provisioner.reset(nodes, sink)
        )

    @activity.defn(name="cluster.manage_node")
    async def manage_node(self, params: rules.NodeManageInput) -> None:
        """Join a node to the cluster (`add`) or take it out (`remove`) through the provisioner."""
        cluster = await self._cluster(params.cluster_id)
        creds = await self._credentials(cluster)
        nodes = self._access(cluster, await self._nodes(cluster, extra=params.node_id), creds)
        node = next((n for n in nodes if n.node.node_id == params.node_id), None)
        if node is None:
            raise _fail(f"node {params.node_id} not found", "NotFound")
        provisioner = self._provisioner(cluster, creds)
        step = "Managing" if params.action == "add" else "Unmanaging"
        await self._log(params.cluster_id, f"{step} node {params.node_id}", node_id=params.node_id)
        if params.action == "add":
            await self._streamed(
                params.cluster_id,
                step,
                provisioner,
                lambda sink: provisioner.add_node(nodes, node, sink),
                node_id=params.node_id,
            )
        else:
            await self._streamed(
                params.cluster_id,
                step,
                provisioner,
                lambda sink: provisioner.remove_node(nodes, node, sink),
                node_id=params.node_id,
            )

    # --- records (control queue) ------------------------------------------------------------------

    @activity.defn(name="cluster.finish")
    async def finish(self, params: rules.ClusterFinish) -> None:
        """Record the outcome of a creation; a Ready cluster's control-plane nodes become bound to it."""
        now = utcnow()
        text = f"phase {params.phase}" + (f": {params.message}" if params.message else "")
        async with self._sessions() as session, session.begin():
            cluster = await db.get_cluster(session, cluster_id=params.cluster_id)
            if cluster is None:
                return
            cluster.phase, cluster.message, cluster.step = params.phase, params.message[:1024], ""
            cluster.updated_at = now
            if params.phase == rules.READY:
                await session.execute(
                    update(Node)
                    .where(Node.id.in_(cluster.control_plane_nodes))
                    .values(cluster_id=cluster.id, is_control_plane=True, updated_at=now)
                )
            db.add_log(
                session,
                cluster_id=cluster.id,
                lines=[text],
                at=now,
                level="INFO" if params.phase == rules.READY else "ERROR",
            )

    @activity.defn(name="cluster.begin_delete")
    async def begin_delete(self, cluster_id: str) -> str:
        """Mark the cluster `Deleting`; returns the phase it had (a retry returns `Deleting`)."""
        cluster = await self._cluster(cluster_id)
        if cluster.phase != rules.DELETING:
            await self._update_cluster(cluster_id, phase=rules.DELETING, step="", message="")
            await self._log(cluster_id, "phase Deleting")
        return cluster.phase

    @activity.defn(name="cluster.note")
    async def note(self, params: rules.ClusterNote) -> None:
        """Add a line to the cluster's log."""
        await self._log(params.cluster_id, params.line, level=params.level)

    @activity.defn(name="cluster.abort_delete")
    async def abort_delete(self, params: rules.ClusterFinish) -> None:
        """The teardown failed: the cluster stays, `Failed` with the reason, and may be deleted again."""
        await self._update_cluster(
            params.cluster_id, phase=rules.FAILED, step="", message=params.message[:1024], deleting_at=None
        )
        await self._log(params.cluster_id, f"deletion failed: {params.message}", level="ERROR")

    @activity.defn(name="cluster.remove")
    async def remove(self, cluster_id: str) -> bool:
        """Unbind every node of the cluster and remove its record and log; returns whether it went."""
        now = utcnow()
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Node)
                .where(Node.cluster_id == cluster_id)
                .values(cluster_id="", is_control_plane=False, workspace_id="", updated_at=now)
            )
            await session.execute(
                update(Node)
                .where(
                    Node.phase.in_(
                        [rules.MANAGING, rules.MANAGED_FAILED, rules.UNMANAGING, rules.UNMANAGED_FAILED]
                    ),
                    Node.cluster_id == "",
                )
                .values(phase=NODE_READY)
            )
            return await db.delete_cluster(session, cluster_id=cluster_id)

    @activity.defn(name="cluster.node_finish")
    async def node_finish(self, params: rules.NodeManageFinish) -> None:
        """Record a node's manage/unmanage outcome: bound and Ready, unbound, or the failure phase."""
        now = utcnow()
        values: dict[str, Any]
        if params.action == "add":
            phase = NODE_READY if params.ok else rules.MANAGED_FAILED
            values = {"phase": phase, "message": params.message[:1024]}
            line = f"node {params.node_id} joined" if params.ok else f"node {params.node_id} did not join"
        else:
            phase = NODE_READY if params.ok else rules.UNMANAGED_FAILED
            values = {"phase": phase, "message": params.message[:1024]}
            if params.ok:
                values.update(cluster_id="", is_control_plane=False, workspace_id="")
            line = f"node {params.node_id} left" if params.ok else f"node {params.node_id} did not leave"
        text = f"{line} cluster {params.cluster_id}: phase {phase}" + (
            f": {params.message}" if params.message else ""
        )
        level = "INFO" if params.ok else "ERROR"
        async with self._sessions() as session, session.begin():
            await session.execute(
                update(Node)
                .where(Node.id == params.node_id)
                .values(**values, phase_changed_at=now, updated_at=now)
            )
        await self._log(params.cluster_id, text, level=level, node_id=params.node_id)
