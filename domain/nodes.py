"""Nodes: phases, onboarding steps, input rules, fact parsing and the flavor comparison (pure logic)."""

from __future__ import annotations

import ipaddress
import json
import re
from collections.abc import Mapping, Sequence
from decimal import Decimal
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, Field

from domain import quantity as q
from domain.names import normalize_name, random_suffix

# Phases the API shows (contract enum); "" while the first onboarding pass has not finished.
READY = "Ready"
SSH_FAILED = "SSHFailed"
HOSTNAME_FAILED = "HostnameFailed"
MANAGING = "Managing"
MANAGED_FAILED = "ManagedFailed"
UNMANAGING = "Unmanaging"
UNMANAGED_FAILED = "UnmanagedFailed"
PHASES = (READY, SSH_FAILED, HOSTNAME_FAILED, MANAGING, MANAGED_FAILED, UNMANAGING, UNMANAGED_FAILED)
CLUSTER_BUSY_PHASES = (MANAGING, UNMANAGING)
"""A node in one of these phases is joining or leaving a cluster: nothing else may move its phase."""

# Onboarding steps, in order; a reconfiguration restarts from one of them.
Step = Literal["reach", "hostname", "facts", "addons"]
STEPS: tuple[Step, ...] = ("reach", "hostname", "facts", "addons")
STEP_TITLES = {
    "reach": "Reaching",
    "hostname": "SettingHostname",
    "facts": "DiscoveringFacts",
    "addons": "InstallingAddons",
}

TAINT_PREFIX = "primus-safe."
RESERVED_LABEL_PREFIXES = ("primus-safe.amd.com/", "primus-safe.")
TAINT_EFFECTS = ("NoSchedule", "PreferNoSchedule", "NoExecute")
MEMORY_TOLERANCE = Decimal("0.10")
"""/proc/meminfo shows less than the installed memory (kernel reservations): allow 10 % below."""
DISK_TOLERANCE = Decimal("0.05")

