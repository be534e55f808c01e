"""The provisioner interface: create a cluster, add or remove a node, tear the cluster down.

Every method is blocking (SSH), idempotent (safe to repeat after a crash or retry) and streams
each line it or the tools it runs print to `on_line`. Failures raise `ProvisionFailed` (a step
failed: final) or `drivers.ssh.SSHError` (unreachable hosts may be retried, others are final).
"""

from __future__ import annotations

import abc
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from domain.clusters import ClusterNode
from drivers.local import LocalConnection
from drivers.ssh import Connection, SSHError, SSHTarget, connect

LineSink = Callable[[str], None]


class ProvisionFailed(Exception):
    """A provisioning step failed; `reason` says which and why."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class NodeAccess:
    """A node and how to log in to it (host key pinned to the fingerprint trusted at onboarding);
    a `local` node is this machine, reached through the local transport (`ssh` is then unused)."""

    node: ClusterNode
    ssh: SSHTarget
    local: bool = False


@dataclass(frozen=True)
class Provisioned:
    """What a created cluster needs to be used."""

    work_dir: str
    """Absolute path of the cluster's working directory on its nodes."""
    endpoint: str = ""
    """`host:port` of the Kubernetes API server; "" for clusters without one."""
    kubeconfig: str = ""
    """The admin kubeconfig (plain text: the caller encrypts it); "" for clusters without one."""


class Provisioner(abc.ABC):
    """Provisions one cluster (`cluster_id`) on nodes reached over SSH (or locally, `NodeAccess.local`)."""

    def __init__(self, cluster_id: str, *, connect_timeout: float, command_timeout: float) -> None:
        self.cluster_id = cluster_id
        self.connect_timeout = connect_timeout
        self.command_timeout = command_timeout
        self._open: set[Connection] = set()
        self._lock = threading.Lock()
        self._cancelled = False

    def _connect(self, access: NodeAccess) -> Connection:
        if self._cancelled:
            raise ProvisionFailed("cancelled")
        local = access.local
        conn: Connection = LocalConnection() if local else connect(access.ssh, timeout=self.connect_timeout)
        with self._lock:
            self._open.add(conn)
        return conn

    def cancel(self) -> None:
        """Stop the call in flight from another thread: its connections close, so the remote command
        loses its session and the call ends with an error. Best effort: the reset that follows cleans up."""
        with self._lock:
            self._cancelled = True
            doomed = list(self._open)
        for conn in doomed:
            conn.close()

    @abc.abstractmethod
    def create(self, control_plane: Sequence[NodeAccess], on_line: LineSink) -> Provisioned:
        """Turn the control-plane nodes into a cluster."""

    @abc.abstractmethod
    def add_node(self, nodes: Sequence[NodeAccess], node: NodeAccess, on_line: LineSink) -> None:
        """Join `node` to the cluster made of `nodes` (which include it)."""

    @abc.abstractmethod
    def remove_node(self, nodes: Sequence[NodeAccess], node: NodeAccess, on_line: LineSink) -> None:
        """Take `node` out of the cluster made of `nodes` (which include it)."""

    @abc.abstractmethod
    def reset(self, nodes: Sequence[NodeAccess], on_line: LineSink) -> None:
        """Undo the cluster on every node."""


def work_dir_script() -> str:
    """A fixed script: create `$HOME/<root>/<cluster>/<sub>` ($1 root, $2 cluster, $3 sub), print its path."""
    return 'set -e; d="$HOME/$1/$2"; mkdir -p "$d/$3"; cd "$d"; pwd'


__all__ = ["LineSink", "NodeAccess", "ProvisionFailed", "Provisioned", "Provisioner", "SSHError"]
