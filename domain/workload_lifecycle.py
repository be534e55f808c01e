"""A workload's lifecycle: phases, conditions, the workflow's messages and the pure rules the
API and the workload workflow share (request per pod, runtime, timeout, pod outcome).

The lifecycle itself is `workflows/workload.py`; the one writer of its status is
`db/workload_status.py`. Nothing here does I/O.
"""

from __future__ import annotations

import random
import string
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from domain import quantity as q
from domain.names import normalize_name
from domain.pods import PodStatus
from domain.scheduler import format_amount
from domain.scheduling import Placement
from domain.workloads import WorkloadSpec

# Phases (contract enum). Pending covers "waiting for dependencies, start time or admission".
PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
STOPPED = "Stopped"
UPDATING = "Updating"
PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED, UPDATING)
ENDED_PHASES = (SUCCEEDED, FAILED, STOPPED)
LONG_RUNNING_KINDS = ("Deployment", "StatefulSet")

# Condition types (contract enum plus upstream's K8sUpdating).
ADMIN_SCHEDULED = "AdminScheduled"
ADMIN_DISPATCHED = "AdminDispatched"
K8S_PENDING = "K8sPending"
K8S_RUNNING = "K8sRunning"
K8S_SUCCEEDED = "K8sSucceeded"
K8S_FAILED = "K8sFailed"
K8S_UPDATING = "K8sUpdating"
ADMIN_FAILOVER = "AdminFailover"
ADMIN_FAILED = "AdminFailed"
ADMIN_STOPPED = "AdminStopped"
MAX_CONDITIONS = 60

# Messages between the workload workflow and others.
STOP_UPDATE = "stop"
DELETE_UPDATE = "delete"
PATCH_UPDATE = "patch"
FAILOVER_SIGNAL = "failover"
"""Signal to `workload/<id>`: a node it runs on has a fault (argument: the message)."""
DEPENDENCY_SIGNAL = "dependency-ended"
"""Signal to `workload/<id>`: a workload it depends on ended (argument: that workload's id)."""

ID_SUFFIX_LENGTH = 5
MAX_DISPLAY_NAME = 45


def workload_workflow_id(workload_id: str) -> str:
    """The id of the workload's lifecycle workflow."""
    return f"workload/{workload_id}"


def new_workload_id(display_name: str, rng: random.Random | None = None) -> str:
    """`<display name>-<5 random lower-case letters or digits>`, as upstream's GenerateName."""
    pick = rng or random.SystemRandom()
    suffix = "".join(pick.choice(string.ascii_lowercase + string.digits) for _ in range(ID_SUFFIX_LENGTH))
    return f"{normalize_name(display_name)[:MAX_DISPLAY_NAME]}-{suffix}"


def reason_of(dispatch_count: int) -> str:
    """Upstream's condition reason: `run_<n>_times`."""
    return f"run_{dispatch_count}_times"


class Condition(BaseModel):
    """One entry of the workload's `conditions`."""

    type: str
    status: str = "True"
    reason: str = ""
    message: str = ""
    last_transition_time: str = ""


def add_condition(conditions: Sequence[Mapping[str, Any]], new: Condition) -> list[dict[str, Any]]:
    """Conditions with `new` added: one of the same type and reason is replaced in place (as
    upstream's job handler), otherwise appended; the oldest are dropped beyond `MAX_CONDITIONS`."""
    result = [dict(c) for c in conditions]
    entry = new.model_dump()
    for i, old in enumerate(result):
        if old.get("type") == new.type and old.get("reason") == new.reason:
            result[i] = entry
            return result
    result.append(entry)
    return result[-MAX_CONDITIONS:]


# --- requests -------------------------------------------------------------------------------------


