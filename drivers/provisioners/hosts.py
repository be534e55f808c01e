"""The `hosts` provisioner: clusters without Kubernetes, whose pods run through `drivers.host.HostDriver`.

Creating checks every control-plane node over SSH, or a local node on this machine (Linux, the
tools the host driver needs) and prepares the cluster's working directory
`$HOME/.primus-safe/clusters/<cluster>` with its `pods` folder, the host driver's root. Adding a
node does the same on that node; removing a node (and resetting the cluster) stops the cluster's
pods there and removes the directory.
"""

from __future__ import annotations

from collections.abc import Sequence

from domain.clusters import WORK_ROOT
from drivers.provisioners.base import LineSink, NodeAccess, Provisioned, Provisioner, ProvisionFailed
from drivers.ssh import CommandFailed

# $1 root, $2 cluster: fixed script, arguments never pasted in.
_PREPARE = """\
set -e
echo "system: $(uname -sr) on $(uname -m)"
[ -d /proc/self ] || { echo "missing /proc: the host driver needs Linux"; exit 3; }
for tool in setsid base64 kill sleep mkdir; do
  command -v "$tool" >/dev/null 2>&1 || { echo "missing tool: $tool"; exit 3; }
done
d="$HOME/$1/$2"
mkdir -p "$d/pods"
echo "pods directory ready: $d/pods"
echo "workdir=$d"
"""

_REMOVE = """\
d="$HOME/$1/$2"
[ -d "$d" ] || { echo "nothing to remove: $d does not exist"; exit 0; }
groups=""
for f in $(find "$d/pods" -name pid 2>/dev/null); do
  pid=$(cat "$f" 2>/dev/null || true)
  [ -n "$pid" ] && kill -TERM -"$pid" 2>/dev/null && groups="$groups $pid"
done
[ -z "$groups" ] || { echo "stopped pods:$groups"; sleep 1; }
for p in $groups; do kill -KILL -"$p" 2>/dev/null || true; done
rm -rf "$d"
echo "removed $d"
"""


class HostsProvisioner(Provisioner):
    """Prepares nodes for the host driver (see the module docstring)."""

    def _prepare(self, access: NodeAccess, on_line: LineSink) -> str:
        node = access.node
        how = "(this machine, no SSH)" if access.local else f"({node.private_ip}:{node.port}) over SSH"
        on_line(f"checking {node.hostname} {how}")
        lines: list[str] = []

        def sink(line: str) -> None:
            lines.append(line)
            if not line.startswith("workdir="):
                on_line(f"[{node.hostname}] {line}")

        with self._connect(access) as conn:
            try:
                conn.run(
                    ["sh", "-c", _PREPARE, "primus", WORK_ROOT, self.cluster_id],
                    timeout=self.command_timeout,
                    on_line=sink,
                )
            except CommandFailed as err:
                raise ProvisionFailed(f"node {node.hostname} cannot host pods: {err.reason}") from err
        work = [line.removeprefix("workdir=") for line in lines if line.startswith("workdir=")]
        if not work:
            raise ProvisionFailed(f"node {node.hostname} did not report its working directory")
        return work[-1]

    def _remove(self, access: NodeAccess, on_line: LineSink) -> None:
        node = access.node
        with self._connect(access) as conn:
            try:
                conn.run(
                    ["sh", "-c", _REMOVE, "primus", WORK_ROOT, self.cluster_id],
                    timeout=self.command_timeout,
                    on_line=lambda line: on_line(f"[{node.hostname}] {line}"),
                )
            except CommandFailed as err:
                raise ProvisionFailed(f"cleaning node {node.hostname} failed: {err.reason}") from err

    def create(self, control_plane: Sequence[NodeAccess], on_line: LineSink) -> Provisioned:
        work_dirs = [self._prepare(access, on_line) for access in control_plane]
        on_line(f"{len(control_plane)} control-plane node(s) ready for pods")
        return Provisioned(work_dir=work_dirs[0])

    def add_node(self, nodes: Sequence[NodeAccess], node: NodeAccess, on_line: LineSink) -> None:
        self._prepare(node, on_line)

    def remove_node(self, nodes: Sequence[NodeAccess], node: NodeAccess, on_line: LineSink) -> None:
        self._remove(node, on_line)

    def reset(self, nodes: Sequence[NodeAccess], on_line: LineSink) -> None:
        for access in nodes:
            self._remove(access, on_line)
