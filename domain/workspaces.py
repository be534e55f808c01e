"""Workspaces: phases, scopes, queue policies, the volume rules, the quota arithmetic and the
workflow messages.

Pure logic only: no I/O. Routes validate with these rules, the workspace activities and the
status owner use the same ones, and the scheduler feeds its admissions into `quota`.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from domain import quantity as q
from domain.names import normalize_name
from domain.workloads import WorkspaceVolume

# Phases (contract enum). `Abnormal` is never stored: it is shown while a Running workspace has
# bound nodes and none of them is available (`display_phase`).
CREATING = "Creating"
RUNNING = "Running"
ABNORMAL = "Abnormal"
DELETING = "Deleting"
PHASES = (CREATING, RUNNING, ABNORMAL, DELETING)
STORED_PHASES = (CREATING, RUNNING, DELETING)

Scope = Literal["Train", "Infer", "Authoring"]
SCOPES: tuple[Scope, ...] = ("Train", "Infer", "Authoring")
QueuePolicy = Literal["fifo", "balance"]
QUEUE_POLICIES: tuple[QueuePolicy, ...] = ("fifo", "balance")
NodeAction = Literal["add", "remove"]
ACCESS_MODES = ("ReadWriteOnce", "ReadWriteMany", "ReadOnlyMany", "ReadWriteOncePod")
RESERVED_IDS = ("default", "kube-public", "kube-system")


def workspace_id(cluster_id: str, name: str) -> str:
    """`{clusterId}-{name}`, normalised as upstream does."""
    return normalize_name(f"{cluster_id}-{name}")


def workspace_workflow_id(workspace: str) -> str:
    """The id of the workspace's workflow."""
    return f"workspace/{workspace}"


def default_scopes(scopes: Sequence[str] | None) -> list[str]:
    """Unset or empty scopes mean no limitation: every module."""
    return list(dict.fromkeys(scopes)) if scopes else list(SCOPES)


# --- volumes -------------------------------------------------------------------------------------


class VolumeRequest(BaseModel):
    """A volume as a request gives it (no id: ids are assigned here)."""

    type: str
    mount_path: str = ""
    host_path: str = ""
    sub_path: str = ""
    access_mode: str = ""
    capacity: str = ""
    selector: dict[str, str] = Field(default_factory=dict)
    storage_class: str = ""


class VolumeError(ValueError):
    """A volume breaks a rule; the message names the volume and the rule (the API answers 400)."""


def _volume_error(index: int, volume: VolumeRequest) -> str | None:
    where = f"volumes[{index}]"
    if volume.type not in ("pfs", "hostpath"):
        return f"{where}: type {volume.type!r} is not supported, supported: [pfs, hostpath]"
    if not volume.mount_path.strip("/"):
        return f"{where}: mountPath is required"
    if not volume.mount_path.startswith("/"):
        return f"{where}: mountPath {volume.mount_path!r} must be an absolute path"
    if volume.access_mode and volume.access_mode not in ACCESS_MODES:
        return f"{where}: accessMode {volume.access_mode!r} is not one of {', '.join(ACCESS_MODES)}"
    if volume.type == "hostpath":
        if not volume.host_path:
            return f"{where}: hostPath is required for a hostpath volume"
        if not volume.host_path.startswith("/"):
            return f"{where}: hostPath {volume.host_path!r} must be an absolute path"
        if volume.capacity or volume.selector or volume.storage_class:
            return f"{where}: capacity, selector and storageClass apply to pfs volumes only"
        return None
    if volume.host_path:
        return f"{where}: hostPath applies to hostpath volumes only"
    if volume.selector and volume.storage_class:
        return f"{where}: selector and storageClass are mutually exclusive; give one of them"
    if not volume.selector and not volume.storage_class:
        return f"{where}: a pfs volume needs a storageClass or a selector"
    if not volume.capacity:
        return f"{where}: capacity is required for a pfs volume"
    if not q.is_quantity(volume.capacity) or q.parse(volume.capacity) <= 0:
        return f"{where}: capacity {volume.capacity!r} is not a positive quantity like 100Gi"
    return None


def _key(volume: WorkspaceVolume | VolumeRequest) -> tuple[str, str]:
    return volume.type, volume.mount_path.rstrip("/") or "/"


def resolve_volumes(
    requested: Sequence[VolumeRequest], existing: Sequence[WorkspaceVolume] = ()
) -> list[WorkspaceVolume]:
    """Validate the requested volumes and give each its id: a volume of the same type and mount
    path as an existing one keeps that one's id (a pfs volume's storageClass, capacity and
    selector may then not change: its claim exists); new ones get the next ids. Raises
    VolumeError naming the first broken rule."""
    by_key = {_key(v): v for v in existing}
    next_id = max((v.id for v in existing), default=0) + 1
    seen: set[str] = set()
    result: list[WorkspaceVolume] = []
    for index, volume in enumerate(requested):
        problem = _volume_error(index, volume)
        if problem:
            raise VolumeError(problem)
        mount = volume.mount_path.rstrip("/") or "/"
        if mount in seen:
            raise VolumeError(f"volumes[{index}]: mountPath {mount} is used by another volume")
        seen.add(mount)
        old = by_key.get(_key(volume))
        if old is not None and old.type == "pfs":
            changed = (
                old.storage_class != volume.storage_class
                or old.capacity != volume.capacity
                or old.selector != volume.selector
            )
            if changed:
                raise VolumeError(
                    f"volumes[{index}]: storageClass, capacity and selector of the pfs volume at "
                    f"{mount} cannot change; remove it and add a new one"
                )
        if old is not None:
            volume_id = old.id
        else:
            volume_id, next_id = next_id, next_id + 1
        result.append(
            WorkspaceVolume(
                id=volume_id,
                type="pfs" if volume.type == "pfs" else "hostpath",
                mount_path=mount,
                host_path=volume.host_path,
                sub_path=volume.sub_path.strip("/"),
                access_mode=volume.access_mode or "ReadWriteMany",
                capacity=volume.capacity,
                selector=dict(volume.selector),
                storage_class=volume.storage_class,
            )
        )
    return result


