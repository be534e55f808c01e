"""The error contract every endpoint shares, the health probes and the OpenAPI document."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator

import httpx
from fastapi import APIRouter
from fastapi.routing import APIRoute, APIWebSocketRoute

from api.app import API_PREFIX, CUSTOM_PREFIX, MAX_BODY_BYTES
from api.routes import ROUTERS, custom_router
from api.routes.system import router as system_router

TOO_LARGE = f"Request entity is too large: the max length is {MAX_BODY_BYTES} bytes"


def assert_error(resp: httpx.Response, status: int, code: str) -> str:
    """The response is the contract's error body; returns its message."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"errorCode", "errorMessage"}, body
    assert body["errorCode"] == code
    assert isinstance(body["errorMessage"], str) and body["errorMessage"]
    return str(body["errorMessage"])


def declared_routes() -> Iterator[tuple[str, APIRoute]]:
    """Every route the routers declare, with the prefix the app mounts it under."""
    mounted: list[tuple[str, APIRouter]] = [(API_PREFIX, r) for r in ROUTERS]
    mounted += [(CUSTOM_PREFIX, custom_router), ("", system_router)]
    for prefix, router in mounted:
        for route in router.routes:
            if isinstance(route, APIWebSocketRoute):
                continue  # OpenAPI has no WebSockets (the web shell is described in docs/)
            assert isinstance(route, APIRoute), f"{route!r}: nested routers are not walked by this test"
            if route.include_in_schema:
                yield prefix + route.path, route


async def test_unknown_route_is_404_with_path(api: httpx.AsyncClient) -> None:
    for path in ("/api/v1/no-such-thing", "/no/such/route", "/api/v1/users/x/y/z"):
        message = assert_error(await api.get(path), 404, "Primus.00005")
        assert message == f"{path} not found"


async def test_wrong_method_is_405_with_error_body(api: httpx.AsyncClient) -> None:
    resp = await api.put("/api/v1/login", json={})
    assert_error(resp, 405, "Primus.00002")
    assert "POST" in resp.headers.get("allow", "")


async def test_body_over_2_mib_is_413_with_content_length(api: httpx.AsyncClient) -> None:
    resp = await api.post(
        "/api/v1/users", content=b"x" * (MAX_BODY_BYTES + 1), headers={"Content-Type": "application/json"}
    )
    assert assert_error(resp, 413, "Primus.00006") == TOO_LARGE


async def test_body_over_2_mib_is_413_when_streamed_without_length(api: httpx.AsyncClient) -> None:
    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(3):
            yield b" " * (1024 * 1024)

    resp = await api.post("/api/v1/users", content=chunks(), headers={"Content-Type": "application/json"})
    assert "content-length" not in resp.request.headers
    assert assert_error(resp, 413, "Primus.00006") == TOO_LARGE


async def test_body_of_exactly_2_mib_is_read(api: httpx.AsyncClient) -> None:
    """The limit is inclusive: a body of exactly 2 MiB is parsed (and here rejected as bad JSON)."""
    resp = await api.post(
        "/api/v1/users", content=b"{" * MAX_BODY_BYTES, headers={"Content-Type": "application/json"}
    )
    assert_error(resp, 400, "Primus.00002")


async def test_validation_errors_are_400_never_422(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    cases = [
        api.post("/api/v1/users", json={"name": 1, "password": "plum-kettle9"}),
        api.post("/api/v1/users", json=["not", "an", "object"]),
        api.post("/api/v1/login", content=b"{broken", headers={"Content-Type": "application/json"}),
        api.get("/api/v1/users?limit=not-a-number", headers=admin),
        api.get("/api/v1/users?offset=-1", headers=admin),
        api.get(f"/api/v1/users?offset={2**64}", headers=admin),  # beyond any database integer
    ]
    for pending in cases:
        resp = await pending
        message = assert_error(resp, 400, "Primus.00002")
        assert message.startswith("Bad request.")


async def test_missing_token_is_401_with_error_body(api: httpx.AsyncClient) -> None:
    resp = await api.get("/api/v1/users")
    assert assert_error(resp, 401, "Primus.00009") == "token not present"
    assert resp.headers.get("www-authenticate") == "Bearer"


async def test_health_probes(api: httpx.AsyncClient) -> None:
    resp = await api.get("/healthz")
    assert resp.status_code == 200 and resp.json()["status"] == "ok"
    resp = await api.get("/readyz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "database": "ok", "temporal": "ok"}


async def test_openapi_documents_every_route_with_models(api: httpx.AsyncClient) -> None:
    resp = await api.get("/openapi.json")
    assert resp.status_code == 200
    spec = resp.json()
    routes = list(declared_routes())
    assert len(routes) > 5
    for path, route in routes:
        for method in route.methods:
            label = f"{method} {path}"
            operation = spec["paths"].get(path, {}).get(method.lower())
            assert operation is not None, f"{label} missing from /openapi.json"
            responses = operation["responses"]
            success = responses.get(str(route.status_code or 200))
            assert success is not None, f"{label} documents no success response"
            if route.response_model is not None:
                assert success["content"]["application/json"]["schema"], f"{label}: no response model"
            if route.body_field is not None:
                body = operation["requestBody"]["content"]["application/json"]["schema"]
                assert body, f"{label}: no request model"
            if path.startswith("/api/"):
                error_refs = {
                    r.get("content", {}).get("application/json", {}).get("schema", {}).get("$ref")
                    for code, r in responses.items()
                    if code.startswith("4")
                }
                assert "#/components/schemas/ErrorResponse" in error_refs, f"{label}: errors undocumented"
    for name in ("/docs", "/openapi.json"):
        assert (await api.get(name)).status_code == 200
