"""The workspace queue as the scheduler workflow and the workload lifecycle see it: entry states,
the messages between them, and the snapshot built from stored entries. The decision itself is
`domain.scheduler.decide`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from domain import scheduler as s

QUEUED = "Queued"
ADMITTED = "Admitted"
ENTRY_STATES = (QUEUED, ADMITTED)

CHANGED_SIGNAL = "changed"
"""Signal to `workspace-scheduler/<id>`: the queue or the capacity changed (its argument says why)."""
ADMITTED_SIGNAL = "admitted"
"""Signal to `workload/<id>`: it was admitted, with its `Placement`s."""
EVICTED_SIGNAL = "evicted"
"""Signal to `workload/<id>`: it was preempted and is queued again."""


def scheduler_workflow_id(workspace_id: str) -> str:
    """The id of the workspace's scheduler workflow."""
    return f"workspace-scheduler/{workspace_id}"


class Placement(BaseModel):
    """Where one pod of an admitted workload runs, and the GPU device indices it holds."""

    node_id: str
    resources: dict[str, int] = Field(default_factory=dict)
    gpus: list[int] = Field(default_factory=list)


class QueueRequest(BaseModel):
    """A workload asking for admission (`scheduler.enqueue`); `request` is per pod."""

    workload_id: str
    workspace_id: str
    user_id: str = ""
    priority: int = Field(default=0, ge=0, le=2)
    request: dict[str, int]
    replicas: int = Field(default=1, ge=1)
    specified_nodes: list[str] = Field(default_factory=list)
    required_labels: dict[str, str] = Field(default_factory=dict)
    tolerate_all: bool = False
    failed_over: bool = False
    waiting: str = ""


class SchedulerInput(BaseModel):
    """Input of `workspace-scheduler/<id>`; `changed` carries a pending signal over continue-as-new."""

    workspace_id: str
    period_seconds: int = Field(default=30, ge=1)
    cycles_per_run: int = Field(default=500, ge=1)
    timeout_seconds: int = 60
    changed: bool = True


class Notice(BaseModel):
    """An admitted (or evicted) workload whose workflow has not been told yet."""

    workload_id: str
    admitted: bool
    placements: list[Placement] = Field(default_factory=list)


class CycleResult(BaseModel):
    """What a cycle did: notices still to send, counts, and whether the workspace is gone."""

    notices: list[Notice] = Field(default_factory=list)
    admitted: int = 0
    evicted: int = 0
    pending: int = 0
    written: int = 0
    """Rows the cycle wrote (unchanged positions and reasons are not written again)."""
    gone: bool = False


class QueueRow(BaseModel):
    """The stored part of an entry a snapshot needs (independent of the table's class)."""

    workload_id: str
    state: str
    priority: int
    submitted_at: datetime
    request: dict[str, int]
    replicas: int
    specified_nodes: list[str] = Field(default_factory=list)
    required_labels: dict[str, str] = Field(default_factory=dict)
    tolerate_all: bool = False
    failed_over: bool = False
    waiting: str = ""
    placement: list[Placement] = Field(default_factory=list)


def placements(pods: Sequence[s.PodPlacement]) -> list[Placement]:
    """The decision's pod placements as stored and sent."""
    return [Placement(node_id=p.node_id, resources=dict(p.resources), gpus=list(p.gpus)) for p in pods]


def free_resources(allocatable: Mapping[str, Mapping[str, int]], rows: Sequence[QueueRow]) -> dict[str, int]:
    """Free resources of the given (available) nodes: allocatable minus admitted placements."""
    free: dict[str, int] = {}
    for resources in allocatable.values():
        for name, amount in resources.items():
            free[name] = free.get(name, 0) + amount
    for row in rows:
        if row.state != ADMITTED:
            continue
        for pod in row.placement:
            if pod.node_id not in allocatable:
                continue
            for name, amount in pod.resources.items():
                free[name] = free.get(name, 0) - amount
    return free


def placement_json(pods: Sequence[Placement]) -> list[dict[str, Any]]:
    """Placements as stored in the JSON column."""
    return [p.model_dump() for p in pods]
