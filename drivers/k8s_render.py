"""Render a workload dispatch into plain Kubernetes manifests (dicts); pure functions, no I/O.

Follows upstream's dispatcher (upstream-behavior.md §7): PyTorchJob (`kubeflow.org/v1`, Master +
Worker), Deployment, StatefulSet and Authoring (here a single-replica StatefulSet), a Service from
the `service` spec, resources with the GPU under the flavor's resource name, shared memory as a
memory-backed emptyDir at /dev/shm, workspace volumes (PVC `pfs-<id>` or hostPath), tolerations for
`isTolerateAll`, required node affinity for the workspace and the customer labels, and the labels
`primus-safe.workload.id` / `primus-safe.workspace.id` / `primus-safe.workload.dispatch.count`.

Placement: with `dispatch.assignments` (the platform scheduler's decision, one per pod in rank
order) every pod template requires `kubernetes.io/hostname In [its pods' nodes]`: the Master the
master's node, the Worker the workers' nodes, a Deployment or StatefulSet every assigned node. That
term replaces a customer hostname label (the scheduler already honoured it) and assumes node names
equal their hostname label, as upstream's `specifiedNodes` do. When the pods request GPUs and the
scheduler put them on distinct nodes (its rule for GPU pods), a template pinned to several nodes
also gets a required pod anti-affinity on the hostname against the dispatch's other pods, so each
node runs exactly one of them. A template stands for all its replicas: which replica lands on which
of its nodes is the kube-scheduler's choice, and CPU pods the scheduler stacked on one node are only
kept within the set. An assignment count other than the pod count is a `DriverError`.

GPU device indices (`PodAssignment.gpus`) are not expressible on Kubernetes: the device plugin
picks a node's devices and sets the container's visible devices itself, so they are not rendered.

Deviation from upstream: there is no `preprocess` init container shipping a launcher script; the
main container decodes the base64 entry point itself (`bash -o pipefail` when bash exists).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping, Sequence
from typing import Any

from domain.secrets import RegistryCredential
from domain.workloads import (
    HOSTNAME_LABEL,
    WorkloadDispatch,
    WorkspaceVolume,
    decode_entry_point,
    main_container,
)
from drivers.execution import (
    DISPATCH_COUNT_LABEL,
    USER_NAME_ANNOTATION,
    WORKLOAD_ID_LABEL,
    WORKLOAD_KIND_LABEL,
    WORKSPACE_ID_LABEL,
    DriverError,
)

Manifest = dict[str, Any]

PYTORCHJOB_GROUP = "kubeflow.org"
PYTORCHJOB_VERSION = "v1"
PYTORCHJOB_PLURAL = "pytorchjobs"
PYTORCHJOB_PORT_NAME = "pytorchjob-port"
JOB_GRACE_SECONDS = 5
SET_GRACE_SECONDS = 10
PROGRESS_DEADLINE_SECONDS = 10800
SHARED_MEMORY_VOLUME = "shared-memory"
DEFAULT_WORKSPACE = "default"

LAUNCHER = (
    'printf %s "$1" | base64 -d > /tmp/.primus-run.sh || exit 127; '
    "if command -v bash >/dev/null 2>&1; then exec bash -o pipefail /tmp/.primus-run.sh; fi; "
    "exec sh /tmp/.primus-run.sh"
)


def object_labels(dispatch: WorkloadDispatch) -> dict[str, str]:
    """Labels on every object and pod of a dispatch: how the driver finds them again."""
    return {
        WORKLOAD_ID_LABEL: dispatch.workload_id,
        WORKSPACE_ID_LABEL: dispatch.namespace,
        DISPATCH_COUNT_LABEL: str(dispatch.dispatch_count),
    }


def _metadata(dispatch: WorkloadDispatch, name: str | None = None) -> Manifest:
    labels = {**object_labels(dispatch), WORKLOAD_KIND_LABEL: dispatch.kind}
    meta: Manifest = {"name": name or dispatch.workload_id, "namespace": dispatch.namespace, "labels": labels}
    if dispatch.user_name:
        meta["annotations"] = {USER_NAME_ANNOTATION: dispatch.user_name}
    return meta


def container_command(dispatch: WorkloadDispatch) -> list[str]:
    """The main container's command: decode the base64 entry point and run it."""
    encoded = base64.b64encode(decode_entry_point(dispatch.spec.entry_point).encode()).decode()
    return ["/bin/sh", "-c", LAUNCHER, "primus-launcher", encoded]


