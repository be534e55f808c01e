"""The execution-driver interface: how workloads, ops jobs and the web shell reach a cluster.

One driver instance talks to one cluster. Every method is synchronous and blocking (network or
process I/O); async callers run them in a thread. Methods raise `domain.errors.NotFound` for a
missing pod or service, `DriverError` for anything the cluster refused or could not answer.

Identity: a workload's objects live in the namespace of its workspace and carry the labels
`primus-safe.workload.id` and `primus-safe.workspace.id`, so a driver can always find them again
from `(namespace, workload_id)` alone, also after a restart of the control plane.
"""

from __future__ import annotations

import abc
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from domain.pod_output import OutputBatch, OutputKey, OutputPosition
from domain.pods import PodStatus
from domain.secrets import RegistryCredential
from domain.workloads import ServiceInfo, WorkloadDispatch, WorkloadKind, WorkspaceVolume

WORKLOAD_ID_LABEL = "primus-safe.workload.id"
WORKSPACE_ID_LABEL = "primus-safe.workspace.id"
DISPATCH_COUNT_LABEL = "primus-safe.workload.dispatch.count"
WORKLOAD_KIND_LABEL = "primus-safe.workload.kind"
USER_NAME_ANNOTATION = "primus-safe.user.name"
MANAGED_TAINT_PREFIX = "primus-safe."


class DriverError(Exception):
    """The cluster refused a request or could not be reached; `status` is the HTTP status if any."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class NodeTaint:
    """A node taint."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


class ShellSession(abc.ABC):
    """An interactive TTY in a pod: a bidirectional byte stream plus resize and exit status.

    Output of stdout and stderr arrives merged (a TTY has one stream). Closing the session ends
    the remote command's terminal; `exit_code` is known once the command has ended.
    """

    @abc.abstractmethod
    def write(self, data: bytes) -> None:
        """Send keystrokes to the terminal."""

    @abc.abstractmethod
    def read(self, timeout: float = 1.0) -> bytes:
        """Terminal output available within `timeout` seconds; b"" when none came.

        Returns b"" immediately once the session is closed and drained.
        """

    @abc.abstractmethod
    def resize(self, rows: int, cols: int) -> None:
        """Change the terminal size."""

    @property
    @abc.abstractmethod
    def is_open(self) -> bool:
        """False once the remote command has ended or the session was closed."""

    @property
    @abc.abstractmethod
    def exit_code(self) -> int | None:
        """The remote command's exit code once it has ended, else None."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the session (idempotent)."""

    def __enter__(self) -> ShellSession:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ExecutionDriver(abc.ABC):
    """Runs workloads' pods on one cluster.

    The contract every implementation keeps (exercised by `tests/execution_contract.py`):
    - All mutating calls are idempotent: repeating one after a crash or retry is safe.
    - `apply` only starts what is missing; it never restarts or duplicates running pods.
    - `list_pods` reflects reality (a pod whose process or container ended reports its exit
      code and phase `Succeeded` for 0 or `Failed` otherwise) and works across control-plane restarts.
    - `delete` stops every pod of the workload; afterwards `list_pods` returns none of them
      (possibly after the pods' grace period).
    """

    @abc.abstractmethod
    def ensure_namespace(
        self,
        namespace: str,
        *,
        volumes: Sequence[WorkspaceVolume] = (),
        pull_secrets: Mapping[str, Sequence[RegistryCredential]] | None = None,
    ) -> None:
        """Make sure the workspace's namespace exists with its shared volumes and image secrets.

        `pfs` volumes become PersistentVolumeClaims `pfs-<id>`; `pull_secrets` maps a secret name
        to the registry credentials it holds. Existing objects are left as they are.
        """

    @abc.abstractmethod
    def delete_namespace(self, namespace: str) -> None:
        """Remove a workspace's namespace and everything in it; a missing namespace is fine."""

    @abc.abstractmethod
    def apply(self, dispatch: WorkloadDispatch) -> None:
        """Create the workload's objects (job or set, Service, pods as the kind needs).

        Objects that already exist count as created. Raises `DriverError` when the cluster
        rejects the workload (e.g. invalid spec or missing CRD: not worth retrying when 4xx).
        """

    @abc.abstractmethod
    def list_pods(self, namespace: str, workload_id: str) -> list[PodStatus]:
        """The workload's pods, sorted by name: phase, node, IPs, containers' exit codes, times."""

    @abc.abstractmethod
    def delete(self, namespace: str, workload_id: str, kind: WorkloadKind) -> None:
        """Stop and remove the workload's objects and pods; missing objects are fine.

        Pods get their grace period (SIGTERM, then SIGKILL once it has passed).
        """

    @abc.abstractmethod
    def read_log(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        tail_lines: int | None = None,
        since_seconds: int | None = None,
    ) -> str:
        """The pod's log (stdout and stderr) as text: the lines of the last `since_seconds`
        seconds, and of those the last `tail_lines`. NotFound for a missing pod.
        """

    @abc.abstractmethod
    def read_output(
        self,
        namespace: str,
        workload_id: str,
        pods: Sequence[PodStatus],
        positions: Mapping[OutputKey, OutputPosition],
        *,
        max_bytes: int,
    ) -> list[OutputBatch]:
        """What `pods` printed after `positions` (a stream without one starts at its first line),
        with each line's time: one batch per stream that has output, at most about `max_bytes`
        of it per stream (`more` says there is more). For log collection; streams are `stdout`
        and `stderr` where the driver can tell them apart, else everything is `stdout`.
        """

    @abc.abstractmethod
    def exec_shell(
        self,
        namespace: str,
        pod: str,
        *,
        command: Sequence[str] = ("sh",),
        container: str | None = None,
        rows: int = 40,
        cols: int = 120,
    ) -> ShellSession:
        """Start `command` in the pod with a TTY of `rows` x `cols` and return the open session."""

    @abc.abstractmethod
    def describe_service(self, namespace: str, workload_id: str) -> ServiceInfo:
        """The Service in front of the workload; NotFound when it has none."""

    @abc.abstractmethod
    def sync_node(
        self,
        node: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        taints: Sequence[NodeTaint] | None = None,
    ) -> None:
        """Push the platform's view of a node to the cluster.

        `labels`: value sets the label, None removes it; labels not named are untouched.
        `taints` (when given) replace every taint whose key starts with `primus-safe.`; other
        taints on the node (set by Kubernetes itself or an admin) are kept. NotFound for a missing node.
        """

    def close(self) -> None:  # noqa: B027 - optional hook
        """Release connections (idempotent)."""
