"""Maps every failure to `{"errorCode": "Primus.000NN", "errorMessage": "..."}` with its status."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from api.http_headers import headers_for
from domain.errors import PrimusError, TooManyRequests

log = logging.getLogger(__name__)

_HTTP_CODES = {
    400: "Primus.00002",
    401: "Primus.00009",
    403: "Primus.00003",
    404: "Primus.00005",
    405: "Primus.00002",
    409: "Primus.00004",
    413: "Primus.00006",
    429: "Primus.00012",
    501: "Primus.00007",
}


def error_response(
    status: int, code: str, message: str, headers: dict[str, str] | None = None
) -> JSONResponse:
    """The error body every endpoint uses."""
    return JSONResponse({"errorCode": code, "errorMessage": message}, status_code=status, headers=headers)


def describe_validation_errors(errors: list[Any]) -> str:
    """One readable line naming each offending field."""
    parts = []
    for err in errors[:5]:
        loc = [str(p) for p in err.get("loc", ()) if p not in ("body",)]
        where = ".".join(loc) if loc else "body"
        msg = err.get("msg", "invalid")
        if err.get("type") == "extra_forbidden":
            msg = "unknown field"
        elif err.get("type") == "json_invalid":
            where, msg = "body", "malformed JSON: " + str(err.get("ctx", {}).get("error", ""))
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def install_error_handlers(app: FastAPI) -> None:
    """Register the handlers that give every error the contract's shape."""

    @app.exception_handler(PrimusError)
    async def _primus(_: Request, exc: PrimusError) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        if isinstance(exc, TooManyRequests):
            headers = {"Retry-After": str(exc.retry_after)}
        return error_response(exc.status, exc.code, exc.error_message, headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(_: Request, exc: RequestValidationError) -> JSONResponse:
        return error_response(
            400, "Primus.00002", "Bad request. " + describe_validation_errors(list(exc.errors()))
        )

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = _HTTP_CODES.get(exc.status_code, "Primus.00001")
        message = f"{request.url.path} not found" if exc.status_code == 404 else str(exc.detail)
        return error_response(exc.status_code, code, message, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        """Answered outside the middleware stack, so it adds the security headers itself."""
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return error_response(
            500,
            "Primus.00001",
            "Internal error. The server could not complete the request.",
            headers_for(request.url.path),
        )
