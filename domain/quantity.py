"""Kubernetes resource quantities: parsing, formatting and resource-map arithmetic.

Quantities are strings such as `"256"`, `"1024Gi"`, `"500m"` or `"1k"`; parsing is
`kubernetes.utils.parse_quantity` behind a strict grammar check. Resource maps as the API shows
them are integer maps (`Quantity.Value()` upstream: rounded up), e.g. memory in bytes.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping
from decimal import Decimal

from kubernetes.utils import parse_quantity

ResourceMap = dict[str, int]

CPU = "cpu"
MEMORY = "memory"
EPHEMERAL_STORAGE = "ephemeral-storage"
AMD_GPU = "amd.com/gpu"
NVIDIA_GPU = "nvidia.com/gpu"
GPU_RESOURCE_NAMES = (AMD_GPU, NVIDIA_GPU)

# Kubernetes' quantity grammar: a signed decimal, then a binary suffix, a decimal exponent or an SI suffix.
_QUANTITY = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[KMGTPE]i|[eE][+-]?\d+|[numkMGTPE])?$")
_BINARY_SUFFIXES = ("Ei", "Pi", "Ti", "Gi", "Mi", "Ki")
_DECIMAL_SUFFIXES = ("E", "P", "T", "G", "M", "k")
_MAX_QUANTITY_LEN = 64
MAX_VALUE = 2**63 - 1
"""Kubernetes keeps quantity values within int64."""

# A resource name: optional DNS-subdomain prefix and '/', then a qualified name (Kubernetes rules).
_NAME_PART = r"[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?"
_PREFIX = r"[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*"
_RESOURCE_NAME = re.compile(rf"^(?:{_PREFIX}/)?{_NAME_PART}$")


def parse(text: str) -> Decimal:
    """The exact value of a quantity string; ValueError when it is not one."""
    if not isinstance(text, str) or len(text) > _MAX_QUANTITY_LEN or not _QUANTITY.match(text):
        raise ValueError(f"{text!r} is not a valid Kubernetes quantity (e.g. 256, 500m, 1024Gi)")
    try:
        value: Decimal = parse_quantity(text)  # type: ignore[no-untyped-call]
        too_large = abs(value) > MAX_VALUE
    except ArithmeticError:  # decimal.Overflow and friends for absurd exponents
        too_large = True
    if too_large:
        raise ValueError(f"{text!r} is too large (at most {MAX_VALUE})")
    return value


def is_quantity(text: str) -> bool:
    """True when `text` parses as a quantity."""
    try:
        parse(text)
    except ValueError:
        return False
    return True


def to_int(value: Decimal | str) -> int:
    """The integer value, rounded up as Kubernetes' `Quantity.Value()` does."""
    number = parse(value) if isinstance(value, str) else value
    return math.ceil(number)


def format_binary(value: Decimal | int) -> str:
    """Kubernetes' canonical BinarySI form: the largest binary suffix dividing the value exactly.

    `899795648512` -> `"838Gi"`; values that are not whole numbers use the decimal `m` form.
    """
    number = Decimal(value)
    if number != number.to_integral_value():
        millis = number * 1000
        if millis == millis.to_integral_value():
            return f"{int(millis)}m"
        return format(number.normalize(), "f")
    whole = int(number)
    if whole == 0:
        return "0"
    for index, suffix in enumerate(_BINARY_SUFFIXES):
        unit = 1024 ** (len(_BINARY_SUFFIXES) - index)
        if whole % unit == 0:
            return f"{whole // unit}{suffix}"
    return str(whole)


def format_decimal(value: Decimal | int) -> str:
    """Kubernetes' canonical DecimalSI form: the largest SI suffix dividing the value exactly."""
    number = Decimal(value)
    if number != number.to_integral_value():
        return format_binary(number)
    whole = int(number)
    if whole == 0:
        return "0"
    for index, suffix in enumerate(_DECIMAL_SUFFIXES):
        unit = 1000 ** (len(_DECIMAL_SUFFIXES) - index)
        if whole % unit == 0:
            return f"{whole // unit}{suffix}"
    return str(whole)


def multiply(quantity: str, factor: int) -> str:
    """`quantity` x `factor` in BinarySI form (e.g. a disk size times the disk count)."""
    return format_binary(parse(quantity) * factor)


def is_resource_name(name: str) -> bool:
    """True when `name` looks like a Kubernetes resource name (`cpu`, `rdma/hca`, `amd.com/gpu`)."""
    return len(name) <= 253 and bool(_RESOURCE_NAME.match(name))


def reserve(value: int, percent: float) -> int:
    """`value` minus the reserved part `ceil(value x percent)` (upstream's reserve arithmetic)."""
    if percent <= 0:
        return value
    reserved = math.ceil(Decimal(value) * Decimal(str(percent)))
    return max(value - reserved, 0)


def to_resource_map(quantities: Mapping[str, str]) -> ResourceMap:
    """Quantity strings to the integer map the API shows."""
    return {name: to_int(text) for name, text in quantities.items()}


def add(*maps: Mapping[str, int]) -> ResourceMap:
    """The sum of resource maps, key by key."""
    total: ResourceMap = {}
    for resources in maps:
        for name, amount in resources.items():
            total[name] = total.get(name, 0) + amount
    return total


def subtract(left: Mapping[str, int], right: Mapping[str, int]) -> ResourceMap:
    """`left - right`, key by key, over the keys of both (may go negative)."""
    return {name: left.get(name, 0) - right.get(name, 0) for name in sorted({*left, *right})}


def fits(request: Mapping[str, int], available: Mapping[str, int]) -> bool:
    """True when every requested amount is within what is available."""
    return all(amount <= available.get(name, 0) for name, amount in request.items() if amount > 0)


def shortfall(request: Mapping[str, int], available: Mapping[str, int]) -> list[str]:
    """The resource names whose request exceeds what is available, sorted."""
    return sorted(name for name, amount in request.items() if amount > 0 and amount > available.get(name, 0))


def total(maps: Iterable[Mapping[str, int]]) -> ResourceMap:
    """The sum of any number of resource maps."""
    return add(*maps)
