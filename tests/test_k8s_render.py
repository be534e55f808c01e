"""Rendering workloads into Kubernetes manifests: schema validity (Kubernetes 1.32) and content."""

from __future__ import annotations

import base64
import json
import shutil
import subprocess
from typing import Any

import kubernetes_validate
import pytest

from domain.secrets import RegistryCredential
from domain.workloads import (
    HealthCheck,
    PodAssignment,
    ServiceSpec,
    WorkloadDispatch,
    WorkloadResource,
    WorkloadSpec,
    WorkspaceVolume,
    decode_entry_point,
    encode_entry_point,
    with_defaults,
)
from drivers import k8s_render as render
from drivers.execution import DriverError

K8S_VERSION = "1.32"
KINDS = ["PyTorchJob", "Deployment", "StatefulSet", "Authoring"]


def validate(manifest: dict[str, Any]) -> None:
    """Validate a built-in object strictly (unknown fields rejected) against the 1.32 schemas."""
    kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def validate_pod_template(template: dict[str, Any]) -> None:
    """A CRD's embedded pod template, validated as a core/v1 PodTemplate."""
    validate({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template})


def validate_all(manifests: list[dict[str, Any]]) -> None:
    for manifest in manifests:
        if manifest["kind"] == "PyTorchJob":
            for replica_spec in manifest["spec"]["pytorchReplicaSpecs"].values():
                validate_pod_template(replica_spec["template"])
        else:
            validate(manifest)


def dispatch_of(kind: str = "PyTorchJob", *, replica: int = 2, **fields: Any) -> WorkloadDispatch:
    dispatch_fields = {
        k: fields.pop(k)
        for k in list(fields)
        if k
        in (
            "volumes",
            "gpu_resource_name",
            "image_pull_secrets",
            "host_network",
            "priority_class",
            "ssh_port",
            "privileged",
        )
    }
    resource = fields.pop("resource", WorkloadResource(cpu="16", memory="64Gi", gpu="8", replica=replica))
    spec = WorkloadSpec(
        display_name="train",
        workspace_id="c1-ws1",
        group_version_kind={"kind": kind, "version": "v1"},  # type: ignore[arg-type]
        image="harbor.example.com/ai/pytorch:2.0",
        entry_point=encode_entry_point("python train.py"),
        resource=resource,
        **fields,
    )
    return WorkloadDispatch(
        workload_id="train-abc12",
        namespace="c1-ws1",
        spec=with_defaults(spec),
        dispatch_count=1,
        user_name="alice",
        job_port=23456,
        **dispatch_fields,
    )


def main_container(manifest: dict[str, Any], role: str = "Master") -> dict[str, Any]:
    return pod_spec(manifest, role)["containers"][0]


def pod_spec(manifest: dict[str, Any], role: str = "Master") -> dict[str, Any]:
    if manifest["kind"] == "PyTorchJob":
        spec: dict[str, Any] = manifest["spec"]["pytorchReplicaSpecs"][role]["template"]["spec"]
        return spec
    spec = manifest["spec"]["template"]["spec"]
    return spec


FULL = {
    "service": ServiceSpec(port=80, target_port=8080, service_type="NodePort", node_port=30080),
    "liveness": HealthCheck(path="/healthz", port=8080),
    "readiness": HealthCheck(path="/ready", port=8080, period_seconds=5),
    "is_tolerate_all": True,
    "specified_nodes": ["node-1", "node-2"],
    "customer_labels": {"gpu-type": "mi300x"},
    "env": {"NCCL_DEBUG": "INFO"},
    "hostpath": ["/var/log"],
    "volumes": [
        WorkspaceVolume(id=1, type="pfs", mount_path="/mnt/data", capacity="100Ti", storage_class="rbd"),
        WorkspaceVolume(id=2, type="hostpath", mount_path="/home", host_path="/home", sub_path="shared"),
    ],
    "image_pull_secrets": ["harbor-pull"],
    "host_network": True,
    "priority_class": "c1-high-priority",
    "ssh_port": 22222,
    "privileged": True,
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["minimal", "full"])
def test_every_rendered_object_validates_against_kubernetes_1_32(kind: str, variant: str) -> None:
    dispatch = dispatch_of(kind) if variant == "minimal" else dispatch_of(kind, **FULL)
    manifests = render.render_workload(dispatch)
    assert [m["kind"] for m in manifests] == (
        [{"PyTorchJob": "PyTorchJob", "Deployment": "Deployment"}.get(kind, "StatefulSet")]
        + (["Service"] if variant == "full" else [])
    )
    validate_all(manifests)


