"""Workspace API through the real app, worker and Temporal dev server: creation binding free Ready
nodes, quotas following node changes at once, node add/remove, patch, delete, permissions of
admins, managers and members, and bad input that records and binds nothing.

Clusters and nodes are stored in the state their own workflows leave them in (a Ready `hosts`
cluster, onboarded Ready nodes bound to it), so each test runs in seconds; tests/test_clusters_api.py
drives those workflows end to end over sshd.
"""

from __future__ import annotations

import itertools
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import select

from db import node_status
from db.clusters import Cluster
from db.nodes import Node
from db.workspaces import Workspace
from domain.nodes import READY, UnavailableReason
from domain.timefmt import utcnow
from tests.conftest import Platform, login, register
from tests.fixtures.clusters import add_image_secret
from tests.fixtures.nodes import add_flavor, add_template
from tests.fixtures.polling import poll_json

WS = "/api/v1/workspaces"
GPU_FLAVOR = {
    "cpu": {"product": "", "quantity": "64"},
    "memory": "512Gi",
    "gpu": {"product": "MI300X", "resourceName": "amd.com/gpu", "quantity": "8"},
    "extendedResources": {"ephemeral-storage": "1Ti", "rdma/hca": "1k"},
}
PER_NODE = {"amd.com/gpu": 8, "cpu": 64, "memory": 512 * 2**30, "ephemeral-storage": 2**40, "rdma/hca": 1000}


def times(n: int) -> dict[str, int]:
    return {k: v * n for k, v in PER_NODE.items()}


def zero() -> dict[str, int]:
    return dict.fromkeys(PER_NODE, 0)


async def add_cluster(platform: Platform, cluster_id: str, phase: str = "Ready") -> None:
    now = utcnow()
    async with platform.state.sessions() as session, session.begin():
        session.add(
            Cluster(
                id=cluster_id,
                provisioner="hosts",
                control_plane_nodes=[],
                ssh_secret_id="ssh-key",
                kube_spray_image="",
                kube_pods_subnet="",
                kube_service_address="",
                kube_network_plugin="flannel",
                kube_version="",
                phase=phase,
                created_at=now,
                updated_at=now,
            )
        )


NODE_IPS = (f"10.{n // 62500}.{n // 250 % 250}.{n % 250 + 1}" for n in itertools.count())
"""Distinct private IPs for the node rows of every test (the column is unique)."""


async def add_nodes(platform: Platform, cluster_id: str, flavor: str, count: int, prefix: str) -> list[str]:
    """Onboarded Ready nodes bound to the cluster, as the node and cluster workflows leave them."""
    now = utcnow()
    ids = [f"{prefix}-{i}" for i in range(count)]
    async with platform.state.sessions() as session, session.begin():
        for node_id in ids:
            session.add(
                Node(
                    id=node_id,
                    node_name=node_id,
                    private_ip=next(NODE_IPS),
                    flavor_id=flavor,
                    template_id="bare",
                    ssh_secret_id="ssh-key",
                    cluster_id=cluster_id,
                    phase=READY,
                    onboarded=True,
                    addons_template_id="bare",
                    addons_installed=True,
                    created_at=now,
                    updated_at=now,
                )
            )
    return ids


@pytest.fixture
async def world(api: httpx.AsyncClient, platform: Platform) -> dict[str, Any]:
    """Cluster `c1` with 4 gpu nodes and 1 cpu node, cluster `c2` with 2 gpu2 nodes."""
    sessions = platform.state.sessions
    await add_flavor(sessions, "gpu", GPU_FLAVOR)
    await add_flavor(sessions, "gpu2", GPU_FLAVOR)
    await add_flavor(sessions, "cpu", {"cpu": {"quantity": "8"}, "memory": "32Gi"})
    await add_template(sessions, "bare", [])
    await add_image_secret(sessions, platform.state.box, "image-secret")
    run = uuid.uuid4().hex[:5]
    c1, c2 = f"c1-{run}", f"c2-{run}"
    await add_cluster(platform, c1)
    await add_cluster(platform, c2)
    gpu = await add_nodes(platform, c1, "gpu", 4, f"g{run}")
    cpu = await add_nodes(platform, c1, "cpu", 1, f"x{run}")
    other = await add_nodes(platform, c2, "gpu2", 2, f"o{run}")
    return {"c1": c1, "c2": c2, "gpu": gpu, "cpu": cpu, "other": other}


