"""HTTP-layer hardening: bounded integers and list limits that follow the contract."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx

from db.clusters import Cluster
from domain.timefmt import utcnow
from tests.conftest import Platform
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
