"""HostDriver: each pod is a supervised process on its node, over SSH or on the local host.

**No isolation.** Pods are plain processes of the SSH user (or of the control-plane user for the
local node): no containers, no image, no resource limits, no network namespace. The `image` of a
workload is ignored; its entry point runs with the node's own tools. Use it for the embedded
single-host setup and for clusters without Kubernetes, not for untrusted workloads.

Layout on a node: `<root>/<node>/<namespace>/<workload>/<pod>/` holds `run.sh` (the decoded entry
point), `env`, `meta.json`, `pid` (the supervisor, leader of the pod's process group), `log`
(stdout and stderr), `started_at`, and `finished_at` + `exit_code` once the entry point ended.
The pod's working directory is that folder. All state lives there, so a new driver instance (e.g.
after a worker restart) finds running pods by their pid file and never launches them twice.
`<root>` defaults to `$HOME/.primus-safe/pods` of the login user. Linux only (`/proc`, `setsid`).

Stop = SIGTERM to the pod's process group, SIGKILL after the grace period, then the folder goes.
Logs have no per-line times, so `since_seconds` is ignored.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import pty
import re
import select
import shlex
import struct
import subprocess
import termios
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

import paramiko

from domain.errors import NotFound
from domain.names import is_dns1123_label
from domain.pods import ContainerStatus, PodStatus
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
from drivers.ssh import SSHConnection, SSHError, SSHTarget, connect

DEFAULT_MASTER_PORT = 29500
KILLED_EXIT_CODE = 137
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

# Every script gets: $1 = root ("" = $HOME/.primus-safe/pods), $2 = node, then its own arguments.
_PRELUDE = 'root=$1; [ -n "$root" ] || root=$HOME/.primus-safe/pods; node=$2; shift 2\n'
_ALIVE = (
    'alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null && '
    'tr "\\000" " " < "/proc/$1/cmdline" 2>/dev/null | grep -qF "primus-pod:$2"; }\n'
)
# A zombie (ended, not yet reaped by init) has an empty command line: it counts as ended.
_RUNNING = (
    'running() { kill -0 "$1" 2>/dev/null && tr -d "\\000" < "/proc/$1/cmdline" 2>/dev/null | grep -q .; }\n'
)

_SUPERVISOR = """\
echo $$ > pid
date -u +%Y-%m-%dT%H:%M:%SZ > started_at
trap 'kill -TERM "$child" 2>/dev/null' TERM INT HUP
(
  set -a; . ./env; set +a
  if command -v bash >/dev/null 2>&1; then exec bash -o pipefail ./run.sh; fi
  exec sh ./run.sh
) >> log 2>&1 &
child=$!
while :; do
  wait "$child"; code=$?
  kill -0 "$child" 2>/dev/null || break
done
date -u +%Y-%m-%dT%H:%M:%SZ > finished_at
echo "$code" > exit_code.tmp && mv exit_code.tmp exit_code
"""

# $1 ns, $2 workload, $3 pod, $4 dispatch count, $5 run.sh b64, $6 env b64, $7 meta b64, $8 supervisor
_LAUNCH = (
    _PRELUDE
    + _ALIVE
    + """\
set -e
dir="$root/$node/$1/$2/$3"
if [ -f "$dir/launched" ]; then
  if [ "$(cat "$dir/dispatch" 2>/dev/null)" = "$4" ]; then echo existing; exit 0; fi
  old=$(cat "$dir/pid" 2>/dev/null || true)
  if alive "$old" "$dir"; then kill -KILL -"$old" 2>/dev/null || true; fi
  rm -rf "$dir"
fi
mkdir -p "$dir"
cd "$dir"
printf %s "$5" | base64 -d > run.sh
printf %s "$6" | base64 -d > env
printf %s "$7" | base64 -d > meta.json
printf %s "$4" > dispatch
: > log
: > launched
setsid sh -c "$8" "primus-pod:$dir" </dev/null >/dev/null 2>&1 &
i=0
while [ ! -s pid ] && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
echo launched
"""
)

# $1 ns, $2 workload
_STATUS = (
    _PRELUDE
    + _ALIVE
    + """\
base="$root/$node/$1/$2"
[ -d "$base" ] || exit 0
for d in "$base"/*/; do
  d=${d%/}
  [ -f "$d/launched" ] || continue
  pid=$(cat "$d/pid" 2>/dev/null || true)
  state=pending
  if alive "$pid" "$d"; then state=running; elif [ -n "$pid" ]; then state=gone; fi
  printf '%s\\t%s\\t%s\\t%s\\t%s\\t%s\\n' "${d##*/}" "$state" \\
    "$(cat "$d/exit_code" 2>/dev/null || echo -)" "$(cat "$d/started_at" 2>/dev/null || echo -)" \\
    "$(cat "$d/finished_at" 2>/dev/null || echo -)" "$(base64 < "$d/meta.json" | tr -d '\\n')"
