"""KubernetesDriver against the kmock fake API server over real HTTP, plus the shared contract suite.

kmock has no controllers: `KmockController` plays the PyTorchJob operator, the Deployment and
StatefulSet controllers, the kube-scheduler (a template's required hostname affinity picks its
pods' nodes, in order) and the kubelet (creates pods from the stored object's template, patches
their status, feeds their logs as the contract script would print them).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
import yaml

from domain.errors import NotFound
from domain.secrets import RegistryCredential
from domain.workloads import PodAssignment, ServiceSpec, WorkloadDispatch, WorkspaceVolume
from drivers.execution import NodeTaint
from drivers.kubernetes import DriverError, KubernetesDriver, pod_status
from tests.execution_contract import ExecutionDriverContract, Harness, make_dispatch
from tests.fixtures.fake_kube import FakeKube

PORT = 16443
SECOND_PORT = 16444
UNUSED_PORT = 16450

RESOURCES = {
    "PyTorchJob": "kubeflow.org/v1/pytorchjobs",
    "Deployment": "apps/v1/deployments",
    "StatefulSet": "apps/v1/statefulsets",
    "Authoring": "apps/v1/statefulsets",
}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _required_hostnames(template: dict[str, Any]) -> list[str]:
    """The `kubernetes.io/hostname In [...]` values of a template's required node affinity."""
    affinity = (template["spec"].get("affinity") or {}).get("nodeAffinity") or {}
    required = affinity.get("requiredDuringSchedulingIgnoredDuringExecution") or {}
    for term in required.get("nodeSelectorTerms") or []:
        for expression in term.get("matchExpressions") or []:
            if expression["key"] == "kubernetes.io/hostname" and expression["operator"] == "In":
                return list(expression["values"])
    return []


class KmockController:
    """Creates and drives pods in the fake API server the way a real cluster would."""

    def __init__(self, fake: FakeKube) -> None:
        self.fake = fake
        self._seq = 0

    def _templates(self, dispatch: WorkloadDispatch) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
        obj = self.fake.get(RESOURCES[dispatch.kind], dispatch.namespace, dispatch.workload_id)
        assert obj is not None, f"{dispatch.kind} {dispatch.workload_id} was not created"
        wid = dispatch.workload_id
        world = dispatch.spec.resource.replica
        if dispatch.kind == "PyTorchJob":
            specs = obj["spec"]["pytorchReplicaSpecs"]
            out = [(f"{wid}-master-0", specs["Master"]["template"], {"RANK": "0"})]
            for i in range(specs.get("Worker", {}).get("replicas", 0)):
                out.append((f"{wid}-worker-{i}", specs["Worker"]["template"], {"RANK": str(i + 1)}))
            for _, _, env in out:
                env.update(
                    {"WORLD_SIZE": str(world), "MASTER_ADDR": f"{wid}-master-0", "MASTER_PORT": "29500"}
                )
            return out
        template = obj["spec"]["template"]
        if dispatch.kind == "Deployment":
            return [(f"{wid}-7d9f8-{i:05d}", template, {}) for i in range(obj["spec"]["replicas"])]
        return [(f"{wid}-{i}", template, {}) for i in range(obj["spec"]["replicas"])]

    def start(self, dispatch: WorkloadDispatch) -> list[str]:
        names = []
        placed: dict[int, int] = {}  # pods placed so far per template
        for name, template, extra_env in self._templates(dispatch):
            self._seq += 1
            spec = yaml.safe_load(yaml.safe_dump(template["spec"]))
            main = spec["containers"][0]
            main["env"] = [*main.get("env", []), *({"name": k, "value": v} for k, v in extra_env.items())]
            allowed = _required_hostnames(template)
            index = placed.get(id(template), 0)
            placed[id(template)] = index + 1
            spec["nodeName"] = allowed[index % len(allowed)] if allowed else f"node-{self._seq}"
            pod = {
                "apiVersion": "v1",
                "kind": "Pod",
                "metadata": {
                    "name": name,
                    "namespace": dispatch.namespace,
                    "labels": template["metadata"]["labels"],
                },
                "spec": spec,
                "status": {
                    "phase": "Running",
                    "hostIP": f"10.0.0.{self._seq}",
                    "podIP": f"10.244.0.{self._seq}",
                    "startTime": _now(),
                    "containerStatuses": [
                        {"name": main["name"], "ready": True, "restartCount": 0, "state": {"running": {}}}
                    ],
                },
            }
            self.fake.put("v1/pods", dispatch.namespace, name, pod)
            self.fake.logs[(dispatch.namespace, name)] = f"started {name}\n"
            names.append(name)
        return sorted(names)

    def finish(self, namespace: str, pod: str, exit_code: int) -> None:
        current = self.fake.get("v1/pods", namespace, pod)
        assert current is not None
        self.fake.logs[(namespace, pod)] += f"exiting {exit_code}\n"
        terminated = {
            "exitCode": exit_code,
            "reason": "Completed" if exit_code == 0 else "Error",
            "startedAt": current["status"]["startTime"],
            "finishedAt": _now(),
        }
        name = current["spec"]["containers"][0]["name"]
        self.fake.patch(
            "v1/pods",
            namespace,
            pod,
            {
                "status": {
                    "phase": "Succeeded" if exit_code == 0 else "Failed",
                    "containerStatuses": [
                        {"name": name, "ready": False, "restartCount": 0, "state": {"terminated": terminated}}
                    ],
                }
            },
        )