def test_namespace_pvc_and_pull_secret_validate() -> None:
    validate(render.render_namespace("c1-ws1"))
    by_class = WorkspaceVolume(id=1, type="pfs", mount_path="/data", capacity="10Ti", storage_class="rbd")
    by_selector = WorkspaceVolume(
        id=2,
        type="pfs",
        mount_path="/d2",
        capacity="1Ti",
        selector={"pfs-name": "pv1"},
        access_mode="ReadOnlyMany",
    )
    pvc = render.render_pvc("c1-ws1", by_class)
    validate(pvc)
    assert pvc["metadata"]["name"] == "pfs-1"
    assert pvc["spec"] == {
        "accessModes": ["ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": "10Ti"}},
        "storageClassName": "rbd",
    }
    pvc = render.render_pvc("c1-ws1", by_selector)
    validate(pvc)
    assert pvc["spec"]["selector"] == {"matchLabels": {"pfs-name": "pv1"}}
    assert "storageClassName" not in pvc["spec"]
    assert pvc["spec"]["accessModes"] == ["ReadOnlyMany"]
    secret = render.render_pull_secret(
        "c1-ws1", "pull", [RegistryCredential("harbor.example.com", "robot", "pw")]
    )
    validate(secret)
    config = json.loads(base64.b64decode(secret["data"][".dockerconfigjson"]))
    auth = config["auths"]["harbor.example.com"]
    assert base64.b64decode(auth["auth"]).decode() == "robot:pw"


def test_the_validator_really_rejects_bad_objects() -> None:
    manifest = render.render_deployment(dispatch_of("Deployment"))
    manifest["spec"]["replicas"] = "two"
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)
    manifest = render.render_deployment(dispatch_of("Deployment"))
    manifest["spec"]["template"]["spec"]["containers"][0]["gpus"] = 8  # unknown field, strict mode
    with pytest.raises(kubernetes_validate.ValidationError):
        validate(manifest)


def test_pytorchjob_master_and_workers() -> None:
    job = render.render_pytorchjob(dispatch_of("PyTorchJob", replica=4))
    assert job["apiVersion"] == "kubeflow.org/v1"
    assert job["metadata"]["name"] == "train-abc12"
    assert job["metadata"]["namespace"] == "c1-ws1"
    specs = job["spec"]["pytorchReplicaSpecs"]
    assert (specs["Master"]["replicas"], specs["Worker"]["replicas"]) == (1, 3)
    for role in ("Master", "Worker"):
        assert specs[role]["restartPolicy"] == "Never"
        spec = pod_spec(job, role)
        assert spec["terminationGracePeriodSeconds"] == 5
        assert spec["restartPolicy"] == "Never"
        container = spec["containers"][0]
        assert container["name"] == "pytorch"
        assert container["ports"] == [{"containerPort": 23456, "protocol": "TCP", "name": "pytorchjob-port"}]
    single = render.render_pytorchjob(dispatch_of("PyTorchJob", replica=1))
    assert list(single["spec"]["pytorchReplicaSpecs"]) == ["Master"]


