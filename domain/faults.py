"""Faults: a monitor's finding on a node, its taint, and the probe's hysteresis.

Pure rules and workflow messages. A fault taints its node (`primus-safe.<monitorId>`), holds it
unavailable while open, and fails over the workloads on it when its effect is `NoExecute` or its
monitor is one of the failover monitors (settings). Stopping it removes the taint and the hold;
the record stays (closed, `deletionTime` set) until deleted.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from domain import quantity as q
from domain.nodes import FACTS_SCRIPT, TAINT_PREFIX, parse_facts

# Phases: Pending while its workflow applies it, Succeeded once the node is tainted and held,
# Failed when that could not be done (the node vanished).
PENDING = "Pending"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PHASES = (PENDING, SUCCEEDED, FAILED)

TAINT = "taint"
ACTIONS = (TAINT,)
Effect = Literal["NoSchedule", "NoExecute"]
EFFECTS: tuple[Effect, ...] = ("NoSchedule", "NoExecute")
MAX_MESSAGE = 1024

MONITOR_ID = re.compile(r"^[a-z0-9][-a-z0-9.]{0,61}[a-z0-9]$")
"""Upstream's monitor id rule (node-agent monitor configs)."""

SSH_UNREACHABLE = "ssh-unreachable"
"""The monitor id of the probe's own fault: the node did not answer over SSH N times in a row."""

GPU_COUNT = "gpu-count"
"""The probe's health monitor: the node shows fewer GPUs than its flavor says."""
DISK_FULL = "disk-full"
"""The probe's health monitor: the root file system is fuller than the threshold (settings)."""
ADDON_CHECK = "addon-check"
"""The probe's health monitor: an addon of the node's template no longer holds (its `check` run
reports drift, e.g. a setting changed by hand or lost at a reboot)."""
HEALTH_MONITORS = (GPU_COUNT, DISK_FULL, ADDON_CHECK)


def addon_check_problem(results: list[tuple[str, int, str]]) -> str:
    """The addon-check finding from (addon, exit code, output) of each `check` run: "" when
    every one passed, else the first failure with its drift lines."""
    for name, code, output in results:
        if code != 0:
            lines = [line.strip() for line in output.splitlines() if line.startswith(("drift:", "error:"))]
            detail = "; ".join(lines[:5]) or output.strip()[-300:]
            return f"addon {name} check failed (exit {code}): {detail}"[:MAX_MESSAGE]
    return ""


HEALTH_SCRIPT = (
    FACTS_SCRIPT.rstrip().removesuffix("true").rstrip()
    + """
echo '@@df'; df -P / 2>/dev/null | tail -1
true
"""
)
"""What the probe runs on a node it reaches: the facts (GPUs) and the root file system's use."""

STOP_SIGNAL = "stop"
"""Signal to `fault/<id>`: close the fault (argument: also remove its record)."""

SORT_COLUMNS = ("create_time", "creation_time", "delete_time", "deletion_time", "node_id", "monitor_id")


def fault_workflow_id(fault_id: str) -> str:
    """The id of the fault's workflow."""
    return f"fault/{fault_id}"


def taint_key(monitor_id: str) -> str:
    """The node taint of a monitor's faults (upstream's `primus-safe.<id>`, lower case)."""
    return f"{TAINT_PREFIX}{monitor_id.lower()}"


def monitor_id_problem(monitor_id: str) -> str | None:
    """Why a monitor id is refused, or None."""
    if not MONITOR_ID.match(monitor_id):
        return (
            f"monitorId {monitor_id!r} must be 2-63 lower-case alphanumerics, '-' or '.', "
            "starting and ending with an alphanumeric"
        )
    if len(taint_key(monitor_id)) > 63:
        return f"monitorId {monitor_id!r} is too long for a taint key (at most {63 - len(TAINT_PREFIX)})"
    return None


def fails_over(effect: str, monitor_id: str, failover_monitors: tuple[str, ...] | list[str]) -> bool:
    """Whether a fault moves the workloads off its node."""
    return effect == "NoExecute" or monitor_id in failover_monitors


def hold_message(monitor_id: str, message: str) -> str:
    """The node's unavailability reason while the fault is open."""
    return f"fault {monitor_id}: {message}" if message else f"fault {monitor_id}"


# --- the probe's hysteresis ------------------------------------------------------------------------

ProbeAction = Literal["raise", "clear"]


def probe_fault_action(
    *, failures: int, successes: int, fault_open: bool, raise_after: int, clear_after: int
) -> ProbeAction | None:
    """After a probe: raise the SSH fault once `raise_after` checks in a row failed, clear it once
    `clear_after` in a row succeeded; anything in between changes nothing, so a node that misses
    one check (or flaps) does not churn its workloads."""
    if not fault_open and failures >= max(raise_after, 1):
        return "raise"
    if fault_open and successes >= max(clear_after, 1):
        return "clear"
    return None


def health_findings(output: str, *, flavor_gpus: int, disk_full_percent: int) -> dict[str, str]:
    """Monitor -> problem ("" when healthy) from HEALTH_SCRIPT's output; a check whose output is
    missing is left out (a flavor without GPUs passes the GPU check, so a fault raised before the
    flavor changed clears)."""
    findings: dict[str, str] = {}
    facts = parse_facts(output)
    found = f"{facts.gpu_count} ({facts.gpu_tool})" if facts.gpu_tool else "none"
    findings[GPU_COUNT] = (
        f"the flavor has {flavor_gpus} GPUs but the node shows {found}"
        if facts.gpu_count < flavor_gpus
        else ""
    )
    df = output.split("@@df", 1)[1].split() if "@@df" in output else []
    used = next((f for f in df if f.endswith("%") and f[:-1].isdigit()), "")
    if used:
        percent = int(used[:-1])
        findings[DISK_FULL] = (
            f"the root file system is {percent}% full (threshold {disk_full_percent}%)"
            if percent >= disk_full_percent
            else ""
        )
    return findings


def flavor_gpu_count(spec: dict[str, object] | None) -> int:
    """The GPUs a flavor spec (as stored) promises."""
    gpu = (spec or {}).get("gpu")
    if not isinstance(gpu, dict) or not gpu.get("quantity"):
        return 0
    return q.to_int(str(gpu["quantity"]))


# --- workflow messages -----------------------------------------------------------------------------


class FaultWorkflowInput(BaseModel):
    """What `fault/<id>` needs besides the record it loads."""

    fault_id: str
    io_queue: str
    failover_monitors: list[str] = Field(default_factory=list)


class AppliedFault(BaseModel):
    """What applying a fault did: the node's workspace (its scheduler is told), the workloads with
    pods on the node, and whether they are to be failed over."""

    fault_id: str
    node_id: str
    monitor_id: str
    message: str
    phase: str
    closed: bool = False
    """The fault was stopped before it could be applied (nothing to undo)."""
    workspace_id: str = ""
    cluster_id: str = ""
    workloads: list[str] = Field(default_factory=list)
    failover: bool = False


class ReleasedFault(BaseModel):
    """What closing a fault did: the node's workspace (its scheduler is told) and cluster."""

    fault_id: str
    node_id: str = ""
    workspace_id: str = ""
    cluster_id: str = ""
    released: bool = False
    """The node's hold and taint went (False: another open fault of the monitor keeps the taint)."""


class TaintPush(BaseModel):
    """Push a node's platform taints to its cluster (`ExecutionDriver.sync_node`)."""

    node_id: str
    cluster_id: str
