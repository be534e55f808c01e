"""KubernetesDriver: runs workloads on a Kubernetes cluster through its API server.

One `ApiClient` per cluster, built from that cluster's kubeconfig (never the process-global
default configuration). Objects are rendered by `drivers.k8s_render`, which pins pods to the
scheduler's assignments (a bad assignment fails before anything is created); responses are read as
plain JSON (`_preload_content=False`) so partial objects never break deserialisation.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Any, TypeVar

import urllib3
import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes.client.exceptions import ApiException
from kubernetes.stream import stream

from domain.errors import NotFound
from domain.pod_output import STDOUT, OutputBatch, OutputKey, OutputLine, OutputPosition, whole_second
from domain.pods import POD_PHASES, ContainerStatus, PodStatus
from domain.secrets import RegistryCredential
from domain.timefmt import utcnow
from domain.workloads import (
    ServiceInfo,
    ServicePort,
    WorkloadDispatch,
    WorkloadKind,
    WorkspaceVolume,
)
from drivers import k8s_render as render
from drivers.execution import (
    MANAGED_TAINT_PREFIX,
    WORKLOAD_ID_LABEL,
    DriverError,
    ExecutionDriver,
    NodeTaint,
    ShellSession,
)

T = TypeVar("T")
log = logging.getLogger(__name__)
JSON_PATCH = "application/json-patch+json"


def load_kubeconfig(kubeconfig: str | Mapping[str, Any]) -> dict[str, Any]:
    """A kubeconfig as a dict, from YAML/JSON text or a mapping."""
    data = yaml.safe_load(kubeconfig) if isinstance(kubeconfig, str) else dict(kubeconfig)
    if not isinstance(data, dict) or not data.get("clusters"):
        raise DriverError("the kubeconfig has no clusters")
    return data


def _api_error(exc: ApiException, what: str) -> DriverError:
    detail = ""
    with contextlib.suppress(ValueError, TypeError, AttributeError):
        detail = json.loads(exc.body or "{}").get("message", "")
    return DriverError(f"{what}: {exc.status} {exc.reason or ''} {detail}".strip(), status=exc.status)


def _time(value: str | None) -> datetime | None:
    if not value:
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(value.replace("Z", "+00:00"))
    return None


def _escape(key: str) -> str:
    """A JSON-pointer path segment."""
    return key.replace("~", "~0").replace("/", "~1")


def pod_status(raw: Mapping[str, Any]) -> PodStatus:
    """A Kubernetes Pod (JSON) as the platform's `PodStatus`."""
    meta = raw.get("metadata") or {}
    spec = raw.get("spec") or {}
    status = raw.get("status") or {}
    phase = status.get("phase") or "Pending"
    rank = ""
    for container in spec.get("containers") or []:
        if container.get("name") in ("pytorch", "main"):
            for env in container.get("env") or []:
                if env.get("name") == "RANK" and "value" in env:
                    rank = str(env["value"])
    containers: list[ContainerStatus] = []
    finished: list[datetime] = []
    all_terminated = bool(status.get("containerStatuses"))
    for cs in status.get("containerStatuses") or []:
        state = cs.get("state") or {}
        last = (cs.get("lastState") or {}).get("terminated") or {}
        entry = ContainerStatus(name=cs.get("name", ""), restart_count=int(cs.get("restartCount") or 0))
        if "terminated" in state:
            term = state["terminated"] or {}
            entry.state = "terminated"
            entry.exit_code = term.get("exitCode")
            entry.reason = term.get("reason") or ""
            entry.message = term.get("message") or ""
            end = _time(term.get("finishedAt"))
            if end:
                finished.append(end)
        else:
            all_terminated = False
            if "running" in state:
                entry.state = "running"
            elif "waiting" in state:
                entry.state = "waiting"
                entry.reason = (state["waiting"] or {}).get("reason") or ""
                entry.message = (state["waiting"] or {}).get("message") or ""
            if last:
                entry.exit_code = last.get("exitCode")
                entry.reason = entry.reason or last.get("reason") or ""
        containers.append(entry)
    return PodStatus(
        name=meta.get("name", ""),
        phase=phase if phase in POD_PHASES else "Unknown",
        node=spec.get("nodeName") or "",
        host_ip=status.get("hostIP") or "",
        pod_ip=status.get("podIP") or "",
        rank=rank,
        start_time=_time(status.get("startTime")),
        end_time=max(finished) if all_terminated and finished else None,
        containers=containers,
        labels=dict(meta.get("labels") or {}),
        message=status.get("message") or status.get("reason") or "",
    )