def test_deployment_and_statefulsets() -> None:
    deployment = render.render_deployment(
        dispatch_of("Deployment", replica=3, service=ServiceSpec(port=80, extends={"maxSurge": 1}))
    )
    assert deployment["spec"]["replicas"] == 3
    assert deployment["spec"]["progressDeadlineSeconds"] == 10800
    assert deployment["spec"]["strategy"]["rollingUpdate"] == {"maxSurge": 1, "maxUnavailable": "25%"}
    assert pod_spec(deployment)["terminationGracePeriodSeconds"] == 10
    assert pod_spec(deployment)["restartPolicy"] == "Always"
    assert main_container(deployment)["name"] == "main"
    selector = deployment["spec"]["selector"]["matchLabels"]
    assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items()

    stateful = render.render_statefulset(dispatch_of("StatefulSet", replica=3))
    assert stateful["kind"] == "StatefulSet"
    assert stateful["spec"]["replicas"] == 3
    assert stateful["spec"]["serviceName"] == "train-abc12"
    authoring = render.render_statefulset(dispatch_of("Authoring", replica=3))
    assert authoring["spec"]["replicas"] == 1
    assert decode_entry_point(dispatch_of("Authoring").spec.entry_point) == "sleep infinity"


def test_labels_let_the_driver_find_its_objects() -> None:
    dispatch = dispatch_of("PyTorchJob").model_copy(update={"dispatch_count": 3})
    job = render.render_pytorchjob(dispatch)
    expected = {
        "primus-safe.workload.id": "train-abc12",
        "primus-safe.workspace.id": "c1-ws1",
        "primus-safe.workload.dispatch.count": "3",
    }
    assert expected.items() <= job["metadata"]["labels"].items()
    assert job["metadata"]["labels"]["primus-safe.workload.kind"] == "PyTorchJob"
    assert job["metadata"]["annotations"] == {"primus-safe.user.name": "alice"}
    assert job["spec"]["pytorchReplicaSpecs"]["Master"]["template"]["metadata"]["labels"] == expected


def test_resources_gpu_under_flavor_name_and_shared_memory() -> None:
    job = render.render_pytorchjob(dispatch_of("PyTorchJob", gpu_resource_name="nvidia.com/gpu"))
    container = main_container(job)
    expected = {"cpu": "16", "memory": "64Gi", "ephemeral-storage": "50Gi", "nvidia.com/gpu": "8"}
    assert container["resources"] == {"requests": expected, "limits": expected}
    spec = pod_spec(job)
    assert {"name": "shared-memory", "emptyDir": {"medium": "Memory", "sizeLimit": "32Gi"}} in spec["volumes"]
    assert {"name": "shared-memory", "mountPath": "/dev/shm"} in container["volumeMounts"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["GPUS_PER_NODE"] == "8"

    cpu_only = render.render_pytorchjob(
        dispatch_of(
            "PyTorchJob", resource=WorkloadResource(cpu="4", memory="8Gi", gpu="0", shared_memory="2Gi")
        )
    )
    limits = main_container(cpu_only)["resources"]["limits"]
    assert limits == {"cpu": "4", "memory": "8Gi", "ephemeral-storage": "50Gi"}
    assert {"name": "shared-memory", "emptyDir": {"medium": "Memory", "sizeLimit": "2Gi"}} in pod_spec(
        cpu_only
    )["volumes"]


def test_volumes_tolerations_affinity_and_pod_settings() -> None:
    manifests = render.render_workload(dispatch_of("PyTorchJob", **FULL))
    spec = pod_spec(manifests[0])
    container = spec["containers"][0]
    volumes = {v["name"]: v for v in spec["volumes"]}
    assert volumes["pfs-1"] == {"name": "pfs-1", "persistentVolumeClaim": {"claimName": "pfs-1"}}
    assert volumes["hostpath-2"] == {"name": "hostpath-2", "hostPath": {"path": "/home"}}
    assert volumes["hostpath-3"] == {"name": "hostpath-3", "hostPath": {"path": "/var/log"}}
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    assert mounts["pfs-1"] == {"name": "pfs-1", "mountPath": "/mnt/data"}
    assert mounts["hostpath-2"] == {"name": "hostpath-2", "mountPath": "/home", "subPath": "shared"}
    assert mounts["hostpath-3"]["mountPath"] == "/var/log"
    assert spec["tolerations"] == [{"operator": "Exists"}]
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"][
        "nodeSelectorTerms"
    ]
    assert terms == [
        {
            "matchExpressions": [
                {"key": "primus-safe.workspace.id", "operator": "In", "values": ["c1-ws1"]},
                {"key": "gpu-type", "operator": "In", "values": ["mi300x"]},
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-1", "node-2"]},
            ]
        }
    ]
    assert spec["hostNetwork"] is True
    assert spec["dnsPolicy"] == "ClusterFirstWithHostNet"
    assert spec["priorityClassName"] == "c1-high-priority"
    assert spec["imagePullSecrets"] == [{"name": "harbor-pull"}]
    assert container["livenessProbe"] == {
        "httpGet": {"path": "/healthz", "port": 8080},
        "initialDelaySeconds": 600,
        "periodSeconds": 3,
        "failureThreshold": 3,
    }
    assert container["readinessProbe"]["periodSeconds"] == 5
    assert {"containerPort": 22222, "protocol": "TCP", "name": "ssh-port"} in container["ports"]
    assert {"containerPort": 8080, "protocol": "TCP"} in container["ports"]

    plain = pod_spec(render.render_pytorchjob(dispatch_of("PyTorchJob")))
    assert "tolerations" not in plain
    assert "hostNetwork" not in plain
    default_ws = dispatch_of("PyTorchJob").model_copy(update={"namespace": "default"})
    assert "affinity" not in pod_spec(render.render_pytorchjob(default_ws))


