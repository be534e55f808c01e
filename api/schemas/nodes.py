"""Nodes: registration, listing (full and brief), details, partial update, logs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from api.schemas.common import RequestModel, ResponseModel
from domain import nodes as rules

ResourceId = Annotated[str, StringConstraints(min_length=1, max_length=63, pattern=r"^[a-z0-9][-a-z0-9.]*$")]


def _check(problem: str | None) -> None:
    if problem:
        raise ValueError(problem)


def _hostname(value: str) -> str:
    _check(rules.hostname_error(value))
    return value


def _ip(value: str) -> str:
    _check(rules.ip_error(value))
    return value


def _labels(value: dict[str, str]) -> dict[str, str]:
    for key, text in value.items():
        _check(rules.label_key_error(key))
        _check(rules.label_value_error(text))
    return value


def _taint_key(value: str) -> str:
    _check(rules.taint_key_error(value))
    return value


def _taints(value: list[TaintSpec]) -> list[TaintSpec]:
    seen = set()
    for taint in value:
        if taint.key in seen:
            raise ValueError(f"repeat taint, key: {taint.key}")
        seen.add(taint.key)
    return value


Hostname = Annotated[str, StringConstraints(max_length=253), AfterValidator(_hostname)]
IPAddress = Annotated[str, StringConstraints(max_length=45), AfterValidator(_ip)]
Port = Annotated[int, Field(ge=1, le=65535)]
Labels = Annotated[dict[str, Annotated[str, StringConstraints(max_length=63)]], AfterValidator(_labels)]
TaintEffect = Literal["NoSchedule", "PreferNoSchedule", "NoExecute"]


class TaintSpec(RequestModel):
    """A taint; the system stores its key with the `primus-safe.` prefix."""

    key: Annotated[str, StringConstraints(max_length=63), AfterValidator(_taint_key)]
    value: Annotated[str, StringConstraints(max_length=63)] = ""
    effect: TaintEffect


Taints = Annotated[list[TaintSpec], Field(max_length=64), AfterValidator(_taints)]


class CreateNodeRequest(RequestModel):
    """Register a machine. hostname defaults to privateIP (and is then not set on the machine).

    `local: true` registers the machine the platform runs on (only under `primus-safe up`, whose
    worker runs here): its id is `local`, it is reached without SSH (no sshSecretId) and keeps
    its host name."""

    hostname: Hostname | None = Field(default=None, examples=["gpu-node-001"])
    private_ip: IPAddress = Field(alias="privateIP", examples=["192.168.1.100"])
    public_ip: IPAddress | None = Field(default=None, alias="publicIP")
    port: Port = 22
    labels: Labels | None = Field(default=None, max_length=64)
    flavor_id: ResourceId
    template_id: ResourceId
    ssh_secret_id: ResourceId | None = Field(default=None, description="Required unless local")
    local: bool = Field(default=False, description="This machine, reached without SSH (`primus-safe up`)")


class CreateNodeResponse(ResponseModel):
    """The new node's id."""

    node_id: str


class UpdateNodeRequest(RequestModel):
    """Partial update. A new IP, port, secret or cleared host key re-runs the reachability step;
    a new flavor re-checks the facts; a new template re-runs the addons."""

    taints: Taints | None = None
    labels: Labels | None = Field(default=None, max_length=64)
    flavor_id: ResourceId | None = None
    template_id: ResourceId | None = None
    private_ip: IPAddress | None = Field(default=None, alias="privateIP")
    port: Port | None = None
    ssh_secret_id: ResourceId | None = None
    host_key_fingerprint: Literal[""] | None = Field(
        default=None, description='Only "" is accepted: forget the trusted host key (after a reinstall)'
    )


class WorkspaceRef(ResponseModel):
    """The workspace a node is bound to ("" when unbound)."""

    id: str
    name: str


class NodeWorkloadRef(ResponseModel):
    """A workload running on the node."""

    id: str
    user_id: str
    workspace_id: str


class NodeBrief(ResponseModel):
    """A node in a brief list."""

    node_id: str
    node_name: str
    internal_ip: str = Field(alias="internalIP")


class NodeItem(NodeBrief):
    """A node in a full list."""

    cluster_id: str
    workspace: WorkspaceRef
    phase: str
    available: bool
    message: str
    total_resources: dict[str, int]
    avail_resources: dict[str, int]
    creation_time: str
    workloads: list[NodeWorkloadRef]
    is_control_plane: bool
    is_addons_installed: bool


class TaintView(ResponseModel):
    """A taint as shown: key without the system prefix."""

    key: str
    value: str
    effect: str


class NodeDetail(NodeItem):
    """One node with its spec."""

    flavor_id: str
    template_id: str
    taints: list[TaintView]
    customer_labels: dict[str, str]
    last_startup_time: str
    public_ip: str = Field(alias="publicIP")
    port: int
    ssh_secret_id: str
    host_key_fingerprint: str
    local: bool = Field(description="The node is the machine the platform runs on, reached without SSH")
    phase_changed_time: str = Field(description="When the phase last changed")
    last_probe_time: str = Field(description="When the scheduled probe last checked the node")


class NodeLogs(ResponseModel):
    """Lines printed by the node's operations, oldest first."""

    cluster_id: str
    node_id: str
    pod_id: str
    logs: list[str]
