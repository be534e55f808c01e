"""Faults through the API and the real `fault/<id>` workflow, on SQLite and PostgreSQL: injection,
the node's taint and hold, list filters and visibility, stop and delete.

Nodes are database rows (no machine behind them), so the node probe schedule is paused.
"""

from __future__ import annotations

from typing import Any

import httpx

from db.session import SessionFactory
from tests.conftest import Platform
from tests.fixtures.nodes import add_db_nodes
from tests.fixtures.polling import poll_json, until
from workflows.common import PHASE, RESOURCE_ID, RESOURCE_TYPE

FAULTS = "/api/v1/faults"
NODES = "/api/v1/nodes"


async def add_nodes(sessions: SessionFactory, count: int, *, workspace: bool, cluster: str = "") -> list[str]:
    """`count` machine-less nodes, in a new default workspace when `workspace`."""
    return (await add_db_nodes(sessions, count, workspace=workspace, cluster=cluster, default=True))[1]


async def inject(
    api: httpx.AsyncClient, admin: dict[str, str], node_id: str, monitor: str, **body: Any
) -> str:
    resp = await api.post(FAULTS, json={"nodeId": node_id, "monitorId": monitor, **body}, headers=admin)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


async def faults(api: httpx.AsyncClient, headers: dict[str, str], **query: Any) -> dict[str, Any]:
    resp = await api.get(FAULTS, params=query, headers=headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def node(api: httpx.AsyncClient, admin: dict[str, str], node_id: str) -> dict[str, Any]:
    return dict((await api.get(f"{NODES}/{node_id}", headers=admin)).json())


async def test_a_fault_taints_and_holds_its_node_until_stopped_then_deletes(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, quiet_probe: None
) -> None:
    n0, n1 = await add_nodes(platform.state.sessions, 2, workspace=True)
    first = await inject(api, admin, n0, "001", message="gpu lost", effect="NoExecute")
    second = await inject(api, admin, n0, "net.monitor-1", message="network unreachable")

    listed = await poll_json(
        api, admin, f"{FAULTS}?nodeId={n0}", lambda b: {i["phase"] for i in b["items"]} == {"Succeeded"}
    )
    by_id = {i["id"]: i for i in listed["items"]}
    assert listed["totalCount"] == 2 and set(by_id) == {first, second}
    assert by_id[first] | {"creationTime": ""} == {
        "id": first,
        "nodeId": n0,
        "monitorId": "001",
        "message": "gpu lost",
        "action": "taint",
        "effect": "NoExecute",
        "phase": "Succeeded",
        "clusterId": "",
        "source": "api",
        "creationTime": "",
        "deletionTime": "",
    }
    held = await node(api, admin, n0)
    assert held["available"] is False and "fault" in held["message"], held
    assert {(t["key"], t["effect"]) for t in held["taints"]} == {
        ("001", "NoExecute"),
        ("net.monitor-1", "NoSchedule"),
    }
    assert (await node(api, admin, n1))["available"] is True

    described = await platform.state.temporal.get_workflow_handle(f"fault/{first}").describe()
    assert described.typed_search_attributes.get(RESOURCE_TYPE) == "fault"
    assert described.typed_search_attributes.get(RESOURCE_ID) == first
    assert described.typed_search_attributes.get(PHASE) == "Succeeded"

    # a node PATCH of taints keeps the ones the open faults own
    resp = await api.patch(
        f"{NODES}/{n0}", json={"taints": [{"key": "mine", "effect": "NoSchedule"}]}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    assert {t["key"] for t in (await node(api, admin, n0))["taints"]} == {"001", "net.monitor-1", "mine"}

    # stopping one fault keeps the node held by the other
    assert (await api.post(f"{FAULTS}/{first}/stop", headers=admin)).status_code == 200
    closed = await poll_json(
        api, admin, f"{FAULTS}?onlyOpen=true&nodeId={n0}", lambda b: b["totalCount"] == 1
    )
    assert [i["id"] for i in closed["items"]] == [second]
    still = await node(api, admin, n0)
    assert still["available"] is False and {t["key"] for t in still["taints"]} == {"net.monitor-1", "mine"}
    stopped = next(i for i in (await faults(api, admin, nodeId=n0))["items"] if i["id"] == first)
    assert stopped["deletionTime"] != ""
    assert (await api.post(f"{FAULTS}/{first}/stop", headers=admin)).status_code == 200  # idempotent

    # deleting the other frees the node and removes the record (its workflow had ended: a new run)
    assert (await api.delete(f"{FAULTS}/{second}", headers=admin)).status_code == 200
    await poll_json(
        api, admin, f"{FAULTS}?nodeId={n0}&monitorId=net.monitor-1", lambda b: b["totalCount"] == 0
    )

    async def free() -> bool:
        view = await node(api, admin, n0)
        return "fault" not in view["message"] and {t["key"] for t in view["taints"]} == {"mine"}

    try:
        await until(free, within=30)
    except AssertionError:
        raise AssertionError(await node(api, admin, n0)) from None
    await api.patch(f"{NODES}/{n0}", json={"taints": []}, headers=admin)
    assert (await node(api, admin, n0))["available"] is True  # no fault holds it any more
    assert (await api.delete(f"{FAULTS}/{first}", headers=admin)).status_code == 200
    await poll_json(api, admin, f"{FAULTS}?nodeId={n0}", lambda b: b["totalCount"] == 0)


async def test_bad_injections_are_refused_and_create_nothing(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    quiet_probe: None,
) -> None:
    (n0,) = await add_nodes(platform.state.sessions, 1, workspace=False)
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"nodeId": "no-such-node", "monitorId": "001"}, 404, "no-such-node"),
        ({"nodeId": n0, "monitorId": "Bad_Id"}, 400, "monitorId"),
        ({"nodeId": n0, "monitorId": "001", "action": "reboot"}, 400, "action"),
        ({"nodeId": n0, "monitorId": "001", "effect": "PreferNoSchedule"}, 400, "effect"),
        ({"nodeId": n0}, 400, "monitorId"),
    ]
    for body, status, word in cases:
        resp = await api.post(FAULTS, json=body, headers=admin)
        assert resp.status_code == status, (body, resp.text)
        assert word in resp.json()["errorMessage"], (body, resp.text)
    resp = await api.post(FAULTS, json={"nodeId": n0, "monitorId": "001"}, headers=alice)
    assert resp.status_code == 403, resp.text
    assert (await faults(api, admin))["totalCount"] == 0

    fault_id = await inject(api, admin, n0, "001")
    again = await api.post(FAULTS, json={"nodeId": n0, "monitorId": "001"}, headers=admin)
    assert again.status_code == 409 and fault_id in again.json()["errorMessage"], again.text
    for method, path in (("POST", f"{FAULTS}/nope/stop"), ("DELETE", f"{FAULTS}/nope")):
        resp = await api.request(method, path, headers=admin)
        assert resp.status_code == 404, resp.text
    assert (await api.post(f"{FAULTS}/{fault_id}/stop", headers=alice)).status_code == 403
    assert (await api.get(FAULTS, params={"sortBy": "phase"}, headers=admin)).status_code == 400
    assert (await api.get(FAULTS, params={"order": "up"}, headers=admin)).status_code == 400