def assigned(dispatch: WorkloadDispatch, *nodes: str, gpus: int = 0) -> WorkloadDispatch:
    """The dispatch as the scheduler placed it: pod i on `nodes[i]`, holding `gpus` devices there."""
    assignments = [PodAssignment(node=node, gpus=list(range(gpus))) for node in nodes]
    return dispatch.model_copy(update={"assignments": assignments})


def terms(spec: dict[str, Any]) -> list[dict[str, Any]]:
    affinity = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    result: list[dict[str, Any]] = affinity["nodeSelectorTerms"]
    return result


def hostnames(spec: dict[str, Any]) -> list[str]:
    (term,) = terms(spec)
    (values,) = [e["values"] for e in term["matchExpressions"] if e["key"] == "kubernetes.io/hostname"]
    return list(values)


ONE_POD_PER_NODE = {
    "requiredDuringSchedulingIgnoredDuringExecution": [
        {
            "labelSelector": {
                "matchLabels": {
                    "primus-safe.workload.id": "train-abc12",
                    "primus-safe.workload.dispatch.count": "1",
                }
            },
            "topologyKey": "kubernetes.io/hostname",
        }
    ]
}


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("variant", ["minimal", "full"])
def test_assigned_workloads_validate_against_kubernetes_1_32(kind: str, variant: str) -> None:
    base = dispatch_of(kind, replica=3) if variant == "minimal" else dispatch_of(kind, replica=3, **FULL)
    count = render.pod_count(base)
    dispatch = assigned(base, *(f"gpu-{i}" for i in range(count)), gpus=8)
    validate_all(render.render_workload(dispatch))


def test_pytorchjob_master_and_workers_are_pinned_to_their_assigned_nodes() -> None:
    dispatch = assigned(dispatch_of("PyTorchJob", replica=3), "n-3", "n-1", "n-2", gpus=8)
    job = render.render_pytorchjob(dispatch)
    master, worker = pod_spec(job, "Master"), pod_spec(job, "Worker")
    assert hostnames(master) == ["n-3"]
    assert hostnames(worker) == ["n-1", "n-2"]
    assert "podAntiAffinity" not in master["affinity"]  # one pod on one node: nothing to spread
    assert worker["affinity"]["podAntiAffinity"] == ONE_POD_PER_NODE
    selector = ONE_POD_PER_NODE["requiredDuringSchedulingIgnoredDuringExecution"][0]["labelSelector"]
    template_labels = job["spec"]["pytorchReplicaSpecs"]["Worker"]["template"]["metadata"]["labels"]
    assert selector["matchLabels"].items() <= template_labels.items()
    for spec in (master, worker):  # GPU indices are the device plugin's: nowhere in the pod
        assert not {"CUDA_VISIBLE_DEVICES", "HIP_VISIBLE_DEVICES"} & {
            e["name"] for e in spec["containers"][0]["env"]
        }


