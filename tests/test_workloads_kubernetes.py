"""Workloads end to end on a Kubernetes cluster: the API, the workspace scheduler, the `workload/<id>`
workflow and the KubernetesDriver against the fake API server (its controller creates the pods of
PyTorchJobs and Deployments on the nodes their hostname affinity names; the tests play the kubelet
by driving the pods' status)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from drivers.execution import DISPATCH_COUNT_LABEL, WORKLOAD_ID_LABEL, WORKSPACE_ID_LABEL
from tests.conftest import Platform
from tests.fixtures.fake_kube import FakeKube
from tests.fixtures.polling import poll_json, until
from tests.fixtures.workloads import (
    WL,
    HostCluster,
    add_kube_cluster,
    add_workspace,
    node_ip,
    submit,
    wait_phase,
    workload_body,
)

KUBE_PORT = 16490
PYTORCHJOBS = "kubeflow.org/v1/pytorchjobs"
DEPLOYMENTS = "apps/v1/deployments"
NODE_COUNT = 2
TERMINATION_SECONDS = 2.0
"""How long a deleted running pod stays Terminating (its grace period, as a kubelet takes it)."""


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube(port=KUBE_PORT, controller=True, pod_termination_seconds=TERMINATION_SECONDS) as fake:
        yield fake


@pytest.fixture
async def cluster(api: httpx.AsyncClient, platform: Platform, kube: FakeKube) -> HostCluster:
    return await add_kube_cluster(platform, kube, NODE_COUNT)


async def eventually(probe: Callable[[], Any], what: str, within: float = 30) -> Any:
    """Poll `probe` (a read of the fake server) until it returns something truthy."""
    found: list[Any] = []

    async def check() -> bool:
        value = probe()
        if value:
            found.append(value)
        return bool(value)

    try:
        await until(check, within=within)
    except AssertionError as exc:
        raise AssertionError(f"timed out waiting for {what}") from exc
    return found[-1]


def required_hostnames(template: dict[str, Any]) -> list[str]:
    affinity = template["spec"]["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    (term,) = affinity["nodeSelectorTerms"]
    return [
        value
        for expression in term["matchExpressions"]
        if expression["key"] == "kubernetes.io/hostname" and expression["operator"] == "In"
        for value in expression["values"]
    ]


def managed(kube: FakeKube, resource: str, namespace: str, name: str) -> dict[str, Any] | None:
    """The object once the fake's controller has taken it on (given it a uid)."""
    obj = kube.get(resource, namespace, name)
    return obj if obj and obj["metadata"].get("uid") else None


def uid_of(kube: FakeKube, namespace: str, pod: str) -> str:
    current = kube.get("v1/pods", namespace, pod)
    assert current is not None, pod
    return str(current["metadata"]["uid"])


def pods_of(kube: FakeKube, namespace: str, workload_id: str, dispatch: int) -> list[str]:
    return kube.pod_names(namespace, {WORKLOAD_ID_LABEL: workload_id, DISPATCH_COUNT_LABEL: str(dispatch)})


async def test_pytorchjob_pinned_to_the_assigned_nodes_runs_and_succeeds(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster, kube: FakeKube
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "k8s-train")
    assert kube.get("v1/namespaces", None, workspace_id) is not None
    body = workload_body(workspace_id, "echo train", resource={"replica": 2, "gpu": "8"})
    workload_id = await submit(api, admin, body)

    job = await eventually(lambda: kube.get(PYTORCHJOBS, workspace_id, workload_id), "the PyTorchJob")
    # the dispatch is recorded once the cluster accepted the objects, a moment after they appear
    detail = await poll_json(api, admin, f"{WL}/{workload_id}", lambda b: b["dispatchCount"] >= 1)
    assert detail["dispatchCount"] == 1
    (assigned,) = detail["nodes"]
    assert sorted(assigned) == sorted(cluster.node_ids)  # 8 GPUs each: one pod per node
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 1)
    assert required_hostnames(specs["Master"]["template"]) == [assigned[0]]
    assert required_hostnames(specs["Worker"]["template"]) == [assigned[1]]
    assert job["metadata"]["labels"][WORKSPACE_ID_LABEL] == workspace_id
    limits = specs["Worker"]["template"]["spec"]["containers"][0]["resources"]["limits"]
    assert limits["amd.com/gpu"] == "8"

    master, worker = f"{workload_id}-master-0", f"{workload_id}-worker-0"
    assert await eventually(lambda: pods_of(kube, workspace_id, workload_id, 1), "pods") == [
        master,
        worker,
    ]
    pending = await poll_json(api, admin, f"{WL}/{workload_id}", lambda b: len(b["pods"]) == 2)
    assert pending["phase"] == "Pending"
    assert {p["phase"] for p in pending["pods"]} == {"Pending"}

    for pod in (master, worker):
        kube.run_pod(workspace_id, pod)
    running = await wait_phase(api, admin, workload_id, "Running", within=30)
    pods = {p["podId"]: p for p in running["pods"]}
    assert set(pods) == {master, worker}
    assert {p["phase"] for p in pods.values()} == {"Running"}
    for pod, node, index in ((master, assigned[0], 0), (worker, assigned[1], 1)):
        assert pods[pod]["nodeName"] == node
        assert pods[pod]["hostIP"] == node_ip(node.split("-")[0], cluster.node_ids.index(node))
        assert pods[pod]["podIP"].startswith("10.244.")
        assert pods[pod]["rank"] == str(index)
        assert pods[pod]["startTime"]
    assert [c["type"] for c in running["conditions"]] == ["AdminScheduled", "AdminDispatched", "K8sRunning"]

    for pod in (worker, master):
        kube.end_pod(workspace_id, pod, 0)
    done = await wait_phase(api, admin, workload_id, "Succeeded", "Failed", within=30)
    assert done["phase"] == "Succeeded", done
    assert done["dispatchCount"] == 1
    pods = {p["podId"]: p for p in done["pods"]}
    assert {p["phase"] for p in pods.values()} == {"Succeeded"}
    for pod in pods.values():
        assert [(c["name"], c["exitCode"], c["reason"]) for c in pod["containers"]] == [
            ("pytorch", 0, "Completed")
        ]
        assert pod["endTime"]
    assert [c["type"] for c in done["conditions"]] == [
        "AdminScheduled",
        "AdminDispatched",
        "K8sRunning",
        "K8sSucceeded",
    ]
    assert done["conditions"][-1]["reason"] == "run_1_times"
    assert done["endTime"]
    # ttlSecondsAfterFinished (300 s): the ended job and its pods are kept for their logs
    assert kube.get(PYTORCHJOBS, workspace_id, workload_id) is not None
    assert pods_of(kube, workspace_id, workload_id, 1) == [master, worker]


