"""Serving a web console build (upstream's) from a directory, beside the API.

`/api/<path>` is answered as `/api/v1/<path>` (what upstream's nginx does for its console), and
every other path not served by the API is a file of the build or, for the console's own routes,
its `index.html` (a single-page app routes in the browser).
"""

from __future__ import annotations

from pathlib import Path

from starlette.exceptions import HTTPException
from starlette.responses import Response
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Receive, Scope, Send

API_ALIAS = "/api/"
KEPT_PREFIXES = ("/api/v1/", "/api/custom/")


class ConsoleApiAlias:
    """Rewrites `/api/<path>` to `/api/v1/<path>` (HTTP and WebSocket), leaving `/api/v1/...` and
    `/api/custom/...` as they are."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            path: str = scope["path"]
            if path.startswith(API_ALIAS) and not path.startswith(KEPT_PREFIXES):
                rest = path[len(API_ALIAS) :]
                scope = {**scope, "path": "/api/v1/" + rest, "raw_path": ("/api/v1/" + rest).encode()}
        await self.app(scope, receive, send)


class SinglePageApp(StaticFiles):
    """Files of the build; `index.html` for any other path that is not an API path."""

    async def get_response(self, path: str, scope: Scope) -> Response:
        try:
            return await super().get_response(path, scope)
        except HTTPException as exc:
            if exc.status_code != 404 or path.split("/", 1)[0] == "api" or "." in path.rsplit("/", 1)[-1]:
                raise  # an unknown API path, or a missing asset: a real 404
            return await super().get_response("index.html", scope)


def console_app(directory: Path) -> SinglePageApp:
    """The static app serving `directory`; it must hold an `index.html`."""
    if not (directory / "index.html").is_file():
        raise ValueError(f"{directory} holds no index.html: not a console build")
    return SinglePageApp(directory=directory, html=True)