async def create(api: httpx.AsyncClient, headers: dict[str, str], **body: Any) -> str:
    resp = await api.post(WS, json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    workspace_id = str(resp.json()["workspaceId"])
    await wait_phase(api, headers, workspace_id, "Running")
    return workspace_id


async def wait_phase(api: httpx.AsyncClient, headers: dict[str, str], workspace_id: str, phase: str) -> Any:
    return await poll_json(api, headers, f"{WS}/{workspace_id}", lambda b: b["phase"] == phase, within=30)


async def get(api: httpx.AsyncClient, headers: dict[str, str], workspace_id: str) -> dict[str, Any]:
    resp = await api.get(f"{WS}/{workspace_id}", headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def bound(platform: Platform, workspace_id: str) -> list[str]:
    async with platform.state.sessions() as session:
        rows = await session.execute(
            select(Node.id).where(Node.workspace_id == workspace_id).order_by(Node.id)
        )
        return list(rows.scalars())


async def test_create_binds_free_nodes_and_shows_live_quotas(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, world: dict[str, Any]
) -> None:
    body = {
        "name": "ai-team",
        "clusterId": world["c1"],
        "flavorId": "gpu",
        "replica": 2,
        "description": "AI team",
        "volumes": [
            {"type": "pfs", "mountPath": "/mnt/data/", "capacity": "100Ti", "storageClass": "rbd"},
            {"type": "hostpath", "mountPath": "/home", "hostPath": "/home"},
        ],
        "imageSecretIds": ["image-secret"],
    }
    workspace_id = await create(api, admin, **body)
    assert workspace_id == f"{world['c1']}-ai-team"
    ws = await get(api, admin, workspace_id)
    assert ws["workspaceName"] == "ai-team" and ws["flavorId"] == "gpu" and ws["queuePolicy"] == "fifo"
    assert ws["scopes"] == ["Train", "Infer", "Authoring"] and ws["enablePreempt"] is False
    assert (ws["targetNodeCount"], ws["currentNodeCount"], ws["abnormalNodeCount"]) == (2, 2, 0)
    assert ws["totalQuota"] == times(2) and ws["availQuota"] == times(2)
    assert ws["usedQuota"] == zero() and ws["abnormalQuota"] == zero() and ws["usedNodeCount"] == 0
    assert ws["imageSecretIds"] == ["image-secret"]
    assert ws["volumes"][0]["mountPath"] == "/mnt/data" and ws["volumes"][0]["accessMode"] == "ReadWriteMany"
    assert await bound(platform, workspace_id) == world["gpu"][:2]

    nodes = await api.get("/api/v1/nodes", params={"workspaceId": workspace_id}, headers=admin)
    assert [n["nodeId"] for n in nodes.json()["items"]] == world["gpu"][:2]
    assert nodes.json()["items"][0]["workspace"] == {"id": workspace_id, "name": "ai-team"}

    listed = await api.get(WS, params={"clusterId": world["c1"]}, headers=admin)
    assert [w["workspaceId"] for w in listed.json()["items"]] == [workspace_id]
    assert (await api.get(WS, params={"clusterId": world["c2"]}, headers=admin)).json()["totalCount"] == 0
    again = await api.post(WS, json=body, headers=admin)
    assert again.status_code == 409, again.text


async def test_quotas_follow_node_changes_at_once(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, world: dict[str, Any]
) -> None:
    workspace_id = await create(api, admin, name="quota", clusterId=world["c1"], flavorId="gpu", replica=1)
    first, second, third = world["gpu"][:3]
    add = await api.post(
        f"{WS}/{workspace_id}/nodes", json={"nodeIds": [second, third], "action": "add"}, headers=admin
    )
    assert add.status_code == 200, add.text
    ws = await get(api, admin, workspace_id)
    assert ws["totalQuota"] == times(3) and ws["availQuota"] == times(3)
    assert (ws["targetNodeCount"], ws["currentNodeCount"]) == (3, 3)

    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_unavailable(
            session,
            node_id=second,
            reason=UnavailableReason.FAULT,
            ref="f1",
            message="gpu fell off the bus",
            now=utcnow(),
        )
    ws = await get(api, admin, workspace_id)
    assert ws["abnormalQuota"] == times(1) and ws["availQuota"] == times(2) and ws["totalQuota"] == times(3)
    assert ws["abnormalNodeCount"] == 1 and ws["phase"] == "Running"

    remove = await api.post(
        f"{WS}/{workspace_id}/nodes", json={"nodeIds": [third], "action": "remove"}, headers=admin
    )
    assert remove.status_code == 200, remove.text
    ws = await get(api, admin, workspace_id)
    assert ws["totalQuota"] == times(2) and ws["abnormalQuota"] == times(1) and ws["availQuota"] == times(1)
    assert (ws["targetNodeCount"], ws["currentNodeCount"]) == (2, 2)

    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_unavailable(
            session, node_id=first, reason=UnavailableReason.REBOOT, now=utcnow()
        )
    ws = await get(api, admin, workspace_id)
    assert ws["phase"] == "Abnormal" and ws["availQuota"] == zero()
    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_available(session, node_id=first, reason=UnavailableReason.REBOOT)
        await node_status.mark_available(session, node_id=second, reason=UnavailableReason.FAULT, ref="f1")
    ws = await get(api, admin, workspace_id)
    assert ws["phase"] == "Running" and ws["availQuota"] == times(2)

    # a larger replica takes free nodes, a smaller one frees idle nodes
    assert (await api.patch(f"{WS}/{workspace_id}", json={"replica": 4}, headers=admin)).status_code == 200
    assert (await get(api, admin, workspace_id))["currentNodeCount"] == 4
    too_many = await api.patch(f"{WS}/{workspace_id}", json={"replica": 5}, headers=admin)
    assert too_many.status_code == 409 and "only 0 are free" in too_many.json()["errorMessage"]
    assert (await api.patch(f"{WS}/{workspace_id}", json={"replica": 1}, headers=admin)).status_code == 200
    ws = await get(api, admin, workspace_id)
    assert (ws["targetNodeCount"], ws["currentNodeCount"], ws["totalQuota"]) == (1, 1, times(1))


async def test_node_rules(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, world: dict[str, Any]
) -> None:
    one = await create(api, admin, name="one", clusterId=world["c1"], flavorId="gpu", replica=1)
    two = await create(api, admin, name="two", clusterId=world["c1"], flavorId="gpu", replica=0)
    taken = world["gpu"][0]
    nodes = f"{WS}/{two}/nodes"
    resp = await api.post(nodes, json={"nodeIds": [world["gpu"][1], taken], "action": "add"}, headers=admin)
    assert resp.status_code == 409 and f"bound for {one}" in resp.json()["errorMessage"], resp.text
    resp = await api.post(nodes, json={"nodeIds": [world["cpu"][0]], "action": "add"}, headers=admin)
    assert resp.status_code == 400 and "do not match" in resp.json()["errorMessage"]
    resp = await api.post(nodes, json={"nodeIds": [world["other"][0]], "action": "add"}, headers=admin)
    assert resp.status_code == 400 and "not in the workspace's cluster" in resp.json()["errorMessage"]
    resp = await api.post(nodes, json={"nodeIds": ["no-such-node"], "action": "add"}, headers=admin)
    assert resp.status_code == 404 and "no-such-node" in resp.json()["errorMessage"]
    resp = await api.post(nodes, json={"nodeIds": [taken], "action": "remove"}, headers=admin)
    assert resp.status_code == 409
    resp = await api.post(nodes, json={"nodeIds": [world["gpu"][1]], "action": "move"}, headers=admin)
    assert resp.status_code == 400
    assert await bound(platform, two) == [] and await bound(platform, one) == [taken]


async def test_bad_input_creates_nothing(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, world: dict[str, Any]
) -> None:
    base = {"name": "bad", "clusterId": world["c1"], "flavorId": "gpu", "replica": 1}
    cases: list[tuple[dict[str, Any], int, str]] = [
        ({"clusterId": "nowhere"}, 404, "nowhere"),
        ({"flavorId": "no-flavor"}, 404, "no-flavor"),
        ({"managers": ["user-ghost"]}, 404, "user-ghost"),
        ({"imageSecretIds": ["no-secret"]}, 404, "no-secret"),
        ({"flavorId": "gpu2", "replica": 0}, 400, f"belongs to cluster {world['c2']}"),
        ({"replica": 5}, 409, "only 4 are free (4 of that flavor in the cluster"),
        ({"queuePolicy": "lifo"}, 400, "queuePolicy"),
        ({"scopes": ["Train", "Play"]}, 400, "scopes"),
        (
            {
                "volumes": [
                    {
                        "type": "pfs",
                        "mountPath": "/d",
                        "capacity": "1Ti",
                        "selector": {"a": "b"},
                        "storageClass": "rbd",
                    }
                ]
            },
            400,
            "mutually exclusive",
        ),
        (
            {"volumes": [{"type": "pfs", "mountPath": "/d", "storageClass": "rbd"}]},
            400,
            "capacity is required",
        ),
        ({"volumes": [{"type": "hostpath", "mountPath": "/d"}]}, 400, "hostPath is required"),
        ({"volumes": [{"type": "nfs", "mountPath": "/d"}]}, 400, "type"),
    ]
    for change, status, text in cases:
        resp = await api.post(WS, json={**base, **change}, headers=admin)
        assert resp.status_code == status, (change, resp.text)
        assert text in resp.json()["errorMessage"], (change, resp.text)
    await create(api, admin, name="holder", clusterId=world["c1"], flavorId="gpu", replica=3)
    resp = await api.post(WS, json={**base, "replica": 2}, headers=admin)
    assert resp.status_code == 409, resp.text
    assert (
        "only 1 are free (4 of that flavor in the cluster, 3 bound to other workspaces"
        in resp.json()["errorMessage"]
    )
    async with platform.state.sessions() as session:
        ids = list((await session.execute(select(Workspace.id))).scalars())
    assert ids == [f"{world['c1']}-holder"]
    assert len(await bound(platform, f"{world['c1']}-holder")) == 3


async def test_permissions_of_admins_managers_and_members(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], world: dict[str, Any]
) -> None:
    bob_id = await register(api, "bob")
    bob = await login(api, "bob", "plum-kettle9")
    carol_id = await register(api, "carol")
    carol = await login(api, "carol", "plum-kettle9")
    alice_id = (await api.get("/api/v1/users/self", headers=alice)).json()["id"]

    denied = await api.post(
        WS, json={"name": "x", "clusterId": world["c1"], "flavorId": "gpu"}, headers=alice
    )
    assert denied.status_code == 403
    workspace_id = await create(
        api, admin, name="team", clusterId=world["c1"], flavorId="gpu", replica=1, managers=[alice_id]
    )
    # bob is not a member: the workspace does not exist for him
    assert (await api.get(WS, headers=bob)).json()["totalCount"] == 0
    assert (await api.get(f"{WS}/{workspace_id}", headers=bob)).status_code == 404

    # the manager sees, changes and grants access
    me = (await api.get("/api/v1/users/self", headers=alice)).json()
    assert me["managedWorkspaces"] == [{"id": workspace_id, "name": "team"}]
    assert me["workspaces"] == [{"id": workspace_id, "name": "team"}]
    resp = await api.patch(
        f"{WS}/{workspace_id}", json={"description": "ours", "queuePolicy": "balance"}, headers=alice
    )
    assert resp.status_code == 200, resp.text
    ws = await get(api, alice, workspace_id)
    assert ws["description"] == "ours" and ws["queuePolicy"] == "balance"
    assert ws["managers"] == [{"id": alice_id, "name": "alice"}]
    grant = await api.patch(f"/api/v1/users/{bob_id}", json={"workspaces": [workspace_id]}, headers=alice)
    assert grant.status_code == 200, grant.text
    add = await api.post(
        f"{WS}/{workspace_id}/nodes", json={"nodeIds": [world["gpu"][3]], "action": "add"}, headers=alice
    )
    assert add.status_code == 200, add.text

    # bob is a member now: he sees it and its nodes, but may not change, delete or grant
    assert [w["workspaceId"] for w in (await api.get(WS, headers=bob)).json()["items"]] == [workspace_id]
    assert (await get(api, bob, workspace_id))["currentNodeCount"] == 2
    nodes = await api.get("/api/v1/nodes", params={"workspaceId": workspace_id}, headers=bob)
    assert nodes.json()["totalCount"] == 2
    assert (
        await api.patch(f"{WS}/{workspace_id}", json={"description": "mine"}, headers=bob)
    ).status_code == 403
    assert (await api.delete(f"{WS}/{workspace_id}", headers=bob)).status_code == 403
    resp = await api.post(
        f"{WS}/{workspace_id}/nodes", json={"nodeIds": [world["gpu"][3]], "action": "remove"}, headers=bob
    )
    assert resp.status_code == 403
    resp = await api.patch(f"/api/v1/users/{carol_id}", json={"workspaces": [workspace_id]}, headers=bob)
    assert resp.status_code == 404  # bob shares no workspace with carol: she is not visible to him
    resp = await api.patch(f"/api/v1/users/{alice_id}", json={"workspaces": [workspace_id]}, headers=bob)
    assert resp.status_code == 403  # bob sees alice (same workspace) but manages nothing

    members = await api.get("/api/v1/users", params={"workspaceId": workspace_id}, headers=alice)
    names = {u["name"] for u in members.json()["items"]}
    assert names == {"alice", "bob"}  # admins need no grant and are not listed
    assert (await api.get("/api/v1/users", params={"workspaceId": workspace_id}, headers=carol)).json()[
        "totalCount"
    ] == 0

    # the manager revokes bob's access
    revoke = await api.patch(f"/api/v1/users/{bob_id}", json={"workspaces": []}, headers=alice)
    assert revoke.status_code == 200, revoke.text
    assert (await api.get(f"{WS}/{workspace_id}", headers=bob)).status_code == 404

    # a default workspace is open to everyone
    assert (
        await api.patch(f"{WS}/{workspace_id}", json={"isDefault": True}, headers=admin)
    ).status_code == 200
    assert (await api.get(f"{WS}/{workspace_id}", headers=carol)).status_code == 200
    carol_view = (await api.get("/api/v1/users/self", headers=carol)).json()
    assert carol_view["workspaces"] == [{"id": workspace_id, "name": "team"}]


async def test_user_workspaces_are_checked(
    api: httpx.AsyncClient, admin: dict[str, str], world: dict[str, Any]
) -> None:
    resp = await api.post(
        "/api/v1/users",
        json={"name": "dave", "password": "plum-kettle9", "workspaces": ["ghost-ws"]},
        headers=admin,
    )
    assert resp.status_code == 404 and "ghost-ws" in resp.json()["errorMessage"]
    user_id = await register(api, "erin")
    resp = await api.patch(f"/api/v1/users/{user_id}", json={"workspaces": ["ghost-ws"]}, headers=admin)
    assert resp.status_code == 404 and "ghost-ws" in resp.json()["errorMessage"]
    resp = await api.get("/api/v1/users", params={"workspaceId": "ghost-ws"}, headers=admin)
    assert resp.status_code == 404


async def test_patch_rules_and_delete(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, world: dict[str, Any]
) -> None:
    workspace_id = await create(
        api,
        admin,
        name="gone",
        clusterId=world["c1"],
        flavorId="gpu",
        replica=2,
        volumes=[{"type": "pfs", "mountPath": "/data", "capacity": "1Ti", "storageClass": "rbd"}],
    )
    path = f"{WS}/{workspace_id}"
    resp = await api.patch(path, json={"flavorId": "cpu"}, headers=admin)
    assert resp.status_code == 400 and "cannot change" in resp.json()["errorMessage"]
    changed = [{"type": "pfs", "mountPath": "/data", "capacity": "2Ti", "storageClass": "rbd"}]
    resp = await api.patch(path, json={"volumes": changed}, headers=admin)
    assert resp.status_code == 400 and "cannot change" in resp.json()["errorMessage"]
    resp = await api.patch(path, json={"imageSecretIds": ["no-secret"]}, headers=admin)
    assert resp.status_code == 404 and "no-secret" in resp.json()["errorMessage"]
    resp = await api.patch(
        path, json={"scopes": ["Infer"], "enablePreempt": True, "volumes": []}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    ws = await get(api, admin, workspace_id)
    assert ws["scopes"] == ["Infer"] and ws["enablePreempt"] is True and ws["volumes"] == []

    assert (await api.delete(path, headers=admin)).status_code == 200
    deadline_body = await poll_json_gone(api, admin, path)
    assert deadline_body == 404
    assert await bound(platform, workspace_id) == []
    node = (await api.get(f"/api/v1/nodes/{world['gpu'][0]}", headers=admin)).json()
    assert node["workspace"]["id"] == ""


async def poll_json_gone(api: httpx.AsyncClient, headers: dict[str, str], path: str) -> int:
    import asyncio
    import time

    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        resp = await api.get(path, headers=headers)
        if resp.status_code == 404:
            return 404
        await asyncio.sleep(0.2)
    return resp.status_code
