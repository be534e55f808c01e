"""Secrets: ssh login credentials, image registry credentials and general key/value secrets.

`params` arrive as plain objects and are validated against the secret's type (the type is in
the body on create, but only in the stored secret on update), so both paths use `parse_params`.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    ConfigDict,
    Field,
    RootModel,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from api.errors import describe_validation_errors
from api.schemas.common import RequestModel, ResponseModel
from domain.errors import Invalid
from domain.images import server_refusal
from domain.names import dns1123_error
from domain.secrets import SecretType, registry_host
from domain.ssh_keys import SSHKeyError, check_key_pair, decode_base64

_NO_SPACE = re.compile(r"^[^\s\x00-\x1f\x7f]+$")
MAX_PARAMS = 64


def _secret_name(value: str) -> str:
    problem = dns1123_error(value)
    if problem:
        raise ValueError(f"secret name {problem}")
    return value


def _no_space(value: str) -> str:
    if not _NO_SPACE.match(value):
        raise ValueError("must not contain spaces or control characters")
    return value


def _reachable_server(value: str) -> str:
    why = server_refusal(value)
    if why:
        raise ValueError(why)
    return value


SecretName = Annotated[str, StringConstraints(max_length=63), AfterValidator(_secret_name)]
Token = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(_no_space)]
ParamList = Annotated[list[dict[str, Any]], Field(min_length=1, max_length=MAX_PARAMS)]


class SSHParam(RequestModel):
    """ssh login: `username` plus a plain-text `password`, or a base64 key pair, or both."""

    username: Token
    password: Annotated[str, StringConstraints(max_length=1024)] = ""
    private_key: Annotated[str, StringConstraints(max_length=32768)] = Field(
        default="", description="base64 of an unencrypted OpenSSH or PEM private key"
    )
    public_key: Annotated[str, StringConstraints(max_length=16384)] = Field(
        default="", description="base64 of the matching OpenSSH public key line"
    )

    @model_validator(mode="after")
    def _credentials(self) -> SSHParam:
        if not (self.private_key or self.public_key):
            if not self.password:
                raise ValueError("either password or both privateKey and publicKey are required")
            return self
        if not (self.private_key and self.public_key):
            missing = "publicKey" if self.private_key else "privateKey"
            raise ValueError(f"{missing}: privateKey and publicKey must be given together")
        try:
            private = decode_base64(self.private_key, field="privateKey")
            public = decode_base64(self.public_key, field="publicKey")
        except SSHKeyError as exc:
            raise ValueError(str(exc)) from exc
        try:
            text = public.decode()
        except UnicodeDecodeError as exc:
            raise ValueError("publicKey: the decoded public key is not text") from exc
        try:
            check_key_pair(private, text)
        except SSHKeyError as exc:
            raise ValueError(f"privateKey/publicKey: {exc}") from exc
        return self


class ImageParam(RequestModel):
    """Pull credentials for one registry server; `password` is base64."""

    server: Annotated[
        str,
        StringConstraints(min_length=1, max_length=2048),
        AfterValidator(_no_space),
        AfterValidator(_reachable_server),
    ]
    username: Token
    password: Annotated[str, StringConstraints(min_length=1, max_length=4096)] = Field(
        description="base64 of the registry password"
    )

    @model_validator(mode="after")
    def _password_decodes(self) -> ImageParam:
        try:
            decoded = decode_base64(self.password, field="password")
            if not decoded or not decoded.decode():
                raise ValueError("password: the decoded password is empty")
        except (SSHKeyError, UnicodeDecodeError) as exc:
            raise ValueError("password: not valid base64 of a UTF-8 password") from exc
        return self


GeneralKey = Annotated[
    str, StringConstraints(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]*$")
]
GeneralValue = Annotated[str, StringConstraints(max_length=16384)]


class GeneralParam(RootModel[dict[GeneralKey, GeneralValue]]):
    """One entry of a general secret: free key/value pairs (keys like environment variable or
    file names), at least one, at most 64."""

    root: Annotated[dict[GeneralKey, GeneralValue], Field(min_length=1, max_length=MAX_PARAMS)]


_SSH_PARAMS = TypeAdapter(list[SSHParam])
_GENERAL_PARAMS = TypeAdapter(list[GeneralParam])
_IMAGE_PARAMS = TypeAdapter(list[ImageParam])


def _describe(exc: ValidationError) -> str:
    errors = []
    for err in exc.errors():
        item = dict(err)
        item["loc"] = ("params", *err["loc"])
        if err["type"] == "value_error":
            item["msg"] = str(err.get("ctx", {}).get("error", err["msg"]))
        errors.append(item)
    return describe_validation_errors(errors)


def parse_params(
    secret_type: SecretType, raw: list[dict[str, Any]]
) -> list[SSHParam] | list[ImageParam] | list[GeneralParam]:
    """Validate `params` for a secret of `secret_type`; Invalid naming the offending entry."""
    try:
        if secret_type == "general":
            return _GENERAL_PARAMS.validate_python(raw, strict=True)
        if secret_type == "ssh":
            if len(raw) != 1:
                raise Invalid("params: an ssh secret takes exactly one entry")
            return _SSH_PARAMS.validate_python(raw)
        images = _IMAGE_PARAMS.validate_python(raw)
    except ValidationError as exc:
        raise Invalid(_describe(exc)) from None
    seen: set[str] = set()
    for index, param in enumerate(images):
        host = registry_host(param.server)
        if host in seen:
            raise Invalid(f"params.{index}.server: server {param.server} appears more than once")
        seen.add(host)
    return images


class CreateSecretRequest(RequestModel):
    """A new secret; its id is its name."""

    name: SecretName = Field(examples=["my-ssh-key"])
    type: SecretType
    params: ParamList = Field(
        description="ssh: exactly one {username, password?, privateKey?, publicKey?}; "
        "image: one or more {server, username, password} with unique servers; "
        "general: one or more objects of free key/value strings",
        examples=[[{"username": "root", "password": "MyPassword123!"}]],
    )
    bind_all_workspaces: bool = Field(default=False, description="image secrets only")


class CreateSecretResponse(ResponseModel):
    """The new secret's id (its name)."""

    secret_id: str


class UpdateSecretRequest(RequestModel):
    """Partial update; `params` replace the stored ones and are checked against the secret's type."""

    params: ParamList | None = None
    bind_all_workspaces: bool | None = None


class SSHParamView(ResponseModel):
    """ssh params as returned: the password and private key are never shown."""

    model_config = ConfigDict(extra="forbid")

    username: str
    password: str = ""
    private_key: str = ""
    public_key: str = Field(default="", description="base64 of the OpenSSH public key")


class ImageParamView(ResponseModel):
    """image params as returned: the password is never shown."""

    model_config = ConfigDict(extra="forbid")

    server: str
    username: str
    password: str = ""


class SecretView(ResponseModel):
    """A secret as the API shows it (general params: their keys, each value as "")."""

    secret_id: str
    secret_name: str
    type: SecretType
    params: list[SSHParamView | ImageParamView | dict[str, str]]
    creation_time: str = Field(examples=["2025-01-10T10:00:00"])
    bind_all_workspaces: bool