@pytest.fixture(scope="module")
def fake_kube() -> Iterator[FakeKube]:
    with FakeKube(port=PORT) as fake:
        yield fake


@pytest.fixture
def driver(fake_kube: FakeKube) -> Iterator[KubernetesDriver]:
    drv = KubernetesDriver(fake_kube.kubeconfig(), request_timeout=10)
    yield drv
    drv.close()


@pytest.fixture
def namespace(driver: KubernetesDriver) -> Iterator[str]:
    name = f"ws-{uuid.uuid4().hex[:8]}"
    driver.ensure_namespace(name)
    yield name
    driver.delete_namespace(name)


@pytest.fixture
def harness(driver: KubernetesDriver, fake_kube: FakeKube, namespace: str) -> Harness:
    return Harness(driver=driver, controller=KmockController(fake_kube), namespace=namespace)


class TestKubernetesDriverContract(ExecutionDriverContract):
    """The shared execution-driver contract, on the fake API server."""


def test_kubeconfig_text_and_version(fake_kube: FakeKube) -> None:
    drv = KubernetesDriver(yaml.safe_dump(fake_kube.kubeconfig()))
    try:
        assert drv.server_version() == "v1.32.0-kmock"
    finally:
        drv.close()


def test_unusable_kubeconfig_is_a_driver_error() -> None:
    with pytest.raises(DriverError, match="no clusters"):
        KubernetesDriver("apiVersion: v1\nkind: Config\n")


def test_unreachable_server_is_a_driver_error(fake_kube: FakeKube) -> None:
    config = fake_kube.kubeconfig()
    config["clusters"][0]["cluster"]["server"] = f"http://127.0.0.1:{UNUSED_PORT}"
    drv = KubernetesDriver(config, request_timeout=2)
    try:
        with pytest.raises(DriverError):
            drv.list_pods("any", "any")
    finally:
        drv.close()


