"""The workload API's rules without running anything: validation, who sees and changes what,
list filters, sorting and paging, batch requests, clone, and patches of a queued workload.

Workspaces here have no nodes, so every workload stays Pending in its queue."""

from __future__ import annotations

import base64
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from db.users import User
from db.workspaces import Workspace
from tests.conftest import Platform
from tests.fixtures.nodes import add_flavor
from tests.fixtures.polling import poll_json
from tests.fixtures.workspaces import add_workspace

WL = "/api/v1/workloads"
FLAVOR = {"cpu": {"quantity": "8"}, "memory": "32Gi", "gpu": {"resourceName": "amd.com/gpu", "quantity": "8"}}


def body(workspace_id: str, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "displayName": "job",
        "workspaceId": workspace_id,
        "groupVersionKind": {"kind": "PyTorchJob", "version": "v1"},
        "image": "img",
        "entryPoint": base64.b64encode(b"echo hi").decode(),
        "resource": {"cpu": "1", "memory": "1Gi", "replica": 1},
    }
    data.update(changes)
    return data


async def create(api: httpx.AsyncClient, headers: dict[str, str], **changes: Any) -> httpx.Response:
    data = body(str(changes.pop("workspaceId")))
    data.update(changes)
    return await api.post(WL, json=data, headers=headers)


@pytest.fixture
async def spaces(platform: Platform, api: httpx.AsyncClient, alice: dict[str, str]) -> dict[str, str]:
    """`team` (alice's, flavor with 8 cpu / 8 GPUs), `shared` (default: everyone), `infer` (Infer
    only); ids unique per run: the Temporal server (and its schedulers) outlive a database."""
    sessions = platform.state.sessions
    run = uuid.uuid4().hex[:5]
    ids = {name: f"{name}-{run}" for name in ("team", "shared", "infer")}
    for workspace_id in ids.values():
        await add_workspace(sessions, workspace_id)
    await add_flavor(sessions, "wl-flavor", FLAVOR)
    async with sessions() as session, session.begin():
        team, shared, infer = ids["team"], ids["shared"], ids["infer"]
        await session.execute(update(Workspace).where(Workspace.id == team).values(flavor_id="wl-flavor"))
        await session.execute(update(Workspace).where(Workspace.id == shared).values(is_default=True))
        await session.execute(update(Workspace).where(Workspace.id == infer).values(scopes=["Infer"]))
        await session.execute(update(User).where(User.name == "alice").values(workspaces=[team, infer]))
    return ids


async def test_bad_input_is_a_clear_4xx_and_creates_nothing(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], spaces: dict[str, str]
) -> None:
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"workspaceId": "nowhere"}, 404, "nowhere"),
        ({"entryPoint": "not base64!"}, 400, "entryPoint"),
        ({"resource": {"cpu": "lots", "memory": "1Gi", "replica": 1}}, 400, "resource.cpu"),
        ({"resource": {"cpu": "1", "memory": "1Gi", "replica": 0}}, 400, "replica"),
        ({"resource": {"cpu": "16", "memory": "1Gi", "replica": 1}}, 400, "cpu per pod requests 16"),
        ({"displayName": "Not_A_Label"}, 400, "displayName"),
        ({"cronJobs": [{"schedule": "2020-01-01T00:00:00Z"}]}, 400, "future"),
        ({"cronJobs": [{"schedule": "tomorrow"}]}, 400, "schedule"),
        ({"dependencies": ["job-nope1"]}, 404, "job-nope1"),
        ({"service": {"port": 0, "targetPort": 80}}, 400, "service.port"),
        ({"liveness": {"path": "status", "port": 80}}, 400, "liveness.path"),
        ({"env": {"1BAD": "x"}}, 400, "env"),
        ({"priority": 3}, 400, ""),
        ({"groupVersionKind": {"kind": "Job", "version": "v1"}}, 400, ""),
    ]
    for changes, status, text in cases:
        resp = await create(api, alice, **{"workspaceId": spaces["team"], **changes})
        assert resp.status_code == status, (changes, resp.text)
        assert text in resp.json()["errorMessage"], (changes, resp.text)
    resp = await create(api, alice, workspaceId=spaces["infer"])
    assert resp.status_code == 403 and "does not support Train" in resp.json()["errorMessage"]
    resp = await create(api, alice, workspaceId=spaces["team"], priority=2)
    assert resp.status_code == 403 and "priority 2" in resp.json()["errorMessage"]
    assert (await api.get(WL, headers=admin)).json()["totalCount"] == 0


async def test_who_sees_and_changes_what(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    spaces: dict[str, str],
) -> None:
    resp = await create(api, alice, workspaceId=spaces["team"])
    assert resp.status_code == 200, resp.text
    private = resp.json()["workloadId"]
    shared = (await create(api, alice, workspaceId=spaces["shared"])).json()["workloadId"]
    # bob may not use `team`: its workload does not exist for him
    assert (await api.get(f"{WL}/{private}", headers=bob)).status_code == 404
    assert (await api.post(f"{WL}/{private}/stop", headers=bob)).status_code == 404
    assert (await create(api, bob, workspaceId=spaces["team"])).status_code == 404
    # in the default workspace he sees alice's workload but may not change it
    assert (await api.get(f"{WL}/{shared}", headers=bob)).status_code == 200
    assert (await api.post(f"{WL}/{shared}/stop", headers=bob)).status_code == 403
    assert (await api.patch(f"{WL}/{shared}", json={"priority": 1}, headers=bob)).status_code == 403
    assert (await api.delete(f"{WL}/{shared}", headers=bob)).status_code == 403
    assert {i["workloadId"] for i in (await api.get(WL, headers=bob)).json()["items"]} == {shared}
    assert (await api.get(WL, headers=admin)).json()["totalCount"] == 2
    # the owner stops it: the answer comes once it is Stopped
    assert (await api.post(f"{WL}/{shared}/stop", headers=alice)).status_code == 200
    assert (await api.get(f"{WL}/{shared}", headers=alice)).json()["phase"] == "Stopped"


