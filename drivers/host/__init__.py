"""HostDriver: each pod is a supervised process on its node, over SSH or on the local host.

**No isolation.** Pods are plain processes of the SSH user (or of the control-plane user for the
local node): no containers, no image, no resource limits, no network namespace. The `image` of a
workload is ignored; its entry point runs with the node's own tools. Use it for the embedded
single-host setup and for clusters without Kubernetes, not for untrusted workloads.

Placement is the scheduler's: pod i runs on `dispatch.assignments[i].node`, and its GPU indices
reach it as `CUDA_VISIBLE_DEVICES` / `HIP_VISIBLE_DEVICES` (a convention the program follows, not
an enforced limit). Without assignments the hostname label, else round-robin, picks the nodes.

Layout on a node: `<root>/<node>/<namespace>/<workload>/<pod>/` holds `run.sh` (the decoded entry
point), `env`, `meta.json`, `pid` (the supervisor, leader of the pod's process group),
`stdout.log` and `stderr.log` (each line `<unix seconds> <text>`), `started_at`, and
`finished_at` + `exit_code` once the entry point ended.
The pod's working directory is that folder. All state lives there, so a new driver instance (e.g.
after a worker restart) finds running pods by their pid file and never launches them twice.
`<root>` defaults to `$HOME/.primus-safe/pods` of the login user. Linux only (`/proc`, `setsid`).

Stop = SIGTERM to the pod's process group, SIGKILL after the grace period, then the folder goes.
Every output line has its time, so `read_log` honours `since_seconds` (node clock) and
`read_output` gives log collection the lines after a byte offset, one command per node.

Modules: `scripts` (the sh scripts run on a node), `supervisor` (the per-pod supervisor and what
its files mean), `output` (the output files' lines), `shell` (interactive sessions), `runner`
(local or SSH transport), `driver`.
"""

from __future__ import annotations

from drivers.host.driver import DEFAULT_MASTER_PORT, HostDriver, HostNode
from drivers.host.supervisor import KILLED_EXIT_CODE

__all__ = ["DEFAULT_MASTER_PORT", "KILLED_EXIT_CODE", "HostDriver", "HostNode"]