done
"""
)

# $1 ns, $2 workload, $3 grace seconds
_STOP = (
    _PRELUDE
    + _ALIVE
    + _RUNNING
    + """\
base="$root/$node/$1/$2"
[ -d "$base" ] || exit 0
groups=""
for d in "$base"/*/; do
  d=${d%/}
  pid=$(cat "$d/pid" 2>/dev/null || true)
  if alive "$pid" "$d"; then kill -TERM -"$pid" 2>/dev/null || true; groups="$groups $pid"; fi
done
ticks=$(( $3 * 10 ))
left=$groups
while [ -n "$left" ] && [ "$ticks" -gt 0 ]; do
  still=""
  for p in $left; do running "$p" && still="$still $p"; done
  left=$still
  if [ -n "$left" ]; then sleep 0.1; ticks=$((ticks - 1)); fi
done
for p in $groups; do kill -KILL -"$p" 2>/dev/null || true; done
rm -rf "$base"
"""
)

# $1 ns, $2 pod -> prints the pod folder, exit 3 when it is not on this node
_LOCATE = (
    _PRELUDE
    + """\
for d in "$root/$node/$1"/*/"$2"; do
  if [ -f "$d/launched" ]; then echo "$d"; exit 0; fi
done
exit 3
"""
)

# $1 ns, $2 pod, $3 tail lines ("" = all)
_LOG = (
    _PRELUDE
    + """\
for d in "$root/$node/$1"/*/"$2"; do
  [ -f "$d/launched" ] || continue
  if [ -n "$3" ]; then tail -n "$3" "$d/log"; else cat "$d/log"; fi
  exit 0
done
exit 3
"""
)

# $1 namespace
_MKDIR = _PRELUDE + 'mkdir -p "$root/$node/$1"\n'
# $1 namespace: every pod in it is killed (TERM, then KILL a second later), then the folder goes
_RMDIR = (
    _PRELUDE
    + _ALIVE
    + """\
groups=""
for d in "$root/$node/$1"/*/*/; do
  d=${d%/}
  pid=$(cat "$d/pid" 2>/dev/null || true)
  if alive "$pid" "$d"; then kill -TERM -"$pid" 2>/dev/null || true; groups="$groups $pid"; fi
