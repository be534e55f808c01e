"""Cluster API against real sshd hosts, the Temporal dev server and a fake Kubernetes API server:
the `hosts` and `kubespray` provisioners end to end (create -> log -> bind -> add/remove nodes ->
delete), failures with readable reasons, and bad input that records and starts nothing."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Replayer

from db.clusters import Cluster
from db.nodes import Node
from domain.nodes import READY
from drivers.host import HostDriver, HostNode
from drivers.kubernetes import KubernetesDriver
from drivers.ssh import SSHTarget
from tests.conftest import Platform
from tests.fixtures.clusters import (
    add_image_secret,
    cluster_body,
    install_kubespray_standin,
    standin_calls,
    standin_running,
    wait_for_cluster,
    wait_for_gone,
    wait_for_node_phase,
)
from tests.fixtures.fake_kube import FakeKube
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.nodes import (
    add_flavor,
    add_ssh_secret,
    add_template,
    prepare_node_settings,
    this_machine_flavor,
    wait_for_node,
)
from tests.fixtures.sshd import SSHFarm, SSHHost, sshd_farm
from workflows.cluster import ClusterWorkflow, NodeManageWorkflow
from workflows.common import CLUSTER, PHASE, RESOURCE_TYPE

CLUSTERS = "/api/v1/clusters"
ADDRESSES = [f"127.0.0.{n}" for n in range(150, 155)]
KUBE_PORT = 16460


def unique(prefix: str) -> str:
    """A cluster name no earlier run (or the other database backend) used: workflow ids derive from it."""
    return f"{prefix}-{uuid.uuid4().hex[:6]}"


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm() as started:
        yield started


@pytest.fixture(scope="module")
def hosts(farm: SSHFarm) -> list[SSHHost]:
    return farm.add_hosts(len(ADDRESSES), addresses=ADDRESSES)


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube(port=KUBE_PORT) as fake:
        yield fake


@pytest.fixture
async def refs(
    api: httpx.AsyncClient, platform: Platform, farm: SSHFarm, kube: FakeKube, tmp_path: Path
) -> AsyncIterator[Platform]:
    """Flavor, template and secrets; the command table points at the stand-ins."""
    previous = prepare_node_settings(platform.settings, farm, tmp_path / "addons")
    container_run = install_kubespray_standin(farm, kube.kubeconfig())
    platform.settings.node_commands = {**platform.settings.node_commands, "container_run": container_run}
    previous["cluster_heartbeat_timeout_seconds"] = platform.settings.cluster_heartbeat_timeout_seconds
    platform.settings.cluster_heartbeat_timeout_seconds = 3
    sessions, box = platform.state.sessions, platform.state.box
    await add_flavor(sessions, "this-machine", this_machine_flavor())
    await add_template(sessions, "bare", [])
    await add_ssh_secret(sessions, box, "ssh-key", farm, key=True)
    await add_ssh_secret(sessions, box, "ssh-password", farm, password=farm.password)
    await add_image_secret(sessions, box, "image-secret")
    yield platform
    for name, value in previous.items():
        setattr(platform.settings, name, value)


async def ready_node(api: httpx.AsyncClient, admin: dict[str, str], host: SSHHost, **extra: Any) -> str:
    """Register a node on an sshd host and wait until it is Ready."""
    body = {
        "privateIP": host.address,
        "port": host.port,
        "flavorId": "this-machine",
        "templateId": "bare",
        "sshSecretId": "ssh-key",
        **extra,
    }
    resp = await api.post("/api/v1/nodes", json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    node_id = str(resp.json()["nodeId"])
    node = await wait_for_node(api, admin, node_id, phases=(READY, "SSHFailed", "HostnameFailed"))
    assert node["phase"] == READY, node
    return node_id


async def create(api: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]) -> str:
    resp = await api.post(CLUSTERS, json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["clusterId"])


async def logs(api: httpx.AsyncClient, admin: dict[str, str], cluster_id: str, **query: Any) -> list[str]:
    resp = await api.get(f"{CLUSTERS}/{cluster_id}/logs", params=query, headers=admin)
    assert resp.status_code == 200, resp.text
    return list(resp.json()["logs"])


async def node(api: httpx.AsyncClient, admin: dict[str, str], node_id: str) -> dict[str, Any]:
    resp = await api.get(f"/api/v1/nodes/{node_id}", headers=admin)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def search_attributes(
    client: Client, workflow_id: str, phase: str, within: float = 10
) -> dict[str, Any]:
    """The workflow's type, cluster and phase attributes once the phase is `phase` (the workflow
    records the outcome in the database first, then in its attributes)."""
    deadline = time.monotonic() + within
    while True:
        attrs = (await client.get_workflow_handle(workflow_id).describe()).typed_search_attributes
        seen = {"type": attrs.get(RESOURCE_TYPE), "cluster": attrs.get(CLUSTER), "phase": attrs.get(PHASE)}
        if seen["phase"] == phase or time.monotonic() > deadline:
            return seen
        await asyncio.sleep(0.1)


async def workflow_exists(client: Client, workflow_id: str) -> bool:
    try:
        await client.get_workflow_handle(workflow_id).describe()
    except RPCError as err:
        assert err.status == RPCStatusCode.NOT_FOUND
        return False
    return True


async def test_hosts_cluster_lifecycle(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    refs: Platform,
    farm: SSHFarm,
    hosts: list[SSHHost],
) -> None:
    first, second, third = [await ready_node(api, admin, h) for h in hosts[:3]]
    name = unique("hosts")
    cluster_id = await create(api, admin, cluster_body(name, [first, second], labels={"env": "test"}))
    assert cluster_id == name
    cluster = await wait_for_cluster(api, admin, cluster_id, phases=("Ready", "Failed"))
    assert cluster["phase"] == "Ready", cluster
    assert cluster["provisioner"] == "hosts" and cluster["nodes"] == [first, second]
    assert cluster["kubernetesVersion"] == "1.32.5" and cluster["kubeNetworkPlugin"] == "flannel"
    assert cluster["labels"] == {"env": "test"} and cluster["message"] == "" and cluster["endpoint"] == ""
    text = "\n".join(await logs(api, admin, cluster_id))
    assert "provisioning with hosts started" in text and "system: Linux" in text
    assert "an odd count (1, 3, 5) is recommended" in text
    assert text.count("pods directory ready") == 2 and text.endswith("INFO phase Ready")
    assert (farm.home / f".primus-safe/clusters/{cluster_id}/pods").is_dir()
    assert len(await logs(api, admin, cluster_id, tailLines=2)) == 2
    for node_id in (first, second):
        bound = await node(api, admin, node_id)
        assert bound["clusterId"] == cluster_id and bound["isControlPlane"] is True
    attrs = await search_attributes(refs.state.temporal, f"cluster/{cluster_id}", "Ready")
    assert attrs == {"type": "cluster", "cluster": cluster_id, "phase": "Ready"}

    # any authenticated user reads clusters; only admins write or read logs
    listed = await api.get(CLUSTERS, headers=alice)
    assert listed.json()["totalCount"] == 1 and listed.json()["items"][0]["clusterId"] == cluster_id
    assert (await api.get(f"{CLUSTERS}/{cluster_id}")).status_code == 401
    assert (await api.get(f"{CLUSTERS}/{cluster_id}/logs", headers=alice)).status_code == 403
    assert (await api.delete(f"/api/custom/clusters/{cluster_id}", headers=alice)).status_code == 403

    # the cluster's pods run through the host driver rooted in the prepared directory
    async with refs.state.sessions() as session:
        stored = await session.get(Cluster, cluster_id)
    assert stored is not None and stored.work_dir.endswith(f"/.primus-safe/clusters/{cluster_id}")
    work_dir = stored.work_dir
    target = SSHTarget(host=hosts[0].address, port=hosts[0].port, username=farm.user, password=farm.password)
    driver = HostDriver([HostNode(name=first, address=hosts[0].address, ssh=target)], root=f"{work_dir}/pods")
    try:
        driver.ensure_namespace("team-a")
    finally:
        driver.close()
    assert (farm.home / f".primus-safe/clusters/{cluster_id}/pods/{first}/team-a").is_dir()

    # bound nodes and used secrets cannot be deleted
    assert (await api.delete(f"/api/v1/nodes/{first}", headers=admin)).status_code == 403
    in_use = await api.delete("/api/v1/secrets/ssh-key", headers=admin)
    assert in_use.status_code == 409 and cluster_id in in_use.json()["errorMessage"]

    # add a worker node, then remove it
    added = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [third, first], "action": "add"}, headers=admin
    )
    assert added.status_code == 200 and added.json() == {"totalCount": 2, "successCount": 2}
    joined = await wait_for_node_phase(api, admin, third, (READY, "ManagedFailed"))
    assert (
        joined["phase"] == READY and joined["clusterId"] == cluster_id and joined["isControlPlane"] is False
    )
    attrs = await search_attributes(refs.state.temporal, f"node-manage/{third}", "Ready")
    assert attrs == {"type": "node-manage", "cluster": cluster_id, "phase": "Ready"}
    manage = refs.state.temporal.get_workflow_handle(f"node-manage/{third}")
    assert await manage.result() == "Ready"
    await replay_and_keep(manage, [NodeManageWorkflow], "node-manage-begin-update")
    node_logs = (await api.get(f"/api/v1/nodes/{third}/logs", headers=admin)).json()["logs"]
    assert any("pods directory ready" in line for line in node_logs)
    assert (await api.delete(f"/api/v1/nodes/{third}", headers=admin)).status_code == 409
    removed = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [third], "action": "remove"}, headers=admin
    )
    assert removed.json() == {"totalCount": 1, "successCount": 1}
    left = await wait_for_node_phase(api, admin, third, (READY, "UnmanagedFailed"))
    assert left["phase"] == READY and left["clusterId"] == "", left
    cp = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [first], "action": "remove"}, headers=admin
    )
    assert cp.status_code == 409

    # protected clusters stay; unprotected ones are reset, unbound and removed (both paths)
    assert (
        await api.patch(f"{CLUSTERS}/{cluster_id}", json={"isProtected": True}, headers=admin)
    ).status_code == 200
    refused = await api.delete(f"/api/custom/clusters/{cluster_id}", headers=admin)
    assert refused.status_code == 409 and "protected" in refused.json()["errorMessage"]
    assert (
        await api.patch(f"{CLUSTERS}/{cluster_id}", json={"isProtected": False}, headers=admin)
    ).status_code == 200
    assert (await api.patch(f"{CLUSTERS}/{cluster_id}", json={"nodes": []}, headers=admin)).status_code == 400
    assert (await api.delete(f"/api/custom/clusters/{cluster_id}", headers=admin)).status_code == 200
    await wait_for_gone(api, admin, cluster_id)
    for node_id in (first, second):
        freed = await node(api, admin, node_id)
        assert freed["clusterId"] == "" and freed["isControlPlane"] is False
    assert not (farm.home / f".primus-safe/clusters/{cluster_id}").exists()
    assert (await api.delete(f"/api/v1/clusters/{cluster_id}", headers=admin)).status_code == 404
    created = refs.state.temporal.get_workflow_handle(f"cluster/{cluster_id}")
    assert await created.result() == "deleted"
    await replay_and_keep(created, [ClusterWorkflow], "cluster-hosts-claim-update")


async def test_kubespray_end_to_end(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    refs: Platform,
    farm: SSHFarm,
    hosts: list[SSHHost],
    kube: FakeKube,
) -> None:
    control, worker = [await ready_node(api, admin, h) for h in hosts[3:5]]
    body = cluster_body(
        unique("spray"),
        [control],
        provisioner="kubespray",
        kubeVersion=None,
        kubernetesVersion="v1.31.2",
        kubeNetworkPlugin="calico",
        kubeApiServerArgs={"max-requests-inflight": "400"},
        imageSecretId="image-secret",
    )
    cluster_id = await create(api, admin, body)
    cluster = await wait_for_cluster(api, admin, cluster_id, phases=("Ready", "Failed"))
    assert cluster["phase"] == "Ready", cluster
    assert cluster["endpoint"] == f"127.0.0.1:{KUBE_PORT}" and cluster["imageSecretId"] == "image-secret"
    lines = await logs(api, admin, cluster_id)
    text = "\n".join(lines)
    assert "PLAY [cluster.yml]" in text and f"ok: [{hosts[3].address}]" in text and "PLAY RECAP" in text
    assert "fetched the admin kubeconfig" in text
    [call] = standin_calls(farm)
    assert call.startswith(
        "quay.io/kubespray/kubespray:v2.24.0 ansible-playbook -i /primus/inventory/hosts.yaml"
    )
    for fragment in (
        '"kube_version": "v1.31.2"',
        '"kube_network_plugin": "calico"',
        '"kube_pods_subnet": "10.0.0.0/16"',
        '"kube_service_addresses": "10.96.0.0/16"',
        '"max-requests-inflight": "400"',
        "cluster.yml",
    ):
        assert fragment in call
    work = farm.home / f".primus-safe/clusters/{cluster_id}"
    assert f"ansible_host: {hosts[3].address}" in (work / "inventory/hosts.yaml").read_text()
    assert (work / "ssh/id").read_text().startswith("-----BEGIN OPENSSH PRIVATE KEY-----")

    # the kubeconfig is stored encrypted and drives the Kubernetes execution driver
    async with refs.state.sessions() as session:
        stored = (await session.execute(select(Cluster).where(Cluster.id == cluster_id))).scalar_one()
    assert kube.url not in stored.kubeconfig_encrypted
    driver = KubernetesDriver(refs.state.box.decrypt(stored.kubeconfig_encrypted))
    driver.ensure_namespace("spray-team")
    assert kube.get("v1/namespaces", None, "spray-team") is not None
    assert driver.server_version() == "v1.32.0-kmock"
    driver.close()

    # node add and remove use scale.yml and remove-node.yml; deletion runs reset.yml
    added = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [worker], "action": "add"}, headers=admin
    )
    assert added.json() == {"totalCount": 1, "successCount": 1}
    joined = await wait_for_node_phase(api, admin, worker, (READY, "ManagedFailed"))
    assert joined["phase"] == READY and joined["clusterId"] == cluster_id, joined
    assert standin_calls(farm)[-1].endswith(f"scale.yml --limit={worker}")
    removed = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [worker], "action": "remove"}, headers=admin
    )
    assert removed.status_code == 200
    left = await wait_for_node_phase(api, admin, worker, (READY, "UnmanagedFailed"))
    assert left["clusterId"] == "", left
    assert f'"node": "{worker}"' in standin_calls(farm)[-1] and "remove-node.yml" in standin_calls(farm)[-1]
    assert (await api.delete(f"{CLUSTERS}/{cluster_id}", headers=admin)).status_code == 200
    await wait_for_gone(api, admin, cluster_id)
    assert "reset.yml" in standin_calls(farm)[-1] and '"reset_confirmation": "yes"' in standin_calls(farm)[-1]
    assert not work.exists()
    assert (await node(api, admin, control))["clusterId"] == ""


async def test_provisioning_failures_end_failed_with_the_reason(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    node_id = await ready_node(api, admin, hosts[0])
    cluster_id = await create(
        api,
        admin,
        cluster_body(
            unique("broken"), [node_id], provisioner="kubespray", kubeSprayImage="example.com/fail:1"
        ),
    )
    failed = await wait_for_cluster(api, admin, cluster_id, phases=("Failed", "Ready"))
    assert (
        failed["phase"] == "Failed" and failed["message"] == "kubespray cluster.yml failed with exit code 2"
    )
    text = "\n".join(await logs(api, admin, cluster_id))
    assert "fatal: [node]: FAILED! => simulated failure" in text and "ERROR phase Failed" in text
    assert (await node(api, admin, node_id))["isControlPlane"] is False
    # a failed cluster can be deleted (its nodes are freed)
    assert (await api.delete(f"/api/custom/clusters/{cluster_id}", headers=admin)).status_code == 200
    await wait_for_gone(api, admin, cluster_id)
    assert (await node(api, admin, node_id))["clusterId"] == ""
    # kubespray needs a key: a password-only secret fails with a readable reason
    cluster_id = await create(
        api,
        admin,
        cluster_body(unique("nokey"), [node_id], provisioner="kubespray", sshSecretId="ssh-password"),
    )
    failed = await wait_for_cluster(api, admin, cluster_id, phases=("Failed", "Ready"))
    assert "has no private key" in failed["message"]
    assert (await api.delete(f"{CLUSTERS}/{cluster_id}", headers=admin)).status_code == 200
    await wait_for_gone(api, admin, cluster_id)


async def test_bad_input_records_and_starts_nothing(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], refs: Platform, hosts: list[SSHHost]
) -> None:
    node_id = await ready_node(api, admin, hosts[1])
    cases: list[tuple[dict[str, Any], int, str]] = [
        (cluster_body("c1", [node_id], kubePodsSubnet="10.96.0.0/12"), 400, "overlaps"),
        (cluster_body("c1", [node_id], kubePodsSubnet="10.0.0.1/16"), 400, "kubePodsSubnet"),
        (cluster_body("c1", [node_id], kubeServiceAddress="10.96.0.0"), 400, "kubeServiceAddress"),
        (cluster_body("c1", [node_id], kubeNetworkPlugin="weave"), 400, "kubeNetworkPlugin"),
        (cluster_body("c1", [node_id], kubeVersion="latest"), 400, "kubeVersion"),
        (cluster_body("c1", [node_id], kubeVersion=None), 400, "kubeVersion"),
        (cluster_body("c1", [node_id], kubeVersion="1.30.0", kubernetesVersion="1.31.0"), 400, "differ"),
        (cluster_body("c1", [node_id], kubeApiServerArgs={"Bad Flag": "x"}), 400, "kubeApiServerArgs"),
        (cluster_body("c1", [node_id], kubeSprayImage="not an image"), 400, "kubeSprayImage"),
        (cluster_body("C_1", [node_id]), 400, "name"),
        (cluster_body("c1", []), 400, "nodes"),
        (cluster_body("c1", [node_id, node_id]), 400, "twice"),
        (cluster_body("c1", [node_id], provisioner="ansible"), 400, "provisioner"),
        (cluster_body("c1", [node_id], unknown=1), 400, "unknown field"),
        (cluster_body("c1", ["missing-node"]), 404, "missing-node"),
        (cluster_body("c1", [node_id], sshSecretId="nope"), 404, "nope"),
        (cluster_body("c1", [node_id], sshSecretId="image-secret"), 400, "sshSecretId"),
        (cluster_body("c1", [node_id], imageSecretId="ssh-key"), 400, "imageSecretId"),
        (cluster_body("c1", [node_id], imageSecretId="nope"), 404, "nope"),
    ]
    for body, status, needle in cases:
        resp = await api.post(CLUSTERS, json=body, headers=admin)
        assert resp.status_code == status, (body, resp.text)
        assert needle in resp.json()["errorMessage"], (needle, resp.text)
    assert (await api.post(CLUSTERS, json=cluster_body("c1", [node_id]), headers=alice)).status_code == 403
    assert (await api.get(CLUSTERS, headers=admin)).json() == {"totalCount": 0, "items": []}
    assert not await workflow_exists(refs.state.temporal, "cluster/c1")

    # a node in another cluster, a busy node, a node that is not Ready
    cluster_id = await create(api, admin, cluster_body(unique("owner"), [node_id]))
    taken = await api.post(CLUSTERS, json=cluster_body("c2", [node_id]), headers=admin)
    assert taken.status_code == 409 and "already in use" in taken.json()["errorMessage"]
    assert (
        await api.post(CLUSTERS, json=cluster_body(cluster_id, [node_id]), headers=admin)
    ).status_code == 409
    await wait_for_cluster(api, admin, cluster_id, phases=("Ready",))
    other = await ready_node(api, admin, hosts[2])
    not_ready = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": ["missing-node"], "action": "add"}, headers=admin
    )
    assert not_ready.status_code == 404
    async with refs.state.sessions() as session, session.begin():
        row = await session.get(Node, other)
        assert row is not None
        row.phase = "SSHFailed"
    refused = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [other], "action": "add"}, headers=admin
    )
    assert refused.status_code == 409 and "not ready" in refused.json()["errorMessage"]
    assert not await workflow_exists(refs.state.temporal, f"node-manage/{other}")
    refused = await api.post(
        f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [other], "action": "join"}, headers=admin
    )
    assert refused.status_code == 400
    gone = await api.post(f"{CLUSTERS}/nope/nodes", json={"nodeIds": [other], "action": "add"}, headers=admin)
    assert gone.status_code == 404 and "nope" in gone.json()["errorMessage"]

    # a node of another cluster cannot be added, nor removed through the wrong cluster
    elsewhere = await ready_node(api, admin, hosts[3])
    second = await create(api, admin, cluster_body(unique("second"), [elsewhere]))
    await wait_for_cluster(api, admin, second, phases=("Ready",))
    for action, needle in (("add", "already in use"), ("remove", "does not belong")):
        refused = await api.post(
            f"{CLUSTERS}/{cluster_id}/nodes", json={"nodeIds": [elsewhere], "action": action}, headers=admin
        )
        assert refused.status_code == 409 and needle in refused.json()["errorMessage"], refused.text
    assert (await node(api, admin, elsewhere))["clusterId"] == second
    assert not await workflow_exists(refs.state.temporal, f"node-manage/{elsewhere}")
    for doomed in (cluster_id, second):
        assert (await api.delete(f"{CLUSTERS}/{doomed}", headers=admin)).status_code == 200
        await wait_for_gone(api, admin, doomed)


async def test_embedded_flow_through_the_api_only(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    """What a user of `primus-safe up` does: secret, flavor, template, node, cluster, all over HTTP."""
    calls = [
        (
            "/api/v1/secrets",
            {"name": "up-ssh", "type": "ssh", "params": [{"username": farm.user, "password": farm.password}]},
        ),
        ("/api/v1/nodeflavors", {"name": "up-flavor", **this_machine_flavor()}),
        ("/api/v1/nodetemplates", {"templateId": "up-template", "addOnTemplates": []}),
    ]
    for path, body in calls:
        resp = await api.post(path, json=body, headers=admin)
        assert resp.status_code == 200, (path, resp.text)
    node_id = await ready_node(
        api, admin, hosts[0], flavorId="up-flavor", templateId="up-template", sshSecretId="up-ssh"
    )
    cluster_id = await create(api, admin, cluster_body(unique("up"), [node_id], sshSecretId="up-ssh"))
    cluster = await wait_for_cluster(api, admin, cluster_id, phases=("Ready", "Failed"))
    assert cluster["phase"] == "Ready", cluster
    lines = await logs(api, admin, cluster_id)
    assert any(f"[{node_id}] pods directory ready" in line for line in lines), lines
    assert (await node(api, admin, node_id))["isControlPlane"] is True
    assert (await api.delete(f"/api/custom/clusters/{cluster_id}", headers=admin)).status_code == 200
    await wait_for_gone(api, admin, cluster_id)


async def test_step_shows_while_provisioning_and_delete_stops_it(
    api: httpx.AsyncClient, admin: dict[str, str], refs: Platform, farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    """While kubespray runs, the API, the search attributes and the heartbeat details show the step
    and the lines streamed so far; deleting the cluster then stops the playbook and resets it."""
    node_id = await ready_node(api, admin, hosts[1])
    body = cluster_body(
        unique("slow"), [node_id], provisioner="kubespray", kubeSprayImage="example.com/slow:1"
    )
    cluster_id = await create(api, admin, body)
    handle = refs.state.temporal.get_workflow_handle(f"cluster/{cluster_id}")
    deadline = time.monotonic() + 30
    details: list[dict[str, Any]] = []
    while time.monotonic() < deadline and not any(d.get("lines", 0) >= 8 for d in details):
        await asyncio.sleep(0.3)
        described = await handle.describe()
        details = [
            json.loads(p.heartbeat_details.payloads[0].data)
            for p in described.raw_description.pending_activities
            if p.heartbeat_details.payloads
        ]
    state = (await api.get(f"{CLUSTERS}/{cluster_id}", headers=admin)).json()
    assert any(d["step"] == "Provisioning" and d["lines"] >= 8 for d in details), (details, state)
    assert described.typed_search_attributes.get(PHASE) == "Provisioning"
    cluster = (await api.get(f"{CLUSTERS}/{cluster_id}", headers=admin)).json()
    assert cluster["phase"] == "Creating" and cluster["step"] == "Provisioning"
    assert any("TASK [slow step 2]" in line for line in await logs(api, admin, cluster_id))

    assert (await api.delete(f"{CLUSTERS}/{cluster_id}", headers=admin)).status_code == 200
    await wait_for_gone(api, admin, cluster_id, within=30)
    assert await handle.result() == "deleted"
    assert "reset.yml" in standin_calls(farm)[-1]
    assert (await node(api, admin, node_id))["clusterId"] == ""
    # the playbook was stopped on the node, not just left without its session
    await asyncio.sleep(1.5)
    assert not (farm.home / f".primus-safe/clusters/{cluster_id}").exists()
    assert not standin_running()
    history = await handle.fetch_history()
    await Replayer(workflows=[ClusterWorkflow], data_converter=pydantic_data_converter).replay_workflow(
        history
    )
