"""The login body as JSON or, as upstream's web console sends it, an urlencoded form."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from api.schemas.users import LoginRequest
from domain.errors import Invalid

FORM = "application/x-www-form-urlencoded"

_SCHEMA = LoginRequest.model_json_schema(by_alias=True)
OPENAPI_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": _SCHEMA}, FORM: {"schema": _SCHEMA}},
    }
}
"""The two body types, for the OpenAPI document (the route reads the body itself)."""


async def login_body(request: Request) -> LoginRequest:
    """Parse and validate the login body; anything malformed is a 400 like any other bad body."""
    media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    raw = await request.body()
    data: Any
    if media_type == FORM:
        data = dict(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    else:
        try:
            data = json.loads(raw) if raw else None
        except ValueError:
            raise RequestValidationError(
                [{"type": "json_invalid", "loc": ("body",), "msg": "the body is not valid JSON", "input": ""}]
            ) from None
    if isinstance(data, dict) and data.get("type") == "sso":  # the console's SSO form: code, state
        raise Invalid("login type sso: single sign-on is not configured on this platform")
    try:
        return LoginRequest.model_validate(data)
    except ValidationError as exc:
        errors = [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        raise RequestValidationError(errors) from None
