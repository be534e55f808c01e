"""Security headers on every response, and `Secure` on every cookie sent over HTTPS."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from primus_safe.settings import Settings

BASE_HEADERS = {"X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}
"""On every response: no content sniffing, no framing."""
API_HEADERS = {
    **BASE_HEADERS,
    "Cache-Control": "no-store",
    "Content-Security-Policy": "default-src 'none'; frame-ancestors 'none'",
}
"""On every `/api` response and every error: per-caller data (tokens from login, secrets) is
never kept by a browser or proxy cache, and a JSON answer opened in a browser runs nothing."""


def headers_for(path: str) -> dict[str, str]:
    """The security headers a response to `path` carries unless it sets its own."""
    return dict(API_HEADERS if path.startswith("/api/") else BASE_HEADERS)


def cookies_secure(scope: Scope, settings: Settings) -> bool:
    """Cookies are `Secure` when `PRIMUS_COOKIE_SECURE` is set or the request came over HTTPS
    (uvicorn takes the scheme from `X-Forwarded-Proto` of the proxies it trusts)."""
    return settings.cookie_secure or scope.get("scheme") == "https"


def _secure(cookie: str) -> str:
    attributes = {part.strip().lower() for part in cookie.split(";")[1:]}
    return cookie if "secure" in attributes else cookie + "; Secure"


class SecurityHeaders:
    """ASGI middleware adding `headers_for(path)` to each HTTP response (keeping those it set)
    and `Secure` to each cookie when `cookies_secure`: one place for every cookie any route sets."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        wanted = headers_for(scope.get("path", ""))
        secure = cookies_secure(scope, self.settings)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in wanted.items():
                    headers.setdefault(name, value)
                if secure and "set-cookie" in headers:
                    cookies = headers.getlist("set-cookie")
                    del headers["set-cookie"]
                    for cookie in cookies:
                        headers.append("set-cookie", _secure(cookie))
            await send(message)

        await self.app(scope, receive, send_with_headers)