_HOST_LABEL = r"[A-Za-z0-9](?:[-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"^{_HOST_LABEL}(?:\.{_HOST_LABEL})*$")
_LABEL_NAME = re.compile(r"^[A-Za-z0-9](?:[-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
_LABEL_PREFIX = re.compile(r"^[a-z0-9](?:[-a-z0-9]*[a-z0-9])?(?:\.[a-z0-9](?:[-a-z0-9]*[a-z0-9])?)*$")
_ADDON_NAME = re.compile(r"^[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?$")
_PLACEHOLDER = re.compile(r"\{([a-z_]+)\}")


def hostname_error(value: str) -> str | None:
    """Why `value` is not an RFC 1123 host name, or None."""
    if not value or len(value) > 253 or not _HOSTNAME.match(value):
        return "must be an RFC 1123 host name (letters, digits, '-' and '.', at most 253 characters)"
    return None


def ip_error(value: str) -> str | None:
    """Why `value` is not a plain IPv4/IPv6 address, or None."""
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return f"{value!r} is not a valid IP address"
    return None


def label_key_error(key: str) -> str | None:
    """Why `key` is not a Kubernetes label key a customer may set, or None."""
    prefix, _, name = key.rpartition("/")
    if "/" in key and (not prefix or len(prefix) > 253 or not _LABEL_PREFIX.match(prefix)):
        return f"label key {key!r}: the prefix must be a DNS subdomain"
    if not _LABEL_NAME.match(name):
        return f"label key {key!r}: the name must be 1-63 alphanumerics, '-', '_' or '.'"
    for reserved in RESERVED_LABEL_PREFIXES:
        if key.startswith(reserved):
            return f"label key {key!r}: the prefix {reserved} is reserved for the system"
    return None


def label_value_error(value: str) -> str | None:
    """Why `value` is not a Kubernetes label value, or None."""
    if value and not _LABEL_NAME.match(value):
        return f"label value {value!r}: must be empty or 1-63 alphanumerics, '-', '_' or '.'"
    return None


def taint_key_error(key: str) -> str | None:
    """Why a taint key (without the system prefix) is not acceptable, or None."""
    if not _LABEL_NAME.match(key) or len(key) + len(TAINT_PREFIX) > 63:
        return f"taint key {key!r}: must be 1-{63 - len(TAINT_PREFIX)} alphanumerics, '-', '_' or '.'"
    return None


def addon_name_error(name: str) -> str | None:
    """Why `name` cannot be an addon script name, or None."""
    if not _ADDON_NAME.match(name):
        return f"addon name {name!r} must be a DNS-1123 label"
    return None


LOCAL_NODE_ID = "local"
"""The id of the node that is this machine (`local` nodes): there is at most one."""


def new_node_id(hostname: str | None, private_ip: str) -> str:
    """The node id: the normalised host name (or IP) with dots as '-', plus '-' and 5 random chars."""
    base = normalize_name(hostname or private_ip).replace(".", "-").replace(":", "-")
    base = re.sub(r"[^a-z0-9-]", "", base).strip("-") or "node"
    return f"{base[:57].rstrip('-')}-{random_suffix()}"


def render_command(template: Sequence[str], **values: str) -> list[str]:
    """Fill `{name}` placeholders of an argv template; each value stays one argument.

    Raises ValueError for a placeholder without a value. Values are never split or re-parsed.
    """
    argv = []
    for part in template:

        def _fill(match: re.Match[str]) -> str:
            name = match.group(1)
            if name not in values:
                raise ValueError(f"command template needs {{{name}}}")
            return values[name]

        argv.append(_PLACEHOLDER.sub(_fill, part))
    return argv


# --- facts -------------------------------------------------------------------------------------

FACTS_SCRIPT = r"""
echo '@@nproc'; nproc 2>/dev/null || getconf _NPROCESSORS_ONLN
echo '@@meminfo'; grep -E '^MemTotal:' /proc/meminfo
echo '@@uptime'; cat /proc/uptime
echo '@@lsblk'; lsblk -b -J -o NAME,SIZE,TYPE,MOUNTPOINT 2>/dev/null
echo '@@amd-smi'; command -v amd-smi >/dev/null 2>&1 && amd-smi list --json 2>/dev/null
echo '@@rocm-smi'; command -v rocm-smi >/dev/null 2>&1 && rocm-smi --showproductname --json 2>/dev/null
echo '@@nvidia-smi'; command -v nvidia-smi >/dev/null 2>&1 \
  && nvidia-smi --query-gpu=name --format=csv,noheader 2>/dev/null
echo '@@hostname'; hostname
true
"""
"""A fixed script (no input pasted in) printing every fact in a marked section."""


class Disk(BaseModel):
    """A whole disk: name, size in bytes, whether `/` lives on it."""

    name: str
    size: int
    root: bool = False


class NodeFacts(BaseModel):
    """What the machine really has."""

    cpu_cores: int = 0
    memory_bytes: int = 0
    gpu_count: int = 0
    gpu_tool: str = ""
    gpu_products: list[str] = Field(default_factory=list)
    disks: list[Disk] = Field(default_factory=list)
    hostname: str = ""
    uptime_seconds: float = 0.0


def _sections(output: str) -> dict[str, str]:
    sections: dict[str, list[str]] = {}
    current = ""
    for line in output.splitlines():
        if line.startswith("@@"):
            current = line[2:].strip()
            sections[current] = []
        elif current:
            sections[current].append(line)
    return {name: "\n".join(lines).strip() for name, lines in sections.items()}


def _first_int(text: str) -> int:
    match = re.search(r"\d+", text)
    return int(match.group()) if match else 0


def _walk_disks(devices: Sequence[Mapping[str, Any]]) -> list[Disk]:
    disks = []

    def mounted_root(device: Mapping[str, Any]) -> bool:
        if device.get("mountpoint") == "/" or "/" in (device.get("mountpoints") or []):
            return True
        return any(mounted_root(child) for child in device.get("children") or [])

    for device in devices:
        size = int(device.get("size") or 0)
        if device.get("type") != "disk" or size <= 0 or str(device.get("name", "")).startswith("zram"):
            continue
        disks.append(Disk(name=str(device.get("name")), size=size, root=mounted_root(device)))
    return disks


def _gpus(sections: Mapping[str, str]) -> tuple[str, int, list[str]]:
    amd = sections.get("amd-smi", "")
    if amd:
        with_products: list[str] = []
        try:
            data = json.loads(amd)
            entries = data if isinstance(data, list) else list(data.values())
            with_products = [
                str(e.get("market_name") or e.get("gpu", "")) for e in entries if isinstance(e, dict)
            ]
            return "amd-smi", len(entries), with_products
        except (ValueError, AttributeError):
            pass
    rocm = sections.get("rocm-smi", "")
    if rocm:
        try:
            data = json.loads(rocm)
            cards = {k: v for k, v in data.items() if k.startswith("card")}
            products = [str(v.get("Card Series", v.get("Card series", ""))) for v in cards.values()]
            return "rocm-smi", len(cards), products
        except (ValueError, AttributeError):
            pass
    nvidia = [line.strip() for line in sections.get("nvidia-smi", "").splitlines() if line.strip()]
    if nvidia:
        return "nvidia-smi", len(nvidia), nvidia
    return "", 0, []


def parse_facts(output: str) -> NodeFacts:
    """Facts from the output of FACTS_SCRIPT; missing sections leave zeros, never raise."""
    sections = _sections(output)
    try:
        devices = json.loads(sections.get("lsblk") or "{}").get("blockdevices", [])
    except ValueError:
        devices = []
    tool, count, products = _gpus(sections)
    uptime = sections.get("uptime", "").split()
    return NodeFacts(
        cpu_cores=_first_int(sections.get("nproc", "")),
        memory_bytes=_first_int(sections.get("meminfo", "")) * 1024,
        gpu_count=count,
        gpu_tool=tool,
        gpu_products=products,
        disks=_walk_disks(devices),
        hostname=sections.get("hostname", "").strip(),
        uptime_seconds=float(uptime[0]) if uptime else 0.0,
    )


def flavor_mismatches(facts: NodeFacts, flavor: Mapping[str, Any]) -> list[str]:
    """What the machine lacks compared with its flavor (empty when it matches)."""
    problems = []
    cpu = q.to_int(str(flavor["cpu"]["quantity"]))
    if facts.cpu_cores < cpu:
        problems.append(f"the flavor has {cpu} CPU cores but the node has {facts.cpu_cores}")
    memory = q.parse(str(flavor["memory"]))
    if facts.memory_bytes < memory * (1 - MEMORY_TOLERANCE):
        problems.append(
            f"the flavor has {flavor['memory']} memory but the node has {facts.memory_bytes} bytes"
        )
    gpu = flavor.get("gpu") or None
    if gpu:
        wanted = q.to_int(str(gpu["quantity"]))
        if facts.gpu_count < wanted:
            found = (
                f"{facts.gpu_count} ({facts.gpu_tool})"
                if facts.gpu_tool
                else "none (no amd-smi, rocm-smi or nvidia-smi)"
            )
            problems.append(f"the flavor has {wanted} GPUs but the node has {found}")
    problems += _disk_mismatches(facts, flavor)
    return problems


def _disk_mismatches(facts: NodeFacts, flavor: Mapping[str, Any]) -> list[str]:
    problems = []
    root = flavor.get("rootDisk") or None
    if root:
        wanted = q.parse(str(root["quantity"])) * (1 - DISK_TOLERANCE)
        roots = [d for d in facts.disks if d.root]
        if not roots or roots[0].size < wanted:
            have = f"{roots[0].size} bytes" if roots else "no disk holding /"
            problems.append(f"the flavor has a {root['quantity']} root disk but the node has {have}")
    data = flavor.get("dataDisk") or None
    if data:
        wanted = q.parse(str(data["quantity"])) * (1 - DISK_TOLERANCE)
        fitting = [d for d in facts.disks if not d.root and d.size >= wanted]
        if len(fitting) < int(data["count"]):
            problems.append(
                f"the flavor has {data['count']} data disks of {data['quantity']} "
                f"but the node has {len(fitting)}"
            )
    return problems


# --- availability ------------------------------------------------------------------------------


class UnavailableReason(StrEnum):
    """Why something outside onboarding holds a node unavailable.

    Each hold is recorded on its own (reason plus a reference such as the fault or ops job id),
    so holds stack: clearing one (a fault stopped) never undoes another (a reboot in progress).
    """

    FAULT = "fault"
    REBOOT = "reboot"
    OPS_JOB = "opsjob"
    MAINTENANCE = "maintenance"


class Hold(BaseModel):
    """One recorded reason a node is unavailable."""

    reason: UnavailableReason
    ref: str = ""
    """What raised it (a fault id, an ops job id); "" for a reason without one."""
    message: str = ""


def availability(
    *,
    phase: str,
    step: str,
    facts_problem: str,
    addons_installed: bool,
    taints: Sequence[Mapping[str, str]],
    holds: Sequence[Hold] = (),
) -> tuple[bool, str]:
    """Whether workloads may use the node, and the first reason when they may not."""
    if step:
        return False, f"the node is being onboarded ({STEP_TITLES.get(step, step)})"
    if phase != READY:
        return False, "node's status is not ready"
    if holds:
        first = min(holds, key=lambda h: (h.reason.value, h.ref))
        return False, first.message or f"the node is held unavailable ({first.reason.value})"
    if facts_problem:
        return False, facts_problem
    if not addons_installed:
        return False, "the node template's addons are not installed"
    if taints:
        shown = [f"{t['key']}={t.get('value', '')}" for t in taints]
        return False, f"node has taints: {json.dumps(shown)}"
    return True, ""


# --- workflow and activity messages --------------------------------------------------------------


class NodeTimings(BaseModel):
    """Durations and retry bounds for a node's activities (seconds; from settings)."""

    connect_timeout: float = 10.0
    command_timeout: int = 900
    heartbeat_timeout: int = 30
    unreachable_attempts: int = 3
    retry_interval: float = 2.0


PREPARE_STEPS: tuple[Step, ...] = ("reach", "hostname", "facts")
"""The steps `node.prepare` runs in one pass over one connection (the addons follow separately)."""


class PrepareInput(BaseModel):
    """Where an SSH pass of `node.prepare` starts (one of PREPARE_STEPS)."""

    node_id: str
    start: Step = "reach"


class FinishInput(BaseModel):
    """The outcome of an onboarding pass, written by the `node.finish` activity."""

    node_id: str
    phase: str
    message: str = ""


class ProbeInput(BaseModel):
    """One probe pass over every node."""

    ssh_queue: str
    concurrency: int = 50
    timings: NodeTimings = Field(default_factory=NodeTimings)
    failover_monitors: list[str] = Field(default_factory=list)
    """Passed on to the `fault/<id>` workflows the probe starts for its own faults."""


class ProbeOutcome(BaseModel):
    """What one node's probe saw and did."""

    node_id: str
    reachable: bool
    phase: str
    changed: bool = False
    restart_onboarding: bool = False
    """The node never finished onboarding and is reachable now: the node workflow should retry."""
    raised_faults: list[str] = Field(default_factory=list)
    """Ids of the faults this probe raised (recorded; their workflows to start)."""
    cleared_faults: list[str] = Field(default_factory=list)
    """Ids of the open faults this probe cleared (their workflows to stop)."""


class ProbeVerdict(BaseModel):
    """What one probe result does to a node: its new phase (None = unchanged) and the log line."""

    phase: str | None = None
    message: str = ""
    restart_onboarding: bool = False
    line: str = ""
    level: str = "INFO"


def probe_verdict(*, phase: str, onboarded: bool, reachable: bool, reason: str) -> ProbeVerdict:
    """The probe's transition: Ready <-> SSHFailed for onboarded nodes; a node whose onboarding
    failed unreachable and answers now gets its onboarding retried. Other phases are left alone."""
    if reachable and phase == SSH_FAILED and onboarded:
        return ProbeVerdict(phase=READY, line="probe: reachable again; phase Ready")
    if reachable and phase == SSH_FAILED:
        return ProbeVerdict(restart_onboarding=True, line="probe: reachable; retrying onboarding")
    if not reachable and phase == READY:
        return ProbeVerdict(
            phase=SSH_FAILED,
            message=reason,
            line=f"probe: unreachable ({reason}); phase SSHFailed",
            level="ERROR",
        )
    return ProbeVerdict()


class ProbeSummary(BaseModel):
    """Totals of one probe pass."""

    probed: int = 0
    reachable: int = 0
    changed: list[str] = Field(default_factory=list)
