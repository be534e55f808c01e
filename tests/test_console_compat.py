"""Upstream's web console against this platform, driven exactly as it calls the API.

The facts are `../shared/console-calls.md`: every call goes to `/api/<path>` (answered as
`/api/v1/<path>` by the `--console` app), authentication is the `Token` cookie only (never an
`Authorization` header), login is an urlencoded form, and the start-up sequence is `GET /envs`,
login, `GET /users/{id}`, `GET /clusters`, `GET /workspaces`. The test then makes every v1.0 call of
the list for the console's pages over seeded data (nodes, a cluster, a workspace, a running
workload, an imported image, a fault) and requires a 2xx from each, except where a call is meant
to fail. The calls and their statuses are printed (`-s`) as the compatibility table.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.app import create_app
from primus_safe.webshell import DriverTerminals
from tests.conftest import ADMIN_PASSWORD, Platform
from tests.fixtures.clusters import cluster_body, wait_for_cluster
from tests.fixtures.nodes import add_flavor, this_machine_flavor, wait_for_node
from tests.fixtures.polling import poll_json, until
from tests.fixtures.registry import (
    Registry,
    internal_registry_at,
    running_registries,
    skopeo_push,
    small_image,
)
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.workloads import HostCluster, add_host_cluster, add_workspace, command, workload_body

SSH_PORT = 16540
REGISTRY_PORTS = {"source": (15030, "", ""), "internal": (15031, "", "")}
INDEX = "<!doctype html><title>console</title><div id=app></div>"
PUBLIC_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIK0wmN/Cr3JXqmLW7u+g9pTh+wyqDHpSQEIQczXkVx9q console@test"


farm, hosts = farm_fixtures(SSH_PORT, 2)


@pytest.fixture(scope="module")
def regs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Registry]]:
    root = tmp_path_factory.mktemp("console-registries")
    with running_registries(root, REGISTRY_PORTS) as started:
        skopeo_push(small_image(root / "small"), started["source"], "team/app:1")
        yield started


@pytest.fixture
def console_dir(tmp_path: Path) -> Path:
    """A stand-in console build: an index.html and one asset (the project ships no console code)."""
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text(INDEX)
    (tmp_path / "assets" / "app.js").write_text("console.log('console');")
    return tmp_path


@dataclass
class Console:
    """A cookie-only client of the `--console` app that records every API call it makes."""

    http: httpx.AsyncClient
    calls: list[tuple[str, str, int]] = field(default_factory=list)

    async def call(
        self, method: str, path: str, *, expect: int = 200, shown: str | None = None, **kwargs: Any
    ) -> Any:
        """`method /api<path>`; fails unless the status is `expect`; returns the JSON body."""
        resp = await self.http.request(method, "/api" + path, **kwargs)
        self.calls.append((method, shown or path.split("?")[0], resp.status_code))
        assert "authorization" not in {k.lower() for k in resp.request.headers}
        assert resp.status_code == expect, f"{method} {path}: {resp.status_code} {resp.text}"
        return (
            resp.json()
            if resp.content and resp.headers.get("content-type", "").startswith("application/json")
            else None
        )


@pytest.fixture
async def console(
    api: httpx.AsyncClient, platform: Platform, console_dir: Path, regs: dict[str, Registry]
) -> AsyncIterator[Console]:
    """The app as `primus-safe api --console DIR` serves it, on the session's database and worker."""
    with internal_registry_at(platform.settings, regs["internal"].host):
        settings = platform.settings.model_copy(update={"console_dir": console_dir})
        app = create_app(settings, terminals=DriverTerminals)  # as `primus-safe api --console` does
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield Console(http)