done
[ -z "$groups" ] || sleep 1
for p in $groups; do kill -KILL -"$p" 2>/dev/null || true; done
rm -rf "$root/$node/$1"
"""
)

_SHELL = 'cd "$1" || exit 1; shift; set -a; . ./env; set +a; exec "$@"'


@dataclass(frozen=True)
class HostNode:
    """A machine the driver runs pods on."""

    name: str
    address: str
    """The IP other pods reach it at (MASTER_ADDR, host and pod IP)."""
    ssh: SSHTarget | None = None
    """How to log in; None runs pods locally (the control-plane host)."""


class _Runner(Protocol):
    def run(self, script: str, args: Sequence[str], timeout: float) -> tuple[int, str]: ...

    def shell(self, argv: Sequence[str], rows: int, cols: int) -> ShellSession: ...

    def close(self) -> None: ...


class _LocalRunner:
    def run(self, script: str, args: Sequence[str], timeout: float) -> tuple[int, str]:
        try:
            proc = subprocess.run(
                ["sh", "-c", script, "primus", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DriverError(f"a local command timed out after {timeout:.0f} s") from exc
        return proc.returncode, proc.stdout.decode(errors="replace")

    def shell(self, argv: Sequence[str], rows: int, cols: int) -> ShellSession:
        return _LocalShell(argv, rows, cols)

    def close(self) -> None:
        pass


class _SSHRunner:
    def __init__(self, target: SSHTarget, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        self._conn: SSHConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> SSHConnection:
        if self._conn is None:
            self._conn = connect(self._target, timeout=self._timeout)
        return self._conn

    def run(self, script: str, args: Sequence[str], timeout: float) -> tuple[int, str]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    result = self._connection().run(
                        ["sh", "-c", script, "primus", *args], timeout=timeout, check=False
                    )
                    return result.exit_code, result.output
                except SSHError as exc:
                    self._drop()
                    if attempt == 2 or exc.kind != "Unreachable":
                        raise DriverError(f"{self._target.host}: {exc.reason}") from exc
        raise AssertionError("unreachable")

    def shell(self, argv: Sequence[str], rows: int, cols: int) -> ShellSession:
        with self._lock:
            try:
                transport: paramiko.Transport = self._connection()._transport  # the channel needs a PTY
                channel = transport.open_session(timeout=self._timeout)
                channel.get_pty(term="xterm", width=cols, height=rows)
                channel.exec_command(shlex.join(argv))
            except (SSHError, paramiko.SSHException, OSError, EOFError) as exc:
                self._drop()
                raise DriverError(f"{self._target.host}: cannot open a shell: {exc}") from exc
        return _SSHShell(channel)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()


class _LocalShell(ShellSession):
    """A local command on a pseudo-terminal."""

    def __init__(self, argv: Sequence[str], rows: int, cols: int) -> None:
        self._master, slave = pty.openpty()
        _set_size(self._master, rows, cols)
        self._proc = subprocess.Popen(
            list(argv), stdin=slave, stdout=slave, stderr=slave, preexec_fn=_controlling_tty, close_fds=True
        )
        os.close(slave)
        self._closed = False
        self._eof = False

    def write(self, data: bytes) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                os.write(self._master, data)

    def read(self, timeout: float = 1.0) -> bytes:
        if self._closed or self._eof:
            return b""
        readable, _, _ = select.select([self._master], [], [], timeout)
        if not readable:
            return b""
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: the command ended and the terminal is gone
            data = b""
        if not data:
            self._eof = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        return data

    def resize(self, rows: int, cols: int) -> None:
        if not self._closed:
            _set_size(self._master, rows, cols)

    @property
    def is_open(self) -> bool:
        return not self._closed and not self._eof

    @property
    def exit_code(self) -> int | None:
        code = self._proc.poll()
        if code is None:
            return None
        return code if code >= 0 else 128 - code

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, 9)
            self._proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._master)


class _SSHShell(ShellSession):
    """A remote command on an SSH channel with a PTY."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._closed = False

    def write(self, data: bytes) -> None:
        if not self._closed and not self._channel.closed:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self._channel.sendall(data)

    def read(self, timeout: float = 1.0) -> bytes:
        if self._closed:
            return b""
        if not self._channel.recv_ready():
            if self._channel.exit_status_ready() or self._channel.closed:
                return b""
            select.select([self._channel], [], [], timeout)
        if self._channel.recv_ready():
            return bytes(self._channel.recv(65536))
        return b""

    def resize(self, rows: int, cols: int) -> None:
        if not self._closed:
            with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
                self._channel.resize_pty(width=cols, height=rows)

    @property
    def is_open(self) -> bool:
        if self._closed or self._channel.closed:
            return False
        return not (self._channel.exit_status_ready() and not self._channel.recv_ready())

    @property
    def exit_code(self) -> int | None:
        if not self._channel.exit_status_ready():
            return None
        return int(self._channel.recv_exit_status())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()


