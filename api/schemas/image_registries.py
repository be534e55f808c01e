"""Image registries: the request body and the view (which never carries the password)."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, BaseModel, Field, StringConstraints

from api.schemas.common import RequestModel, Url
from domain.image_registries import normalize_registry_url
from domain.names import dns1123_error


def _registry_name(value: str) -> str:
    problem = dns1123_error(value)
    if problem:
        raise ValueError(f"registry name {problem}")
    return value


def _printable(value: str) -> str:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise ValueError("must not contain control characters")
    return value


RegistryName = Annotated[str, StringConstraints(max_length=63), AfterValidator(_registry_name)]
RegistryUrl = Annotated[Url, AfterValidator(normalize_registry_url)]


class RegistryRequest(RequestModel):
    """A registry. On update an omitted (or null) password keeps the stored one; "" clears it."""

    name: RegistryName = Field(examples=["docker-hub"])
    url: RegistryUrl = Field(examples=["https://registry-1.docker.io"])
    username: Annotated[str, StringConstraints(max_length=255), AfterValidator(_printable)] = Field(
        default="", examples=["myuser"]
    )
    password: Annotated[str, StringConstraints(max_length=4096)] | None = Field(
        default=None, examples=["mypassword"]
    )
    default: bool = Field(default=False, description="The default import destination; at most one")
    insecure: bool = Field(default=False, description="Plain HTTP or unverified TLS (an addition)")


class RegistryView(BaseModel):
    """A registry as the API shows it; timestamps are unix seconds (snake_case, as upstream)."""

    id: int
    name: str
    url: str
    username: str
    default: bool
    insecure: bool
    created_at: int = Field(examples=[1705305600])
    updated_at: int = Field(examples=[1705305600])