def request_per_pod(
    spec: WorkloadSpec, gpu_resource_name: str, offered: Collection[str] | None = None
) -> dict[str, int]:
    """A pod's request in the scheduler's integer units (cpu cores, bytes, GPUs). Ephemeral
    storage counts only where the flavor declares it (`offered`: the flavor's resource names);
    a flavor without it does not account disk space."""
    res = spec.resource
    request = {q.CPU: q.to_int(res.cpu), q.MEMORY: q.to_int(res.memory)}
    if res.ephemeral_storage and (offered is None or q.EPHEMERAL_STORAGE in offered):
        request[q.EPHEMERAL_STORAGE] = q.to_int(res.ephemeral_storage)
    if res.gpu:
        request[gpu_resource_name] = q.to_int(res.gpu)
    return {name: amount for name, amount in request.items() if amount > 0}


def exceeds_flavor(request: Mapping[str, int], allocatable: Mapping[str, int]) -> str:
    """ "" when one pod fits a node of the flavor, else a message naming the resource and both numbers."""
    for name, amount in sorted(request.items()):
        have = allocatable.get(name, 0)
        if amount > have:
            return (
                f"Insufficient resource: {name} per pod requests {format_amount(name, amount)}, "
                f"a node of the workspace's flavor offers {format_amount(name, have)}"
            )
    return ""


def scope_of(kind: str) -> str:
    """The workspace scope a kind needs (upstream's mapping)."""
    return {"PyTorchJob": "Train", "Deployment": "Infer", "StatefulSet": "Infer", "Authoring": "Authoring"}[
        kind
    ]


# --- times ----------------------------------------------------------------------------------------


def format_duration(seconds: float) -> str:
    """Go's Duration formatting, to the second: `1h30m45s`, `2m0s`, `0s`."""
    total = max(int(seconds), 0)
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"


def runtime(start: datetime | None, end: datetime | None, now: datetime) -> str:
    """How long it ran: until its end, or until now while running; `0s` before it started."""
    if start is None:
        return "0s"
    return format_duration(((min(end, now) if end else now) - start).total_seconds())


def seconds_until_timeout(timeout: int, start: datetime | None, now: datetime, ended: bool) -> int:
    """Seconds left before the timeout: -1 before the start, 0 without a timeout or once ended."""
    if timeout <= 0:
        return 0
    if start is None:
        return -1
    if ended:
        return 0
    return max(0, int(timeout - (now - start).total_seconds()))


# --- the workflow's messages --------------------------------------------------------------------


class WorkloadWorkflowInput(BaseModel):
    """Input of `workload/<id>`; the knobs come from settings when the API starts it."""

    workload_id: str
    workspace_id: str
    io_queue: str
    """Task queue of the driver activities (the cluster may be slow or away)."""
    poll_seconds: float = 2.0
    hang_seconds: int = 1200
    io_timeout_seconds: int = 120
    watch_heartbeat_seconds: int = Field(default=30, ge=1)
    """How soon a watch whose worker died is retried elsewhere."""


class Plan(BaseModel):
    """What the workflow needs of its record, read once at the start (`workload.load`)."""

    workload_id: str
    workspace_id: str
    cluster_id: str
    kind: str
    phase: str
    dispatch_count: int = 0
    priority: int = 0
    replicas: int = 1
    request: dict[str, int] = Field(default_factory=dict)
    specified_nodes: list[str] = Field(default_factory=list)
    required_labels: dict[str, str] = Field(default_factory=dict)
    tolerate_all: bool = False
    user_id: str = ""
    dependencies: list[str] = Field(default_factory=list)
    start_at: datetime | None = None
    """The earliest `start` cron time still in the future when the workload was created."""
    timeout: int = 0
    ttl_seconds: int = 60
    max_retry: int = 0
    supervised: bool = False
    deleted: bool = False


class DependencyState(BaseModel):
    """Where the dependencies stand: `failed` names one that ended otherwise than Succeeded,
    `waiting` the first still running or pending ("" for both: all succeeded)."""

    failed: str = ""
    waiting: str = ""


class Dispatch(BaseModel):
    """One dispatch: its count and the scheduler's placement, a pod per entry."""

    workload_id: str
    dispatch_count: int
    placements: list[Placement]