def test_namespace_volumes_and_pull_secrets(driver: KubernetesDriver, fake_kube: FakeKube) -> None:
    ns = f"ws-{uuid.uuid4().hex[:8]}"
    volumes = [
        WorkspaceVolume(id=1, type="pfs", mount_path="/mnt/data", capacity="100Ti", storage_class="rbd"),
        WorkspaceVolume(id=2, type="hostpath", mount_path="/home", host_path="/home"),
    ]
    creds = {"harbor-pull": [RegistryCredential("harbor.example.com", "robot", "s3cret")]}
    driver.ensure_namespace(ns, volumes=volumes, pull_secrets=creds)
    driver.ensure_namespace(ns, volumes=volumes, pull_secrets=creds)  # already exists = fine
    assert fake_kube.get("v1/namespaces", None, ns) is not None
    assert fake_kube.names("v1/persistentvolumeclaims", ns) == ["pfs-1"]
    pvc = fake_kube.get("v1/persistentvolumeclaims", ns, "pfs-1")
    assert pvc is not None
    assert pvc["spec"]["resources"]["requests"]["storage"] == "100Ti"
    assert pvc["spec"]["storageClassName"] == "rbd"
    secret = fake_kube.get("v1/secrets", ns, "harbor-pull")
    assert secret is not None
    assert secret["type"] == "kubernetes.io/dockerconfigjson"
    driver.delete_namespace(ns)
    assert fake_kube.get("v1/namespaces", None, ns) is None
    driver.delete_namespace(ns)  # missing = fine


def test_apply_pytorchjob_creates_master_worker_and_service(
    driver: KubernetesDriver, fake_kube: FakeKube, namespace: str
) -> None:
    dispatch = make_dispatch(namespace, replica=3, service=ServiceSpec(port=80, target_port=8080))
    dispatch = dispatch.model_copy(update={"gpu_resource_name": "amd.com/gpu", "dispatch_count": 2})
    dispatch.spec.resource.gpu = "8"
    driver.apply(dispatch)
    driver.apply(dispatch)
    job = fake_kube.get("kubeflow.org/v1/pytorchjobs", namespace, dispatch.workload_id)
    assert job is not None
    assert job["metadata"]["labels"]["primus-safe.workload.dispatch.count"] == "2"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert specs["Master"]["replicas"] == 1
    assert specs["Worker"]["replicas"] == 2
    container = specs["Worker"]["template"]["spec"]["containers"][0]
    assert container["resources"]["limits"]["amd.com/gpu"] == "8"
    service = driver.describe_service(namespace, dispatch.workload_id)
    assert service.service_name == dispatch.workload_id
    assert service.selector == {"primus-safe.workload.id": dispatch.workload_id}
    assert [(p.port, p.target_port) for p in service.ports] == [(80, 8080)]
    driver.delete(namespace, dispatch.workload_id, "PyTorchJob")
    assert fake_kube.get("kubeflow.org/v1/pytorchjobs", namespace, dispatch.workload_id) is None
    with pytest.raises(NotFound):
        driver.describe_service(namespace, dispatch.workload_id)


