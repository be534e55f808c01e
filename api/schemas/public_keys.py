"""Users' SSH public keys."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, StringConstraints

from api.schemas.common import RequestModel, ResponseModel

EXAMPLE_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDrpmjlibgMMtRYWjG5ZmdJsBI11MecVrskiszCnn7hR me@laptop"
Description = Annotated[str, StringConstraints(max_length=1024)]


class CreatePublicKeyRequest(RequestModel):
    """A key to register for the caller; `name` is kept but not listed (as upstream)."""

    name: Annotated[str, StringConstraints(max_length=128)] = Field(default="", examples=["my-laptop-key"])
    description: Description = Field(default="", examples=["Laptop public key"])
    public_key: Annotated[str, StringConstraints(min_length=1, max_length=16384)] = Field(
        description="One OpenSSH public key line: ssh-rsa, ecdsa-sha2-nistp256/384/521 or ssh-ed25519",
        examples=[EXAMPLE_KEY],
    )


class CreatePublicKeyResponse(ResponseModel):
    """The new key's id (upstream answers null; see docs/api-differences.md)."""

    id: int


class PublicKeyView(ResponseModel):
    """A key as listed."""

    id: int
    user_id: str
    description: str
    public_key: str
    status: bool = Field(description="true: active, false: disabled")
    create_time: str = Field(examples=["2025-01-10T08:00:00"])
    update_time: str = Field(examples=["2025-01-10T08:00:00"])


class UpdatePublicKeyStatusRequest(RequestModel):
    """Enable (true) or disable (false) a key."""

    status: bool


class UpdatePublicKeyDescriptionRequest(RequestModel):
    """A new description."""

    description: Description
