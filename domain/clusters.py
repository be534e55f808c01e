"""Clusters: phases, input rules, the kubespray inventory and playbook commands, workflow messages.

Pure logic only: no I/O. The provisioners (drivers/provisioners) and activities use these types.
"""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Literal, Protocol

import yaml
from pydantic import BaseModel, Field

from domain import nodes as node_rules
from domain.nodes import MANAGED_FAILED as MANAGED_FAILED
from domain.nodes import MANAGING as MANAGING
from domain.nodes import UNMANAGED_FAILED as UNMANAGED_FAILED
from domain.nodes import UNMANAGING as UNMANAGING

# Cluster phases (contract enum).
CREATING = "Creating"
READY = "Ready"
FAILED = "Failed"
DELETING = "Deleting"
PHASES = (CREATING, READY, FAILED, DELETING)

# Node phases while a node joins or leaves a cluster (defined with the other node phases).
NODE_MANAGE_PHASES = (MANAGING, MANAGED_FAILED, UNMANAGING, UNMANAGED_FAILED)

NETWORK_PLUGINS = ("flannel", "calico", "cilium")
Provisioner = Literal["hosts", "kubespray"]
PROVISIONERS: tuple[Provisioner, ...] = ("hosts", "kubespray")
NodeAction = Literal["add", "remove"]


class ClusterMember(Protocol):
    """What the join/leave rules read of a node (the `db.nodes.Node` row has these)."""

    id: str
    phase: str
    step: str
    cluster_id: str
    is_control_plane: bool
    deleting_at: datetime | None


def manage_refusal(node: ClusterMember | None, *, cluster_id: str, action: NodeAction) -> str:
    """Why `node` cannot start joining (`add`) or leaving (`remove`) `cluster_id`; "" when it can.
    Routes answer 409 with it before asking the workflow; the status owner checks it again."""
    if node is None or node.deleting_at is not None:
        return "the node no longer exists"
    if node.phase in node_rules.CLUSTER_BUSY_PHASES:
        return f"the node({node.id}) is already {node.phase.lower()}"
    if action == "add":
        if node.cluster_id and node.cluster_id != cluster_id:
            return f"the node({node.id}) is already in use by cluster {node.cluster_id}"
        if node.cluster_id and node.phase != MANAGED_FAILED:
            return f"the node({node.id}) is already in cluster {cluster_id}"
        if node.step:
            return f"the node({node.id}) is busy being onboarded; try again when it is Ready"
        if not node.cluster_id and node.phase != node_rules.READY:
            return f"the node({node.id}) is not ready (phase {node.phase or 'pending'})"
        return ""
    if node.cluster_id != cluster_id:
        return f"the node({node.id}) does not belong to cluster {cluster_id}"
    if node.is_control_plane:
        return f"the node({node.id}) is a control-plane node and cannot leave the cluster"
    return ""


WORK_ROOT = ".primus-safe/clusters"
"""Per-cluster working directories on the nodes, relative to the login user's home."""
KUBESPRAY_MOUNT = "/primus"
"""Where the container runtime mounts the cluster's work dir inside the kubespray image."""

_KUBE_VERSION = re.compile(r"^v?(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)$")
_FLAG_NAME = re.compile(r"^[a-z0-9][-a-z0-9]{0,62}$")


def cidr_error(value: str) -> str | None:
    """Why `value` is not a network in CIDR notation (address/prefix, no host bits), or None."""
    if "/" not in value:
        return f"{value!r} is not in CIDR notation (address/prefix)"
    try:
        ipaddress.ip_network(value, strict=True)
    except ValueError as exc:
        return f"{value!r} is not a valid CIDR: {exc}"
    return None


def overlap_error(pods_subnet: str, service_range: str) -> str | None:
    """Why the pod subnet and the service range cannot be used together, or None."""
    pods = ipaddress.ip_network(pods_subnet)
    services = ipaddress.ip_network(service_range)
    if pods.version == services.version and pods.overlaps(services):
        return f"kubePodsSubnet {pods_subnet} overlaps kubeServiceAddress {service_range}"
    return None


def kube_version_error(value: str) -> str | None:
    """Why `value` is not a Kubernetes version like `1.32.5` (or `v1.32.5`), or None."""
    if not _KUBE_VERSION.match(value):
        return f"{value!r} is not a Kubernetes version like 1.32.5"
    return None


def api_server_args_error(args: Mapping[str, str]) -> str | None:
    """Why the extra kube-apiserver arguments are unusable (flag names, one-line values), or None."""
    for key, value in args.items():
        if not _FLAG_NAME.match(key):
            return f"{key!r} is not a kube-apiserver flag name (lower-case letters, digits and '-')"
        if "\n" in value or "\r" in value or len(value) > 1024:
            return f"the value of {key} must be one line of at most 1024 characters"
    return None


