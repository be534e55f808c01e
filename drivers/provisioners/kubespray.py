"""The `kubespray` provisioner: upstream's way, kubespray in its container on the first control-plane node.

The cluster's work dir `$HOME/.primus-safe/clusters/<cluster>` on that node gets the inventory
(`inventory/hosts.yaml`, written from the nodes) and the ssh key (`ssh/id`) over SFTP. The
`container_run` command of the node command table, with `{workdir}` and `{image}` filled in and
the `ansible-playbook` command appended, runs the playbook; every line it prints is streamed.
Creation runs `cluster.yml` with `kubeconfig_localhost`, so kubespray leaves the admin kubeconfig
in `inventory/artifacts/admin.conf`, which is fetched over SFTP. Adding a node runs `scale.yml`
limited to it, removing one `remove-node.yml`, and deletion `reset.yml`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any
from urllib.parse import urlsplit

import yaml

from domain.clusters import WORK_ROOT, ClusterNode, KubesprayOptions, inventory, playbook_args
from domain.nodes import render_command
from drivers.provisioners.base import (
    LineSink,
    NodeAccess,
    Provisioned,
    Provisioner,
    ProvisionFailed,
    work_dir_script,
)
from drivers.ssh import CommandFailed, Connection, SSHError, connect

KUBECONFIG_PATH = "inventory/artifacts/admin.conf"
PID_FILE = "playbook.pid"

# $1 pid file, then the command: the shell records its pid and becomes the command.
_RECORD_PID = 'echo $$ > "$1"; shift; exec "$@"'
# $1 pid file, $2 work dir: stop the recorded command and its children (the container runtime
# forwards SIGTERM), only if that pid still runs a command naming the work dir (never a reused pid).
_STOP = """\
pid=$(cat "$1" 2>/dev/null) || exit 0
if [ -n "$pid" ] && tr '\\000' ' ' < "/proc/$pid/cmdline" 2>/dev/null | grep -qF -- "$2"; then
  echo "stopping the playbook still running from an earlier attempt (pid $pid)"
  pkill -TERM -P "$pid" 2>/dev/null; kill -TERM "$pid" 2>/dev/null
  i=0
  while kill -0 "$pid" 2>/dev/null && [ $i -lt 20 ]; do sleep 0.5; i=$((i + 1)); done
  pkill -KILL -P "$pid" 2>/dev/null; kill -KILL "$pid" 2>/dev/null
