"""Base models and envelopes shared by every resource's schemas."""

from __future__ import annotations

from typing import Annotated, Generic, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from pydantic.alias_generators import to_camel

T = TypeVar("T")


class RequestModel(BaseModel):
    """A JSON request body: camelCase fields only, unknown fields and wrong types rejected."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        alias_generator=to_camel,
        validate_by_name=False,
        validate_by_alias=True,
        str_strip_whitespace=False,
    )


class ResponseModel(BaseModel):
    """A JSON response body, written with the contract's camelCase names."""

    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class ListResponse(ResponseModel, Generic[T]):
    """The list envelope: `totalCount` ignores pagination."""

    total_count: int
    items: list[T]


class ErrorResponse(BaseModel):
    """Every error: upstream's code and a readable message."""

    errorCode: str = Field(examples=["Primus.00005"])
    errorMessage: str = Field(examples=["User x not found."])


ShortText = Annotated[str, StringConstraints(max_length=256)]
LongText = Annotated[str, StringConstraints(max_length=4096)]
Url = Annotated[str, StringConstraints(max_length=2048)]

ERROR_RESPONSES: dict[int | str, dict[str, object]] = {
    code: {"model": ErrorResponse} for code in (400, 401, 403, 404, 409, 500)
}