def resource_list(dispatch: WorkloadDispatch) -> dict[str, str]:
    """Requests (= limits) of one pod; the GPU under the flavor's resource name."""
    res = dispatch.spec.resource
    out = {"cpu": res.cpu, "memory": res.memory}
    if res.ephemeral_storage:
        out["ephemeral-storage"] = res.ephemeral_storage
    if res.gpu and res.gpu != "0":
        out[dispatch.gpu_resource_name] = res.gpu
    return out


def container_env(dispatch: WorkloadDispatch) -> list[Manifest]:
    """Platform env first, then the workload's env (same name overrides, empty value removes)."""
    spec = dispatch.spec
    env: dict[str, Manifest] = {}

    def put(name: str, value: str) -> None:
        env[name] = {"name": name, "value": value}

    def field_ref(name: str, path: str) -> None:
        env[name] = {"name": name, "valueFrom": {"fieldRef": {"fieldPath": path}}}

    put("WORKLOAD_ID", dispatch.workload_id)
    put("PRIMUS_WORKLOAD_ID", dispatch.workload_id)
    put("DISPATCH_COUNT", str(dispatch.dispatch_count))
    field_ref("PRIMUS_POD_ID", "metadata.name")
    field_ref("POD_NAME", "metadata.name")
    field_ref("POD_NAMESPACE", "metadata.namespace")
    field_ref("POD_IP", "status.podIP")
    put("MAIN_CONTAINER_NAME", main_container(dispatch.kind))
    if dispatch.ssh_port:
        put("SSH_PORT", str(dispatch.ssh_port))
    if spec.resource.gpu:
        put("GPUS_PER_NODE", spec.resource.gpu)
    if spec.is_supervised:
        put("ENABLE_SUPERVISE", "true")
    for name, value in spec.env.items():
        if value == "":
            env.pop(name, None)
        else:
            put(name, value)
    return list(env.values())


def _probe(check: Any) -> Manifest:
    return {
        "httpGet": {"path": check.path or "/", "port": check.port},
        "initialDelaySeconds": check.initial_delay_seconds,
        "periodSeconds": check.period_seconds,
        "failureThreshold": check.failure_threshold,
    }


def _volumes(dispatch: WorkloadDispatch) -> tuple[list[Manifest], list[Manifest]]:
    """Pod volumes and the main container's mounts."""
    volumes: list[Manifest] = []
    mounts: list[Manifest] = []
    shm = dispatch.spec.resource.shared_memory
    shm_source: Manifest = {"medium": "Memory"}
    if shm:
        shm_source["sizeLimit"] = shm
    volumes.append({"name": SHARED_MEMORY_VOLUME, "emptyDir": shm_source})
    mounts.append({"name": SHARED_MEMORY_VOLUME, "mountPath": "/dev/shm"})
    max_id = 0
    for vol in dispatch.volumes:
        max_id = max(max_id, vol.id)
        if vol.type == "pfs":
            volumes.append({"name": vol.volume_name, "persistentVolumeClaim": {"claimName": vol.claim_name}})
        else:
            volumes.append({"name": vol.volume_name, "hostPath": {"path": vol.host_path or vol.mount_path}})
        mount: Manifest = {"name": vol.volume_name, "mountPath": vol.mount_path or vol.host_path}
        if vol.sub_path:
            mount["subPath"] = vol.sub_path
        mounts.append(mount)
    seen = {v.host_path for v in dispatch.volumes if v.type == "hostpath"}
    extra = [p for p in dict.fromkeys(dispatch.spec.hostpath) if p and p not in seen]
    for index, path in enumerate(extra, start=1):
        name = f"hostpath-{max_id + index}"
        volumes.append({"name": name, "hostPath": {"path": path}})
        mounts.append({"name": name, "mountPath": path})
    return volumes, mounts


