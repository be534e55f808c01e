"""Kubernetes quantities and resource arithmetic."""

from __future__ import annotations

import re
from decimal import Decimal

import pytest

from domain import quantity as q
from domain.node_flavors import (
    CpuSpec,
    DiskSpec,
    FlavorSpec,
    GpuSpec,
    ReservePercents,
    available_resources,
    normalized,
    validate_spec,
)


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("256", 256),
        ("1024Gi", 1024**4),
        ("500m", Decimal("0.5")),
        ("1k", 1000),
        ("1e3", 1000),
        ("1.5Gi", 1536 * 1024**2),
    ],
)
def test_parse_valid(text: str, value: Decimal) -> None:
    assert q.parse(text) == value


@pytest.mark.parametrize(
    "text", ["", "abc", "1Kb", " 1", "1 ", "1_000", "NaN", "Infinity", "0x10", "1ki", "1e"]
)
def test_parse_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="not a valid Kubernetes quantity"):
        q.parse(text)
    assert not q.is_quantity(text)


def test_huge_values_rejected() -> None:
    for text in ("1e99999999999", "8Ei", "99999999999999999999"):
        with pytest.raises(ValueError, match="too large"):
            q.parse(text)
    assert q.parse("9223372036854775807") == q.MAX_VALUE
    assert q.parse("7Ei") == 7 * 1024**6


def test_formatting() -> None:
    assert q.format_binary(899795648512) == "838Gi"
    assert q.format_binary(1024**2 * 3) == "3Mi"
    assert q.format_binary(1000) == "1000"
    assert q.format_binary(Decimal("0.5")) == "500m"
    assert q.format_binary(0) == "0"
    assert q.format_decimal(2000) == "2k"
    assert q.multiply("838Gi", 2) == "1676Gi"
    assert q.multiply("1.5Gi", 1) == "1536Mi"


def test_integer_values_round_up() -> None:
    assert q.to_int("500m") == 1
    assert q.to_int("1k") == 1000
    assert q.to_resource_map({"cpu": "2500m", "memory": "1Ki"}) == {"cpu": 3, "memory": 1024}


def test_reserve_matches_upstream() -> None:
    assert q.reserve(256, 0.1) == 230
    assert q.reserve(1000, 0.07) == 930  # no float error: 1000 * 0.07 is exactly 70
    assert q.reserve(100, 0) == 100
    assert q.reserve(1, 0.5) == 0


def test_resource_names() -> None:
    for good in ("cpu", "rdma/hca", "amd.com/gpu", "ephemeral-storage", "example.com/foo_bar"):
        assert q.is_resource_name(good), good
    for bad in ("", "/x", "a/b/c", "Bad.Com/x", "-x", "x y"):
        assert not q.is_resource_name(bad), bad


def test_map_arithmetic() -> None:
    assert q.add({"cpu": 1}, {"cpu": 2, "memory": 3}) == {"cpu": 3, "memory": 3}
    assert q.subtract({"cpu": 4}, {"cpu": 1, "gpu": 1}) == {"cpu": 3, "gpu": -1}
    assert q.fits({"cpu": 2, "gpu": 0}, {"cpu": 2})
    assert not q.fits({"cpu": 3}, {"cpu": 2})
    assert q.shortfall({"cpu": 3, "memory": 1}, {"cpu": 2, "memory": 1}) == ["cpu"]


def _spec(**extra: object) -> FlavorSpec:
    return FlavorSpec.model_validate({"cpu": {"quantity": "256"}, "memory": "1024Gi", **extra})


def test_available_resources() -> None:
    spec = normalized(
        _spec(
            gpu={"resourceName": "amd.com/gpu", "quantity": "8"},
            rootDisk={"quantity": "1Ti", "count": 4},
            extendedResources={"rdma/hca": "1k"},
        ),
        creating=True,
    )
    assert spec.extended_resources["ephemeral-storage"] == "4Ti"
    avail = available_resources(spec, ReservePercents(cpu=0.1, memory=0.05, ephemeral_storage=0.05))
    memory = 1024**4
    storage = 4 * 1024**4
    assert avail == {
        "cpu": 230,
        "memory": memory - -(-memory * 5 // 100),
        "amd.com/gpu": 8,
        "ephemeral-storage": storage - -(-storage * 5 // 100),
        "rdma/hca": 1000,
    }


def test_zero_gpu_dropped_only_on_create() -> None:
    spec = _spec(gpu={"resourceName": "amd.com/gpu", "quantity": "0"})
    assert normalized(spec, creating=True).gpu is None
    kept = normalized(spec, creating=False)
    with pytest.raises(ValueError, match=r"gpu\.quantity"):
        validate_spec(kept)


def test_validation_names_the_field() -> None:
    cases = {
        "cpu.quantity": FlavorSpec(cpu=CpuSpec(quantity="0"), memory="1Gi"),
        "memory": FlavorSpec(cpu=CpuSpec(quantity="1"), memory="-1Gi"),
        "gpu.resourceName": _spec(gpu=GpuSpec(resource_name="intel.com/gpu", quantity="1")),
        "rootDisk.count": _spec(rootDisk=DiskSpec(quantity="1Ti", count=0)),
        "dataDisk.type": _spec(dataDisk=DiskSpec(type="tape", quantity="1Ti", count=1)),
        "extendedResources.rdma/hca": _spec(extendedResources={"rdma/hca": "0"}),
    }
    for field, spec in cases.items():
        with pytest.raises(ValueError, match=re.escape(field)):
            validate_spec(spec)
