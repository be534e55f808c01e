"""Images: import request and answer, the two list shapes, import details, registry statistics."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field, StringConstraints

from api.schemas.common import RequestModel, ResponseModel

SourceText = Annotated[str, StringConstraints(min_length=1, max_length=1024)]


class ImportImageRequest(RequestModel):
    """`source` is a full reference; `sourceRegistry` (a registry name or host) prefixes a bare one."""

    source: SourceText = Field(examples=["docker.io/pytorch/pytorch:2.0.0-cuda11.7-cudnn8-runtime"])
    source_registry: Annotated[str, StringConstraints(min_length=1, max_length=255)] | None = Field(
        default=None, examples=["docker.io"]
    )


class ImportImageResponse(ResponseModel):
    """`state`: 1 started, 2 already exists (`alreadyImageId`), 0 failed (`message` says why)."""

    state: int = Field(examples=[1])
    message: str = Field(examples=["Image import started"])
    already_image_id: int = Field(default=0, examples=[0])
    image_id: int = Field(default=0, description="The image being imported (an addition)", examples=[12])


class FlatImage(BaseModel):
    """One image of `flat=true`: snake_case, unix seconds (as upstream)."""

    id: int
    tag: str
    description: str
    created_at: int
    created_by: str


class Artifact(ResponseModel):
    """One image (tag) of a repository in the grouped list."""

    image_tag: str
    description: str
    created_time: str
    user_name: str
    status: Literal["ready", "importing", "failed"]
    id: int
    size: int
    arch: str
    os: str
    digest: str
    include_type: str


class ImageGroup(ResponseModel):
    """The images of one repository."""

    registry_host: str
    repo: str
    artifacts: list[Artifact]


class GroupedImages(ResponseModel):
    """`flat=false`: `totalCount` counts images (not groups) and ignores paging."""

    total_count: int
    images: list[ImageGroup]


class LayerDetail(BaseModel):
    """Status and percent of one blob."""

    status: str = Field(examples=["downloading"])
    progress: int = Field(examples=[45])


class ImportDetails(ResponseModel):
    """Per-blob progress of an import, with the import's status and failure message (additions)."""

    layers_detail: dict[str, LayerDetail]
    status: Literal["ready", "importing", "failed"]
    message: str = ""


class LayerProgress(RequestModel):
    """Progress of one blob as an external copier reports it."""

    status: Literal["pending", "downloading", "completed", "skipped", "mounted", "failed"]
    progress: Annotated[int, Field(ge=0, le=100)]


class ImportProgressRequest(RequestModel):
    """Progress from an external copier: blob digest -> status and percent."""

    layers_detail: dict[
        Annotated[str, StringConstraints(max_length=80, pattern=r"^sha256:[a-f0-9]{64}$")], LayerProgress
    ] = Field(max_length=1000, description="Blob digest of the image -> status and percent")


class HarborComponent(BaseModel):
    """The health of one part of the registry service."""

    name: str
    status: str


class HarborStats(BaseModel):
    """Registry statistics (snake_case as upstream); Harbor-only figures are 0."""

    status: str = Field(examples=["healthy"])
    components: list[HarborComponent]
    private_project_count: int
    public_project_count: int
    private_repo_count: int
    public_repo_count: int
    total_storage: int = Field(description="Bytes used by distinct blobs and manifests")