def test_assignments_replace_the_customer_hostname_label_and_keep_the_rest() -> None:
    dispatch = assigned(dispatch_of("PyTorchJob", **FULL), "node-2", "node-1", gpus=8)
    master = pod_spec(render.render_pytorchjob(dispatch))
    assert terms(master) == [
        {
            "matchExpressions": [
                {"key": "primus-safe.workspace.id", "operator": "In", "values": ["c1-ws1"]},
                {"key": "gpu-type", "operator": "In", "values": ["mi300x"]},
                {"key": "kubernetes.io/hostname", "operator": "In", "values": ["node-2"]},
            ]
        }
    ]
    default_ws = assigned(dispatch_of("PyTorchJob").model_copy(update={"namespace": "default"}), "a", "b")
    assert terms(pod_spec(render.render_pytorchjob(default_ws))) == [
        {"matchExpressions": [{"key": "kubernetes.io/hostname", "operator": "In", "values": ["a"]}]}
    ]


def test_cpu_pods_may_share_a_node_so_they_are_not_spread() -> None:
    cpu = WorkloadResource(cpu="2", memory="4Gi", replica=3)
    job = render.render_pytorchjob(assigned(dispatch_of("PyTorchJob", resource=cpu), "a", "a", "a"))
    assert hostnames(pod_spec(job, "Master")) == ["a"]
    assert hostnames(pod_spec(job, "Worker")) == ["a"]
    deployment = render.render_deployment(assigned(dispatch_of("Deployment", resource=cpu), "a", "b", "a"))
    assert hostnames(pod_spec(deployment)) == ["a", "b"]
    assert "podAntiAffinity" not in pod_spec(deployment)["affinity"]
    distinct = render.render_statefulset(assigned(dispatch_of("StatefulSet", resource=cpu), "a", "b", "c"))
    assert "podAntiAffinity" not in pod_spec(distinct)["affinity"]
    validate_all([job, deployment, distinct])


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
def test_sets_of_gpu_pods_get_one_pod_per_assigned_node(kind: str) -> None:
    manifest = render.render_workload(assigned(dispatch_of(kind, replica=3), "x", "y", "z", gpus=8))[0]
    spec = pod_spec(manifest)
    assert hostnames(spec) == ["x", "y", "z"]
    assert spec["affinity"]["podAntiAffinity"] == ONE_POD_PER_NODE
    authoring = render.render_statefulset(assigned(dispatch_of("Authoring"), "x", gpus=8))
    assert hostnames(pod_spec(authoring)) == ["x"]
    assert "podAntiAffinity" not in pod_spec(authoring)["affinity"]


@pytest.mark.parametrize(("kind", "pods"), [("PyTorchJob", 2), ("Deployment", 2), ("Authoring", 1)])
def test_an_assignment_count_other_than_the_pod_count_is_a_driver_error(kind: str, pods: int) -> None:
    dispatch = dispatch_of(kind, replica=2)
    assert render.pod_count(dispatch) == pods
    for nodes in (["a"] * (pods - 1), ["a"] * (pods + 1)):
        if nodes:
            with pytest.raises(DriverError, match=f"{len(nodes)} pod assignments for the {pods} pods"):
                render.render_workload(assigned(dispatch, *nodes))
    assert render.render_workload(assigned(dispatch, *["a"] * pods))


def test_env_platform_first_then_user_overrides() -> None:
    dispatch = dispatch_of(
        "PyTorchJob", env={"NCCL_DEBUG": "INFO", "WORKLOAD_ID": "mine"}, is_supervised=True
    )
    dispatch.spec.env["DISPATCH_COUNT"] = ""  # an empty value removes the variable
    env = main_container(render.render_pytorchjob(dispatch))["env"]
    names = [e["name"] for e in env]
    assert len(names) == len(set(names))
    values = {e["name"]: e.get("value") for e in env}
    assert values["WORKLOAD_ID"] == "mine"
    assert values["PRIMUS_WORKLOAD_ID"] == "train-abc12"
    assert values["NCCL_DEBUG"] == "INFO"
    assert values["ENABLE_SUPERVISE"] == "true"
    assert "DISPATCH_COUNT" not in values
    pod_id = next(e for e in env if e["name"] == "PRIMUS_POD_ID")
    assert pod_id["valueFrom"] == {"fieldRef": {"fieldPath": "metadata.name"}}