# --- quotas --------------------------------------------------------------------------------------


class BoundNode(BaseModel):
    """A node bound to the workspace, as the quota sees it."""

    node_id: str
    resources: dict[str, int]
    """What the node offers: its flavor's resources."""
    available: bool


class AdmittedPod(BaseModel):
    """One pod of an admitted workload placed on a node, with its request. The scheduler's
    admissions are fed in as these; until workloads exist callers pass []."""

    workload_id: str
    node_id: str
    request: dict[str, int]


class WorkspaceQuota(BaseModel):
    """The live quotas and node counts of one workspace."""

    total: dict[str, int]
    used: dict[str, int]
    abnormal: dict[str, int]
    avail: dict[str, int]
    target_node_count: int
    current_node_count: int
    abnormal_node_count: int
    used_node_count: int


def quota(target: int, nodes: Sequence[BoundNode], admitted: Iterable[AdmittedPod]) -> WorkspaceQuota:
    """totalQuota = the bound nodes' resources; abnormalQuota = those of the unavailable ones;
    usedQuota = the requests of admitted pods on available bound nodes (pods on an unavailable
    node are inside abnormalQuota already, so they are not counted twice); availQuota =
    total - used - abnormal, never below 0. usedNodeCount = available nodes hosting a pod."""
    available = {n.node_id for n in nodes if n.available}
    total = q.total(n.resources for n in nodes)
    abnormal = q.total(n.resources for n in nodes if not n.available)
    pods = [p for p in admitted if p.node_id in available]
    used = q.total(p.request for p in pods)
    keys = sorted({*total, *abnormal, *used})
    total = {k: total.get(k, 0) for k in keys}
    abnormal = {k: abnormal.get(k, 0) for k in keys}
    used = {k: used.get(k, 0) for k in keys}
    avail = {k: max(total[k] - used[k] - abnormal[k], 0) for k in keys}
    return WorkspaceQuota(
        total=total,
        used=used,
        abnormal=abnormal,
        avail=avail,
        target_node_count=target,
        current_node_count=len(nodes),
        abnormal_node_count=len(nodes) - len(available),
        used_node_count=len({p.node_id for p in pods}),
    )


def display_phase(stored: str, *, deleting: bool, current_nodes: int, abnormal_nodes: int) -> str:
    """The phase shown: Deleting once deletion is requested; Abnormal while a Running workspace
    has nodes and all of them are unavailable; else the stored phase."""
    if deleting:
        return DELETING
    if stored == RUNNING and current_nodes and abnormal_nodes == current_nodes:
        return ABNORMAL
    return stored


def shortage_message(
    *, flavor_id: str, cluster_id: str, wanted: int, free: int, of_flavor: int, in_other_workspaces: int
) -> str:
    """The 409 when `replica` is more than the free nodes, with the counts."""
    return (
        f"replica {wanted} needs {wanted} free Ready nodes of flavor {flavor_id} in cluster "
        f"{cluster_id}, but only {free} are free ({of_flavor} of that flavor in the cluster, "
        f"{in_other_workspaces} bound to other workspaces, {of_flavor - in_other_workspaces - free} "
        "not available)"
    )


# --- workflow messages -----------------------------------------------------------------------------


class WorkspaceWorkflowInput(BaseModel):
    """The input of `workspace/<id>`."""

    workspace_id: str
    io_queue: str
    """The queue of the namespace activities (cluster I/O)."""
    create: bool = True
    deleting: bool = False
    io_timeout_seconds: int = 120


class NodesChange(BaseModel):
    """Bind (`add`) or unbind (`remove`) nodes, all or none; `count` instead of ids picks that
    many free nodes (add) or idle nodes (remove)."""

    workspace_id: str
    action: NodeAction
    node_ids: list[str] = Field(default_factory=list)
    count: int = 0
    force: bool = False
    replica: int | None = None
    """The target node count recorded with the change (None leaves it)."""


class NodesChanged(BaseModel):
    """What a nodes change did."""

    node_ids: list[str]


class NodeLabels(BaseModel):
    """Nodes that joined (`bound`) or left the workspace: their cluster labels follow."""

    workspace_id: str
    node_ids: list[str]
    bound: bool


class WorkspaceNote(BaseModel):
    """Why the last workspace step failed ("" once one succeeded)."""

    workspace_id: str
    message: str