def test_apply_pins_pods_to_the_scheduler_assignments(
    driver: KubernetesDriver, fake_kube: FakeKube, namespace: str
) -> None:
    dispatch = make_dispatch(namespace, replica=3)
    dispatch.spec.resource.gpu = "8"
    assignments = [PodAssignment(node=n, gpus=list(range(8))) for n in ("gpu-c", "gpu-a", "gpu-b")]
    dispatch = dispatch.model_copy(update={"assignments": assignments})
    driver.apply(dispatch)
    job = fake_kube.get("kubeflow.org/v1/pytorchjobs", namespace, dispatch.workload_id)
    assert job is not None
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert _required_hostnames(specs["Master"]["template"]) == ["gpu-c"]
    assert _required_hostnames(specs["Worker"]["template"]) == ["gpu-a", "gpu-b"]
    anti = specs["Worker"]["template"]["spec"]["affinity"]["podAntiAffinity"]
    (term,) = anti["requiredDuringSchedulingIgnoredDuringExecution"]
    assert term["topologyKey"] == "kubernetes.io/hostname"
    assert term["labelSelector"]["matchLabels"]["primus-safe.workload.id"] == dispatch.workload_id
    KmockController(fake_kube).start(dispatch)
    nodes = {p.name: p.node for p in driver.list_pods(namespace, dispatch.workload_id)}
    wid = dispatch.workload_id
    assert nodes == {f"{wid}-master-0": "gpu-c", f"{wid}-worker-0": "gpu-a", f"{wid}-worker-1": "gpu-b"}
    driver.delete(namespace, dispatch.workload_id, "PyTorchJob")

    wrong = make_dispatch(namespace, kind="Deployment", replica=2)
    wrong = wrong.model_copy(update={"assignments": [PodAssignment(node="gpu-a")]})
    with pytest.raises(DriverError, match="1 pod assignments for the 2 pods"):
        driver.apply(wrong)
    assert fake_kube.get("apps/v1/deployments", namespace, wrong.workload_id) is None


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet", "Authoring"])
def test_apply_sets_and_their_pods(
    kind: str, driver: KubernetesDriver, fake_kube: FakeKube, namespace: str
) -> None:
    dispatch = make_dispatch(
        namespace,
        kind=kind,
        replica=2,
        service=ServiceSpec(port=8000, target_port=8000, service_type="NodePort", node_port=30080),
    )
    driver.apply(dispatch)
    obj = fake_kube.get(RESOURCES[kind], namespace, dispatch.workload_id)
    assert obj is not None
    assert obj["kind"] == ("Deployment" if kind == "Deployment" else "StatefulSet")
    assert obj["spec"]["replicas"] == (1 if kind == "Authoring" else 2)
    names = KmockController(fake_kube).start(dispatch)
    pods = driver.list_pods(namespace, dispatch.workload_id)
    assert [p.name for p in pods] == names
    assert all(p.pod_ip.startswith("10.244.") and p.host_ip.startswith("10.0.0.") for p in pods)
    service = driver.describe_service(namespace, dispatch.workload_id)
    assert service.service_type == "NodePort"
    assert service.ports[0].node_port == 30080
    driver.delete(namespace, dispatch.workload_id, dispatch.kind)
    assert fake_kube.get(RESOURCES[kind], namespace, dispatch.workload_id) is None
    assert driver.list_pods(namespace, dispatch.workload_id) == []


@pytest.mark.parametrize("status", [404, 422, 500])
def test_rejected_create_is_a_driver_error(status: int) -> None:
    """E.g. 404 from a cluster without the PyTorchJob operator, 422 for an invalid object."""
    with FakeKube(port=SECOND_PORT) as fake:
        fake.fail("POST", "/pytorchjobs", status)
        drv = KubernetesDriver(fake.kubeconfig(), request_timeout=5)
        try:
            drv.ensure_namespace("ws")
            with pytest.raises(DriverError) as err:
                drv.apply(make_dispatch("ws", replica=1))
            assert err.value.status == status
            assert "injected failure" in str(err.value)
            drv.apply(make_dispatch("ws", kind="Deployment", replica=1))  # built-in kinds still work
        finally:
            drv.close()


def test_list_pods_leaves_out_terminating_pods(
    driver: KubernetesDriver, fake_kube: FakeKube, namespace: str
) -> None:
    """A pod being deleted (its run was removed) is not one of the workload's pods any more, even
    while the kubelet still reports it, e.g. Failed with 143 after SIGTERM."""
    dispatch = make_dispatch(namespace, replica=2)
    driver.apply(dispatch)
    master, worker = KmockController(fake_kube).start(dispatch)
    KmockController(fake_kube).finish(namespace, worker, 143)
    fake_kube.patch("v1/pods", namespace, worker, {"metadata": {"deletionTimestamp": _now()}})
    assert [p.name for p in driver.list_pods(namespace, dispatch.workload_id)] == [master]
    driver.delete(namespace, dispatch.workload_id, dispatch.kind)


def test_read_log_tail(driver: KubernetesDriver, fake_kube: FakeKube, namespace: str) -> None:
    dispatch = make_dispatch(namespace, replica=1)
    driver.apply(dispatch)
    (pod,) = KmockController(fake_kube).start(dispatch)
    fake_kube.logs[(namespace, pod)] = "one\ntwo\nthree\n"
    assert driver.read_log(namespace, pod) == "one\ntwo\nthree\n"
    assert driver.read_log(namespace, pod, tail_lines=2, since_seconds=60) == "two\nthree\n"


