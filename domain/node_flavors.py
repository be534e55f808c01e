"""Node flavor specs: the hardware shape of a class of nodes, its validation and what it offers.

Quantities stay strings exactly as sent; validation mirrors upstream's node-flavor webhook.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

from domain import quantity as q

DISK_TYPES = ("ssd", "sata", "nvme")


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class CpuSpec(_Camel):
    """CPU model and core count."""

    product: str = ""
    quantity: str


class GpuSpec(_Camel):
    """GPU model, its Kubernetes resource name and card count."""

    product: str = ""
    resource_name: str
    quantity: str


class DiskSpec(_Camel):
    """A disk class: type, size of one disk, number of disks."""

    type: str = ""
    quantity: str
    count: int


class FlavorSpec(_Camel):
    """Everything a flavor describes."""

    cpu: CpuSpec
    memory: str
    gpu: GpuSpec | None = None
    root_disk: DiskSpec | None = None
    data_disk: DiskSpec | None = None
    extended_resources: dict[str, str] = Field(default_factory=dict)

    def stored(self) -> dict[str, Any]:
        """The JSON kept in the database (camelCase, as the API shows it)."""
        return self.model_dump(mode="json", by_alias=True)


@dataclass(frozen=True)
class ReservePercents:
    """The share of cpu, memory and ephemeral storage kept back for the system."""

    cpu: float = 0.0
    memory: float = 0.0
    ephemeral_storage: float = 0.0


def _positive(field: str, text: str) -> None:
    try:
        value = q.parse(text)
    except ValueError as exc:
        raise ValueError(f"{field}: {exc}") from exc
    if value <= 0:
        raise ValueError(f"{field}: must be greater than 0, got {text!r}")


def _check_disk(field: str, disk: DiskSpec) -> None:
    if disk.type and disk.type not in DISK_TYPES:
        raise ValueError(f"{field}.type: must be one of {', '.join(DISK_TYPES)}, got {disk.type!r}")
    _positive(f"{field}.quantity", disk.quantity)
    if disk.count <= 0:
        raise ValueError(f"{field}.count: must be greater than 0, got {disk.count}")


def validate_spec(spec: FlavorSpec) -> None:
    """Raise ValueError naming the first offending field (`cpu.quantity: ...`)."""
    _positive("cpu.quantity", spec.cpu.quantity)
    _positive("memory", spec.memory)
    if spec.gpu is not None:
        if spec.gpu.resource_name not in q.GPU_RESOURCE_NAMES:
            raise ValueError(
                f"gpu.resourceName: must be one of {', '.join(q.GPU_RESOURCE_NAMES)}, "
                f"got {spec.gpu.resource_name!r}"
            )
        _positive("gpu.quantity", spec.gpu.quantity)
    if spec.root_disk is not None:
        _check_disk("rootDisk", spec.root_disk)
    if spec.data_disk is not None:
        _check_disk("dataDisk", spec.data_disk)
    reserved_names = {q.CPU, q.MEMORY, *q.GPU_RESOURCE_NAMES}
    for name, text in spec.extended_resources.items():
        if not q.is_resource_name(name):
            raise ValueError(f"extendedResources: {name!r} is not a valid resource name")
        if name in reserved_names:
            raise ValueError(f"extendedResources: {name!r} is set by its own field, not here")
        _positive(f"extendedResources.{name}", text)


def _fills_storage(disk: DiskSpec) -> bool:
    return disk.count > 0 and q.is_quantity(disk.quantity) and q.parse(disk.quantity) > 0


def normalized(spec: FlavorSpec, *, creating: bool) -> FlavorSpec:
    """Trim products, drop a zero-card GPU block on create, fill ephemeral-storage from the root disk.

    The quantities must already parse. ephemeral-storage = rootDisk.quantity x count (BinarySI) when
    a root disk is set and extendedResources lacks it.
    """
    spec = spec.model_copy(deep=True)
    spec.cpu.product = spec.cpu.product.strip()
    if spec.gpu is not None:
        spec.gpu.product = spec.gpu.product.strip()
        if creating and q.is_quantity(spec.gpu.quantity) and q.parse(spec.gpu.quantity) == 0:
            spec.gpu = None
    disk = spec.root_disk
    if disk is not None and q.EPHEMERAL_STORAGE not in spec.extended_resources and _fills_storage(disk):
        spec.extended_resources[q.EPHEMERAL_STORAGE] = q.multiply(disk.quantity, disk.count)
    return spec


def total_resources(spec: FlavorSpec) -> q.ResourceMap:
    """Everything the flavor offers as integers: cpu cores, memory bytes, GPUs, extended resources."""
    resources = {q.CPU: q.to_int(spec.cpu.quantity), q.MEMORY: q.to_int(spec.memory)}
    if spec.gpu is not None:
        resources[spec.gpu.resource_name] = q.to_int(spec.gpu.quantity)
    resources.update(q.to_resource_map(spec.extended_resources))
    return resources


def available_resources(spec: FlavorSpec, reserve: ReservePercents) -> q.ResourceMap:
    """What workloads may use: the totals minus the system reserve on cpu, memory, ephemeral-storage."""
    resources = total_resources(spec)
    percents = {
        q.CPU: reserve.cpu,
        q.MEMORY: reserve.memory,
        q.EPHEMERAL_STORAGE: reserve.ephemeral_storage,
    }
    for name, percent in percents.items():
        if name in resources:
            resources[name] = q.reserve(resources[name], percent)
    return resources
