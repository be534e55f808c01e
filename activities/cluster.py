"""Cluster activities: provisioner runs over SSH (ssh queue) and the cluster's records (control queue).

Provisioner runs are idempotent (the hosts checks and kubespray playbooks may be repeated), stream
every printed line into the cluster's log while they run, and heartbeat the step and the number of
lines streamed; a retried attempt says it resumes and runs the step again. Credentials are read
and decrypted here, never passed through workflow inputs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import cluster_status, logs, node_status
from db import clusters as db
from db import nodes as node_db
from db.clusters import Cluster
from db.encryption import DecryptionError, SecretBox
from db.nodes import Node
from db.secrets import ssh_credentials
from db.session import SessionFactory
from domain import clusters as rules
from domain.config import ClusterConfig, Source, current
from domain.errors import PrimusError
from domain.failures import Failure
from domain.logs import LogResource
from domain.nodes import MANAGED_FAILED, UNMANAGED_FAILED
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

T = TypeVar("T")
LOG_FLUSH_SECONDS = 0.5
WRITE_ATTEMPTS = 6


def _fail(message: str, kind: Failure, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message[:2000], type=kind, non_retryable=not retryable)


def _translate(err: BaseException) -> ApplicationError:
    """Provisioner and SSH failures as activity errors: only unreachable hosts are retried."""
    if isinstance(err, ProvisionFailed):
        return _fail(err.reason, Failure.PROVISION_FAILED)
    if isinstance(err, SSHError):
        return _fail(err.reason, Failure(err.kind), retryable=isinstance(err, Unreachable))
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
    """Holds the database, the secret box, the cluster config and the thread pool for blocking SSH
    calls. Cluster status changes go through `db.cluster_status`, node bindings and phases through
    `db.node_status`, log lines through `db.logs`."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, config: Source[ClusterConfig]) -> None:
        self._sessions = sessions
        self._box = box
        self._config_source = config
        self._threads = ThreadPoolExecutor(max_workers=16, thread_name_prefix="cluster-ssh")

    def _config(self) -> ClusterConfig:
        return current(self._config_source)

    # --- loading ----------------------------------------------------------------------------------

    async def _cluster(self, cluster_id: str) -> Cluster:
        async with self._sessions() as session:
            cluster = await db.get_cluster(session, cluster_id=cluster_id)
        if cluster is None:
            raise _fail(f"cluster {cluster_id} not found", Failure.NOT_FOUND)
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
        """The cluster's SSH login; none (an empty one) for a cluster of local nodes without a secret."""
        if not cluster.ssh_secret_id:
            return SSHCredentials(username="")
        try:
            async with self._sessions() as session:
                return await ssh_credentials(session, self._box, secret_id=cluster.ssh_secret_id)
        except PrimusError as exc:
            raise _fail(f"ssh secret {cluster.ssh_secret_id}: {exc.message}", Failure.INVALID) from exc
        except DecryptionError as exc:
            raise _fail(str(exc), Failure.INVALID) from exc

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
                    known_fingerprint=None if n.local else n.host_key_fingerprint or None,
                ),
                local=n.local,
            )
            for n in nodes
        ]

    def _provisioner(self, cluster: Cluster, creds: SSHCredentials) -> Provisioner:
        connect = self._config().ssh.connect_timeout_seconds
        limit = self._config().provision_timeout_seconds
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
                    container_run=list(self._config().commands.get("container_run") or []),
                    ssh_user=creds.username,
                    ssh_private_key=creds.private_key_pem,
                    connect_timeout=connect,
                    command_timeout=limit,
                )
            except ProvisionFailed as err:
                raise _translate(err) from err
        return HostsProvisioner(cluster.id, connect_timeout=connect, command_timeout=limit)

    # --- records ----------------------------------------------------------------------------------

    async def _write(self, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `write` in its own transaction, retrying while SQLite reports the database locked."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self._sessions() as session, session.begin():
                    return await write(session)
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def _log(self, cluster_id: str, *lines: str, level: str = "INFO", node_id: str = "") -> None:
        """Append lines to the cluster's log (and the node's, for node operations); a resource
        deleted meanwhile just loses them."""
        now = utcnow()
        owners = [(LogResource.CLUSTER, cluster_id)] + ([(LogResource.NODE, node_id)] if node_id else [])
        for resource, resource_id in owners:

            async def write(
                session: AsyncSession, resource: LogResource = resource, rid: str = resource_id
            ) -> None:
                await logs.append(
                    session, resource=resource, resource_id=rid, lines=lines, at=now, level=level
                )

            with contextlib.suppress(logs.OwnerGone):
                await self._write(write)

    async def _begin_step(self, cluster_id: str, step: str, line: str = "") -> None:
        async def write(session: AsyncSession) -> None:
            if (
                await cluster_status.begin_step(session, cluster_id=cluster_id, step=step, now=utcnow())
                and line
            ):
                await _append(session, cluster_id, [line])

        await self._write(write)

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
                asyncio.shield(job), timeout=self._config().ssh.connect_timeout_seconds * 3
            )
        await self._log(cluster_id, f"{step} cancelled", level="WARN", node_id=node_id)

    # --- provisioning (ssh queue) -----------------------------------------------------------------

    @activity.defn(name="cluster.provision")
    async def provision(self, cluster_id: str) -> rules.ProvisionResult:
        """Provision the control-plane nodes; store the endpoint, kubeconfig and work dir."""
        cluster = await self._cluster(cluster_id)
        await self._begin_step(cluster_id, "Provisioning", f"provisioning with {cluster.provisioner} started")
        creds = await self._credentials(cluster)
        nodes = await self._nodes(cluster)
        control = [n for n in self._access(cluster, nodes, creds) if n.node.is_control_plane]
        if len(control) != len(cluster.control_plane_nodes):
            raise _fail("a control-plane node of the cluster no longer exists", Failure.NOT_FOUND)
        provisioner = self._provisioner(cluster, creds)
        result = await self._streamed(
            cluster_id, "Provisioning", provisioner, lambda sink: provisioner.create(control, sink)
        )
        kubeconfig = self._box.encrypt(result.kubeconfig) if result.kubeconfig else ""
        await self._write(
            partial(
                cluster_status.record_provisioned,
                cluster_id=cluster_id,
                endpoint=result.endpoint,
                work_dir=result.work_dir,
                kubeconfig_encrypted=kubeconfig,
                now=utcnow(),
            )
        )
        return rules.ProvisionResult(endpoint=result.endpoint, kubeconfig_stored=bool(result.kubeconfig))

    @activity.defn(name="cluster.reset")
    async def reset(self, cluster_id: str) -> None:
        """Undo the cluster on every node bound to it (the provisioner's reset)."""
        cluster = await self._cluster(cluster_id)
        await self._begin_step(cluster_id, "Resetting")
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
            raise _fail(f"node {params.node_id} not found", Failure.NOT_FOUND)
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

    @activity.defn(name="cluster.claim_nodes")
    async def claim_nodes(self, cluster_id: str) -> None:
        """Bind the new cluster's control-plane nodes to it, all or none. When one was taken
        meanwhile, the cluster record is discarded and the creation refused (`Conflict`)."""
        cluster = await self._cluster(cluster_id)
        nodes = list(cluster.control_plane_nodes)

        async def claim(session: AsyncSession) -> list[str]:
            return await node_status.claim_for_cluster(
                session, cluster_id=cluster_id, node_ids=nodes, now=utcnow()
            )

        async def claim_or_nothing(session: AsyncSession) -> list[str]:
            refused = await claim(session)
            if refused:
                await session.rollback()
            return refused

        refused = await self._write(claim_or_nothing)
        if not refused:
            return
        async with self._sessions() as session:
            taken = {n.id: n for n in await node_db.list_nodes(session) if n.id in refused}
        reasons = [
            f"the node({node_id}) is already in use by cluster {taken[node_id].cluster_id}"
            if node_id in taken and taken[node_id].cluster_id
            else f"the node({node_id}) is not ready or busy"
            for node_id in refused
        ]
        await self._write(partial(db.discard_cluster, cluster_id=cluster_id))
        raise _fail("; ".join(reasons), Failure.CONFLICT)

    @activity.defn(name="cluster.finish")
    async def finish(self, params: rules.ClusterFinish) -> None:
        """Record the outcome of a creation; a Ready cluster's control-plane nodes become bound to it."""
        text = f"phase {params.phase}" + (f": {params.message}" if params.message else "")
        level = "INFO" if params.phase == rules.READY else "ERROR"

        async def write(session: AsyncSession) -> None:
            cluster = await db.get_cluster(session, cluster_id=params.cluster_id)
            if cluster is None:
                return
            if await cluster_status.finish_creation(
                session, cluster=cluster, phase=params.phase, message=params.message, now=utcnow()
            ):
                await _append(session, cluster.id, [text], level=level)

        await self._write(write)

    @activity.defn(name="cluster.begin_delete")
    async def begin_delete(self, cluster_id: str) -> str:
        """Mark the cluster `Deleting`; returns the phase it had (a retry returns `Deleting`)."""
        cluster = await self._cluster(cluster_id)

        async def write(session: AsyncSession) -> None:
            if await cluster_status.begin_delete(session, cluster_id=cluster_id, now=utcnow()):
                await _append(session, cluster_id, ["phase Deleting"])

        await self._write(write)
        return cluster.phase

    @activity.defn(name="cluster.note")
    async def note(self, params: rules.ClusterNote) -> None:
        """Add a line to the cluster's log."""
        await self._log(params.cluster_id, params.line, level=params.level)

    @activity.defn(name="cluster.abort_delete")
    async def abort_delete(self, params: rules.ClusterFinish) -> None:
        """The teardown failed: the cluster stays, `Failed` with the reason, and may be deleted again."""

        async def write(session: AsyncSession) -> None:
            if await cluster_status.abort_delete(
                session, cluster_id=params.cluster_id, message=params.message, now=utcnow()
            ):
                await _append(
                    session, params.cluster_id, [f"deletion failed: {params.message}"], level="ERROR"
                )

        await self._write(write)

    @activity.defn(name="cluster.remove")
    async def remove(self, cluster_id: str) -> bool:
        """Unbind every node of the cluster and remove its record and log; returns whether it went."""
        return await self._write(partial(cluster_status.remove, cluster_id=cluster_id, now=utcnow()))

    @activity.defn(name="cluster.begin_node_manage")
    async def begin_node_manage(self, params: rules.NodeManageInput) -> None:
        """A node starts joining (`Managing`) or leaving (`Unmanaging`) the cluster; refused with
        `Conflict` (nothing changed) when the node is not in a state to do so."""

        async def write(session: AsyncSession) -> str:
            return await node_status.begin_manage(
                session,
                node_id=params.node_id,
                cluster_id=params.cluster_id,
                action=params.action,
                now=utcnow(),
            )

        refusal = await self._write(write)
        if refusal:
            raise _fail(refusal, Failure.CONFLICT)

    @activity.defn(name="cluster.node_finish")
    async def node_finish(self, params: rules.NodeManageFinish) -> None:
        """Record a node's manage/unmanage outcome: bound and Ready, unbound, or the failure phase."""
        if params.action == "add":
            phase = NODE_READY if params.ok else MANAGED_FAILED
            line = f"node {params.node_id} joined" if params.ok else f"node {params.node_id} did not join"
        else:
            phase = NODE_READY if params.ok else UNMANAGED_FAILED
            line = f"node {params.node_id} left" if params.ok else f"node {params.node_id} did not leave"
        text = f"{line} cluster {params.cluster_id}: phase {phase}" + (
            f": {params.message}" if params.message else ""
        )
        await self._write(
            partial(
                node_status.finish_manage,
                node_id=params.node_id,
                cluster_id=params.cluster_id,
                action=params.action,
                ok=params.ok,
                message=params.message,
                now=utcnow(),
            )
        )
        await self._log(
            params.cluster_id, text, level="INFO" if params.ok else "ERROR", node_id=params.node_id
        )


async def _append(session: AsyncSession, cluster_id: str, lines: list[str], *, level: str = "INFO") -> None:
    """Add lines to the cluster's log in the caller's transaction."""
    await logs.append(
        session, resource=LogResource.CLUSTER, resource_id=cluster_id, lines=lines, at=utcnow(), level=level
    )
