"""The execution driver of a cluster, built from its record: `KubernetesDriver` when the cluster
has a kubeconfig, else `HostDriver` over its nodes (SSH with each node's credentials, or the
local host for the control plane's own node).

Credentials are read and decrypted here, in the activity, and never leave it.
"""

from __future__ import annotations

from collections.abc import Sequence

from db import clusters as cluster_db
from db.encryption import DecryptionError, SecretBox
from db.nodes import Node, list_nodes
from db.secrets import ssh_credentials
from db.session import SessionFactory
from domain.errors import NotFound, PrimusError
from drivers.execution import DriverError, ExecutionDriver
from drivers.host import HostDriver, HostNode
from drivers.kubernetes import KubernetesDriver
from drivers.ssh import SSHTarget


class DriverUnavailable(Exception):
    """The cluster's driver cannot be built (cluster gone, no nodes, bad credentials)."""


async def _host_node(sessions: SessionFactory, box: SecretBox, node: Node) -> HostNode:
    if node.is_local:
        return HostNode(name=node.id, address=node.private_ip, ssh=None)
    async with sessions() as session:
        creds = await ssh_credentials(session, box, secret_id=node.ssh_secret_id)
    target = SSHTarget(
        host=node.private_ip,
        port=node.port,
        username=creds.username,
        password=creds.password,
        private_key_pem=creds.private_key_pem,
        known_fingerprint=node.host_key_fingerprint or None,
    )
    return HostNode(name=node.id, address=node.private_ip, ssh=target)


async def cluster_driver(
    sessions: SessionFactory,
    box: SecretBox,
    cluster_id: str,
    *,
    request_timeout: float = 30,
    only_nodes: Sequence[str] | None = None,
) -> ExecutionDriver:
    """A driver for the cluster (the caller closes it); DriverUnavailable says why there is none.
    `only_nodes` limits a hosts cluster's driver to those nodes (a workload's pods: a node of the
    cluster that stopped answering then does not stall reading pods elsewhere)."""
    async with sessions() as session:
        cluster = await cluster_db.get_cluster(session, cluster_id=cluster_id)
        nodes = await list_nodes(session, cluster_id=cluster_id) if cluster is not None else []
    if only_nodes is not None:
        nodes = [n for n in nodes if n.id in set(only_nodes)]
    if cluster is None:
        raise DriverUnavailable(f"cluster {cluster_id} not found")
    try:
        if cluster.kubeconfig_encrypted:
            return KubernetesDriver(
                box.decrypt(cluster.kubeconfig_encrypted), request_timeout=request_timeout
            )
        hosts = [await _host_node(sessions, box, n) for n in nodes]
        return HostDriver(hosts, ssh_timeout=request_timeout)
    except (DecryptionError, DriverError, NotFound, PrimusError) as exc:
        raise DriverUnavailable(f"cluster {cluster_id}: {exc}") from exc