fi
rm -f "$1"
"""


def endpoint_of(kubeconfig: str) -> str:
    """`host:port` of the API server the kubeconfig's current context points at."""
    try:
        data = yaml.safe_load(kubeconfig)
        clusters = {c["name"]: c["cluster"] for c in data["clusters"]}
        contexts = {c["name"]: c["context"] for c in data.get("contexts") or []}
        current = contexts.get(data.get("current-context", ""), {}).get("cluster")
        cluster = clusters.get(current) if current else None
        server = str((cluster or next(iter(clusters.values())))["server"])
    except (yaml.YAMLError, KeyError, TypeError, StopIteration, AttributeError) as exc:
        raise ProvisionFailed(f"kubespray left an unusable kubeconfig: {exc}") from exc
    parts = urlsplit(server)
    if not parts.hostname:
        raise ProvisionFailed(f"the kubeconfig names no API server host: {server!r}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{host}:{port}"


class KubesprayProvisioner(Provisioner):
    """Runs kubespray playbooks (see the module docstring)."""

    def __init__(
        self,
        cluster_id: str,
        *,
        options: KubesprayOptions,
        container_run: Sequence[str],
        ssh_user: str,
        ssh_private_key: str,
        connect_timeout: float,
        command_timeout: float,
    ) -> None:
        super().__init__(cluster_id, connect_timeout=connect_timeout, command_timeout=command_timeout)
        if not ssh_private_key:
            raise ProvisionFailed("kubespray logs in with a key: the cluster's ssh secret has no private key")
        if not container_run:
            raise ProvisionFailed("no container_run command is configured (PRIMUS_NODE_COMMANDS)")
        self.options = options
        self.container_run = list(container_run)
        self.ssh_user = ssh_user
        self.ssh_private_key = ssh_private_key
        self._running: tuple[NodeAccess, str] | None = None

    def _prepare(self, conn: Connection, nodes: Sequence[ClusterNode], on_line: LineSink) -> str:
        """Create the work dir, write the inventory and the key; returns the work dir's absolute path."""
        result = conn.run(
            ["sh", "-c", work_dir_script(), "primus", WORK_ROOT, self.cluster_id, "inventory"], timeout=60
        )
        work_dir = result.output.strip().splitlines()[-1]
        conn.run(["mkdir", "-p", f"{work_dir}/ssh"], timeout=60)
        conn.put(inventory(nodes, self.ssh_user).encode(), f"{work_dir}/inventory/hosts.yaml", mode=0o600)
        key = self.ssh_private_key if self.ssh_private_key.endswith("\n") else self.ssh_private_key + "\n"
        conn.put(key.encode(), f"{work_dir}/ssh/id", mode=0o600)
        on_line(f"wrote the inventory ({len(nodes)} node(s)) and the ssh key to {work_dir}")
        return work_dir

    def _playbook(
        self,
        nodes: Sequence[NodeAccess],
        playbook: str,
        on_line: LineSink,
        *,
        limit: str | None = None,
        extra_vars: Mapping[str, Any] | None = None,
    ) -> tuple[Connection, str]:
        """Run `playbook` from the first control-plane node; returns the open connection and work dir."""
        local = [n.node.node_id for n in nodes if n.local]
        if local:
            raise ProvisionFailed(f"kubespray cannot provision local nodes ({', '.join(local)}): use hosts")
        runner = next((n for n in nodes if n.node.is_control_plane), nodes[0])
        conn = self._connect(runner)
        try:
            work_dir = self._prepare(conn, [n.node for n in nodes], on_line)
            argv = render_command(self.container_run, workdir=work_dir, image=self.options.image)
            argv += playbook_args(playbook, self.options, extra_vars=extra_vars)
            if limit:
                argv.append(f"--limit={limit}")
            on_line(f"running {playbook} with {self.options.image} on {runner.node.hostname}")
            pid_file = f"{work_dir}/{PID_FILE}"
            conn.run(["sh", "-c", _STOP, "primus", pid_file, work_dir], timeout=60, on_line=on_line)
            self._running = (runner, work_dir)
            try:
                conn.run(
                    ["sh", "-c", _RECORD_PID, "primus", pid_file, *argv],
                    timeout=self.command_timeout,
                    on_line=on_line,
                )
            except CommandFailed as err:
                raise ProvisionFailed(f"kubespray {playbook} failed with exit code {err.exit_code}") from err
            finally:
                self._running = None
        except BaseException:
            conn.close()
            raise
        return conn, work_dir

    def cancel(self) -> None:
        """Also stop the playbook on its node (a closed session alone does not end it)."""
        running = self._running
        super().cancel()
        if running is None:
            return
        runner, work_dir = running
        with contextlib.suppress(SSHError), connect(runner.ssh, timeout=self.connect_timeout) as conn:
            conn.run(
                ["sh", "-c", _STOP, "primus", f"{work_dir}/{PID_FILE}", work_dir], timeout=60, check=False
            )

    def create(self, control_plane: Sequence[NodeAccess], on_line: LineSink) -> Provisioned:
        conn, work_dir = self._playbook(control_plane, "cluster.yml", on_line)
        with conn:
            try:
                kubeconfig = conn.get(f"{work_dir}/{KUBECONFIG_PATH}").decode()
            except FileNotFoundError as exc:
                raise ProvisionFailed(f"kubespray finished but left no {KUBECONFIG_PATH}") from exc
        endpoint = endpoint_of(kubeconfig)
        on_line(f"fetched the admin kubeconfig; API server {endpoint}")
        return Provisioned(work_dir=work_dir, endpoint=endpoint, kubeconfig=kubeconfig)

    def add_node(self, nodes: Sequence[NodeAccess], node: NodeAccess, on_line: LineSink) -> None:
        conn, _ = self._playbook(nodes, "scale.yml", on_line, limit=node.node.hostname)
        conn.close()

    def remove_node(self, nodes: Sequence[NodeAccess], node: NodeAccess, on_line: LineSink) -> None:
        extra = {"node": node.node.hostname, "skip_confirmation": "yes", "reset_nodes": True}
        conn, _ = self._playbook(nodes, "remove-node.yml", on_line, extra_vars=extra)
        conn.close()

    def reset(self, nodes: Sequence[NodeAccess], on_line: LineSink) -> None:
        conn, work_dir = self._playbook(nodes, "reset.yml", on_line, extra_vars={"reset_confirmation": "yes"})
        with conn:
            conn.run(["rm", "-rf", work_dir], timeout=60)
        on_line(f"removed {work_dir}")
