"""The driver: puts pods where the scheduler assigned them, renders their files, drives the node scripts.

Placement: with `dispatch.assignments` (the scheduler's decision) pod i runs on
`assignments[i].node` and sees exactly its GPU indices through `CUDA_VISIBLE_DEVICES` and
`HIP_VISIBLE_DEVICES`. Only without assignments (callers outside the scheduler) does the driver
place pods itself: on the nodes of the hostname label, else round-robin over all nodes.

Several pods of one workload may share a node (CPU-only pods do): each has its own folder (pod
names are distinct), `MASTER_ADDR` is the master's node address and only the master listens on
`MASTER_PORT`. There is no network namespace, so a workload whose every pod listens on one fixed
port cannot run two pods on one node.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from domain.errors import NotFound
from domain.names import is_dns1123_label
from domain.pod_output import STDERR, STDOUT, OutputBatch, OutputKey, OutputPosition
from domain.pods import PodStatus
from domain.secrets import RegistryCredential
from domain.workloads import (
    HOSTNAME_LABEL,
    ServiceInfo,
    WorkloadDispatch,
    WorkloadKind,
    WorkspaceVolume,
    decode_entry_point,
    main_container,
)
from drivers.execution import (
    DISPATCH_COUNT_LABEL,
    WORKLOAD_ID_LABEL,
    WORKSPACE_ID_LABEL,
    DriverError,
    ExecutionDriver,
    NodeTaint,
    ShellSession,
)
from drivers.host import scripts
from drivers.host.output import parse_collect_output
from drivers.host.runner import LocalRunner, Runner, SSHRunner
from drivers.host.supervisor import LINE_LIMIT, SUPERVISOR, pod_status
from drivers.ssh import SSHTarget

DEFAULT_MASTER_PORT = 29500
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class HostNode:
    """A machine the driver runs pods on."""

    name: str
    address: str
    """The IP other pods reach it at (MASTER_ADDR, host and pod IP)."""
    ssh: SSHTarget | None = None
    """How to log in; None runs pods locally (the control-plane host)."""


def _check_name(value: str, what: str) -> None:
    if not is_dns1123_label(value):
        raise DriverError(f"the {what} {value!r} is not a DNS-1123 label")


@dataclass(frozen=True)
class _PodPlan:
    name: str
    node: HostNode
    rank: int
    gpus: tuple[int, ...] = ()
    """The GPU device indices the scheduler assigned (empty: none assigned)."""


class HostDriver(ExecutionDriver):
    """Runs pods as supervised processes on the given nodes (see the `drivers.host` docstring)."""

    def __init__(
        self,
        nodes: Sequence[HostNode],
        *,
        root: str = "",
        ssh_timeout: float = 15,
        command_timeout: float = 60,
        grace_seconds: int | None = None,
    ) -> None:
        if not nodes:
            raise DriverError("a host cluster needs at least one node")
        self.nodes = list(nodes)
        self._by_name = {n.name: n for n in self.nodes}
        self._root = root
        self._timeout = command_timeout
        self._grace = grace_seconds
        self._runners: dict[str, Runner] = {
            n.name: LocalRunner() if n.ssh is None else SSHRunner(n.ssh, ssh_timeout) for n in self.nodes
        }

    # -- plumbing ---------------------------------------------------------------------------
    def _run(self, node: HostNode, script: str, *args: str, timeout: float | None = None) -> tuple[int, str]:
        return self._runners[node.name].run(script, [self._root, node.name, *args], timeout or self._timeout)

    def locate(self, namespace: str, pod: str) -> tuple[HostNode, str]:
        """The node a pod runs on and its folder there; NotFound when no node has it."""
        _check_name(namespace, "namespace")
        _check_name(pod, "pod name")
        for node in self.nodes:
            code, out = self._run(node, scripts.LOCATE, namespace, pod)
            if code == 0 and out.strip():
                return node, out.strip().splitlines()[-1]
        raise NotFound("Pod", pod)

    def plan(self, dispatch: WorkloadDispatch) -> list[_PodPlan]:
        """Pod names, nodes, ranks and GPUs: from the assignments, else the hostname label or round-robin."""
        replica = 1 if dispatch.kind == "Authoring" else dispatch.spec.resource.replica
        wid = dispatch.workload_id
        if dispatch.kind == "PyTorchJob":
            names = [f"{wid}-master-0"] + [f"{wid}-worker-{i}" for i in range(replica - 1)]
        else:
            names = [f"{wid}-{i}" for i in range(replica)]
        if dispatch.assignments:
            return self._assigned(dispatch, names)
        wanted = dispatch.spec.customer_labels.get(HOSTNAME_LABEL, "").split()
        unknown = [n for n in wanted if n not in self._by_name]
        if unknown:
            raise DriverError(f"unknown nodes: {', '.join(unknown)}")
        pool = [self._by_name[n] for n in wanted] or self.nodes
        return [_PodPlan(name=name, node=pool[i % len(pool)], rank=i) for i, name in enumerate(names)]

    def _assigned(self, dispatch: WorkloadDispatch, names: Sequence[str]) -> list[_PodPlan]:
        """Pod i on `assignments[i]`: the scheduler decided, so nothing is placed here."""
        assignments = dispatch.assignments
        if len(assignments) != len(names):
            raise DriverError(
                f"{len(assignments)} pod assignments for the {len(names)} pods of {dispatch.workload_id}"
            )
        unknown = list(dict.fromkeys(a.node for a in assignments if a.node not in self._by_name))
        if unknown:
            raise DriverError(f"unknown nodes: {', '.join(unknown)}")
        return [
            _PodPlan(name=name, node=self._by_name[a.node], rank=i, gpus=tuple(a.gpus))
            for i, (name, a) in enumerate(zip(names, assignments, strict=True))
        ]

    def _env(self, dispatch: WorkloadDispatch, plan: _PodPlan, master: _PodPlan, world: int) -> str:
        env: dict[str, str] = {
            "PRIMUS_WORKLOAD_ID": dispatch.workload_id,
            "PRIMUS_POD_ID": plan.name,
            "WORKLOAD_ID": dispatch.workload_id,
            "POD_NAME": plan.name,
            "POD_NAMESPACE": dispatch.namespace,
            "POD_IP": plan.node.address,
            "DISPATCH_COUNT": str(dispatch.dispatch_count),
            "MAIN_CONTAINER_NAME": main_container(dispatch.kind),
        }
        if dispatch.kind == "PyTorchJob":
            env.update(
                RANK=str(plan.rank),
                WORLD_SIZE=str(world),
                MASTER_ADDR=master.node.address,
                MASTER_PORT=str(dispatch.job_port or DEFAULT_MASTER_PORT),
                LOCAL_RANK="0",
                NODE_RANK=str(plan.rank),
                NNODES=str(world),
            )
        if plan.gpus:
            devices = ",".join(str(index) for index in plan.gpus)
            env.update(
                CUDA_VISIBLE_DEVICES=devices,
                HIP_VISIBLE_DEVICES=devices,
                GPUS_PER_NODE=str(len(plan.gpus)),
                LOCAL_WORLD_SIZE=str(len(plan.gpus)),
            )
        elif dispatch.spec.resource.gpu:
            env["GPUS_PER_NODE"] = dispatch.spec.resource.gpu
        for name, value in dispatch.spec.env.items():
            if not _ENV_NAME.match(name):
                continue
            if value == "":
                env.pop(name, None)
            else:
                env[name] = value
        return "".join(f"{name}={shlex.quote(value)}\n" for name, value in env.items())

    # -- namespaces -------------------------------------------------------------------------
    def ensure_namespace(
        self,
        namespace: str,
        *,
        volumes: Sequence[WorkspaceVolume] = (),
        pull_secrets: Mapping[str, Sequence[RegistryCredential]] | None = None,
    ) -> None:
        """Create the namespace folder on every node; volumes and pull secrets do not apply."""
        _check_name(namespace, "namespace")
        for node in self.nodes:
            code, out = self._run(node, scripts.MKDIR, namespace)
            if code != 0:
                raise DriverError(f"{node.name}: cannot create the namespace folder: {out.strip()}")

    def delete_namespace(self, namespace: str) -> None:
        """Kill every pod of the namespace on every node and remove its folders."""
        _check_name(namespace, "namespace")
        for node in self.nodes:
            code, out = self._run(node, scripts.RMDIR, namespace)
            if code != 0:
                raise DriverError(f"{node.name}: cannot remove the namespace folder: {out.strip()}")

    # -- workloads --------------------------------------------------------------------------
    def apply(self, dispatch: WorkloadDispatch) -> None:
        _check_name(dispatch.namespace, "namespace")
        _check_name(dispatch.workload_id, "workload id")
        plans = self.plan(dispatch)
        script = scripts.b64(decode_entry_point(dispatch.spec.entry_point))
        labels = {
            WORKLOAD_ID_LABEL: dispatch.workload_id,
            WORKSPACE_ID_LABEL: dispatch.namespace,
            DISPATCH_COUNT_LABEL: str(dispatch.dispatch_count),
        }
        for plan in plans:
            meta = {
                "node": plan.node.name,
                "address": plan.node.address,
                "rank": str(plan.rank) if dispatch.kind == "PyTorchJob" else "",
                "container": main_container(dispatch.kind),
                "labels": labels,
            }
            env = self._env(dispatch, plan, plans[0], len(plans))
            code, out = self._run(
                plan.node,
                scripts.LAUNCH,
                dispatch.namespace,
                dispatch.workload_id,
                plan.name,
                str(dispatch.dispatch_count),
                script,
                scripts.b64(env),
                scripts.b64(json.dumps(meta)),
                SUPERVISOR,
            )
            if code != 0:
                raise DriverError(f"{plan.node.name}: cannot start pod {plan.name}: {out.strip()[-300:]}")

    def list_pods(self, namespace: str, workload_id: str) -> list[PodStatus]:
        _check_name(namespace, "namespace")
        _check_name(workload_id, "workload id")
        pods: list[PodStatus] = []
        for node in self.nodes:
            code, out = self._run(node, scripts.STATUS, namespace, workload_id)
            if code != 0:
                raise DriverError(f"{node.name}: cannot read pods: {out.strip()[-300:]}")
            for line in out.splitlines():
                fields = line.split("\t")
                if len(fields) == 6:
                    pods.append(pod_status(fields))
        return sorted(pods, key=lambda p: p.name)

    def delete(self, namespace: str, workload_id: str, kind: WorkloadKind) -> None:
        _check_name(namespace, "namespace")
        _check_name(workload_id, "workload id")
        grace = self._grace if self._grace is not None else (5 if kind == "PyTorchJob" else 10)
        for node in self.nodes:
            code, out = self._run(
                node, scripts.STOP, namespace, workload_id, str(grace), timeout=self._timeout + grace
            )
            if code != 0:
                raise DriverError(f"{node.name}: cannot stop pods: {out.strip()[-300:]}")

    # -- pods -------------------------------------------------------------------------------
    def read_log(
        self,
        namespace: str,
        pod: str,
        *,
        container: str | None = None,
        tail_lines: int | None = None,
        since_seconds: int | None = None,
    ) -> str:
        node, _ = self.locate(namespace, pod)
        tail = str(int(tail_lines)) if tail_lines is not None else ""
        since = str(int(since_seconds)) if since_seconds is not None else ""
        code, out = self._run(node, scripts.LOG, namespace, pod, tail, since)
        if code == 3:
            raise NotFound("Pod", pod)
        if code != 0:
            raise DriverError(f"{node.name}: cannot read the log of {pod}: {out.strip()[-300:]}")
        return out

    def read_output(
        self,
        namespace: str,
        workload_id: str,
        pods: Sequence[PodStatus],
        positions: Mapping[OutputKey, OutputPosition],
        *,
        max_bytes: int,
    ) -> list[OutputBatch]:
        """The stdout and stderr lines after `positions` of each pod: one command per node."""
        _check_name(namespace, "namespace")
        _check_name(workload_id, "workload id")
        budget = max(int(max_bytes), 2 * (LINE_LIMIT + 32))  # a chunk always holds a whole line
        batches: list[OutputBatch] = []
        for node in self.nodes:
            here = [p for p in pods if p.node == node.name]
            if not here:
                continue
            args: list[str] = []
            wanted: dict[tuple[str, str], tuple[PodStatus, str, OutputPosition]] = {}
            for pod in here:
                _check_name(pod.name, "pod name")
                container = pod.containers[0].name if pod.containers else "main"
                for stream in (STDOUT, STDERR):
                    position = positions.get((pod.name, container, stream), OutputPosition())
                    wanted[(pod.name, stream)] = (pod, container, position)
                    args += [pod.name, stream, str(position.offset), str(position.seq)]
            code, out = self._run(node, scripts.COLLECT, namespace, workload_id, str(budget), *args)
            if code != 0:
                raise DriverError(
                    f"{node.name}: cannot read the output of {workload_id}: {out.strip()[-300:]}"
                )
            for chunk in parse_collect_output(out):
                found = wanted.get((chunk.pod, chunk.stream))
                if found is None:
                    continue
                pod, container, position = found
                wanted_dispatch = pod.labels.get(DISPATCH_COUNT_LABEL, "")
                if wanted_dispatch and chunk.dispatch and chunk.dispatch != wanted_dispatch:
                    continue  # the folder holds another run of the pod now
                batches.append(chunk.batch(node.name, container, position))
        return batches

    def exec_shell(
        self,
        namespace: str,
        pod: str,
        *,
        command: Sequence[str] = ("sh",),
        container: str | None = None,
        rows: int = 40,
        cols: int = 120,
    ) -> ShellSession:
        node, folder = self.locate(namespace, pod)
        argv = ["sh", "-c", scripts.SHELL, "primus-shell", folder, *command]
        return self._runners[node.name].shell(argv, rows, cols)

    # -- services and nodes -----------------------------------------------------------------
    def describe_service(self, namespace: str, workload_id: str) -> ServiceInfo:
        """Hosts have no Services: pods listen on their node's address directly."""
        raise NotFound("Service", workload_id)

    def sync_node(
        self,
        node: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        taints: Sequence[NodeTaint] | None = None,
    ) -> None:
        """Hosts have no node objects: nothing to push (placement uses the platform's records)."""
        if node not in self._by_name:
            raise NotFound("Node", node)

    def close(self) -> None:
        for runner in self._runners.values():
            runner.close()
