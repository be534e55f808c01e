"""`GET /workspaces/{id}/queue`: the pending workloads in order, and the workspace's free resources."""

from __future__ import annotations

from api.schemas.common import ResponseModel


class QueuedItem(ResponseModel):
    """One pending workload: its place in the queue and why it waits."""

    workload_id: str
    position: int
    scheduler_order: int
    """The contract's name for the position."""
    queue_position: int
    """Upstream's later name for the position."""
    priority: int
    replica: int
    request: dict[str, int]
    """Per pod, in base units (cpu cores, memory bytes, GPU count)."""
    reason: str
    submitted_at: str


class WorkspaceQueue(ResponseModel):
    """The workspace's queue as its last scheduling cycle left it."""

    workspace_id: str
    queue_policy: str
    enable_preempt: bool
    free_resources: dict[str, int]
    """Allocatable resources of available nodes minus what admitted workloads hold."""
    admitted_count: int
    total_count: int
    items: list[QueuedItem]