async def test_list_filters_paging_sort_and_visibility(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    quiet_probe: None,
) -> None:
    shared = await add_nodes(platform.state.sessions, 2, workspace=True, cluster="c-a")
    private = await add_nodes(platform.state.sessions, 1, workspace=False, cluster="c-b")
    ids = {
        "a": await inject(api, admin, shared[0], "001"),
        "b": await inject(api, admin, shared[1], "002"),
        "c": await inject(api, admin, private[0], "001"),
    }
    await poll_json(api, admin, FAULTS, lambda b: {i["phase"] for i in b["items"]} == {"Succeeded"})

    def names(body: dict[str, Any]) -> list[str]:
        back = {v: k for k, v in ids.items()}
        return [back[i["id"]] for i in body["items"]]

    assert names(await faults(api, admin)) == ["c", "b", "a"]  # newest first
    assert names(await faults(api, admin, order="asc")) == ["a", "b", "c"]
    assert names(await faults(api, admin, monitorId="001")) == ["c", "a"]
    assert names(await faults(api, admin, monitorId="002, 001")) == ["c", "b", "a"]
    assert names(await faults(api, admin, clusterId="c-b")) == ["c"]
    assert names(await faults(api, admin, nodeId=shared[0].split("-", 1)[1])) == ["b", "a"]  # substring
    assert names(await faults(api, admin, nodeId=shared[1])) == ["b"]
    assert names(await faults(api, admin, nodeId="%")) == []  # a literal substring, not a pattern
    page = await faults(api, admin, limit=1, offset=1)
    assert page["totalCount"] == 3 and names(page) == ["b"]
    assert names(await faults(api, admin, sortBy="node_id", order="asc"))[0] in ("a", "b", "c")

    # alice uses the default workspace of the shared nodes: she sees their faults only
    seen = await faults(api, alice)
    assert seen["totalCount"] == 2 and names(seen) == ["b", "a"]

    await api.post(f"{FAULTS}/{ids['b']}/stop", headers=admin)
    await poll_json(api, admin, f"{FAULTS}?onlyOpen=true", lambda b: b["totalCount"] == 2)
    assert names(await faults(api, admin, onlyOpen="true")) == ["c", "a"]