async def test_failed_pod_fails_over_once_then_fails_with_its_exit_code(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster, kube: FakeKube
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "k8s-retry")
    body = workload_body(workspace_id, "echo train", resource={"replica": 2, "gpu": "8"}, maxRetry=1)
    workload_id = await submit(api, admin, body)
    master, worker = f"{workload_id}-master-0", f"{workload_id}-worker-0"

    first = await eventually(lambda: managed(kube, PYTORCHJOBS, workspace_id, workload_id), "the PyTorchJob")
    await eventually(lambda: len(pods_of(kube, workspace_id, workload_id, 1)) == 2, "the first pods")
    old_pods = {p: uid_of(kube, workspace_id, p) for p in (master, worker)}
    for pod in (master, worker):
        kube.run_pod(workspace_id, pod)
    await wait_phase(api, admin, workload_id, "Running", within=30)
    kube.logs[(workspace_id, worker)] = "loading shard 7\nKilled\n"
    kube.end_pod(workspace_id, worker, 137, reason="OOMKilled")

    def second_job() -> dict[str, Any] | None:
        job = managed(kube, PYTORCHJOBS, workspace_id, workload_id)
        return job if job and job["metadata"]["labels"][DISPATCH_COUNT_LABEL] == "2" else None

    second = await eventually(second_job, "the PyTorchJob of the second dispatch")
    assert second["metadata"]["uid"] != first["metadata"]["uid"]  # deleted, then created again
    new_pods = await eventually(
        lambda: (
            len(pods_of(kube, workspace_id, workload_id, 2)) == 2
            and pods_of(kube, workspace_id, workload_id, 2)
        ),
        "the second pods",
    )
    assert new_pods == [master, worker]
    for pod in new_pods:  # created again once the old ones were gone (the master ended by SIGTERM)
        current = kube.get("v1/pods", workspace_id, pod)
        assert current is not None
        assert current["metadata"]["uid"] != old_pods[pod]
        assert current["status"]["phase"] == "Pending"
    assert sorted(
        required_hostnames(t["template"])[0] for t in second["spec"]["pytorchReplicaSpecs"].values()
    ) == sorted(cluster.node_ids)

    retried = await poll_json(
        api,
        admin,
        f"{WL}/{workload_id}",
        lambda b: b["dispatchCount"] == 2 and len(b["pods"]) == 2,
        within=30,
    )
    # the old master, deleted while it ran, reported Failed (143) during its grace period: it is
    # not a pod of the second run (KubernetesDriver.list_pods leaves terminating pods out)
    assert retried["phase"] == "Pending", retried
    types = [c["type"] for c in retried["conditions"]]
    assert types == [
        "AdminScheduled",
        "AdminDispatched",
        "K8sRunning",
        "AdminFailover",
        "AdminScheduled",
        "AdminDispatched",
    ]
    failover = retried["conditions"][3]
    assert failover["reason"] == "run_1_times"
    assert f"pod {worker} failed (pytorch=137)" in failover["message"], failover
    assert "Killed" in failover["message"]
    assert {p["phase"] for p in retried["pods"]} == {"Pending"}
    assert len(retried["nodes"]) == 2

    for pod in new_pods:
        kube.run_pod(workspace_id, pod)
    running = await wait_phase(api, admin, workload_id, "Running", within=30)
    assert running["dispatchCount"] == 2
    kube.end_pod(workspace_id, master, 137)
    failed = await wait_phase(api, admin, workload_id, "Failed", "Succeeded", within=30)
    assert failed["phase"] == "Failed", failed
    assert failed["dispatchCount"] == 2
    assert "failed after 2 runs" in failed["message"], failed["message"]
    assert f"pod {master} failed (pytorch=137)" in failed["message"], failed["message"]
    assert failed["conditions"][-1]["type"] == "AdminFailed"
    assert failed["conditions"][-1]["reason"] == "run_2_times"
    assert len([c for c in failed["conditions"] if c["type"] == "AdminFailover"]) == 1