class KubernetesShell(ShellSession):
    """A TTY exec session over the API server's websocket (channel protocol v4/v5)."""

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._closed = False

    def write(self, data: bytes) -> None:
        if self._ws.is_open():
            self._ws.write_stdin(data)

    def read(self, timeout: float = 1.0) -> bytes:
        out = self._drain()
        if out or not self._ws.is_open():
            return out
        self._ws.update(timeout=timeout)
        return self._drain()

    def _drain(self) -> bytes:
        out = b""
        for channel in (1, 2):
            data = self._ws.read_channel(channel)
            if data:
                out += data if isinstance(data, bytes) else data.encode()
        return out

    def resize(self, rows: int, cols: int) -> None:
        if self._ws.is_open():
            self._ws.write_channel(4, json.dumps({"Width": cols, "Height": rows}))

    @property
    def is_open(self) -> bool:
        return not self._closed and bool(self._ws.is_open())

    @property
    def exit_code(self) -> int | None:
        if self._ws.is_open():
            return None
        try:
            code = self._ws.returncode
        except (KeyError, IndexError, TypeError, ValueError, AttributeError):
            return None
        return int(code) if code is not None else None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            with contextlib.suppress(Exception):
                self._ws.close()


class KubernetesDriver(ExecutionDriver):
    """Execution driver for one Kubernetes cluster, built from its kubeconfig (text or dict)."""

    def __init__(
        self, kubeconfig: str | Mapping[str, Any], *, context: str | None = None, request_timeout: float = 30
    ) -> None:
        try:
            self._client = k8s_config.new_client_from_config_dict(  # type: ignore[no-untyped-call]
                load_kubeconfig(kubeconfig), context=context, persist_config=False
            )
        except (k8s_config.ConfigException, KeyError, TypeError, ValueError) as exc:
            raise DriverError(f"the kubeconfig cannot be used: {exc}") from exc
        self._timeout = request_timeout
        self.core = k8s.CoreV1Api(self._client)
        self.apps = k8s.AppsV1Api(self._client)
        self.custom = k8s.CustomObjectsApi(self._client)
        self.version_api = k8s.VersionApi(self._client)

    # -- plumbing ---------------------------------------------------------------------------
    def _json(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Call an API method and return the decoded JSON body."""
        try:
            resp = fn(*args, _preload_content=False, _request_timeout=self._timeout, **kwargs)
        except ApiException as exc:
            raise _api_error(exc, what) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:  # unreachable, timeouts
            raise DriverError(f"{what}: {exc}") from exc
        data = resp.data
        if not data:
            return {}
        try:
            return json.loads(data)
        except ValueError:
            return data.decode(errors="replace") if isinstance(data, bytes) else data

    def _create(self, manifest: Mapping[str, Any]) -> None:
        """Create one object; AlreadyExists (409) counts as success."""
        kind = manifest["kind"]
        ns = manifest["metadata"].get("namespace", "")
        args: tuple[Any, ...] = (ns, manifest)
        fn: Callable[..., Any]
        if kind == "Namespace":
            fn, args = self.core.create_namespace, (manifest,)
        elif kind == "PyTorchJob":
            fn = self.custom.create_namespaced_custom_object
            args = (
                render.PYTORCHJOB_GROUP,
                render.PYTORCHJOB_VERSION,
                ns,
                render.PYTORCHJOB_PLURAL,
                manifest,
            )
        else:
            creators: dict[str, Callable[..., Any]] = {
                "PersistentVolumeClaim": self.core.create_namespaced_persistent_volume_claim,
                "Secret": self.core.create_namespaced_secret,
                "Service": self.core.create_namespaced_service,
                "Deployment": self.apps.create_namespaced_deployment,
                "StatefulSet": self.apps.create_namespaced_stateful_set,
            }
            fn = creators[kind]
        try:
            self._json(f"create {kind} {ns}/{manifest['metadata']['name']}", fn, *args)
        except DriverError as exc:
            if exc.status != 409:
                raise

    def _ignore_missing(self, what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        try:
            self._json(what, fn, *args, **kwargs)
        except DriverError as exc:
            if exc.status != 404:
                raise

    def server_version(self) -> str:
        """The API server's `gitVersion` (a cheap reachability check)."""
        data = self._json("get version", self.version_api.get_code)
        return str(data.get("gitVersion", "")) if isinstance(data, dict) else ""

    # -- namespaces -------------------------------------------------------------------------
    def ensure_namespace(
        self,
        namespace: str,
        *,
        volumes: Sequence[WorkspaceVolume] = (),
        pull_secrets: Mapping[str, Sequence[RegistryCredential]] | None = None,
    ) -> None:
        self._create(render.render_namespace(namespace))
        for volume in volumes:
            if volume.type == "pfs":
                self._create(render.render_pvc(namespace, volume))
        for name, credentials in (pull_secrets or {}).items():
            self._create(render.render_pull_secret(namespace, name, credentials))

    def delete_namespace(self, namespace: str) -> None:
        self._ignore_missing(f"delete namespace {namespace}", self.core.delete_namespace, namespace)

    # -- workloads --------------------------------------------------------------------------
    def apply(self, dispatch: WorkloadDispatch) -> None:
        for manifest in render.render_workload(dispatch):
            self._create(manifest)

    def _workload_pods(self, namespace: str, workload_id: str) -> list[dict[str, Any]]:
        selector = f"{WORKLOAD_ID_LABEL}={workload_id}"
        data = self._json(
            f"list pods of {namespace}/{workload_id}",
            self.core.list_namespaced_pod,
            namespace,
            label_selector=selector,
        )
        items = data.get("items") or [] if isinstance(data, dict) else []
        # Filter again: the selector is the contract, not every API server honours it.
        return [
            p
            for p in items
            if ((p.get("metadata") or {}).get("labels") or {}).get(WORKLOAD_ID_LABEL) == workload_id
        ]

    def list_pods(self, namespace: str, workload_id: str) -> list[PodStatus]:
        """The workload's pods, without those being deleted (`deletionTimestamp` set).

        A terminating pod belongs to a run that was removed: its containers are being stopped
        (SIGTERM, since Kubernetes 1.27 it then reports phase Failed with exit code 143) and it
        keeps the workload's labels for its grace period, while the next run's objects are already
        created. Counting it would fail the new run with the old pod's exit code.
        """
        pods = [
            pod_status(raw)
            for raw in self._workload_pods(namespace, workload_id)
            if not (raw.get("metadata") or {}).get("deletionTimestamp")
        ]
        return sorted(pods, key=lambda p: p.name)

    def delete(self, namespace: str, workload_id: str, kind: WorkloadKind) -> None:
        grace = render.JOB_GRACE_SECONDS if kind == "PyTorchJob" else render.SET_GRACE_SECONDS
        options = {"propagation_policy": "Background", "grace_period_seconds": grace}
        what = f"delete {kind} {namespace}/{workload_id}"
        if kind == "PyTorchJob":
            self._ignore_missing(
                what,
                self.custom.delete_namespaced_custom_object,
                render.PYTORCHJOB_GROUP,
                render.PYTORCHJOB_VERSION,
                namespace,
                render.PYTORCHJOB_PLURAL,
                workload_id,
                **options,
            )
        elif kind == "Deployment":
            self._ignore_missing(
                what, self.apps.delete_namespaced_deployment, workload_id, namespace, **options
            )
        else:
            self._ignore_missing(
                what, self.apps.delete_namespaced_stateful_set, workload_id, namespace, **options
            )
        self._ignore_missing(
            f"delete service {namespace}/{workload_id}",
            self.core.delete_namespaced_service,
            workload_id,
            namespace,
        )
        # Do not wait for the garbage collector: the pods go now (with their grace period).
        for raw in self._workload_pods(namespace, workload_id):
            name = raw["metadata"]["name"]
            self._ignore_missing(
                f"delete pod {namespace}/{name}",
                self.core.delete_namespaced_pod,
                name,
                namespace,
                grace_period_seconds=grace,
            )

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
        kwargs: dict[str, Any] = {}
        if container:
            kwargs["container"] = container
        if tail_lines is not None:
            kwargs["tail_lines"] = tail_lines
        if since_seconds is not None:
            kwargs["since_seconds"] = since_seconds
        try:
            resp: Any = self.core.read_namespaced_pod_log(
                pod, namespace, _preload_content=False, _request_timeout=self._timeout, **kwargs
            )
        except ApiException as exc:
            if exc.status == 404:
                raise NotFound("Pod", pod) from exc
            raise _api_error(exc, f"read log of {namespace}/{pod}") from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise DriverError(f"read log of {namespace}/{pod}: {exc}") from exc
        data: bytes = resp.data
        return data.decode(errors="replace")

    def read_output(
        self,
        namespace: str,
        workload_id: str,
        pods: Sequence[PodStatus],
        positions: Mapping[OutputKey, OutputPosition],
        *,
        max_bytes: int,
    ) -> list[OutputBatch]:
        """Each started container's log (`timestamps=true`), from the second of the last line
        taken (`sinceTime`), skipping the lines already taken in it. The log API merges stdout
        and stderr, so every line is `stdout`."""
        batches: list[OutputBatch] = []
        for pod in pods:
            for container in pod.containers:
                if container.state not in ("running", "terminated"):
                    continue
                position = positions.get((pod.name, container.name, STDOUT), OutputPosition())
                ended = container.state == "terminated"
                try:
                    batches.append(
                        self._read_stream(namespace, pod, container.name, position, max_bytes, ended)
                    )
                except DriverError as exc:
                    if exc.status is None:  # the API server is away: so is every other stream
                        raise
                    log.warning("skipping the log of %s/%s/%s: %s", namespace, pod.name, container.name, exc)
        return batches

    def _read_stream(
        self,
        namespace: str,
        pod: PodStatus,
        container: str,
        position: OutputPosition,
        max_bytes: int,
        ended: bool,
    ) -> OutputBatch:
        query: list[tuple[str, Any]] = [("container", container), ("timestamps", "true")]
        if position.since:
            query.append(("sinceTime", position.since))
        what = f"read log of {namespace}/{pod.name}"
        method, url, headers, _, _ = self._client.param_serialize(
            method="GET",
            resource_path="/api/v1/namespaces/{namespace}/pods/{name}/log",
            path_params={"namespace": namespace, "name": pod.name},
            query_params=query,
            header_params={"Accept": "*/*"},
            auth_settings=["BearerToken"],
        )
        try:
            resp = self._client.call_api(method, url, header_params=headers, _request_timeout=self._timeout)
        except ApiException as exc:
            raise _api_error(exc, what) from exc
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise DriverError(f"{what}: {exc}") from exc
        raw = resp.response
        batch: OutputBatch | None = None
        try:
            if resp.status >= 400:
                raise _api_error(ApiException(status=resp.status, reason=resp.reason, body=raw.read()), what)
            batch = _log_batch(pod, container, position, _lines(raw), max_bytes, ended)
            return batch
        except (OSError, urllib3.exceptions.HTTPError) as exc:
            raise DriverError(f"{what}: {exc}") from exc
        finally:
            if batch is not None and not batch.more:
                raw.release_conn()  # read to its end: the connection can be reused
            else:
                raw.close()

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
        kwargs: dict[str, Any] = {}
        if container:
            kwargs["container"] = container
        try:
            ws = stream(
                self.core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=list(command),
                stdin=True,
                stdout=True,
                stderr=True,
                tty=True,
                binary=True,
                _preload_content=False,
                **kwargs,
            )
        except ApiException as exc:
            if exc.status == 404 or "404" in str(exc.reason):
                raise NotFound("Pod", pod) from exc
            raise _api_error(exc, f"exec in {namespace}/{pod}") from exc
        session = KubernetesShell(ws)
        session.resize(rows, cols)
        return session

    # -- services and nodes -----------------------------------------------------------------
    def describe_service(self, namespace: str, workload_id: str) -> ServiceInfo:
        try:
            data = self._json(
                f"read service {namespace}/{workload_id}",
                self.core.read_namespaced_service,
                workload_id,
                namespace,
            )
        except DriverError as exc:
            if exc.status == 404:
                raise NotFound("Service", workload_id) from exc
            raise
        spec = data.get("spec") or {}
        ports = [
            ServicePort(
                name=p.get("name") or "",
                port=int(p.get("port") or 0),
                target_port=p.get("targetPort") or 0,
                node_port=int(p.get("nodePort") or 0),
                protocol=p.get("protocol") or "TCP",
            )
            for p in spec.get("ports") or []
        ]
        return ServiceInfo(
            service_name=(data.get("metadata") or {}).get("name") or workload_id,
            service_type=spec.get("type") or "ClusterIP",
            cluster_ip=spec.get("clusterIP") or "",
            ports=ports,
            selector=dict(spec.get("selector") or {}),
        )

    def sync_node(
        self,
        node: str,
        *,
        labels: Mapping[str, str | None] | None = None,
        taints: Sequence[NodeTaint] | None = None,
    ) -> None:
        try:
            current = self._json(f"read node {node}", self.core.read_node, node)
        except DriverError as exc:
            if exc.status == 404:
                raise NotFound("Node", node) from exc
            raise
        ops: list[dict[str, Any]] = []
        have = (current.get("metadata") or {}).get("labels")
        if labels:
            if have is None and any(v is not None for v in labels.values()):
                ops.append({"op": "add", "path": "/metadata/labels", "value": {}})
                have = {}
            have = have or {}
            for key, value in labels.items():
                path = f"/metadata/labels/{_escape(key)}"
                if value is None and key in have:
                    ops.append({"op": "remove", "path": path})
                elif value is not None and have.get(key) != value:
                    ops.append({"op": "add", "path": path, "value": value})
        if taints is not None:
            existing = (current.get("spec") or {}).get("taints") or []
            kept = [t for t in existing if not str(t.get("key", "")).startswith(MANAGED_TAINT_PREFIX)]
            wanted = kept + [
                {"key": t.key, **({"value": t.value} if t.value else {}), "effect": t.effect} for t in taints
            ]
            if _taint_set(wanted) != _taint_set(existing):
                ops.append({"op": "add", "path": "/spec/taints", "value": wanted})
        if ops:
            self._json(f"patch node {node}", self.core.patch_node, node, ops, _content_type=JSON_PATCH)

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._client.close()


def _taint_set(taints: Sequence[Mapping[str, Any]]) -> set[tuple[str, str, str]]:
    return {(str(t.get("key", "")), str(t.get("value") or ""), str(t.get("effect", ""))) for t in taints}


def _lines(raw: Any) -> Iterator[bytes]:
    """The response's lines as they arrive (the last one without its newline if it has none)."""
    pending = b""
    while True:
        data = raw.read(65536)
        if not data:
            break
        pending += data
        *whole, pending = pending.split(b"\n")
        for line in whole:
            yield line + b"\n"
    if pending:
        yield pending


def _log_batch(
    pod: PodStatus,
    container: str,
    position: OutputPosition,
    lines: Iterator[bytes],
    max_bytes: int,
    ended: bool,
) -> OutputBatch:
    """The lines after `position` of a log read with `timestamps=true` (from `position.since`)."""
    skip = position.same if position.since else position.seq
    first_seq = position.seq - skip  # the seq before the response's first line
    seen: list[datetime] = []  # times of the lines up to the last one taken
    taken: list[OutputLine] = []
    size = 0
    more = False
    for index, line in enumerate(lines, start=1):
        if size >= max_bytes:
            more = True
            break
        if not line.endswith(b"\n") and not ended:
            break  # still being written
        stamp, _, text = line.rstrip(b"\n").decode(errors="replace").partition(" ")
        at = _time(stamp) or (seen[-1] if seen else utcnow())
        seen.append(at)
        if index <= skip:
            continue
        taken.append(OutputLine(at=at, text=text))
        size += len(line)
    if not taken:
        after = position
    else:
        since = whole_second(seen[-1])
        cut = datetime.fromisoformat(since.replace("Z", "+00:00"))
        after = OutputPosition(
            seq=first_seq + len(seen), since=since, same=sum(1 for at in seen if at >= cut)
        )
    return OutputBatch(
        pod=pod.name,
        node=pod.node,
        container=container,
        stream=STDOUT,
        position=position,
        after=after,
        lines=taken,
        more=more,
    )