def pod_count(dispatch: WorkloadDispatch) -> int:
    """How many pods the dispatch runs (a PyTorchJob always has its Master, Authoring one pod)."""
    if dispatch.kind == "Authoring":
        return 1
    if dispatch.kind == "PyTorchJob":
        return max(dispatch.spec.resource.replica, 1)
    return dispatch.spec.resource.replica


def assigned_nodes(dispatch: WorkloadDispatch) -> list[str]:
    """The scheduler's node of each pod in rank order; [] without assignments."""
    nodes = [a.node for a in dispatch.assignments]
    if nodes and len(nodes) != pod_count(dispatch):
        raise DriverError(
            f"{len(nodes)} pod assignments for the {pod_count(dispatch)} pods of {dispatch.workload_id}"
        )
    return nodes


def node_affinity(dispatch: WorkloadDispatch, nodes: Sequence[str] = ()) -> Manifest | None:
    """Required node affinity: the workspace's nodes, every customer label (values split on spaces)
    and, given `nodes`, the hostname among them instead of a customer hostname label."""
    expressions: list[Manifest] = []
    if dispatch.namespace != DEFAULT_WORKSPACE:
        expressions.append({"key": WORKSPACE_ID_LABEL, "operator": "In", "values": [dispatch.namespace]})
    for key, value in dispatch.spec.customer_labels.items():
        values = value.split()
        if key and values and not (nodes and key == HOSTNAME_LABEL):
            expressions.append({"key": key, "operator": "In", "values": values})
    if nodes:
        expressions.append({"key": HOSTNAME_LABEL, "operator": "In", "values": list(dict.fromkeys(nodes))})
    if not expressions:
        return None
    return {
        "nodeAffinity": {
            "requiredDuringSchedulingIgnoredDuringExecution": {
                "nodeSelectorTerms": [{"matchExpressions": expressions}]
            }
        }
    }


def one_pod_per_node(dispatch: WorkloadDispatch) -> Manifest:
    """Required pod anti-affinity: no other pod of this dispatch on the same node."""
    selector = {
        WORKLOAD_ID_LABEL: dispatch.workload_id,
        DISPATCH_COUNT_LABEL: str(dispatch.dispatch_count),
    }
    return {
        "requiredDuringSchedulingIgnoredDuringExecution": [
            {"labelSelector": {"matchLabels": selector}, "topologyKey": HOSTNAME_LABEL}
        ]
    }


def pod_affinity(dispatch: WorkloadDispatch, nodes: Sequence[str] = ()) -> Manifest | None:
    """The affinity of a template whose pods the scheduler put on `nodes` (see the module docstring)."""
    affinity = node_affinity(dispatch, nodes) or {}
    every = [a.node for a in dispatch.assignments]
    spread = len(set(every)) == len(every) and len(set(nodes)) > 1
    if spread and dispatch.gpu_resource_name in resource_list(dispatch):
        affinity["podAntiAffinity"] = one_pod_per_node(dispatch)
    return affinity or None


