"""Workload specs as the contract's `workload` module defines them, and what one dispatch needs.

Field names mirror the API (camelCase on the wire, snake_case in Python). `WorkloadSpec` is the
body of `createWorkload`; `WorkloadDispatch` adds what the platform decides when it sends the
workload to a cluster (its id, namespace, dispatch count, GPU resource name, volumes, ports), and
is the input every execution driver renders from.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from domain import quantity as q

WorkloadKind = Literal["PyTorchJob", "Deployment", "StatefulSet", "Authoring"]
ServiceType = Literal["ClusterIP", "NodePort", "LoadBalancer"]
VolumeType = Literal["pfs", "hostpath"]

HOSTNAME_LABEL = "kubernetes.io/hostname"
DEFAULT_EPHEMERAL_STORAGE = "50Gi"
DEFAULT_TTL_SECONDS = 60
AUTHORING_ENTRY_POINT = "sleep infinity"


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class GroupVersionKind(_Camel):
    """The workload's kind and version (the group is always empty, as upstream forces it)."""

    kind: WorkloadKind = "PyTorchJob"
    version: str = "v1"


class WorkloadResource(_Camel):
    """Resources of one replica (pod) and the replica count."""

    cpu: str
    gpu: str = ""
    memory: str
    ephemeral_storage: str = ""
    shared_memory: str = ""
    replica: int = Field(default=1, ge=0)


class HealthCheck(_Camel):
    """An HTTP probe (liveness or readiness) with upstream's defaults."""

    path: str = ""
    port: int = 0
    initial_delay_seconds: int = 600
    period_seconds: int = 3
    failure_threshold: int = 3


class ServiceSpec(_Camel):
    """The Service that exposes the workload's pods."""

    protocol: Literal["TCP", "UDP"] = "TCP"
    port: int = 0
    node_port: int = 0
    target_port: int = 0
    service_type: ServiceType = "ClusterIP"
    extends: dict[str, Any] = Field(default_factory=dict)

    @field_validator("protocol", mode="before")
    @classmethod
    def _upper(cls, value: object) -> object:
        if value in (None, ""):
            return "TCP"
        return value.upper() if isinstance(value, str) else value


class CronJob(_Camel):
    """A scheduled action (only `start` is implemented upstream)."""

    schedule: str = ""
    action: str = "start"


class WorkloadSpec(_Camel):
    """The `createWorkload` request body."""

    display_name: str
    description: str = ""
    workspace_id: str
    group_version_kind: GroupVersionKind = Field(default_factory=GroupVersionKind)
    image: str
    entry_point: str
    """The start command, base64-encoded."""
    resource: WorkloadResource
    priority: int = 0
    timeout: int = 0
    max_retry: int = 0
    env: dict[str, str] = Field(default_factory=dict)
    specified_nodes: list[str] = Field(default_factory=list)
    is_supervised: bool = False
    ttl_seconds_after_finished: int = DEFAULT_TTL_SECONDS
    customer_labels: dict[str, str] = Field(default_factory=dict)
    liveness: HealthCheck | None = None
    readiness: HealthCheck | None = None
    service: ServiceSpec | None = None
    dependencies: list[str] = Field(default_factory=list)
    cron_jobs: list[CronJob] = Field(default_factory=list)
    is_tolerate_all: bool = False
    hostpath: list[str] = Field(default_factory=list)
    """Extra host paths mounted at the same path in every pod (ops-job workloads)."""

    @property
    def kind(self) -> WorkloadKind:
        """The workload kind."""
        return self.group_version_kind.kind


class WorkspaceVolume(_Camel):
    """A workspace volume as the workspace module stores it: a `pfs` PVC or a host path."""

    id: int
    type: VolumeType
    mount_path: str
    host_path: str = ""
    sub_path: str = ""
    access_mode: str = "ReadWriteMany"
    capacity: str = ""
    selector: dict[str, str] = Field(default_factory=dict)
    storage_class: str = ""

    @property
    def volume_name(self) -> str:
        """The pod volume name upstream uses: `<type>-<id>`."""
        return f"{self.type}-{self.id}"

    @property
    def claim_name(self) -> str:
        """The PVC name of a `pfs` volume: `pfs-<id>`."""
        return f"pfs-{self.id}"


class PodAssignment(_Camel):
    """Where the scheduler put one pod: its node and the GPU device indices it holds there."""

    node: str
    """The node id (the Kubernetes node name; the host's name for the host driver)."""
    gpus: list[int] = Field(default_factory=list)