async def test_list_filters_sort_and_paging(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], spaces: dict[str, str]
) -> None:
    ids = []
    for i in range(3):
        resp = await create(
            api, alice, workspaceId=spaces["team"], displayName=f"train-{i}", description=f"run {i}"
        )
        ids.append(resp.json()["workloadId"])
    deploy = body(
        spaces["shared"], displayName="serve", groupVersionKind={"kind": "Deployment", "version": "v1"}
    )
    ids.append((await api.post(WL, json=deploy, headers=admin)).json()["workloadId"])
    await api.post(f"{WL}/{ids[0]}/stop", headers=alice)

    async def listed(**params: Any) -> tuple[int, list[str]]:
        resp = await api.get(WL, params=params, headers=admin)
        assert resp.status_code == 200, resp.text
        return resp.json()["totalCount"], [i["workloadId"] for i in resp.json()["items"]]

    assert await listed() == (4, ids[::-1])
    assert await listed(order="asc", limit=2) == (4, ids[:2])
    assert await listed(order="asc", limit=2, offset=2) == (4, ids[2:])
    assert (await listed(phase="Stopped"))[1] == [ids[0]]
    assert set((await listed(phase="Pending,Stopped"))[1]) == set(ids)
    assert (await listed(kind="Deployment"))[1] == [ids[3]]
    assert set((await listed(kind="PyTorchJob,Deployment"))[1]) == set(ids)
    assert (await listed(workspaceId=spaces["shared"]))[1] == [ids[3]]
    assert (await listed(userName="lic"))[0] == 3
    assert (await listed(description="run 1"))[1] == [ids[1]]
    assert (await listed(workloadId="train-2"))[1] == [ids[2]]
    assert (await listed(since="2999-01-01T00:00:00Z"))[0] == 0
    for params in ({"order": "up"}, {"sortBy": "nonsense"}, {"phase": "Sleeping"}, {"limit": 0}):
        assert (await api.get(WL, params=params, headers=admin)).status_code == 400, params
    item = (await api.get(WL, params={"workloadId": ids[1]}, headers=admin)).json()["items"][0]
    assert item["runtime"] == "0s" and item["secondsUntilTimeout"] == 0
    assert item["resource"] == {
        "cpu": "1",
        "gpu": "",
        "memory": "1Gi",
        "ephemeralStorage": "50Gi",
        "sharedMemory": "512Mi",
        "replica": 1,
    }


async def test_batch_clone_and_queued_patches(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    spaces: dict[str, str],
) -> None:
    for path in ("delete", "stop", "clone"):
        resp = await api.post(f"{WL}/{path}", json={"workloadIds": []}, headers=alice)
        assert resp.status_code == 400, resp.text
    first = (await create(api, alice, workspaceId=spaces["shared"])).json()["workloadId"]
    queued = await poll_json(api, alice, f"{WL}/{first}", lambda b: b["schedulerOrder"] == 1, within=30)
    assert queued["message"]  # a workspace without nodes says so
    resp = await api.patch(f"{WL}/{first}", json={"replica": 3, "cpu": "2"}, headers=alice)
    assert resp.status_code == 200, resp.text
    detail = (await api.get(f"{WL}/{first}", headers=alice)).json()
    assert detail["resource"]["replica"] == 3 and detail["resource"]["cpu"] == "2"

    await poll_json(
        api,
        admin,
        f"/api/v1/workspaces/{spaces['shared']}/queue",
        lambda b: any(i["workloadId"] == first and i["replica"] == 3 for i in b["items"]),
    )
    resp = await api.post(f"{WL}/clone", json={"workloadIds": [first]}, headers=bob)
    assert resp.status_code == 200, resp.text
    clone = resp.json()[0]["workloadId"]
    cloned = (await api.get(f"{WL}/{clone}", headers=bob)).json()
    assert clone != first and clone.startswith("job-") and cloned["userName"] == "bob"
    assert cloned["resource"]["replica"] == 3
    resp = await api.post(f"{WL}/stop", json={"workloadIds": [first, clone, "job-nope1"]}, headers=alice)
    assert resp.status_code == 200  # at least one succeeded (bob's clone is not alice's to stop)
    assert (await api.get(f"{WL}/{first}", headers=alice)).json()["phase"] == "Stopped"
    assert (await api.get(f"{WL}/{clone}", headers=alice)).json()["phase"] == "Pending"
    assert (await api.patch(f"{WL}/{first}", json={"priority": 1}, headers=alice)).status_code == 409
    resp = await api.post(f"{WL}/delete", json={"workloadIds": [first]}, headers=alice)
    assert resp.status_code == 200
    assert (await api.get(f"{WL}/{first}", headers=alice)).status_code == 404
    assert (await api.get(f"{WL}/{clone}/pods/nope/containers", headers=bob)).status_code == 404
