"""HTTP-layer hardening: bounded integers, security headers, cookies, offline docs, no host
redirects and list limits that follow the contract."""

from __future__ import annotations

import base64
import hashlib
import re
from collections.abc import Iterator
from typing import Any

import httpx
from cryptography.fernet import Fernet
from fastapi import FastAPI

from api.app import create_app
from db.clusters import Cluster
from domain.timefmt import utcnow
from primus_safe.settings import Settings
from tests.conftest import ADMIN_PASSWORD, Platform
from tests.fixtures.nodes import add_db_nodes
from tests.test_errors import assert_error

TOO_MANY_SECONDS = 99999999999  # past datetime's range when subtracted from now


async def test_logs_since_seconds_overflow_is_400(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform
) -> None:
    _, (node_id,) = await add_db_nodes(platform.state.sessions, 1, workspace=False)
    now = utcnow()
    async with platform.state.sessions() as session, session.begin():
        session.add(
            Cluster(
                id="overflow",
                provisioner="hosts",
                ssh_secret_id="s",
                kube_spray_image="",
                kube_pods_subnet="",
                kube_service_address="",
                kube_network_plugin="flannel",
                kube_version="",
                phase="Ready",
                created_at=now,
                updated_at=now,
            )
        )
    for url in (f"/api/v1/nodes/{node_id}/logs", "/api/v1/clusters/overflow/logs"):
        resp = await api.get(url, params={"sinceSeconds": TOO_MANY_SECONDS}, headers=admin)
        assert "sinceSeconds" in assert_error(resp, 400, "Primus.00002"), url
        resp = await api.get(url, params={"sinceSeconds": 10 * 365 * 86400}, headers=admin)
        assert resp.status_code == 200, resp.text


def _numbers(
    schema: dict[str, Any], components: dict[str, Any], where: str, seen: frozenset[str]
) -> Iterator[str]:
    """Where `schema` holds an integer or number without both bounds (a const or enum is bounded)."""
    if "$ref" in schema:
        name = schema["$ref"].rsplit("/", 1)[-1]
        if name not in seen:
            yield from _numbers(components[name], components, f"{where}<{name}>", seen | {name})
        return
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key, []):
            yield from _numbers(sub, components, where, seen)
    if schema.get("type") in ("integer", "number") and "const" not in schema and "enum" not in schema:
        low = schema.get("minimum", schema.get("exclusiveMinimum"))
        high = schema.get("maximum", schema.get("exclusiveMaximum"))
        if low is None or high is None:
            yield f"{where} ({schema.get('type')} {low}..{high})"
    for name, sub in schema.get("properties", {}).items():
        yield from _numbers(sub, components, f"{where}.{name}", seen)
    if isinstance(schema.get("additionalProperties"), dict):
        yield from _numbers(schema["additionalProperties"], components, f"{where}.*", seen)
    if isinstance(schema.get("items"), dict):
        yield from _numbers(schema["items"], components, f"{where}[]", seen)


async def test_every_integer_input_is_bounded(api: httpx.AsyncClient) -> None:
    """Fuzzers take their integers from these bounds; an unbounded one can reach an overflow."""
    spec = (await api.get("/openapi.json")).json()
    components = spec["components"]["schemas"]
    unbounded: list[str] = []
    for path, operations in spec["paths"].items():
        for method, op in operations.items():
            label = f"{method.upper()} {path}"
            for param in op.get("parameters", []):
                where = f"{label} {param['in']} {param['name']}"
                unbounded += _numbers(param["schema"], components, where, frozenset())
            for media in op.get("requestBody", {}).get("content", {}).values():
                unbounded += _numbers(media["schema"], components, f"{label} body", frozenset())
    assert unbounded == []


def _assert_base_headers(resp: httpx.Response) -> None:
    assert resp.headers.get("x-content-type-options") == "nosniff", resp.request.url
    assert resp.headers.get("x-frame-options") == "DENY", resp.request.url


