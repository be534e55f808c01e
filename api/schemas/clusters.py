"""Clusters: creation (with the control-plane spec), listing, details, protection, node changes, logs."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints, model_validator

from api.schemas.common import LongText, RequestModel, ResponseModel
from api.schemas.nodes import Labels, ResourceId
from domain import clusters as rules
from domain.images import BadReference, parse_reference
from domain.names import DISPLAY_NAME


def _check(problem: str | None) -> None:
    if problem:
        raise ValueError(problem)


def _name(value: str) -> str:
    if not DISPLAY_NAME.match(value) or value.endswith("."):
        raise ValueError(
            "must be 2-45 characters: lower-case letters, digits, '-' and '.', starting with a letter"
        )
    return value


def _cidr(value: str) -> str:
    _check(rules.cidr_error(value))
    return value


def _version(value: str) -> str:
    _check(rules.kube_version_error(value))
    return value


def _image(value: str) -> str:
    try:
        parse_reference(value)
    except BadReference as exc:
        raise ValueError(f"{value!r} is not an image reference: {exc}") from exc
    return value


def _api_args(value: dict[str, str]) -> dict[str, str]:
    _check(rules.api_server_args_error(value))
    return value


def _node_ids(value: list[str]) -> list[str]:
    if len(set(value)) != len(value):
        raise ValueError("a node is listed twice")
    return value


ClusterName = Annotated[str, StringConstraints(max_length=45), AfterValidator(_name)]
Cidr = Annotated[str, StringConstraints(max_length=64), AfterValidator(_cidr)]
KubeVersion = Annotated[str, StringConstraints(max_length=32), AfterValidator(_version)]
NodeIds = Annotated[list[ResourceId], Field(min_length=1, max_length=512), AfterValidator(_node_ids)]


class CreateClusterRequest(RequestModel):
    """A cluster from registered, Ready nodes. `kubernetesVersion` (upstream's name) is accepted for
    `kubeVersion`; `provisioner` overrides the configured default (`hosts` or `kubespray`)."""

    name: ClusterName = Field(examples=["prod-cluster"])
    description: LongText = ""
    nodes: NodeIds = Field(description="control-plane node ids")
    ssh_secret_id: ResourceId | None = Field(default=None, description="Required unless every node is local")
    image_secret_id: ResourceId | None = None
    kube_spray_image: Annotated[str, StringConstraints(max_length=512), AfterValidator(_image)] = Field(
        examples=["quay.io/kubespray/kubespray:v2.24.0"]
    )
    kube_pods_subnet: Cidr = Field(examples=["10.0.0.0/16"])
    kube_service_address: Cidr = Field(examples=["10.96.0.0/16"])
    kube_network_plugin: Literal["flannel", "calico", "cilium"] = "flannel"
    kube_version: KubeVersion | None = Field(default=None, examples=["1.32.5"])
    kubernetes_version: KubeVersion | None = Field(default=None, description="alias of kubeVersion")
    kube_api_server_args: Annotated[
        dict[str, Annotated[str, StringConstraints(max_length=1024)]],
        Field(max_length=64),
        AfterValidator(_api_args),
    ] = Field(default_factory=dict)
    labels: Labels = Field(default_factory=dict, max_length=64)
    is_protected: bool = False
    provisioner: Literal["hosts", "kubespray"] | None = None

    @model_validator(mode="after")
    def _one_version(self) -> CreateClusterRequest:
        if self.kube_version is None and self.kubernetes_version is None:
            raise ValueError("kubeVersion: Field required")
        if (
            self.kube_version is not None
            and self.kubernetes_version is not None
            and self.kube_version != self.kubernetes_version
        ):
            raise ValueError("kubeVersion and kubernetesVersion differ; send one of them")
        _check(rules.overlap_error(self.kube_pods_subnet, self.kube_service_address))
        return self

    @property
    def version(self) -> str:
        """The Kubernetes version, whichever name carried it."""
        return self.kube_version or self.kubernetes_version or ""


class CreateClusterResponse(ResponseModel):
    """The new cluster's id (its name)."""

    cluster_id: str


class ClusterItem(ResponseModel):
    """A cluster in the list."""

    cluster_id: str
    user_id: str
    phase: str
    is_protected: bool
    creation_time: str


class ClusterDetail(ClusterItem):
    """One cluster with its spec, where to reach it and why it failed."""

    description: str
    endpoint: str
    ssh_secret_id: str
    image_secret_id: str
    nodes: list[str]
    kube_spray_image: str
    kube_pods_subnet: str
    kube_service_address: str
    kube_network_plugin: str
    kubernetes_version: str
    kube_api_server_args: dict[str, str]
    labels: dict[str, str]
    provisioner: str
    message: str
    step: str


class UpdateClusterRequest(RequestModel):
    """Only the protection flag can change."""

    is_protected: bool | None = None


class ManageNodesRequest(RequestModel):
    """Nodes joining (`add`) or leaving (`remove`) the cluster."""

    node_ids: NodeIds
    action: Literal["add", "remove"]


class ManageNodesResponse(ResponseModel):
    """How many nodes were requested and how many were accepted."""

    total_count: int
    success_count: int


class ClusterLogs(ResponseModel):
    """Lines printed while the cluster was created, changed or torn down, oldest first."""

    cluster_id: str
    pod_id: str
    logs: list[str]