@pytest.fixture
async def cluster(
    api: httpx.AsyncClient, platform: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> HostCluster:
    return await add_host_cluster(platform, farm, hosts[:1])


async def test_the_console_build_is_served_beside_the_api(console: Console) -> None:
    http = console.http
    for page in ("/", "/nodes", "/workspace/detail"):  # the console's own routes: its index.html
        resp = await http.get(page)
        assert resp.status_code == 200 and resp.text == INDEX, (page, resp.status_code)
    asset = await http.get("/assets/app.js")
    assert asset.status_code == 200 and "javascript" in asset.headers["content-type"]
    assert (await http.get("/assets/missing.js")).status_code == 404
    for unknown in ("/api/v1/no-such-thing", "/api/no-such-thing"):  # API paths are never the index
        resp = await http.get(unknown)
        assert resp.status_code == 404 and resp.json()["errorCode"] == "Primus.00005", unknown
    assert (await http.get("/docs")).status_code == 200


async def test_login_as_the_console_sends_it(console: Console, platform: Platform) -> None:
    form = {"type": "default", "name": "root", "password": ADMIN_PASSWORD}
    resp = await console.http.post("/api/login", data=form)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert {"id", "roles", "managedWorkspaces", "token", "expire"} <= set(body)
    assert "system-admin" in body["roles"]
    assert {"Token", "userId", "userType"} <= set(resp.cookies)
    assert resp.cookies["userId"] == body["id"] and resp.cookies["userType"] == "default"
    sso = await console.http.post("/api/login", data={"type": "sso", "code": "c", "state": "s"})
    assert sso.status_code == 400 and "single sign-on is not configured" in sso.json()["errorMessage"]
    wrong = await console.http.post("/api/login", data={**form, "password": "not-the-password"})
    assert wrong.status_code == 401
    bad = await console.http.post(
        "/api/login", content=b"name=root", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert bad.status_code == 400 and "password" in bad.json()["errorMessage"]
    logout = await console.http.post("/api/logout")
    assert logout.status_code == 200
    assert (await console.http.get("/api/users/self")).status_code == 401  # the cookie is gone


async def test_every_page_of_the_console_works(
    console: Console,
    api: httpx.AsyncClient,
    admin: dict[str, str],
    platform: Platform,
    cluster: HostCluster,
    hosts: list[SSHHost],
    regs: dict[str, Registry],
) -> None:
    c = console.call
    # seeded over the plain API: a workspace, a running workload, a fault
    workspace_id = await add_workspace(api, admin, cluster, "console")
    body = workload_body(workspace_id, "echo started; sleep 300")
    workload_id = (await api.post("/api/v1/workloads", json=body, headers=admin)).json()["workloadId"]
    node_id = cluster.node_ids[0]

    # start-up: envs on the login page, login, the user, then the route guard's two lists
    envs = await c("GET", "/envs")
    assert envs["enableLog"] is True and envs["enableSsh"] is True and envs["authoringImage"]
    login = await c("POST", "/login", data={"type": "default", "name": "root", "password": ADMIN_PASSWORD})
    me = login["id"]
    await c("GET", f"/users/{me}", shown="/users/{id}")
    await c("GET", "/clusters")
    assert [w["workspaceId"] for w in (await c("GET", "/workspaces"))["items"]] == [workspace_id]

    # home, training, infer, authoring
    await _wait_running(console, workload_id)
    listed = await c("GET", "/workloads?phase=Running,Pending&src=console&workspaceId=" + workspace_id)
    assert [w["workloadId"] for w in listed["items"]] == [workload_id]
    detail = await c("GET", f"/workloads/{workload_id}", shown="/workloads/{id}")
    pod = detail["pods"][0]["podId"]
    await c(
        "GET", f"/workloads/{workload_id}/pods/{pod}/containers", shown="/workloads/{id}/pods/{id}/containers"
    )
    await c("GET", f"/workloads/{workload_id}/pods/{pod}/logs", shown="/workloads/{id}/pods/{id}/logs")
    # meant to fail: pods of a hosts cluster listen on their node's address, there are no Services
    await c("GET", f"/workloads/{workload_id}/service", shown="/workloads/{id}/service", expect=404)
    await c(
        "PATCH",
        f"/workloads/{workload_id}",
        shown="/workloads/{id}",
        json={"description": "from the console"},
    )
    logs = await _search_logs(console, workload_id)
    await c(
        "POST",
        f"/workloads/{workload_id}/logs/{logs['hits']['hits'][0]['_id']}/context",
        shown="/workloads/{id}/logs/{id}/context",
        json={},
    )
    await c("GET", f"/nodeflavors/{cluster.flavor_id}/avail", shown="/nodeflavors/{id}/avail")
    await c("GET", "/nodes")
    authoring = workload_body(workspace_id, "sleep 1", displayName="authoring")
    second = (await c("POST", "/workloads", json=authoring))["workloadId"]
    clones = await c("POST", "/workloads/clone", json={"workloadIds": [second]})
    await c("POST", f"/workloads/{second}/stop", shown="/workloads/{id}/stop")
    await c("POST", "/workloads/stop", json={"workloadIds": [clones[0]["workloadId"]]})
    await c("POST", "/workloads/delete", json={"workloadIds": [clones[0]["workloadId"]]})
    await c("DELETE", f"/workloads/{second}", shown="/workloads/{id}")

    # nodes (and the addon templates of the node template page)
    await c("GET", "/addontemplates")
    nodes = await c("GET", "/nodes?limit=-1")
    assert node_id in [n["nodeId"] for n in nodes["items"]]
    await c("GET", f"/nodes/{node_id}", shown="/nodes/{id}")
    await c("PATCH", f"/nodes/{node_id}", shown="/nodes/{id}", json={"labels": {"team": "console"}})
    await c("GET", f"/nodes/{node_id}/logs", shown="/nodes/{id}/logs")
    await c("GET", f"/nodes/{node_id}/reboot/logs", shown="/nodes/{id}/reboot/logs")
    await c("GET", "/nodetemplates")
    await c("GET", "/secrets?type=ssh")
    spare = hosts[1]  # registered, made a cluster of its own, then both are deleted
    await add_flavor(platform.state.sessions, "console-machine", this_machine_flavor())
    run = cluster.flavor_id[1:]
    registered = await c(
        "POST",
        "/nodes",
        json={
            "privateIP": spare.address,
            "port": spare.port,
            "flavorId": "console-machine",
            "templateId": f"t{run}",
            "sshSecretId": f"ssh{run}",
        },
    )
    spare_id = registered["nodeId"]
    await wait_for_node(api, admin, spare_id, phases=("Ready",))
    created = await c(
        "POST", "/clusters", json=cluster_body("console-spare", [spare_id], sshSecretId=f"ssh{run}")
    )
    await wait_for_cluster(api, admin, created["clusterId"], phases=("Ready",))
    await c("DELETE", f"/clusters/{created['clusterId']}", shown="/clusters/{id}")
    await poll_json(api, admin, f"/api/v1/nodes/{spare_id}", lambda n: not n["clusterId"], within=60)
    await c("DELETE", f"/nodes/{spare_id}", shown="/nodes/{id}")

    # clusters
    await c("GET", f"/clusters/{cluster.cluster_id}", shown="/clusters/{id}")
    await c("PATCH", f"/clusters/{cluster.cluster_id}", shown="/clusters/{id}", json={"isProtected": False})
    await c(
        "POST",
        f"/clusters/{cluster.cluster_id}/nodes",
        shown="/clusters/{id}/nodes",
        json={"nodeIds": [node_id], "action": "add"},  # in it already: nothing to do, answered as done
    )

    # workspace
    await c("GET", f"/workspaces/{workspace_id}", shown="/workspaces/{id}")
    await c("PATCH", f"/workspaces/{workspace_id}", shown="/workspaces/{id}", json={"description": "console"})
    await c(
        "POST",
        f"/workspaces/{workspace_id}/nodes",
        shown="/workspaces/{id}/nodes",
        json={"nodeIds": [node_id], "action": "add"},
    )
    other = await c(
        "POST",
        "/workspaces",
        json={"name": "spare", "clusterId": cluster.cluster_id, "flavorId": cluster.flavor_id, "replica": 0},
    )
    await c("DELETE", f"/workspaces/{other['workspaceId']}", shown="/workspaces/{id}")

    # images and registries
    registry = await c(
        "POST",
        "/image-registries",
        json={"name": "src", "url": f"http://{regs['source'].host}", "insecure": True},
    )
    assert isinstance(await c("GET", "/image-registries"), list | dict)
    await c(
        "PUT",
        f"/image-registries/{registry['id']}",
        shown="/image-registries/{id}",
        json={"name": "src", "url": f"http://{regs['source'].host}", "insecure": True},
    )
    started = await c("POST", "/images:import", json={"source": f"{regs['source'].host}/team/app:1"})
    image_id = started["imageId"]
    await _wait_imported(console, image_id)
    await c("GET", "/images?page_num=1&page_size=10&orderBy=created_at&order=desc")
    await c("DELETE", f"/images/{image_id}", shown="/images/{id}")
    await c("DELETE", f"/image-registries/{registry['id']}", shown="/image-registries/{id}")

    # node flavors
    await c("GET", "/nodeflavors")
    flavor = await c(
        "POST", "/nodeflavors", json={"name": "console-flavor", "cpu": {"quantity": "8"}, "memory": "32Gi"}
    )
    await c("PATCH", f"/nodeflavors/{flavor['flavorId']}", shown="/nodeflavors/{id}", json={"memory": "64Gi"})
    await c("DELETE", f"/nodeflavors/{flavor['flavorId']}", shown="/nodeflavors/{id}")

    # secrets (the three types the console lists)
    general = await c(
        "POST",
        "/secrets",
        json={"name": "console-general", "type": "general", "params": [{"token": "s3cret", "region": "eu"}]},
    )
    listed_secrets = await c("GET", "/secrets?type=ssh,image,general")
    assert "console-general" in [s["secretId"] for s in listed_secrets["items"]]
    shown = await c("GET", f"/secrets/{general['secretId']}", shown="/secrets/{id}")
    assert "s3cret" not in str(shown)
    await c(
        "PATCH",
        f"/secrets/{general['secretId']}",
        shown="/secrets/{id}",
        json={"params": [{"token": "other"}]},
    )
    await c("DELETE", f"/secrets/{general['secretId']}", shown="/secrets/{id}")

    # public keys
    key = await c("POST", "/publickeys", json={"publicKey": PUBLIC_KEY, "description": "laptop"})
    await c("GET", "/publickeys")
    key_id = key["id"]
    await c(
        "PATCH",
        f"/publickeys/{key_id}/description",
        shown="/publickeys/{id}/description",
        json={"description": "x"},
    )
    await c("PATCH", f"/publickeys/{key_id}/status", shown="/publickeys/{id}/status", json={"status": False})
    await c("DELETE", f"/publickeys/{key_id}", shown="/publickeys/{id}")

    # faults
    fault = (
        await api.post("/api/v1/faults", json={"nodeId": node_id, "monitorId": "console"}, headers=admin)
    ).json()
    assert [f["id"] for f in (await c("GET", "/faults"))["items"]] == [fault["id"]]
    await c("POST", f"/faults/{fault['id']}/stop", shown="/faults/{id}/stop")
    await c("DELETE", f"/faults/{fault['id']}", shown="/faults/{id}")

    # preflight (the diagnoser page)
    job = await c(
        "POST",
        "/opsjobs",
        json={
            "name": "check",
            "type": "preflight",
            "inputs": [{"name": "node", "value": node_id}],
            "resource": {"cpu": "0", "memory": "64Mi"},
            "image": "none",
            "entryPoint": command("echo '[SUCCESS] ok'"),
        },
    )
    await c("GET", "/opsjobs")
    await c("GET", f"/opsjobs/{job['jobId']}", shown="/opsjobs/{id}")
    await c("POST", f"/opsjobs/{job['jobId']}/stop", shown="/opsjobs/{id}/stop")
    await c("DELETE", f"/opsjobs/{job['jobId']}", shown="/opsjobs/{id}")

    # user management, then the running workload is stopped and the user logs out
    carol = await c("POST", "/users", json={"name": "carol", "password": "quiet-harbor-lantern"})
    await c("GET", "/users")
    await c("GET", "/users/self")
    await c("PATCH", f"/users/{carol['id']}", shown="/users/{id}", json={"workspaces": [workspace_id]})
    await c("DELETE", f"/users/{carol['id']}", shown="/users/{id}")
    await c("POST", f"/workloads/{workload_id}/stop", shown="/workloads/{id}/stop")
    await c("POST", "/logout")

    print("\nconsole compatibility: call, status")
    for method, path, status in dict.fromkeys(console.calls):  # each call once (polls repeat)
        print(f"  {method:6} {path:48} {status}")


async def _wait_running(console: Console, workload_id: str) -> None:
    async def running() -> bool:
        resp = await console.http.get(f"/api/workloads/{workload_id}")
        return resp.status_code == 200 and resp.json()["phase"] == "Running"

    await until(running, within=60)


async def _search_logs(console: Console, workload_id: str) -> dict[str, Any]:
    """The log search page: waits until the pod's first line is collected."""
    for _ in range(120):
        body: dict[str, Any] = await console.call(
            "POST",
            f"/workloads/{workload_id}/logs",
            shown="/workloads/{id}/logs",
            json={"keywords": ["started"]},
        )
        if body["hits"]["total"]["value"]:
            return body
        await asyncio.sleep(0.5)
    raise AssertionError("the workload's first line was never collected")


async def _wait_imported(console: Console, image_id: int) -> None:
    async def ready() -> bool:
        body = await console.call(
            "GET", f"/images/{image_id}/importing-details", shown="/images/{id}/importing-details"
        )
        return bool(body["status"] != "importing")

    await until(ready, within=60)