def pod_template(
    dispatch: WorkloadDispatch, *, restart_policy: str, grace_seconds: int, nodes: Sequence[str] = ()
) -> Manifest:
    """The pod template shared by every kind (one main container), pinned to `nodes` if given."""
    spec = dispatch.spec
    volumes, mounts = _volumes(dispatch)
    resources = resource_list(dispatch)
    ports: list[Manifest] = []
    if dispatch.job_port:
        port: Manifest = {"containerPort": dispatch.job_port, "protocol": "TCP"}
        if dispatch.kind == "PyTorchJob":
            port["name"] = PYTORCHJOB_PORT_NAME
        ports.append(port)
    if dispatch.ssh_port:
        ports.append({"containerPort": dispatch.ssh_port, "protocol": "TCP", "name": "ssh-port"})
    if (
        spec.service
        and spec.service.target_port
        and all(p["containerPort"] != spec.service.target_port for p in ports)
    ):
        ports.append({"containerPort": spec.service.target_port, "protocol": spec.service.protocol})
    container: Manifest = {
        "name": main_container(dispatch.kind),
        "image": spec.image,
        "command": container_command(dispatch),
        "env": container_env(dispatch),
        "resources": {"requests": dict(resources), "limits": dict(resources)},
        "volumeMounts": mounts,
    }
    if ports:
        container["ports"] = ports
    if spec.liveness and spec.liveness.port:
        container["livenessProbe"] = _probe(spec.liveness)
    if spec.readiness and spec.readiness.port:
        container["readinessProbe"] = _probe(spec.readiness)
    if dispatch.kind in ("StatefulSet", "Authoring"):
        container["securityContext"] = {"runAsUser": 0}
    if dispatch.privileged:
        container["securityContext"] = {"privileged": True, "runAsUser": 0}
    pod_spec: Manifest = {
        "containers": [container],
        "restartPolicy": restart_policy,
        "terminationGracePeriodSeconds": grace_seconds,
        "volumes": volumes,
    }
    if dispatch.privileged:
        pod_spec["hostPID"] = True
        pod_spec["hostIPC"] = True
    if dispatch.host_network:
        pod_spec["hostNetwork"] = True
        pod_spec["dnsPolicy"] = "ClusterFirstWithHostNet"
    if dispatch.priority_class:
        pod_spec["priorityClassName"] = dispatch.priority_class
    if dispatch.image_pull_secrets:
        pod_spec["imagePullSecrets"] = [{"name": name} for name in dispatch.image_pull_secrets]
    if spec.is_tolerate_all:
        pod_spec["tolerations"] = [{"operator": "Exists"}]
    affinity = pod_affinity(dispatch, nodes)
    if affinity:
        pod_spec["affinity"] = affinity
    return {"metadata": {"labels": object_labels(dispatch)}, "spec": pod_spec}


def render_pytorchjob(dispatch: WorkloadDispatch) -> Manifest:
    """A `kubeflow.org/v1` PyTorchJob: Master with 1 replica, Worker with replica-1 (omitted at 0)."""
    nodes = assigned_nodes(dispatch)

    def template(role_nodes: Sequence[str]) -> Manifest:
        return pod_template(
            dispatch, restart_policy="Never", grace_seconds=JOB_GRACE_SECONDS, nodes=role_nodes
        )

    replica_specs: Manifest = {
        "Master": {"replicas": 1, "restartPolicy": "Never", "template": template(nodes[:1])}
    }
    workers = dispatch.spec.resource.replica - 1
    if workers > 0:
        replica_specs["Worker"] = {
            "replicas": workers,
            "restartPolicy": "Never",
            "template": template(nodes[1:]),
        }
    return {
        "apiVersion": f"{PYTORCHJOB_GROUP}/{PYTORCHJOB_VERSION}",
        "kind": "PyTorchJob",
        "metadata": _metadata(dispatch),
        "spec": {"pytorchReplicaSpecs": replica_specs},
    }


def _selector(dispatch: WorkloadDispatch) -> Manifest:
    return {"matchLabels": {WORKLOAD_ID_LABEL: dispatch.workload_id}}


def render_deployment(dispatch: WorkloadDispatch) -> Manifest:
    """An `apps/v1` Deployment with a rolling update (maxSurge/maxUnavailable from `service.extends`)."""
    extends = dispatch.spec.service.extends if dispatch.spec.service else {}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _metadata(dispatch),
        "spec": {
            "replicas": dispatch.spec.resource.replica,
            "selector": _selector(dispatch),
            "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {
                    "maxSurge": extends.get("maxSurge", "25%"),
                    "maxUnavailable": extends.get("maxUnavailable", "25%"),
                },
            },
            "template": pod_template(
                dispatch,
                restart_policy="Always",
                grace_seconds=SET_GRACE_SECONDS,
                nodes=assigned_nodes(dispatch),
            ),
        },
    }