async def test_deployment_runs_and_stop_removes_its_objects(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster, kube: FakeKube
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "k8s-serve")
    body = workload_body(
        workspace_id,
        "python -m http.server 8000",
        groupVersionKind={"kind": "Deployment", "version": "v1"},
        resource={"replica": 2, "gpu": "8"},
    )
    workload_id = await submit(api, admin, body)

    deployment = await eventually(lambda: kube.get(DEPLOYMENTS, workspace_id, workload_id), "the Deployment")
    assert deployment["spec"]["replicas"] == 2
    template = deployment["spec"]["template"]
    assert template["spec"]["containers"][0]["name"] == "main"
    assert sorted(required_hostnames(template)) == sorted(cluster.node_ids)
    pods = await eventually(
        lambda: (
            len(pods_of(kube, workspace_id, workload_id, 1)) == 2
            and pods_of(kube, workspace_id, workload_id, 1)
        ),
        "the Deployment's pods",
    )
    assert all(p.startswith(f"{workload_id}-") for p in pods)
    kube.run_pod(workspace_id, pods[0])
    partly = await poll_json(
        api, admin, f"{WL}/{workload_id}", lambda b: "Running" in {p["phase"] for p in b["pods"]}
    )
    assert partly["phase"] == "Pending"  # not every pod runs yet
    kube.run_pod(workspace_id, pods[1])
    running = await wait_phase(api, admin, workload_id, "Running", within=30)
    assert {p["nodeName"] for p in running["pods"]} == set(cluster.node_ids)
    assert running["conditions"][-1]["type"] == "K8sRunning"

    resp = await api.post(f"{WL}/{workload_id}/stop", headers=admin)
    assert resp.status_code == 200, resp.text
    stopped = (await api.get(f"{WL}/{workload_id}", headers=admin)).json()
    assert stopped["phase"] == "Stopped"
    assert stopped["conditions"][-1]["type"] == "AdminStopped"
    await eventually(lambda: kube.get(DEPLOYMENTS, workspace_id, workload_id) is None, "the Deployment to go")
    await eventually(
        lambda: not kube.pod_names(workspace_id, {WORKLOAD_ID_LABEL: workload_id}), "the pods to go"
    )
    queue = (await api.get(f"/api/v1/workspaces/{workspace_id}/queue", headers=admin)).json()
    assert queue["admittedCount"] == 0


async def test_workspace_nodes_carry_the_workspace_label_the_pods_require(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster, kube: FakeKube
) -> None:
    """Every rendered pod template requires `primus-safe.workspace.id In [<workspace>]` on its node,
    so on a real cluster the kube-scheduler places a workload's pods only once the workspace's
    Kubernetes nodes carry that label."""
    workspace_id = await add_workspace(api, admin, cluster, "k8s-labels")

    def labelled() -> list[str]:
        nodes = [kube.get("v1/nodes", None, n) for n in cluster.node_ids]
        return [
            n["metadata"]["name"]
            for n in nodes
            if n and n["metadata"]["labels"].get(WORKSPACE_ID_LABEL) == workspace_id
        ]

    await eventually(lambda: len(labelled()) == NODE_COUNT, "the workspace label on the nodes", within=45)


async def test_a_workload_the_cluster_rejects_fails_with_the_reason(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster, kube: FakeKube
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "k8s-reject")
    kube.fail("POST", "/statefulsets", 422)
    try:
        kind = {"kind": "StatefulSet", "version": "v1"}
        body = workload_body(workspace_id, "sleep 1", groupVersionKind=kind)
        workload_id = await submit(api, admin, body)
        detail = await wait_phase(api, admin, workload_id, "Failed", "Succeeded", "Running", within=60)
    finally:
        kube.failures.clear()
    assert detail["phase"] == "Failed", detail
    rejected = "failed after 1 run: dispatch failed: the cluster rejected the workload"
    assert detail["message"].startswith(rejected), detail["message"]
    queue = (await api.get(f"/api/v1/workspaces/{workspace_id}/queue", headers=admin)).json()
    assert queue["admittedCount"] == 0
