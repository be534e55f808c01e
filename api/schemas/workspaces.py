"""Workspaces: creation, listing, details with live quotas, partial update, nodes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from api.schemas.common import LongText, RequestModel, ResponseModel
from api.schemas.nodes import ResourceId
from domain import workspaces as rules
from domain.names import DISPLAY_NAME

UserId = Annotated[str, StringConstraints(min_length=1, max_length=80)]
QueuePolicy = Literal["fifo", "balance"]
Scope = Literal["Train", "Infer", "Authoring"]


def _name(value: str) -> str:
    if not DISPLAY_NAME.match(value) or value.endswith("."):
        raise ValueError(
            "must be 2-45 characters: lower-case letters, digits, '-' and '.', starting with a letter"
        )
    return value


def _unique(value: list[str]) -> list[str]:
    return list(dict.fromkeys(value))


WorkspaceName = Annotated[str, StringConstraints(max_length=45), AfterValidator(_name)]
UserIds = Annotated[list[UserId], Field(max_length=1000), AfterValidator(_unique)]
SecretIds = Annotated[list[ResourceId], Field(max_length=100), AfterValidator(_unique)]
Path = Annotated[str, StringConstraints(max_length=4096)]


class VolumeSpec(RequestModel):
    """A volume: `pfs` (a PVC: capacity and one of selector or storageClass) or `hostpath`."""

    type: Literal["pfs", "hostpath"]
    mount_path: Path
    host_path: Path = ""
    sub_path: Path = ""
    access_mode: Literal["ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod"] | None = None
    capacity: Annotated[str, StringConstraints(max_length=64)] = ""
    selector: dict[
        Annotated[str, StringConstraints(max_length=253)], Annotated[str, StringConstraints(max_length=63)]
    ] = Field(default_factory=dict)
    storage_class: Annotated[str, StringConstraints(max_length=253)] = ""

    def as_request(self) -> rules.VolumeRequest:
        return rules.VolumeRequest(
            type=self.type,
            mount_path=self.mount_path,
            host_path=self.host_path,
            sub_path=self.sub_path,
            access_mode=self.access_mode or "",
            capacity=self.capacity,
            selector=dict(self.selector),
            storage_class=self.storage_class,
        )


class CreateWorkspaceRequest(RequestModel):
    """A workspace of `replica` free Ready nodes of one flavor in one cluster."""

    name: WorkspaceName = Field(examples=["ai-team"])
    cluster_id: ResourceId
    description: LongText = ""
    flavor_id: ResourceId
    replica: Annotated[int, Field(ge=0, le=100000)] = 0
    queue_policy: QueuePolicy = "fifo"
    scopes: Annotated[list[Scope], Field(max_length=3)] | None = None
    volumes: Annotated[list[VolumeSpec], Field(max_length=64)] = Field(default_factory=list)
    enable_preempt: bool = False
    managers: UserIds = Field(default_factory=list)
    is_default: bool = False
    image_secret_ids: SecretIds = Field(default_factory=list)


class CreateWorkspaceResponse(ResponseModel):
    workspace_id: str


class UpdateWorkspaceRequest(RequestModel):
    """Partial update; lists replace the whole list. `flavorId` cannot change once set."""

    description: LongText | None = None
    flavor_id: ResourceId | None = None
    replica: Annotated[int, Field(ge=0, le=100000)] | None = None
    queue_policy: QueuePolicy | None = None
    scopes: Annotated[list[Scope], Field(max_length=3)] | None = None
    volumes: Annotated[list[VolumeSpec], Field(max_length=64)] | None = None
    enable_preempt: bool | None = None
    managers: UserIds | None = None
    is_default: bool | None = None
    image_secret_ids: SecretIds | None = None


class WorkspaceNodesRequest(RequestModel):
    """Add nodes to, or remove them from, the workspace. `force` removes nodes with running pods."""

    node_ids: Annotated[list[ResourceId], Field(min_length=1, max_length=512), AfterValidator(_unique)]
    action: Literal["add", "remove"]
    force: bool = False


class ManagerRef(ResponseModel):
    id: str
    name: str


class VolumeView(ResponseModel):
    type: str
    mount_path: str
    host_path: str
    sub_path: str
    access_mode: str
    capacity: str
    selector: dict[str, str]
    storage_class: str


class WorkspaceItem(ResponseModel):
    """The list view of a workspace."""

    workspace_id: str
    workspace_name: str
    cluster_id: str
    flavor_id: str
    user_id: str
    target_node_count: int
    current_node_count: int
    abnormal_node_count: int
    phase: str
    message: str
    creation_time: str
    description: str
    queue_policy: str
    scopes: list[str]
    volumes: list[VolumeView]
    enable_preempt: bool
    managers: list[ManagerRef]
    is_default: bool


class WorkspaceDetail(WorkspaceItem):
    """One workspace with its live quotas."""

    total_quota: dict[str, int]
    avail_quota: dict[str, int]
    used_quota: dict[str, int]
    abnormal_quota: dict[str, int]
    used_node_count: int
    image_secret_ids: list[str]
