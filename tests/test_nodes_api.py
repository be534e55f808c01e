"""Node API against real sshd hosts: onboarding to Ready, failures with readable reasons, filters,
patch semantics, deletion rules, logs, and bad input that starts nothing."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from db.logs import OperationLog
from db.nodes import Node
from domain.nodes import READY
from tests.conftest import Platform
from tests.fixtures.nodes import (
    add_flavor,
    add_ssh_secret,
    add_template,
    count_runs,
    machine_cores,
    prepare_node_settings,
    reset_user_home,
    this_machine_flavor,
    wait_for_node,
)
from tests.fixtures.sshd import SSHFarm, SSHHost, next_addresses, sshd_farm
from tests.fixtures.workspaces import add_workspace

NODES = "/api/v1/nodes"


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm() as started:
        yield started


@pytest.fixture(scope="module")
def hosts(farm: SSHFarm) -> list[SSHHost]:
    return farm.add_hosts(4)


@pytest.fixture
async def refs(
    api: httpx.AsyncClient, platform: Platform, farm: SSHFarm, tmp_path: Path
) -> AsyncIterator[Platform]:
    """Flavors, templates and secrets the nodes refer to; settings pointed at the stand-ins."""
    previous = prepare_node_settings(platform.settings, farm, tmp_path / "addons")
    reset_user_home(farm)
    sessions, box = platform.state.sessions, platform.state.box
    await add_flavor(sessions, "this-machine", this_machine_flavor())
    big = this_machine_flavor() | {"cpu": {"product": "", "quantity": "512"}}
    await add_flavor(sessions, "too-big", big)
    await add_template(sessions, "real-addons", ["sysctl-inotify", "ok-addon"])
    await add_template(sessions, "two-addons", ["ok-addon", "second-addon"])
    await add_template(sessions, "failing", ["ok-addon", "fail-addon"])
    await add_ssh_secret(sessions, box, "ssh-password", farm, password=farm.password)
    await add_ssh_secret(sessions, box, "ssh-key", farm, key=True)
    await add_ssh_secret(sessions, box, "ssh-wrong", farm, password="wrong-password")
    yield platform
    for name, value in previous.items():
        setattr(platform.settings, name, value)


def node_body(host: SSHHost, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "privateIP": host.address,
        "port": host.port,
        "flavorId": "this-machine",
        "templateId": "real-addons",
        "sshSecretId": "ssh-password",
    }
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def register(api: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]) -> str:
    resp = await api.post(NODES, json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["nodeId"])


async def logs(api: httpx.AsyncClient, admin: dict[str, str], node_id: str, **query: Any) -> list[str]:
    resp = await api.get(f"{NODES}/{node_id}/logs", params=query, headers=admin)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["logs"])


async def test_password_node_reaches_ready_with_addon_output(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[0], hostname="gpu-node-a", labels={"rack": "r1"}))
    assert node_id.startswith("gpu-node-a-") and len(node_id) == len("gpu-node-a-") + 5
    node = await wait_for_node(api, admin, node_id, phases=(READY, "SSHFailed", "HostnameFailed"))
    assert node["phase"] == READY and node["available"] is True and node["message"] == ""
    assert node["isAddonsInstalled"] is True
    assert node["nodeName"] == "gpu-node-a" and node["internalIP"] == hosts[0].address
    assert node["hostKeyFingerprint"].startswith("ssh-ed25519 SHA256:")
    assert node["customerLabels"] == {"rack": "r1"} and node["taints"] == []
    assert node["totalResources"]["cpu"] == machine_cores()
    reserved = machine_cores() - -(-machine_cores() * 10 // 100)
    assert node["availResources"]["cpu"] == reserved
    assert node["lastStartupTime"] and node["creationTime"]
    assert (farm.home / "hostname-calls").read_text().split() == ["gpu-node-a"]
    lines = await logs(api, admin, node_id)
    text = "\n".join(lines)
    assert "done: inotify limits raised" in text  # the real catalogue script's own output
    assert "ok-addon ran" in text and "addon ok-addon installed" in text
    assert "hostname would now be gpu-node-a" in text
    assert lines[-1].endswith("INFO phase Ready")
    assert count_runs(farm, "ok-addon") == 1


async def test_key_auth_without_hostname(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[1], sshSecretId="ssh-key", templateId="two-addons"))
    assert node_id.startswith(hosts[1].address.replace(".", "-") + "-")
    node = await wait_for_node(api, admin, node_id, phases=(READY, "SSHFailed", "HostnameFailed"))
    assert node["phase"] == READY and node["available"] is True, node
    assert node["nodeName"] == hosts[1].address
    assert not (farm.home / "hostname-calls").exists()  # no hostname given: nothing set


async def test_wrong_password_fails_within_seconds(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    started = time.monotonic()
    node_id = await register(api, admin, node_body(hosts[0], sshSecretId="ssh-wrong"))
    node = await wait_for_node(api, admin, node_id, phases=("SSHFailed", READY), within=20)
    assert time.monotonic() - started < 10
    assert node["phase"] == "SSHFailed" and node["available"] is False
    assert "rejected the credentials" in node["message"], node["message"]
    assert any("SSHFailed" in line for line in await logs(api, admin, node_id))


async def test_closed_port_is_ssh_failed_after_bounded_retries(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform
) -> None:
    address = next_addresses(1)[0]
    node_id = await register(api, admin, node_body(SSHHost(address, 22304, Path("/nonexistent"))))
    node = await wait_for_node(api, admin, node_id, phases=("SSHFailed", READY), within=30)
    assert node["phase"] == "SSHFailed" and "refused" in node["message"].lower(), node


async def test_hostname_failure(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[2], hostname="fail-host"))
    node = await wait_for_node(api, admin, node_id, phases=("HostnameFailed", READY, "SSHFailed"))
    assert node["phase"] == "HostnameFailed" and node["available"] is False
    assert "fail-host" in node["message"] and "Access denied" in node["message"]
    assert node["isAddonsInstalled"] is False


async def test_failing_addon_and_flavor_mismatch(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    failing = await register(api, admin, node_body(hosts[0], templateId="failing"))
    mismatch = await register(api, admin, node_body(hosts[1], flavorId="too-big", templateId="two-addons"))
    node = await wait_for_node(api, admin, failing, phases=(READY, "SSHFailed"))
    assert node["phase"] == READY and node["available"] is False and node["isAddonsInstalled"] is False
    assert "addon fail-addon failed with exit code 3" in node["message"], node["message"]
    text = "\n".join(await logs(api, admin, failing))
    assert "about to fail" in text and "fatal: simulated failure" in text and "ok-addon ran" in text
    node = await wait_for_node(api, admin, mismatch, phases=(READY, "SSHFailed"))
    assert node["phase"] == READY and node["available"] is False and node["isAddonsInstalled"] is True
    assert f"the flavor has 512 CPU cores but the node has {machine_cores()}" in node["message"]


async def test_list_filters_brief_paging_and_visibility(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    ready = await register(api, admin, node_body(hosts[0], hostname="ready-node"))
    broken = await register(api, admin, node_body(hosts[1], sshSecretId="ssh-wrong", flavorId="too-big"))
    await wait_for_node(api, admin, ready, phases=(READY,))
    await wait_for_node(api, admin, broken, phases=("SSHFailed",))

    async def ids(headers: dict[str, str] = admin, **query: Any) -> tuple[int, list[str]]:
        resp = await api.get(NODES, params=query, headers=headers)
        assert resp.status_code == 200, resp.text
        return resp.json()["totalCount"], [i["nodeId"] for i in resp.json()["items"]]

    assert await ids() == (2, sorted([ready, broken]))
    assert await ids(flavorId="too-big") == (1, [broken])
    assert await ids(nodeId=ready) == (1, [ready])
    assert await ids(phase="SSHFailed,HostnameFailed") == (1, [broken])
    assert await ids(available="true") == (1, [ready])
    assert await ids(available="false") == (1, [broken])
    assert await ids(isAddonsInstalled="true") == (1, [ready])
    assert await ids(clusterId="") == (2, sorted([ready, broken]))
    assert await ids(clusterId="some-cluster") == (0, [])
    assert await ids(limit=1) == (2, sorted([ready, broken])[:1])
    assert await ids(limit=-1, offset=1) == (2, sorted([ready, broken])[1:])
    assert await ids(offset=5) == (2, [])
    resp = await api.get(NODES, params={"brief": "true"}, headers=admin)
    assert all(set(item) == {"nodeId", "nodeName", "internalIP"} for item in resp.json()["items"])
    resp = await api.get(NODES, params={"available": "maybe"}, headers=admin)
    assert resp.status_code == 400 and "available" in resp.json()["errorMessage"]
    resp = await api.get(f"{NODES}/no-such-node", headers=admin)
    assert resp.status_code == 404 and resp.json()["errorCode"] == "Primus.03002"
    # a regular user sees only nodes bound to one of their workspaces
    assert await ids(alice) == (0, [])
    assert (await api.get(f"{NODES}/{ready}", headers=alice)).status_code == 404
    async with refs.state.sessions() as session, session.begin():
        await session.execute(update(Node).where(Node.id == ready).values(workspace_id="team-a"))
    await add_workspace(refs.state.sessions, "team-a")
    await admin_sets_workspaces(api, admin, "alice", ["team-a"])
    assert await ids(alice) == (1, [ready])
    assert await ids(alice, workspaceId="team-a") == (1, [ready])
    assert (await api.get(f"{NODES}/{ready}", headers=alice)).json()["workspace"] == {
        "id": "team-a",
        "name": "team-a",
    }
    assert (await api.get(f"{NODES}/{ready}/logs", headers=alice)).status_code == 403
    # members may taint their node but not move it
    resp = await api.patch(f"{NODES}/{ready}", json={"port": 2200}, headers=alice)
    assert resp.status_code == 403


async def admin_sets_workspaces(
    api: httpx.AsyncClient, admin: dict[str, str], name: str, ws: list[str]
) -> None:
    users = (await api.get("/api/v1/users", params={"name": name}, headers=admin)).json()["items"]
    resp = await api.patch(f"/api/v1/users/{users[0]['id']}", json={"workspaces": ws}, headers=admin)
    assert resp.status_code == 200, resp.text


async def test_patch_taints_labels_template_and_address(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[0], hostname="patch-node", templateId="two-addons"))
    await wait_for_node(api, admin, node_id, phases=(READY,))
    assert count_runs(farm, "ok-addon") == 1
    taint = {"key": "maintenance", "value": "true", "effect": "NoSchedule"}
    resp = await api.patch(
        f"{NODES}/{node_id}", json={"taints": [taint], "labels": {"a": "b"}}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    node = (await api.get(f"{NODES}/{node_id}", headers=admin)).json()
    assert node["taints"] == [taint] and node["customerLabels"] == {"a": "b"}
    assert node["available"] is False and "primus-safe.maintenance=true" in node["message"]
    async with refs.state.sessions() as session:
        stored = await session.get(Node, node_id)
        assert stored is not None and stored.taints[0]["key"] == "primus-safe.maintenance"
    for bad in (
        {"labels": {"primus-safe.amd.com/gpu": "x"}},
        {"taints": [taint, taint]},
        {"taints": [{"key": "k", "effect": "Sometimes"}]},
        {"port": 0},
        {"hostKeyFingerprint": "ssh-ed25519 SHA256:forged"},
    ):
        resp = await api.patch(f"{NODES}/{node_id}", json=bad, headers=admin)
        assert resp.status_code == 400, (bad, resp.text)
    resp = await api.patch(f"{NODES}/{node_id}", json={"taints": []}, headers=admin)
    # a new template re-runs addons: the already-installed one is skipped, the new one runs
    await add_template(refs.state.sessions, "three-addons", ["ok-addon", "second-addon", "sysctl-inotify"])
    resp = await api.patch(f"{NODES}/{node_id}", json={"templateId": "three-addons"}, headers=admin)
    assert resp.status_code == 200
    await wait_until(lambda: _installed(api, admin, node_id, "three-addons"))
    assert count_runs(farm, "second-addon") == 2 and count_runs(farm, "ok-addon") == 2
    # a new address re-runs reachability: move the node to another host
    resp = await api.patch(f"{NODES}/{node_id}", json={"privateIP": hosts[3].address}, headers=admin)
    assert resp.status_code == 200
    # host 3 has another host key than the one trusted for host 0: refused before logging in
    await wait_until(lambda: _phase(api, admin, node_id, "SSHFailed"))
    node = (await api.get(f"{NODES}/{node_id}", headers=admin)).json()
    assert "host key changed" in node["message"] and "hostKeyFingerprint" in node["message"]
    resp = await api.patch(f"{NODES}/{node_id}", json={"hostKeyFingerprint": ""}, headers=admin)
    assert resp.status_code == 200
    await wait_until(lambda: _phase(api, admin, node_id, READY))
    assert await _log_contains(api, admin, node_id, f"reached {hosts[3].address}")


async def _installed(api: httpx.AsyncClient, admin: dict[str, str], node_id: str, template: str) -> bool:
    node = (await api.get(f"{NODES}/{node_id}", headers=admin)).json()
    return bool(node["templateId"] == template and node["isAddonsInstalled"] and node["available"])


async def _log_contains(api: httpx.AsyncClient, admin: dict[str, str], node_id: str, text: str) -> bool:
    return any(text in line for line in await logs(api, admin, node_id))


async def _phase(api: httpx.AsyncClient, admin: dict[str, str], node_id: str, phase: str) -> bool:
    node = (await api.get(f"{NODES}/{node_id}", headers=admin)).json()
    return bool(node["phase"] == phase and node["available"] == (phase == READY))


async def wait_until(check: Any, within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.2)
    raise AssertionError("condition not met in time")


async def test_delete_refused_while_bound_then_removes_node_and_logs(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[2]))
    await wait_for_node(api, admin, node_id, phases=(READY,))
    async with refs.state.sessions() as session, session.begin():
        await session.execute(update(Node).where(Node.id == node_id).values(cluster_id="prod"))
    resp = await api.delete(f"{NODES}/{node_id}", headers=admin)
    assert resp.status_code == 409 and "bound to cluster prod" in resp.json()["errorMessage"]
    async with refs.state.sessions() as session, session.begin():
        await session.execute(update(Node).where(Node.id == node_id).values(cluster_id=""))
    assert (await api.delete(f"{NODES}/{node_id}", headers=admin)).status_code == 200
    assert (await api.get(f"{NODES}/{node_id}", headers=admin)).status_code == 404

    async def gone() -> bool:
        async with refs.state.sessions() as session:
            rows = await session.execute(
                select(func.count())
                .select_from(OperationLog)
                .where(OperationLog.resource_type == "node", OperationLog.resource_id == node_id)
            )
            return await session.get(Node, node_id) is None and rows.scalar_one() == 0

    await wait_until(gone)
    # the IP is free again
    await register(api, admin, node_body(hosts[2]))


async def test_logs_tail_and_since(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[3], hostKeyFingerprint=None))
    await wait_for_node(api, admin, node_id, phases=(READY,))
    everything = await logs(api, admin, node_id)
    assert len(everything) > 5
    assert await logs(api, admin, node_id, tailLines=2) == everything[-2:]
    assert await logs(api, admin, node_id, sinceSeconds=600) == everything
    hour_ago = datetime.now(UTC) - timedelta(hours=1)
    async with refs.state.sessions() as session, session.begin():
        first_id = (
            await session.execute(
                select(func.min(OperationLog.id)).where(
                    OperationLog.resource_type == "node", OperationLog.resource_id == node_id
                )
            )
        ).scalar()
        await session.execute(
            update(OperationLog).where(OperationLog.id == first_id).values(created_at=hour_ago)
        )
    assert await logs(api, admin, node_id, sinceSeconds=600) == everything[1:]
    resp = await api.get(f"{NODES}/{node_id}/logs", params={"tailLines": 0}, headers=admin)
    assert resp.status_code == 400


async def _node_workflows(platform: Platform) -> int:
    query = f"WorkflowType = 'Node' AND TaskQueue = '{platform.settings.queues.control}'"
    return (await platform.state.temporal.count_workflows(query)).count


async def test_bad_input_is_400_404_409_and_starts_nothing(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    first = await register(api, admin, node_body(hosts[0]))
    await wait_for_node(api, admin, first, phases=(READY,))
    await asyncio.sleep(1)
    before = await _node_workflows(refs)
    async with refs.state.sessions() as session, session.begin():
        from db.secrets import Secret

        secret = await session.get(Secret, "ssh-password")
        assert secret is not None
        session.add(
            Secret(
                id="image-secret",
                name="image-secret",
                type="image",
                params_encrypted=secret.params_encrypted,
                bind_all_workspaces=False,
                resource_version=1,
                created_at=secret.created_at,
                updated_at=secret.updated_at,
            )
        )
    cases: list[tuple[dict[str, Any], int, str]] = [
        (node_body(hosts[1], privateIP="300.1.1.1"), 400, "privateIP"),
        (node_body(hosts[1], privateIP="127.0.0.9; reboot"), 400, "privateIP"),
        (node_body(hosts[1], port=0), 400, "port"),
        (node_body(hosts[1], port=70000), 400, "port"),
        (node_body(hosts[1], port="22"), 400, "port"),
        (node_body(hosts[1], hostname="node;rm -rf /"), 400, "hostname"),
        (node_body(hosts[1], hostname="$(reboot)"), 400, "hostname"),
        (node_body(hosts[1], labels={"k": "v`id`"}), 400, "label value"),
        (node_body(hosts[1], labels={"primus-safe.amd.com/x": "v"}), 400, "reserved"),
        (node_body(hosts[1], flavorId="nope"), 404, "NodeFlavor nope"),
        (node_body(hosts[1], templateId="nope"), 404, "NodeTemplate nope"),
        (node_body(hosts[1], sshSecretId="nope"), 404, "Secret nope"),
        (node_body(hosts[1], sshSecretId="image-secret"), 400, "not ssh"),
        (node_body(hosts[0]), 409, "privateIP"),
        (node_body(hosts[1], unknown=1), 400, "unknown"),
        ({"privateIP": hosts[1].address}, 400, "flavorId"),
    ]
    for body, status, text in cases:
        resp = await api.post(NODES, json=body, headers=admin)
        assert resp.status_code == status, (body, resp.text)
        assert text in resp.json()["errorMessage"], (body, resp.text)
    resp = await api.post(NODES, json=node_body(hosts[1]), headers=alice)
    assert resp.status_code == 403
    resp = await api.patch(f"{NODES}/{first}", json={"flavorId": "nope"}, headers=admin)
    assert resp.status_code == 404 and "NodeFlavor nope" in resp.json()["errorMessage"]
    resp = await api.patch(f"{NODES}/{first}", json={"privateIP": "1.2.3.4 && reboot"}, headers=admin)
    assert resp.status_code == 400
    resp = await api.get(NODES, headers=admin)
    assert resp.json()["totalCount"] == 1
    await asyncio.sleep(1)
    assert await _node_workflows(refs) == before


async def test_references_in_use_cannot_be_deleted(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    node_id = await register(api, admin, node_body(hosts[1], sshSecretId="ssh-key", templateId="two-addons"))
    for path in (
        "/api/v1/nodeflavors/this-machine",
        "/api/v1/nodetemplates/two-addons",
        "/api/v1/secrets/ssh-key",
    ):
        resp = await api.delete(path, headers=admin)
        assert resp.status_code == 409 and node_id in resp.json()["errorMessage"], (path, resp.text)
    await wait_for_node(api, admin, node_id, phases=(READY,))
    assert (await api.delete(f"{NODES}/{node_id}", headers=admin)).status_code == 200

    async def freed() -> bool:
        return (await api.delete("/api/v1/nodetemplates/two-addons", headers=admin)).status_code == 200

    await wait_until(freed)
    assert (await api.delete("/api/v1/secrets/ssh-key", headers=admin)).status_code == 200


async def test_delete_during_addon_installation_stops_it(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    await add_template(refs.state.sessions, "slow", ["slow-addon"])
    node_id = await register(api, admin, node_body(hosts[3], templateId="slow"))

    async def installing() -> bool:
        return await _log_contains(api, admin, node_id, "slow step 2")

    await wait_until(installing)
    started = time.monotonic()
    assert (await api.delete(f"{NODES}/{node_id}", headers=admin)).status_code == 200

    async def gone() -> bool:
        async with refs.state.sessions() as session:
            return await session.get(Node, node_id) is None

    await wait_until(gone)
    assert time.monotonic() - started < 5  # the 8-second addon was not waited for
    described = await refs.state.temporal.get_workflow_handle(f"node/{node_id}").describe()
    assert described.status is not None and described.status.name == "COMPLETED"