def odd_count_warning(count: int) -> str | None:
    """Upstream recommends 1, 3 or 5 control-plane nodes; an even count is allowed but noted."""
    if count % 2 == 0:
        return f"{count} control-plane nodes: an odd count (1, 3, 5) is recommended for etcd quorum"
    return None


# --- what provisioners get -----------------------------------------------------------------------


class ClusterNode(BaseModel):
    """A node as a provisioner sees it (no credentials: activities add those)."""

    node_id: str
    hostname: str
    private_ip: str
    public_ip: str = ""
    port: int = 22
    host_key_fingerprint: str = ""
    is_control_plane: bool = False


class KubesprayOptions(BaseModel):
    """The cluster fields that become kubespray variables."""

    image: str
    pods_subnet: str
    service_range: str
    network_plugin: str = "flannel"
    kube_version: str
    api_server_args: dict[str, str] = Field(default_factory=dict)


def inventory(nodes: Sequence[ClusterNode], ssh_user: str) -> str:
    """The kubespray inventory (hosts.yaml): control-plane nodes run etcd; every node is a kube node."""
    hosts = {
        n.hostname: {
            "ansible_host": n.public_ip or n.private_ip,
            "ansible_port": n.port,
            "ansible_user": ssh_user,
            "ip": n.private_ip,
            "access_ip": n.private_ip,
        }
        for n in nodes
    }
    control = {n.hostname: None for n in nodes if n.is_control_plane}
    children = {
        "kube_control_plane": {"hosts": control},
        "etcd": {"hosts": dict(control)},
        "kube_node": {"hosts": {n.hostname: None for n in nodes}},
        "k8s_cluster": {"children": {"kube_control_plane": None, "kube_node": None}},
        "calico_rr": {"hosts": {}},
    }
    return str(yaml.safe_dump({"all": {"hosts": hosts, "children": children}}, sort_keys=False))


def playbook_args(
    playbook: str, options: KubesprayOptions, *, extra_vars: Mapping[str, object] | None = None
) -> list[str]:
    """`ansible-playbook` argv run inside the kubespray image, reading the mounted work dir.

    Every variable is one `-e` JSON argument, so no value is ever split or interpreted by a shell.
    """
    variables: dict[str, object] = {
        "kube_version": "v" + options.kube_version.removeprefix("v"),
        "kube_pods_subnet": options.pods_subnet,
        "kube_service_addresses": options.service_range,
        "kube_network_plugin": options.network_plugin,
        "kubeconfig_localhost": True,
        "auto_renew_certificates": True,
        "kube_controller_node_monitor_grace_period": "5m",
    }
    if options.api_server_args:
        variables["kube_kubeadm_apiserver_extra_args"] = dict(options.api_server_args)
    variables.update(extra_vars or {})
    return [
        "ansible-playbook",
        "-i",
        f"{KUBESPRAY_MOUNT}/inventory/hosts.yaml",
        "--private-key",
        f"{KUBESPRAY_MOUNT}/ssh/id",
        "--become",
        "--become-user=root",
        "-e",
        json.dumps(variables, sort_keys=True),
        playbook,
    ]


# --- workflow messages ---------------------------------------------------------------------------


class ClusterTimings(BaseModel):
    """Durations and retry bounds of cluster activities (seconds; from settings)."""

    connect_timeout: float = 10.0
    provision_timeout: int = 7200
    heartbeat_timeout: int = 60
    attempts: int = 3
    retry_interval: float = 2.0


class ClusterWorkflowInput(BaseModel):
    """The cluster, how it is provisioned, and whether it should be torn down."""

    cluster_id: str
    provisioner: Provisioner
    ssh_queue: str
    create: bool = True
    deleting: bool = False
    timings: ClusterTimings = Field(default_factory=ClusterTimings)


class ProvisionResult(BaseModel):
    """What a finished provisioning pass leaves for the cluster record."""

    endpoint: str = ""
    kubeconfig_stored: bool = False


class ClusterFinish(BaseModel):
    """The outcome of a creation: phase, reason and whether the nodes are now bound."""

    cluster_id: str
    phase: str
    message: str = ""


class ClusterNote(BaseModel):
    """A line the workflow adds to the cluster's log."""

    cluster_id: str
    line: str
    level: str = "INFO"


class NodeManageInput(BaseModel):
    """One node joining (`add`) or leaving (`remove`) a cluster."""

    node_id: str
    cluster_id: str
    action: NodeAction
    provisioner: Provisioner
    ssh_queue: str
    timings: ClusterTimings = Field(default_factory=ClusterTimings)


class NodeManageFinish(BaseModel):
    """The outcome of a node's manage/unmanage pass."""

    node_id: str
    cluster_id: str
    action: NodeAction
    ok: bool
    message: str = ""


def cluster_workflow_id(cluster_id: str) -> str:
    """One workflow per cluster."""
    return f"cluster/{cluster_id}"


def node_manage_workflow_id(node_id: str) -> str:
    """One manage/unmanage workflow per node at a time."""
    return f"node-manage/{node_id}"
