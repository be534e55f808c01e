"""Ops jobs: types, inputs, the node selection, addon batches and the workflow messages.

Pure rules. A job selects its nodes when it is created (by `node` inputs, else the last
dispatch of a `workload`, else a `workspace`'s bound nodes, else a `cluster`'s, minus
`excludedNodes`); its `opsjob/<id>` workflow then works through them, recording per node what
happened, so a worker killed mid-batch resumes without re-running finished nodes.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

from pydantic import BaseModel, Field

JobType = Literal["addon", "preflight", "dumplog", "reboot"]
JOB_TYPES: tuple[JobType, ...] = ("addon", "preflight", "dumplog", "reboot")
ADMIN_ONLY: tuple[JobType, ...] = ("addon", "preflight", "reboot")
"""Disruptive or privileged types."""

PENDING = "Pending"
RUNNING = "Running"
SUCCEEDED = "Succeeded"
FAILED = "Failed"
PHASES = (PENDING, RUNNING, SUCCEEDED, FAILED)
ENDED = (SUCCEEDED, FAILED)

INPUT_NAMES = ("node", "addon.template", "workload", "workspace", "cluster", "node.template")
SELECTORS = ("node", "workload", "workspace", "cluster")

STOP_SIGNAL = "stop"
"""Signal to `opsjob/<id>`: stop the job (argument: also hide its record)."""
STOPPED_MESSAGE = "The job is stopped"
SORT_COLUMNS = ("create_time", "creation_time", "start_time", "end_time", "job_id", "type", "phase")
LIST_WINDOW_DAYS = 30


def job_workflow_id(job_id: str) -> str:
    return f"opsjob/{job_id}"


def timeout_message(seconds: int) -> str:
    return f"The job is timeout, timeoutSecond: {seconds}"


class JobInput(BaseModel):
    name: str
    value: str


def input_values(inputs: Sequence[JobInput], name: str) -> list[str]:
    """The values of the inputs called `name`, in order, without repeats."""
    return list(dict.fromkeys(i.value for i in inputs if i.name == name and i.value))


def max_failures(node_count: int, available_ratio: float) -> int:
    """Failed nodes that fail an addon job: int(nodes x (1 - ratio)), at least 1 (upstream)."""
    return max(int(node_count * (1.0 - available_ratio) + 1e-9), 1)


def batches(node_ids: Sequence[str], batch_count: int) -> list[list[str]]:
    """Nodes in batches of `batch_count` (clamped to 1..len), sorted by id."""
    ordered = sorted(node_ids)
    size = min(max(batch_count, 1), max(len(ordered), 1))
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def batch_total(node_count: int, batch_count: int) -> int:
    return math.ceil(node_count / min(max(batch_count, 1), max(node_count, 1))) if node_count else 0


# --- workflow messages -----------------------------------------------------------------------------


class NodeOutcome(BaseModel):
    """What the job did on one node."""

    node_id: str
    ok: bool
    message: str = ""


class OpsJobWorkflowInput(BaseModel):
    """What `opsjob/<id>` needs; the rest is on the record."""

    job_id: str
    type: JobType
    node_ids: list[str] = Field(default_factory=list)
    addons: list[str] = Field(default_factory=list)
    """Addon jobs: catalogue names to run on each node, in order."""
    workload_id: str = ""
    timeout_seconds: int = 0
    batch_count: int = 1
    available_ratio: float = 1.0
    security_upgrade: bool = False
    ssh_queue: str
    idle_poll_seconds: float = 10.0
    """How often a `securityUpgrade` addon job checks whether a node runs a workload."""
    reboot_wait_seconds: int = 900
    """How long a reboot job waits for a node to answer again."""
    heartbeat_seconds: int = 30
    """Heartbeat timeout of the per-node SSH steps (a killed worker's step is retried after it)."""


class NodeStep(BaseModel):
    """One node's step of a job (an activity argument)."""

    job_id: str
    node_id: str


class JobEnd(BaseModel):
    """The job's outcome (recorded by `ops_job.finish`)."""

    job_id: str
    phase: str
    message: str
    outputs: list[JobInput] = Field(default_factory=list)


class AddonStep(BaseModel):
    """Run addons (catalogue names, in order) on one node for a job."""

    job_id: str
    node_id: str
    addons: list[str]


class RebootStep(BaseModel):
    """Reboot one node for a job and wait until it answers again."""

    job_id: str
    node_id: str
    wait_seconds: int = 900
    down_grace_seconds: int = 120
    """How long the node may keep answering after the reboot command before that is a failure."""


REBOOT_LOG_PREFIX = "reboot: "
"""Node log lines of reboot jobs start with this (`GET /nodes/{id}/reboot/logs` lists them)."""


PREFLIGHT_NAMESPACE = "default"
"""Preflight pods run in the `default` workspace's namespace, as upstream's do (no workspace
label is required of the nodes there)."""


def check_lines(log: str) -> list[str]:
    """The `[ERROR]` and `[SUCCESS]` lines of a preflight pod's output, in order."""
    return [line.strip() for line in log.splitlines() if "[ERROR]" in line or "[SUCCESS]" in line]


class DumpRequest(BaseModel):
    job_id: str
    workload_id: str