def test_service_rendering() -> None:
    node_port = render.render_service(dispatch_of("Deployment", **FULL))
    assert node_port is not None
    assert node_port["metadata"]["name"] == "train-abc12"
    assert node_port["spec"] == {
        "type": "NodePort",
        "selector": {"primus-safe.workload.id": "train-abc12"},
        "ports": [{"name": "tcp", "protocol": "TCP", "port": 80, "targetPort": 8080, "nodePort": 30080}],
    }
    cluster_ip = render.render_service(
        dispatch_of("Deployment", service=ServiceSpec(port=53, protocol="udp", node_port=30053))
    )
    assert cluster_ip is not None
    validate(cluster_ip)
    assert cluster_ip["spec"]["type"] == "ClusterIP"
    assert cluster_ip["spec"]["ports"] == [{"name": "udp", "protocol": "UDP", "port": 53, "targetPort": 53}]
    assert render.render_service(dispatch_of("Deployment")) is None


@pytest.mark.skipif(shutil.which("sh") is None, reason="needs /bin/sh")
@pytest.mark.parametrize(
    ("script", "output", "code"),
    [
        ("echo hello | tr a-z A-Z; exit 4", "HELLO\n", 4),
        ("printf '%s\\n' \"quotes ' and \\\" survive\"", "quotes ' and \" survive\n", 0),
        ("false | true", "", 1 if shutil.which("bash") else 0),  # pipefail under bash
    ],
)
def test_container_command_runs_the_entry_point(script: str, output: str, code: int) -> None:
    dispatch = dispatch_of("PyTorchJob").model_copy(deep=True)
    dispatch.spec.entry_point = encode_entry_point(script)
    command = render.container_command(dispatch)
    result = subprocess.run(command, capture_output=True, text=True, timeout=10, check=False)
    assert (result.stdout, result.returncode) == (output, code), result.stderr


def test_with_defaults() -> None:
    spec = WorkloadSpec(
        display_name="x",
        workspace_id="ws",
        image=" img ",
        entry_point="python train.py",
        resource=WorkloadResource(cpu="8", memory="256Gi", gpu="0", replica=5),
        specified_nodes=["a", "b"],
        customer_labels={"": "x", "k": ""},
        env={"KEEP": "1", "DROP": ""},
        priority=7,
    )
    out = with_defaults(spec)
    assert out.resource.shared_memory == "128Gi"
    assert out.resource.ephemeral_storage == "50Gi"
    assert out.resource.gpu == ""
    assert out.resource.replica == 2
    assert out.customer_labels == {"kubernetes.io/hostname": "a b"}
    assert out.env == {"KEEP": "1"}
    assert out.priority == 2
    assert out.image == "img"
    assert decode_entry_point(out.entry_point) == "python train.py"
    assert with_defaults(out).entry_point == out.entry_point  # already base64: kept
    assert spec.resource.replica == 5  # the input is not mutated
    wire = out.model_dump(mode="json")
    assert wire["groupVersionKind"] == {"kind": "PyTorchJob", "version": "v1"}
    assert wire["resource"]["sharedMemory"] == "128Gi"
    assert "ttlSecondsAfterFinished" in wire and "isTolerateAll" in wire


def test_privileged_checks_run_in_the_hosts_pid_and_ipc_namespaces() -> None:
    """Preflight (ops job) pods: privileged, hostPID and hostIPC; other workloads are not."""
    job = render.render_workload(dispatch_of("PyTorchJob", privileged=True))[0]
    for replica in job["spec"]["pytorchReplicaSpecs"].values():
        pod = replica["template"]["spec"]
        assert pod["hostPID"] is True and pod["hostIPC"] is True
        assert pod["containers"][0]["securityContext"] == {"privileged": True, "runAsUser": 0}
    plain = render.render_workload(dispatch_of("PyTorchJob"))[0]
    for replica in plain["spec"]["pytorchReplicaSpecs"].values():
        assert "hostPID" not in replica["template"]["spec"]
        assert "securityContext" not in replica["template"]["spec"]["containers"][0]