WatchOutcome = Literal["Succeeded", "Failed", "Hung", "Gone"]


class Watch(BaseModel):
    """Input of the heartbeating watch of one dispatch."""

    workload_id: str
    dispatch_count: int
    poll_seconds: float = 2.0
    idle_poll_seconds: float = 10.0
    """While the pods do not change, polls slow down to this interval."""
    hang_seconds: int = 0
    """0: no supervision; else a run whose logs stay silent this long counts as failed."""
    long_running: bool = False


class WatchResult(BaseModel):
    """How a dispatch ended and what to say about it."""

    outcome: WatchOutcome
    message: str = ""


class Finish(BaseModel):
    """The end of the lifecycle: the final phase, its condition and message."""

    workload_id: str
    phase: str
    condition: str
    message: str
    dispatch_count: int = 0


class PatchRequest(BaseModel):
    """A validated `PATCH /workloads/{id}`: only the fields given (resource fields flattened)."""

    priority: int | None = None
    replica: int | None = None
    cpu: str | None = None
    gpu: str | None = None
    memory: str | None = None
    ephemeral_storage: str | None = None
    shared_memory: str | None = None
    image: str | None = None
    entry_point: str | None = None
    description: str | None = None
    timeout: int | None = None
    max_retry: int | None = None
    env: dict[str, str] | None = None
    cron_jobs: list[dict[str, str]] | None = None

    def changes_pods(self) -> bool:
        """True when the running pods must be replaced or re-placed."""
        fields = ("replica", "cpu", "gpu", "memory", "ephemeral_storage", "shared_memory", "image")
        return any(getattr(self, f) is not None for f in (*fields, "entry_point", "env"))

    def changes_request(self) -> bool:
        """True when the scheduler must see the workload again (its request or priority)."""
        return any(
            v is not None
            for v in (self.replica, self.cpu, self.gpu, self.memory, self.ephemeral_storage, self.priority)
        )


class PatchOutcome(BaseModel):
    """What the workflow did with a patch."""

    requeued: bool = False
    rolling: bool = False


# --- pods ------------------------------------------------------------------------------------------


def failed_pods(pods: Iterable[PodStatus]) -> list[PodStatus]:
    """The pods that ended in failure."""
    return [p for p in pods if p.phase == "Failed"]


def pods_outcome(pods: Sequence[PodStatus], expected: int) -> Literal["Succeeded", "Failed", ""]:
    """A job's outcome from its pods: Failed once any pod failed, Succeeded once every expected
    pod succeeded, "" while it runs (upstream's PyTorchJob rule: the master's success ends it
    too)."""
    if any(p.phase == "Failed" for p in pods):
        return "Failed"
    done = [p for p in pods if p.phase == "Succeeded"]
    if done and (len(done) >= expected or any(p.name.endswith("-master-0") for p in done)):
        return "Succeeded"
    return ""


def failure_details(pods: Sequence[PodStatus], last_lines: Mapping[str, str]) -> str:
    """`pod <name> exited with <code>: <last log lines>` for every failed pod."""
    parts = []
    for pod in failed_pods(pods):
        codes = ", ".join(f"{c}={code}" for c, code in pod.exit_codes.items()) or "no exit code"
        tail = last_lines.get(pod.name, "").strip()
        parts.append(f"pod {pod.name} failed ({codes})" + (f": {tail}" if tail else ""))
    return "; ".join(parts)[:2000]


def nodes_and_ranks(pods: Sequence[PodStatus]) -> tuple[list[str], list[str]]:
    """The dispatch's nodes (deduplicated, pods by rank then name) and the ranks aligned with them."""
    ordered = sorted(pods, key=lambda p: (int(p.rank) if p.rank.isdigit() else 1 << 30, p.name))
    nodes: list[str] = []
    ranks: list[str] = []
    for pod in ordered:
        if pod.node and pod.node not in nodes:
            nodes.append(pod.node)
            ranks.append(pod.rank)
    return nodes, ranks
