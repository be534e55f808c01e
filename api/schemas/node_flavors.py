"""Node flavors: create, patch and the views."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, Field, StringConstraints

from api.schemas.common import RequestModel, ResponseModel, ShortText
from domain import quantity as q
from domain.names import dns1123_error, normalize_name
from domain.node_flavors import CpuSpec, DiskSpec, GpuSpec


def _quantity(value: str) -> str:
    q.parse(value)
    return value


def _resource_name(value: str) -> str:
    if not q.is_resource_name(value):
        raise ValueError(f"{value!r} is not a valid resource name (e.g. rdma/hca, ephemeral-storage)")
    return value


def _flavor_name(value: str) -> str:
    problem = dns1123_error(normalize_name(value))
    if problem:
        raise ValueError(f"the flavor id (normalized name) {problem}")
    return value


def _product(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


Product = Annotated[ShortText, AfterValidator(_product)]
Quantity = Annotated[str, StringConstraints(max_length=64), AfterValidator(_quantity)]
ResourceName = Annotated[str, StringConstraints(max_length=253), AfterValidator(_resource_name)]
FlavorName = Annotated[str, StringConstraints(max_length=253), AfterValidator(_flavor_name)]
ExtendedResources = Annotated[dict[ResourceName, Quantity], Field(max_length=64)]


class CpuRequest(RequestModel):
    """CPU model (optional) and cores."""

    product: Product = ""
    quantity: Quantity = Field(examples=["256"])


class GpuRequest(RequestModel):
    """GPU model (optional), resource name and cards."""

    product: Product = ""
    resource_name: Annotated[str, StringConstraints(max_length=253)] = Field(examples=["amd.com/gpu"])
    quantity: Quantity = Field(examples=["8"])


class DiskRequest(RequestModel):
    """A disk class: type (ssd, sata, nvme), size of one disk and how many."""

    type: Annotated[str, StringConstraints(max_length=16)] = ""
    quantity: Quantity = Field(examples=["838Gi"])
    count: int = Field(ge=1, le=1_000_000, examples=[1])


class CreateNodeFlavorRequest(RequestModel):
    """A new flavor; its id is the normalized name."""

    name: FlavorName = Field(examples=["gpu-large"])
    cpu: CpuRequest
    memory: Quantity = Field(examples=["1024Gi"])
    gpu: GpuRequest | None = None
    root_disk: DiskRequest | None = None
    data_disk: DiskRequest | None = None
    extended_resources: ExtendedResources | None = Field(
        default=None, examples=[{"ephemeral-storage": "838Gi", "rdma/hca": "1k"}]
    )


class UpdateNodeFlavorRequest(RequestModel):
    """Partial update: each given field replaces the stored one; `null` removes gpu or a disk."""

    cpu: CpuRequest | None = None
    memory: Quantity | None = None
    gpu: GpuRequest | None = None
    root_disk: DiskRequest | None = None
    data_disk: DiskRequest | None = None
    extended_resources: ExtendedResources | None = None


class CreateNodeFlavorResponse(ResponseModel):
    """The new flavor's id."""

    flavor_id: str


class NodeFlavorView(ResponseModel):
    """A flavor; quantities are echoed as they were sent."""

    flavor_id: str
    cpu: CpuSpec
    memory: str
    gpu: GpuSpec | None
    root_disk: DiskSpec | None
    data_disk: DiskSpec | None
    extended_resources: dict[str, str]
