"""Users, login and logout."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, StringConstraints

from api.schemas.common import RequestModel, ResponseModel, Url
from domain.names import dns1123_error
from domain.users import RESERVED_USER_NAMES, Role, UserType

_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]{1,253}\.[^@\s]{1,63}$")


def _username(value: str) -> str:
    problem = dns1123_error(value)
    if problem:
        raise ValueError(f"user name {problem}")
    if value in RESERVED_USER_NAMES:
        raise ValueError(f"user name {value!r} is reserved")
    return value


def _email(value: str) -> str:
    if value and not _EMAIL.match(value):
        raise ValueError("not a valid email address")
    return value


def _avatar(value: str) -> str:
    if value and not value.startswith(("http://", "https://")):
        raise ValueError("must be an http(s) URL")
    return value


UserName = Annotated[str, StringConstraints(max_length=63), AfterValidator(_username)]
Email = Annotated[str, StringConstraints(max_length=254), AfterValidator(_email)]
Password = Annotated[str, StringConstraints(min_length=8, max_length=128)]
AvatarUrl = Annotated[Url, AfterValidator(_avatar)]
WorkspaceId = Annotated[str, StringConstraints(min_length=1, max_length=63)]


class CreateUserRequest(RequestModel):
    """Registration. `type` and `workspaces` may only be set by a system admin."""

    name: UserName = Field(examples=["zhangsan"])
    password: Password = Field(examples=["SecurePassword123!"])
    email: Email = ""
    type: UserType | None = None
    workspaces: list[WorkspaceId] | None = Field(default=None, max_length=1000)
    avatar_url: AvatarUrl = ""


class CreateUserResponse(ResponseModel):
    """The new user's id."""

    id: str


class LoginRequest(RequestModel):
    """Password login."""

    name: Annotated[str, StringConstraints(min_length=1, max_length=63)]
    password: Annotated[str, StringConstraints(min_length=1, max_length=128)]
    type: UserType = "default"


class WorkspaceRef(ResponseModel):
    """A workspace the user may use or manage."""

    id: str
    name: str


class UserView(ResponseModel):
    """A user as the API shows it (never the password)."""

    id: str
    name: str
    email: str
    type: str
    roles: list[str]
    workspaces: list[WorkspaceRef]
    managed_workspaces: list[WorkspaceRef]
    creation_time: str = Field(examples=["2025-01-10T08:00:00"])
    restricted_type: int
    avatar_url: str


class LoginResponse(UserView):
    """The user plus the token (also set as the `Token` cookie) and its expiry in unix seconds."""

    token: str
    expire: int


class UpdateUserRequest(RequestModel):
    """Partial update. roles, workspaces and restrictedType need a system admin. Changing one's
    own password needs `currentPassword` (an addition); an admin resetting another's does not."""

    roles: list[Role] | None = Field(default=None, min_length=1, max_length=2)
    workspaces: list[WorkspaceId] | None = Field(default=None, max_length=1000)
    avatar_url: AvatarUrl | None = None
    password: Password | None = None
    current_password: Annotated[str, StringConstraints(max_length=128)] | None = None
    restricted_type: Literal[0, 1] | None = None
    email: Email | None = None