async def test_security_headers_on_every_response(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    responses = [
        await api.get("/healthz"),
        await api.get("/openapi.json"),
        await api.get("/docs"),
        await api.get("/api/v1/users", headers=admin),
        await api.get("/api/v1/users"),  # 401
        await api.get("/api/v1/no-such-thing"),  # 404
        await api.put("/api/v1/login", json={}),  # 405
        await api.get("/api/v1/users?limit=x", headers=admin),  # 400
        await api.post("/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD}),
    ]
    for resp in responses:
        _assert_base_headers(resp)
        if resp.request.url.path.startswith("/api/"):
            assert "default-src 'none'" in resp.headers.get("content-security-policy", "")


async def test_security_headers_on_unexpected_errors() -> None:
    """A 500 is answered outside the middleware stack; it carries the headers too."""
    app: FastAPI = create_app(Settings(secret_key=Fernet.generate_key().decode()))

    @app.get("/api/v1/boom")
    async def boom() -> None:
        raise RuntimeError("boom")

    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        resp = await http.get("/api/v1/boom")
    assert_error(resp, 500, "Primus.00001")
    _assert_base_headers(resp)
    assert resp.headers.get("cache-control") == "no-store"


async def test_login_and_secret_responses_are_not_stored(
    api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    login = await api.post("/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD})
    assert login.status_code == 200 and login.json()["token"]
    body = {"name": "nostore", "type": "ssh", "params": [{"username": "root", "password": "pw-123456"}]}
    created = await api.post("/api/v1/secrets", json=body, headers=admin)
    assert created.status_code == 200, created.text
    for resp in (
        login,
        created,
        await api.get("/api/v1/secrets", headers=admin),
        await api.get(f"/api/v1/secrets/{created.json()['secretId']}", headers=admin),
        await api.post("/api/v1/login", json={"name": "root", "password": "wrong-password"}),
    ):
        assert resp.headers.get("cache-control") == "no-store", resp.request.url


def _cookie_flags(resp: httpx.Response) -> dict[str, bool]:
    """Cookie name -> whether its Set-Cookie has the Secure attribute."""
    flags = {}
    for header in resp.headers.get_list("set-cookie"):
        name = header.split("=", 1)[0]
        attributes = {part.strip().lower() for part in header.split(";")[1:]}
        flags[name] = "secure" in attributes
    return flags


async def test_cookies_are_secure_over_https_or_when_configured(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    credentials = {"name": "root", "password": ADMIN_PASSWORD}
    plain = await api.post("http://testserver/api/v1/login", json=credentials)
    assert _cookie_flags(plain) == {"Token": False, "userId": False, "userType": False}
    tls = await api.post("https://testserver/api/v1/login", json=credentials)
    assert _cookie_flags(tls) == {"Token": True, "userId": True, "userType": True}
    out = await api.post(
        "https://testserver/api/v1/logout", headers={"Authorization": f"Bearer {tls.json()['token']}"}
    )
    assert _cookie_flags(out) == {"Token": True, "userId": True, "userType": True}
    api.cookies.clear()
    platform.state.settings.cookie_secure = True
    try:
        configured = await api.post("http://testserver/api/v1/login", json=credentials)
    finally:
        platform.state.settings.cookie_secure = False
    assert _cookie_flags(configured) == {"Token": True, "userId": True, "userType": True}


CONTENT_TYPES = {".js": "javascript", ".css": "text/css", ".png": "image/png"}


def _inline_script_hashes(html: str) -> set[str]:
    scripts = re.findall(r"<script>(.*?)</script>", html, flags=re.S)
    return {
        "'sha256-" + base64.b64encode(hashlib.sha256(s.encode()).digest()).decode() + "'" for s in scripts
    }


async def test_docs_work_offline_from_same_origin_assets(api: httpx.AsyncClient) -> None:
    for page in ("/docs", "/redoc"):
        resp = await api.get(page)
        assert resp.status_code == 200 and resp.headers["content-type"].startswith("text/html")
        html = resp.text
        references = re.findall(r"""(?:src|href|spec-url)=["']([^"']+)["']""", html)
        references += re.findall(r"""url:\s*['"]([^'"]+)['"]""", html)
        assert references, html
        assert "http:" not in html and "https:" not in html and "//" not in "".join(references), html
        policy = {
            part.split()[0]: part.split()[1:]
            for part in resp.headers["content-security-policy"].split(";")
            if part.strip()
        }
        assert policy["default-src"] == ["'none'"]
        assert set(policy["script-src"]) == {"'self'"} | _inline_script_hashes(html)
        assert policy["frame-ancestors"] == ["'none'"]
        for ref in references:
            assert ref.startswith("/"), ref
            asset = await api.get(ref)
            assert asset.status_code == 200, ref
            suffix = ref[ref.rfind(".") :]
            expected = CONTENT_TYPES.get(suffix, "application/json")
            assert expected in asset.headers["content-type"], (ref, asset.headers["content-type"])


async def test_trailing_slash_never_redirects_to_the_host_header(api: httpx.AsyncClient) -> None:
    for method, path in (("GET", "/api/v1/secrets/"), ("POST", "/api/v1/login/"), ("GET", "/healthz/")):
        resp = await api.request(method, path, headers={"Host": "evil.example"})
        assert "location" not in resp.headers, resp.headers
        assert assert_error(resp, 404, "Primus.00005") == f"{path} not found"


LIST_LIMITS = {"limit", "page_size", "pageSize"}
ALL_ALLOWED = {"/api/v1/nodes"}  # the contract documents limit -1 (all) for the node list only


async def test_list_limits_agree_with_the_contract(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    spec = (await api.get("/openapi.json")).json()
    lists = {
        path: name
        for path, operations in spec["paths"].items()
        if "get" in operations
        for name in {p["name"] for p in operations["get"].get("parameters", [])} & LIST_LIMITS
    }
    assert len(lists) >= 12, lists
    assert set(lists) >= ALL_ALLOWED
    for path, name in sorted(lists.items()):
        for value in (0, -2, 10001, 2**63):
            resp = await api.get(path, params={name: value}, headers=admin)
            assert name in assert_error(resp, 400, "Primus.00002"), (path, value)
        resp = await api.get(path, params={name: -1}, headers=admin)
        if path in ALL_ALLOWED:
            assert resp.status_code == 200, resp.text
        else:
            assert_error(resp, 400, "Primus.00002")
        assert (await api.get(path, params={name: 1}, headers=admin)).status_code == 200, path