def _set_size(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def _time(text: str) -> datetime | None:
    if not text or text == "-":
        return None
    with contextlib.suppress(ValueError):
        return datetime.fromisoformat(text.replace("Z", "+00:00"))
    return None


def _check_name(value: str, what: str) -> None:
    if not is_dns1123_label(value):
        raise DriverError(f"the {what} {value!r} is not a DNS-1123 label")


@dataclass(frozen=True)
class _PodPlan:
    name: str
    node: HostNode
    rank: int


class HostDriver(ExecutionDriver):
    """Runs pods as supervised processes on the given nodes (see the module docstring)."""

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
        self._runners: dict[str, _Runner] = {
            n.name: _LocalRunner() if n.ssh is None else _SSHRunner(n.ssh, ssh_timeout) for n in self.nodes
        }

    # -- plumbing ---------------------------------------------------------------------------
    def _run(self, node: HostNode, script: str, *args: str, timeout: float | None = None) -> tuple[int, str]:
        return self._runners[node.name].run(script, [self._root, node.name, *args], timeout or self._timeout)

    def locate(self, namespace: str, pod: str) -> tuple[HostNode, str]:
        """The node a pod runs on and its folder there; NotFound when no node has it."""
        _check_name(namespace, "namespace")
        _check_name(pod, "pod name")
        for node in self.nodes:
            code, out = self._run(node, _LOCATE, namespace, pod)
            if code == 0 and out.strip():
                return node, out.strip().splitlines()[-1]
        raise NotFound("Pod", pod)

    def plan(self, dispatch: WorkloadDispatch) -> list[_PodPlan]:
        """Pod names, nodes and ranks: nodes named by the hostname label, else round-robin."""
        replica = 1 if dispatch.kind == "Authoring" else dispatch.spec.resource.replica
        wid = dispatch.workload_id
        if dispatch.kind == "PyTorchJob":
            names = [f"{wid}-master-0"] + [f"{wid}-worker-{i}" for i in range(replica - 1)]
        else:
            names = [f"{wid}-{i}" for i in range(replica)]
        wanted = dispatch.spec.customer_labels.get(HOSTNAME_LABEL, "").split()
        unknown = [n for n in wanted if n not in self._by_name]
        if unknown:
            raise DriverError(f"unknown nodes: {', '.join(unknown)}")
        pool = [self._by_name[n] for n in wanted] or self.nodes
        return [_PodPlan(name=name, node=pool[i % len(pool)], rank=i) for i, name in enumerate(names)]

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
        if dispatch.spec.resource.gpu:
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
            code, out = self._run(node, _MKDIR, namespace)
            if code != 0:
                raise DriverError(f"{node.name}: cannot create the namespace folder: {out.strip()}")

    def delete_namespace(self, namespace: str) -> None:
        """Kill every pod of the namespace on every node and remove its folders."""
        _check_name(namespace, "namespace")
        for node in self.nodes:
            code, out = self._run(node, _RMDIR, namespace)
            if code != 0:
                raise DriverError(f"{node.name}: cannot remove the namespace folder: {out.strip()}")

    # -- workloads --------------------------------------------------------------------------
    def apply(self, dispatch: WorkloadDispatch) -> None:
        _check_name(dispatch.namespace, "namespace")
        _check_name(dispatch.workload_id, "workload id")
        plans = self.plan(dispatch)
        script = _b64(decode_entry_point(dispatch.spec.entry_point))
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
                _LAUNCH,
                dispatch.namespace,
                dispatch.workload_id,
                plan.name,
                str(dispatch.dispatch_count),
                script,
                _b64(env),
                _b64(json.dumps(meta)),
                _SUPERVISOR,
            )
            if code != 0:
                raise DriverError(f"{plan.node.name}: cannot start pod {plan.name}: {out.strip()[-300:]}")

    def list_pods(self, namespace: str, workload_id: str) -> list[PodStatus]:
        _check_name(namespace, "namespace")
        _check_name(workload_id, "workload id")
        pods: list[PodStatus] = []
        for node in self.nodes:
            code, out = self._run(node, _STATUS, namespace, workload_id)
            if code != 0:
                raise DriverError(f"{node.name}: cannot read pods: {out.strip()[-300:]}")
            for line in out.splitlines():
                fields = line.split("\t")
                if len(fields) == 6:
                    pods.append(self._pod_status(fields))
        return sorted(pods, key=lambda p: p.name)

    @staticmethod
    def _pod_status(fields: list[str]) -> PodStatus:
        name, state, exit_text, started, finished, meta_b64 = fields
        meta: dict[str, Any] = json.loads(base64.b64decode(meta_b64) or b"{}")
        container = ContainerStatus(name=meta.get("container", "main"))
        phase = "Pending"
        if exit_text.strip().lstrip("-").isdigit():
            code = int(exit_text)
            phase = "Succeeded" if code == 0 else "Failed"
            container.state, container.exit_code = "terminated", code
            container.reason = "Completed" if code == 0 else "Error"
        elif state == "running":
            phase, container.state = "Running", "running"
        elif state == "gone":  # the supervisor itself was killed (SIGKILL or reboot)
            phase, container.state = "Failed", "terminated"
            container.exit_code, container.reason = KILLED_EXIT_CODE, "Killed"
        else:
            container.state, container.reason = "waiting", "ContainerCreating"
        address = meta.get("address", "")
        return PodStatus(
            name=name,
            phase=phase,
            node=meta.get("node", ""),
            host_ip=address,
            pod_ip=address,
            rank=meta.get("rank", ""),
            start_time=_time(started),
            end_time=_time(finished),
            containers=[container],
            labels=meta.get("labels", {}),
        )

    def delete(self, namespace: str, workload_id: str, kind: WorkloadKind) -> None:
        _check_name(namespace, "namespace")
        _check_name(workload_id, "workload id")
        grace = self._grace if self._grace is not None else (5 if kind == "PyTorchJob" else 10)
        for node in self.nodes:
            code, out = self._run(
                node, _STOP, namespace, workload_id, str(grace), timeout=self._timeout + grace
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
        code, out = self._run(node, _LOG, namespace, pod, tail)
        if code == 3:
            raise NotFound("Pod", pod)
        if code != 0:
            raise DriverError(f"{node.name}: cannot read the log of {pod}: {out.strip()[-300:]}")
        return out

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
        argv = ["sh", "-c", _SHELL, "primus-shell", folder, *command]
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
