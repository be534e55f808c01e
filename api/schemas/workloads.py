"""Request and response bodies of the workload module (`createWorkload` ... `getWorkloadService`)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field, StringConstraints

from api.schemas.common import LongText, RequestModel, ResponseModel, ShortText

Quantity = Annotated[str, StringConstraints(max_length=64)]
Id = Annotated[str, StringConstraints(max_length=63)]
Kind = Literal["PyTorchJob", "Deployment", "StatefulSet", "Authoring"]
Seconds = Annotated[int, Field(ge=0, le=10 * 365 * 86400)]
Port = Annotated[int, Field(ge=0, le=65535)]


class GroupVersionKindBody(RequestModel):
    kind: Kind = "PyTorchJob"
    version: ShortText = "v1"


class ResourceBody(RequestModel):
    cpu: Quantity
    gpu: Quantity = ""
    memory: Quantity
    ephemeral_storage: Quantity = ""
    shared_memory: Quantity = ""
    replica: Annotated[int, Field(ge=0, le=10000)] = 1


class HealthCheckBody(RequestModel):
    path: ShortText = ""
    port: Port = 0
    initial_delay_seconds: Seconds = 0
    period_seconds: Seconds = 0
    failure_threshold: Annotated[int, Field(ge=0, le=1000)] = 0


class ServiceBody(RequestModel):
    protocol: ShortText = "TCP"
    port: Port = 0
    node_port: Port = 0
    target_port: Port = 0
    service_type: Literal["ClusterIP", "NodePort", "LoadBalancer"] = "ClusterIP"
    extends: dict[str, Any] = Field(default_factory=dict)


class CronJobBody(RequestModel):
    schedule: ShortText = ""
    action: ShortText = "start"


class CreateWorkloadRequest(RequestModel):
    """`POST /workloads`."""

    display_name: Annotated[str, StringConstraints(max_length=63)]
    description: LongText = ""
    workspace_id: Id
    group_version_kind: GroupVersionKindBody = Field(default_factory=GroupVersionKindBody)
    image: Annotated[str, StringConstraints(max_length=1024)]
    entry_point: Annotated[str, StringConstraints(max_length=1 << 20)]
    resource: ResourceBody
    priority: Annotated[int, Field(ge=0, le=2)] = 0
    timeout: Seconds = 0
    max_retry: Annotated[int, Field(ge=0, le=50)] = 0
    env: dict[ShortText, LongText] = Field(default_factory=dict)
    specified_nodes: list[Id] = Field(default_factory=list, max_length=1000)
    is_supervised: bool = False
    ttl_seconds_after_finished: Seconds = 60
    customer_labels: dict[ShortText, ShortText] = Field(default_factory=dict)
    liveness: HealthCheckBody | None = None
    readiness: HealthCheckBody | None = None
    service: ServiceBody | None = None
    dependencies: list[Id] = Field(default_factory=list, max_length=100)
    cron_jobs: list[CronJobBody] = Field(default_factory=list, max_length=20)
    is_tolerate_all: bool = False


class CreateWorkloadResponse(ResponseModel):
    workload_id: str


class UpdateWorkloadRequest(RequestModel):
    """`PATCH /workloads/{id}`: only the fields given change."""

    priority: Annotated[int, Field(ge=0, le=2)] | None = None
    replica: Annotated[int, Field(ge=1, le=10000)] | None = None
    cpu: Quantity | None = None
    gpu: Quantity | None = None
    memory: Quantity | None = None
    ephemeral_storage: Quantity | None = None
    shared_memory: Quantity | None = None
    image: Annotated[str, StringConstraints(max_length=1024)] | None = None
    entry_point: Annotated[str, StringConstraints(max_length=1 << 20)] | None = None
    description: LongText | None = None
    timeout: Seconds | None = None
    max_retry: Annotated[int, Field(ge=0, le=50)] | None = None
    env: dict[ShortText, LongText] | None = None
    cron_jobs: list[CronJobBody] | None = None


class WorkloadIds(RequestModel):
    """Body of the batch delete, stop and clone requests."""

    workload_ids: Annotated[list[Id], Field(max_length=1000)]


class GroupVersionKindView(ResponseModel):
    kind: str
    version: str


class ResourceView(ResponseModel):
    cpu: str
    gpu: str
    memory: str
    ephemeral_storage: str
    shared_memory: str
    replica: int


class WorkloadItem(ResponseModel):
    """A workload in the list (and the common part of the detail)."""

    workload_id: str
    display_name: str
    description: str
    workspace_id: str
    cluster_id: str
    user_id: str
    user_name: str
    phase: str
    priority: int
    resource: ResourceView
    group_version_kind: GroupVersionKindView
    creation_time: str
    start_time: str
    end_time: str
    deletion_time: str
    runtime: str
    scheduler_order: int
    queue_position: int
    """Upstream's later name of `schedulerOrder`."""
    dispatch_count: int
    is_tolerate_all: bool
    timeout: int
    seconds_until_timeout: int
    message: str


class ContainerView(ResponseModel):
    name: str
    reason: str = ""
    message: str = ""
    exit_code: int | None = None


class PodView(ResponseModel):
    pod_id: str
    phase: str
    node_name: str
    k8s_node_name: str
    admin_node_name: str
    ssh_addr: str = ""
    start_time: str
    end_time: str
    host_ip: str = Field(serialization_alias="hostIP")
    pod_ip: str = Field(serialization_alias="podIP")
    rank: str
    containers: list[ContainerView]


class ConditionView(ResponseModel):
    type: str
    status: str
    last_transition_time: str
    reason: str
    message: str


class WorkloadDetail(WorkloadItem):
    """`GET /workloads/{id}`."""

    image: str
    entry_point: str
    is_supervised: bool
    max_retry: int
    ttl_seconds_after_finished: int
    env: dict[str, str]
    conditions: list[ConditionView]
    pods: list[PodView]
    nodes: list[list[str]]
    ranks: list[list[str]]
    customer_labels: dict[str, str]
    specified_nodes: list[str]
    liveness: dict[str, Any] | None = None
    readiness: dict[str, Any] | None = None
    service: dict[str, Any] | None = None
    dependencies: list[str]
    cron_jobs: list[dict[str, str]]
    current_step: str = ""
    """Where the lifecycle workflow stands (what it waits for); an addition."""


class PodLogsResponse(ResponseModel):
    workload_id: str
    pod_id: str
    namespace: str
    logs: list[str]


class ContainerName(ResponseModel):
    name: str


class PodContainersResponse(ResponseModel):
    containers: list[ContainerName]
    shells: list[str]


class ServicePortView(ResponseModel):
    name: str
    port: int
    target_port: int | str
    node_port: int
    protocol: str


class ServiceView(ResponseModel):
    service_name: str
    service_type: str
    cluster_ip: str = Field(serialization_alias="clusterIP")
    ports: list[ServicePortView]
    selector: dict[str, str]