class WorkloadDispatch(_Camel):
    """Everything an execution driver needs to run one dispatch of a workload."""

    workload_id: str
    namespace: str
    """The workspace id; each workspace has its own namespace."""
    spec: WorkloadSpec
    dispatch_count: int = 1
    """1 for the first dispatch, incremented on every re-dispatch."""
    cluster_id: str = ""
    gpu_resource_name: str = "amd.com/gpu"
    """The flavor's GPU resource name, e.g. `amd.com/gpu` or `nvidia.com/gpu`."""
    volumes: list[WorkspaceVolume] = Field(default_factory=list)
    image_pull_secrets: list[str] = Field(default_factory=list)
    job_port: int = 29500
    ssh_port: int = 0
    host_network: bool = False
    priority_class: str = ""
    """The PriorityClass name, or "" to leave it unset."""
    user_name: str = ""
    privileged: bool = False
    """Ops-job checks (preflight): privileged containers in the host's PID and IPC namespaces
    (Kubernetes; host pods run as the node's SSH user either way)."""
    assignments: list[PodAssignment] = Field(default_factory=list)
    """One per pod in rank order (PyTorchJob: master first), as the scheduler placed them. The
    driver runs each pod there and never places pods by itself; empty only for callers outside
    the scheduler (ops jobs pinned by `specifiedNodes`)."""

    @property
    def kind(self) -> WorkloadKind:
        """The workload kind."""
        return self.spec.kind


class ServicePort(_Camel):
    """One port of a workload's Service."""

    name: str = ""
    port: int
    target_port: int | str = 0
    node_port: int = 0
    protocol: str = "TCP"


class ServiceInfo(_Camel):
    """What `getWorkloadService` shows of the Service in front of a workload."""

    service_name: str
    service_type: str = "ClusterIP"
    cluster_ip: str = ""
    ports: list[ServicePort] = Field(default_factory=list)
    selector: dict[str, str] = Field(default_factory=dict)


def main_container(kind: str) -> str:
    """The main container's name for a kind: `pytorch` for jobs and authoring, `main` otherwise."""
    return "pytorch" if kind in ("PyTorchJob", "Authoring") else "main"


def decode_entry_point(entry_point: str) -> str:
    """The entry point as plain text: decoded when it is valid base64, else as given."""
    try:
        return base64.b64decode(entry_point.strip(), validate=True).decode()
    except (binascii.Error, ValueError, UnicodeDecodeError):
        return entry_point


def encode_entry_point(command: str) -> str:
    """Base64-encode a plain command, as the API expects `entryPoint`."""
    return base64.b64encode(command.encode()).decode()


def half_quantity(value: str) -> str:
    """Half of a quantity, in the same binary form upstream uses for default shared memory."""
    return q.format_binary(q.parse(value) / 2)


def with_defaults(spec: WorkloadSpec) -> WorkloadSpec:
    """Apply upstream's create-time defaults (mutating webhook, pure parts).

    specifiedNodes pin replicas through a `kubernetes.io/hostname` customer label and set the
    replica count; Authoring gets one replica, no timeout and `sleep infinity`; shared memory
    defaults to half the memory and ephemeral storage to 50Gi; GPU `"0"` means none; empty
    customer labels and env values are dropped; the entry point is base64-encoded when it is not.
    """
    data = spec.model_copy(deep=True)
    res = data.resource
    if data.specified_nodes:
        data.customer_labels.setdefault(HOSTNAME_LABEL, " ".join(data.specified_nodes))
        res.replica = len(data.specified_nodes)
    if data.kind == "Authoring":
        res.replica = 1
        data.timeout = 0
        data.max_retry = 0
        data.is_supervised = False
        data.entry_point = encode_entry_point(AUTHORING_ENTRY_POINT)
        data.dependencies = []
    elif data.kind in ("Deployment", "StatefulSet"):
        data.is_supervised = False
        data.max_retry = 0
    if res.gpu.strip() in ("", "0"):
        res.gpu = ""
    if not res.shared_memory and res.memory:
        res.shared_memory = half_quantity(res.memory)
    if not res.ephemeral_storage:
        res.ephemeral_storage = DEFAULT_EPHEMERAL_STORAGE
    data.priority = min(max(data.priority, 0), 2)
    data.max_retry = min(max(data.max_retry, 0), 50)
    data.image = data.image.strip()
    data.entry_point = data.entry_point.strip()
    if decode_entry_point(data.entry_point) == data.entry_point:
        data.entry_point = encode_entry_point(data.entry_point)
    data.customer_labels = {k: v for k, v in data.customer_labels.items() if k and v}
    data.env = {k: v for k, v in data.env.items() if v != ""}
    return data