def test_sync_node_labels_and_taints(driver: KubernetesDriver, fake_kube: FakeKube) -> None:
    name = f"node-{uuid.uuid4().hex[:6]}"
    driver.core.create_node(
        {
            "metadata": {"name": name, "labels": {"keep": "1", "primus-safe.workspace.id": "old"}},
            "spec": {
                "taints": [
                    {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
                    {"key": "primus-safe.maint.alice", "effect": "NoSchedule"},
                ]
            },
        }
    )
    driver.sync_node(
        name,
        labels={"primus-safe.workspace.id": "ws-1", "primus-safe.cluster.id": "c1", "absent": None},
        taints=[NodeTaint(key="primus-safe.fault.001", value="gpu", effect="NoExecute")],
    )
    node = fake_kube.get("v1/nodes", None, name)
    assert node is not None
    assert node["metadata"]["labels"] == {
        "keep": "1",
        "primus-safe.workspace.id": "ws-1",
        "primus-safe.cluster.id": "c1",
    }
    assert node["spec"]["taints"] == [
        {"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"},
        {"key": "primus-safe.fault.001", "value": "gpu", "effect": "NoExecute"},
    ]
    driver.sync_node(name, labels={"primus-safe.workspace.id": None}, taints=[])
    node = fake_kube.get("v1/nodes", None, name)
    assert node is not None
    assert node["metadata"]["labels"] == {"keep": "1", "primus-safe.cluster.id": "c1"}
    assert node["spec"]["taints"] == [{"key": "node.kubernetes.io/unreachable", "effect": "NoExecute"}]
    with pytest.raises(NotFound):
        driver.sync_node("no-such-node", labels={"a": "b"})


def test_pod_status_conversion() -> None:
    raw = {
        "metadata": {"name": "p-worker-0", "labels": {"primus-safe.workload.id": "p"}},
        "spec": {
            "nodeName": "n1",
            "containers": [{"name": "pytorch", "env": [{"name": "RANK", "value": "3"}]}, {"name": "sidecar"}],
        },
        "status": {
            "phase": "Failed",
            "hostIP": "10.0.0.1",
            "podIP": "10.244.1.1",
            "startTime": "2025-01-15T10:31:00Z",
            "containerStatuses": [
                {
                    "name": "pytorch",
                    "restartCount": 1,
                    "state": {
                        "terminated": {
                            "exitCode": 137,
                            "reason": "OOMKilled",
                            "finishedAt": "2025-01-15T10:40:00Z",
                        }
                    },
                },
                {
                    "name": "sidecar",
                    "state": {
                        "terminated": {
                            "exitCode": 0,
                            "reason": "Completed",
                            "finishedAt": "2025-01-15T10:41:00Z",
                        }
                    },
                },
            ],
        },
    }
    pod = pod_status(raw)
    assert pod.phase == "Failed" and pod.ended
    assert (pod.node, pod.host_ip, pod.pod_ip, pod.rank) == ("n1", "10.0.0.1", "10.244.1.1", "3")
    assert pod.exit_codes == {"pytorch": 137, "sidecar": 0}
    assert pod.containers[0].reason == "OOMKilled"
    assert pod.start_time == datetime(2025, 1, 15, 10, 31, tzinfo=UTC)
    assert pod.end_time == datetime(2025, 1, 15, 10, 41, tzinfo=UTC)
    waiting = pod_status(
        {
            "metadata": {"name": "x"},
            "status": {
                "phase": "Pending",
                "containerStatuses": [
                    {
                        "name": "main",
                        "state": {"waiting": {"reason": "CrashLoopBackOff"}},
                        "lastState": {"terminated": {"exitCode": 2, "reason": "Error"}},
                    }
                ],
            },
        }
    )
    assert waiting.containers[0].state == "waiting"
    assert waiting.containers[0].exit_code == 2
    assert waiting.end_time is None
