"""The FastAPI application: lifespan (database, Temporal client), error handlers and routers."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI

from api.body_limit import BodySizeLimit
from api.console import ConsoleApiAlias, console_app
from api.docs import install_docs
from api.errors import install_error_handlers
from api.http_headers import SecurityHeaders
from api.login_limits import LoginLimits
from api.routes import ROUTERS, custom_router
from api.state import AppState, TerminalFactory
from db.encryption import SecretBox
from db.session import create_engine, session_factory
from primus_safe.service_logs import API
from primus_safe.service_logs import of_settings as service_logs_of
from primus_safe.settings import Settings, get_settings
from primus_safe.temporal import connect

API_PREFIX = "/api/v1"
CUSTOM_PREFIX = "/api/custom"
MAX_BODY_BYTES = 2 * 1024 * 1024


def create_app(settings: Settings | None = None, *, terminals: TerminalFactory | None = None) -> FastAPI:
    """Build the app. Migrations are not run here (the CLI runs them before serving).

    `terminals` opens the web shell's terminals (injected by the composition root: the API never
    imports a driver); without it the web shell answers 503."""
    settings = settings or get_settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        box = SecretBox(settings.encryption_key())
        engine = create_engine(settings.sqlalchemy_url)
        try:
            temporal = await connect(settings)
            sessions = session_factory(engine)
            app.state.primus = AppState(
                settings=settings,
                engine=engine,
                sessions=sessions,
                temporal=temporal,
                box=box,
                login_limits=LoginLimits.from_settings(settings),
                terminals=terminals(settings, sessions, box) if terminals is not None else None,
            )
            async with contextlib.AsyncExitStack() as stack:
                if settings.service_logs:
                    await stack.enter_async_context(service_logs_of(settings, sessions, API))
                yield
        finally:
            await engine.dispose()

    app = FastAPI(
        title="Primus-SaFE",
        version="1.0",
        description="Control plane for AI GPU clusters. Every endpoint lives under /api/v1; "
        "errors are `{errorCode, errorMessage}` with upstream's Primus codes.",
        lifespan=lifespan,
        docs_url=None,
        redoc_url=None,
        # Starlette's trailing-slash redirect names the Host header's value: a path with a stray
        # slash is a plain 404 instead.
        redirect_slashes=False,
    )
    app.add_middleware(BodySizeLimit, max_bytes=MAX_BODY_BYTES)
    app.add_middleware(
        SecurityHeaders, settings=settings
    )  # outermost: the 413 of the body limit carries them too
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router, prefix=API_PREFIX)
    app.include_router(custom_router, prefix=CUSTOM_PREFIX)
    from api.routes.system import router as system_router

    app.include_router(system_router)
    install_docs(app)
    if settings.console_dir is not None:  # last: the API's routes win over the console's files
        app.mount("/", console_app(settings.console_dir), name="console")
        app.add_middleware(ConsoleApiAlias)
    _describe_errors_as_served(app)
    return app


def _describe_errors_as_served(app: FastAPI) -> None:
    """Validation failures are answered 400 with the error body, so the schema must not promise 422."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()
            for operations in schema.get("paths", {}).values():
                for operation in operations.values():
                    responses = operation.get("responses", {})
                    if responses.pop("422", None) is not None and "400" not in responses:
                        responses["400"] = {
                            "description": "Bad request",
                            "content": {
                                "application/json": {"schema": {"$ref": "#/components/schemas/ErrorResponse"}}
                            },
                        }
            schemas = schema.get("components", {}).get("schemas", {})
            for unused in ("HTTPValidationError", "ValidationError"):
                schemas.pop(unused, None)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