def render_statefulset(dispatch: WorkloadDispatch) -> Manifest:
    """An `apps/v1` StatefulSet (Authoring: always one replica)."""
    replicas = 1 if dispatch.kind == "Authoring" else dispatch.spec.resource.replica
    return {
        "apiVersion": "apps/v1",
        "kind": "StatefulSet",
        "metadata": _metadata(dispatch),
        "spec": {
            "replicas": replicas,
            "serviceName": dispatch.workload_id,
            "podManagementPolicy": "Parallel",
            "selector": _selector(dispatch),
            "template": pod_template(
                dispatch,
                restart_policy="Always",
                grace_seconds=SET_GRACE_SECONDS,
                nodes=assigned_nodes(dispatch),
            ),
        },
    }


def render_service(dispatch: WorkloadDispatch) -> Manifest | None:
    """The Service named after the workload, selecting its pods; None without a `service` spec."""
    svc = dispatch.spec.service
    if svc is None or not svc.port:
        return None
    port: Manifest = {
        "name": svc.protocol.lower(),
        "protocol": svc.protocol,
        "port": svc.port,
        "targetPort": svc.target_port or svc.port,
    }
    if svc.service_type == "NodePort" and svc.node_port > 0:
        port["nodePort"] = svc.node_port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _metadata(dispatch),
        "spec": {
            "type": svc.service_type,
            "selector": {WORKLOAD_ID_LABEL: dispatch.workload_id},
            "ports": [port],
        },
    }


def render_workload(dispatch: WorkloadDispatch) -> list[Manifest]:
    """Every object of a dispatch, in creation order: the main object, then its Service if any."""
    if dispatch.kind == "PyTorchJob":
        main = render_pytorchjob(dispatch)
    elif dispatch.kind == "Deployment":
        main = render_deployment(dispatch)
    else:
        main = render_statefulset(dispatch)
    service = render_service(dispatch)
    return [main, service] if service else [main]


def render_namespace(name: str) -> Manifest:
    """The workspace namespace."""
    return {
        "apiVersion": "v1",
        "kind": "Namespace",
        "metadata": {"name": name, "labels": {WORKSPACE_ID_LABEL: name}},
    }


def render_pvc(namespace: str, volume: WorkspaceVolume) -> Manifest:
    """The PVC `pfs-<id>` of a `pfs` workspace volume: selector or storage class, capacity, access mode."""
    spec: Manifest = {
        "accessModes": [volume.access_mode or "ReadWriteMany"],
        "volumeMode": "Filesystem",
        "resources": {"requests": {"storage": volume.capacity}},
    }
    if volume.selector:
        spec["selector"] = {"matchLabels": dict(volume.selector)}
    elif volume.storage_class:
        spec["storageClassName"] = volume.storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": {
            "name": volume.claim_name,
            "namespace": namespace,
            "labels": {WORKSPACE_ID_LABEL: namespace},
        },
        "spec": spec,
    }


def render_pull_secret(namespace: str, name: str, credentials: Sequence[RegistryCredential]) -> Manifest:
    """A `kubernetes.io/dockerconfigjson` Secret holding registry credentials."""
    auths: dict[str, Mapping[str, str]] = {}
    for cred in credentials:
        token = base64.b64encode(f"{cred.username}:{cred.password}".encode()).decode()
        auths[cred.server] = {"username": cred.username, "password": cred.password, "auth": token}
    payload = json.dumps({"auths": auths}).encode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "type": "kubernetes.io/dockerconfigjson",
        "metadata": {"name": name, "namespace": namespace, "labels": {WORKSPACE_ID_LABEL: namespace}},
        "data": {".dockerconfigjson": base64.b64encode(payload).decode()},
    }
