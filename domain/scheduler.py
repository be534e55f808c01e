"""The scheduling decision of one cycle over a workspace's queue: a pure function, no I/O, no clock.

`decide(snapshot)` takes what the caller loaded (the workspace's queue policy, its queued
workloads, its nodes and what already runs on them) and returns a `Decision`: which workloads are
admitted and where each pod goes (node and GPU device indices), which running workloads are
preempted for whom, and for every workload left pending its 1-based queue position (the contract's
`schedulerOrder`, upstream's later `queuePosition`) and a reason naming the exact shortfall or
blocker. The same snapshot always gives the same decision: inputs are sorted, never iterated as sets.

Rules (issue 9; upstream-behavior.md section 6 where it does not say better):

- Queue order: failed-over workloads first, then priority (2 > 1 > 0), then submit time, then id.
- `fifo` stops at the first workload that does not fit; every later one is blocked by it. `balance`
  lets a later workload that fits pass, but never past one of strictly higher priority.
- Gang placement: every pod of a workload gets a node or none does. Pods requesting a GPU go to
  distinct nodes (upstream's rule); pods requesting none may share a node where they fit (a
  documented difference, so one machine can run a 2-replica CPU job). GPU pods get explicit device
  indices, so an 8-GPU node can host two 4-GPU pods of different workloads.
- A node is usable when `available` and, unless the workload tolerates all taints, it has no
  `NoSchedule`/`NoExecute` taint. `specified_nodes` limits the nodes by id; every required label
  (`customerLabels`) must have one of the whitespace-separated values of its entry.
- Preemption (workspace `enable_preempt`): victims are running workloads of strictly lower priority
  with a pod on a node the requester may use, ordered lowest priority, then largest, then newest,
  then id; the shortest prefix of that order that makes room is taken and then pruned so no victim
  is unnecessary (placement is monotone in free capacity, so the set is minimal). The requester is
  admitted at once onto the freed capacity; the rest of what the victims free is held: nothing else
  is admitted into it during the cycle. Victims are not queued in this cycle, so a victim never
  preempts, and since victims are of strictly lower priority a chain of preemptions always descends
  in priority: no loops. The caller evicts the victims (back to the queue, not a failure) before it
  starts the requester's pods, and drops them from `running` in the next snapshot.
- `QueuedWorkload.waiting` is a hold the caller already knows of (a dependency, a start time): such
  a workload keeps its position and that reason, and blocks nobody.

Resource maps hold integers in base units (cpu in cores, memory in bytes, GPUs as counts), as the
API shows them (`domain.quantity`). `Node.allocatable` is what workloads may use (after the
system reserve); a node's free resources are its allocatable minus the pods of `running` on it, and
its GPU devices are `0 .. allocatable[gpu]-1`, minus the indices those pods hold.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from operator import attrgetter
from typing import Literal

from domain import quantity as q

QueuePolicy = Literal["fifo", "balance"]
QUEUE_POLICIES: tuple[QueuePolicy, ...] = ("fifo", "balance")
BLOCKING_TAINT_EFFECTS = ("NoSchedule", "NoExecute")
"""Taint effects that keep pods off a node unless the workload tolerates all taints."""
_BINARY_RESOURCES = (q.MEMORY, q.EPHEMERAL_STORAGE, "storage")

PendingCause = Literal["waiting", "blocked", "unavailable", "constraints", "insufficient", "fragmentation"]
"""Why a workload waits: a caller's hold, the queue ahead of it, no usable node, no node matching
its constraints, not enough free resources in total, or no set of nodes where its pods fit."""


# --- the snapshot ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Taint:
    """A node taint; only `NoSchedule` and `NoExecute` keep pods off."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"

    def __str__(self) -> str:
        return f"{self.key}={self.value}:{self.effect}" if self.value else f"{self.key}:{self.effect}"


@dataclass(frozen=True, slots=True)
class Node:
    """A node bound to the workspace.

    `available` is everything but taints (machine ready, managed, no hold such as a fault or a
    reboot): taints are judged per workload (`is_tolerate_all`).
    """

    id: str
    allocatable: Mapping[str, int]
    labels: Mapping[str, str] = field(default_factory=dict)
    taints: tuple[Taint, ...] = ()
    available: bool = True


@dataclass(frozen=True, slots=True)
class PodPlacement:
    """One pod on a node: its resources and the GPU device indices it holds."""

    node_id: str
    resources: Mapping[str, int] = field(default_factory=dict)
    gpus: tuple[int, ...] = ()


@dataclass(frozen=True, slots=True)
class QueuedWorkload:
    """A workload waiting for admission; `request` is per pod, `replicas` pods in all."""

    id: str
    submitted: datetime
    request: Mapping[str, int]
    replicas: int = 1
    priority: int = 0
    failed_over: bool = False
    """Requeued by failover (not by preemption): it goes to the front of the queue."""
    specified_nodes: tuple[str, ...] = ()
    """Node ids the pods must run on (none: any node)."""
    required_labels: Mapping[str, str] = field(default_factory=dict)
    """customerLabels: each key's node label must be one of the value's whitespace-separated words."""
    tolerate_all: bool = False
    waiting: str = ""
    """A hold the caller knows of (dependency, start time): the reason shown, and no blocking."""


@dataclass(frozen=True, slots=True)
class RunningWorkload:
    """An admitted workload holding resources (running or about to)."""

    id: str
    priority: int
    submitted: datetime
    pods: tuple[PodPlacement, ...]
    preemptible: bool = True


@dataclass(frozen=True, slots=True)
class Workspace:
    """The workspace's queue settings."""

    id: str
    queue_policy: QueuePolicy = "fifo"
    enable_preempt: bool = False


@dataclass(frozen=True, slots=True)
class Snapshot:
    """Everything one cycle decides over: the workspace, its nodes, its queue, what runs."""

    workspace: Workspace
    nodes: Sequence[Node]
    queued: Sequence[QueuedWorkload]
    running: Sequence[RunningWorkload] = ()


# --- the decision ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Admission:
    """A workload admitted with a placement for each of its pods (pod i is `pods[i]`)."""

    workload_id: str
    pods: tuple[PodPlacement, ...]
    preempted: tuple[str, ...] = ()
    """The victims evicted to make room; they must be gone before these pods start."""


@dataclass(frozen=True, slots=True)
class Preemption:
    """Running workloads evicted (back to the queue) so `requester_id` fits."""

    requester_id: str
    victim_ids: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Pending:
    """A workload left in the queue: its 1-based position (`schedulerOrder`) and why it waits."""

    workload_id: str
    position: int
    reason: str
    cause: PendingCause


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of one cycle, every list in queue order."""

    admissions: tuple[Admission, ...]
    preemptions: tuple[Preemption, ...]
    pending: tuple[Pending, ...]
    free: Mapping[str, int]
    """Free resources on available nodes after the cycle (held capacity counted as used)."""

    @property
    def evicted(self) -> tuple[str, ...]:
        """Every victim id, in preemption order."""
        return tuple(victim for p in self.preemptions for victim in p.victim_ids)

    def placements(self) -> dict[str, tuple[PodPlacement, ...]]:
        """Admitted workload id -> its pods' placements."""
        return {a.workload_id: a.pods for a in self.admissions}


# --- formatting ------------------------------------------------------------------------------------


def format_amount(name: str, amount: int) -> str:
    """An amount as a person reads it: memory-like resources in binary units, others as integers."""
    if name in _BINARY_RESOURCES and amount > 0:
        return q.format_binary(amount)
    return str(amount)


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _has(count: int) -> str:
    return f"{count} has" if count == 1 else f"{count} have"


def _short_name(name: str) -> str:
    """Upstream's word for a resource in node messages: `gpu` for every GPU resource name."""
    return "gpu" if name in q.GPU_RESOURCE_NAMES else name


def _resource_order(name: str) -> tuple[int, str]:
    return (0 if name in q.GPU_RESOURCE_NAMES else 1, name)


def _matches(labels: Mapping[str, str], required: Iterable[tuple[str, str]]) -> bool:
    return all(labels.get(key) in value.split() for key, value in required)


# --- the cycle -------------------------------------------------------------------------------------

# Pods, admissions and pending entries are built thousands of times a cycle: a frozen dataclass's
# __init__ (object.__setattr__ per field) costs twice as much as setting its slots directly. The
# fields are checked here so a new one cannot be left unset silently.
_NEW = object.__new__
assert tuple(f.name for f in fields(PodPlacement)) == ("node_id", "resources", "gpus")
_SET_NODE, _SET_RESOURCES, _SET_GPUS = (
    getattr(PodPlacement, name).__set__ for name in ("node_id", "resources", "gpus")
)

_ConstraintKey = tuple[bool, tuple[str, ...], tuple[tuple[str, str], ...]]
_Placement = list[tuple[int, int]]
"""(node index, pod count) pairs."""


class _Shape:
    """A request shape: workloads with equal request, replicas and constraints fit or fail together."""

    __slots__ = (
        "ckey",
        "constrained",
        "gpu",
        "items",
        "missing",
        "nonzero",
        "preempt_note",
        "reason",
        "replicas",
        "resources",
        "unfit",
    )

    def __init__(
        self,
        items: tuple[tuple[str, int], ...],
        replicas: int,
        ckey: _ConstraintKey,
        index: Mapping[str, int],
    ) -> None:
        self.items = items
        self.replicas = replicas
        self.ckey = ckey
        self.constrained = bool(ckey[1] or ckey[2])
        self.missing = tuple(name for name, _ in items if name not in index)
        self.nonzero = tuple((index[name], amount) for name, amount in items if name in index)
        self.gpu = sum(amount for name, amount in items if name in q.GPU_RESOURCE_NAMES)
        self.resources = dict(items)
        """Per pod, shared by the placements of every workload of the shape (they are frozen)."""
        self.unfit = False
        self.reason: tuple[PendingCause, str] | None = None
        self.preempt_note: dict[int, str] = {}


class _Cycle:
    """Mutable state of one cycle: free vectors per node, GPU devices, capacity indices."""

    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot
        self.nodes: list[Node] = sorted(snapshot.nodes, key=lambda n: n.id)
        self.node_index = {n.id: i for i, n in enumerate(self.nodes)}
        if len(self.node_index) != len(self.nodes):
            raise ValueError("duplicate node ids in the snapshot")
        self.running: list[RunningWorkload] = sorted(snapshot.running, key=lambda r: r.id)
        names = {name for n in self.nodes for name in n.allocatable}
        names.update(name for r in self.running for pod in r.pods for name in pod.resources)
        self.names = sorted(names)
        self.index = {name: j for j, name in enumerate(self.names)}
        width = len(self.names)
        self.alloc = [[n.allocatable.get(name, 0) for name in self.names] for n in self.nodes]
        self.free = [list(row) for row in self.alloc]
        self.gpu_slot = [-1] * len(self.nodes)
        self.devices: list[list[int]] = [[] for _ in self.nodes]
        for i, n in enumerate(self.nodes):
            for name in q.GPU_RESOURCE_NAMES:
                if n.allocatable.get(name, 0) > 0:
                    self.gpu_slot[i] = self.index[name]
                    break
        held_devices: list[set[int]] = [set() for _ in self.nodes]
        for r in self.running:
            for pod in r.pods:
                i = self.node_index.get(pod.node_id, -1)
                if i < 0:
                    continue
                row = self.free[i]
                for name, amount in pod.resources.items():
                    row[self.index[name]] -= amount
                held_devices[i].update(pod.gpus)
        for i in range(len(self.nodes)):
            slot = self.gpu_slot[i]
            if slot >= 0:
                self.devices[i] = [d for d in range(self.alloc[i][slot]) if d not in held_devices[i]]
                self.free[i][slot] = min(self.free[i][slot], len(self.devices[i]))
        self.tainted = [any(t.effect in BLOCKING_TAINT_EFFECTS for t in n.taints) for n in self.nodes]
        self.plain = [i for i, n in enumerate(self.nodes) if n.available and not self.tainted[i]]
        self.usable_tainted = [i for i, n in enumerate(self.nodes) if n.available and self.tainted[i]]
        self.everywhere = sorted(self.plain + self.usable_tainted)
        self.total_plain = [0] * width
        self.total_tainted = [0] * width
        for i in self.plain:
            self._add(self.total_plain, self.free[i])
        for i in self.usable_tainted:
            self._add(self.total_tainted, self.free[i])
        # Buckets of usable nodes by free GPU count, best fit first; dicts as ordered sets.
        self.max_gpu = max([self._gpu_free(i) for i in self.everywhere] or [0])
        self.buckets_plain: list[dict[int, None]] = [{} for _ in range(self.max_gpu + 1)]
        self.buckets_tainted: list[dict[int, None]] = [{} for _ in range(self.max_gpu + 1)]
        self.bucket_of = [0] * len(self.nodes)
        for i in self.everywhere:
            key = self._gpu_free(i)
            self.bucket_of[i] = key
            (self.buckets_tainted if self.tainted[i] else self.buckets_plain)[key][i] = None
        self.shapes: dict[tuple[object, ...], _Shape] = {}
        self.raw_shapes: dict[tuple[object, ...], _Shape] = {}
        self.matching: dict[tuple[tuple[str, ...], tuple[tuple[str, str], ...]], list[int]] = {}
        """Nodes matching the specified nodes and required labels, available or not (reasons)."""
        self.free_on: dict[tuple[int, _ConstraintKey], int] = {}
        self.breakdowns: dict[tuple[str, _ConstraintKey], list[str]] = {}
        self.eligible_cache: dict[_ConstraintKey, list[int]] = {}
        self.evicted: dict[str, str] = {}
        """victim id -> requester id."""
        self.admitted: list[tuple[str, list[PodPlacement]]] = []
        self.victim_order: list[RunningWorkload] | None = None
        self.occupants: list[tuple[str, str, PodPlacement]] | None = None

    @staticmethod
    def _add(total: list[int], row: Sequence[int]) -> None:
        for j, amount in enumerate(row):
            total[j] += max(amount, 0)

    def _gpu_free(self, i: int) -> int:
        slot = self.gpu_slot[i]
        return max(self.free[i][slot], 0) if slot >= 0 else 0

    # --- shapes and eligibility ---

    def shape(self, w: QueuedWorkload) -> _Shape:
        # The request and constraints as given (no sorting): a queue repeats a few of them.
        labels = w.required_labels
        raw = (
            tuple(w.request.items()),
            w.replicas,
            w.tolerate_all,
            tuple(w.specified_nodes),
            tuple(labels.items()) if labels else (),
        )
        found = self.raw_shapes.get(raw)
        if found is None:
            found = self.raw_shapes[raw] = self._shape(w)
        return found

    def _shape(self, w: QueuedWorkload) -> _Shape:
        items = tuple(sorted((name, amount) for name, amount in w.request.items() if amount > 0))
        ckey: _ConstraintKey = (
            w.tolerate_all,
            tuple(sorted(set(w.specified_nodes))),
            tuple(sorted(w.required_labels.items())),
        )
        key = (items, w.replicas, ckey)
        found = self.shapes.get(key)
        if found is None:
            found = self.shapes[key] = _Shape(items, w.replicas, ckey, self.index)
        return found

    def eligible(self, ckey: _ConstraintKey) -> list[int]:
        """Usable nodes for the constraints, by node index."""
        found = self.eligible_cache.get(ckey)
        if found is None:
            tolerate, specified, labels = ckey
            base = self.everywhere if tolerate else self.plain
            wanted = set(specified)
            found = [
                i
                for i in base
                if (not wanted or self.nodes[i].id in wanted) and _matches(self.nodes[i].labels, labels)
            ]
            self.eligible_cache[ckey] = found
        return found

    # --- finding room ---

    def find(self, shape: _Shape) -> _Placement | None:
        """Where the shape's pods fit now, or None."""
        if shape.replicas <= 0:
            return []
        if shape.missing:
            return None
        if shape.constrained:
            return self.place(shape, self.eligible(shape.ckey), None)
        tolerate = shape.ckey[0]
        plain, tainted, replicas = self.total_plain, self.total_tainted, shape.replicas
        for j, amount in shape.nonzero:
            if amount * replicas > plain[j] + (tainted[j] if tolerate else 0):
                return None
        families = (self.buckets_plain, self.buckets_tainted) if tolerate else (self.buckets_plain,)
        free, nonzero, gpu = self.free, shape.nonzero, shape.gpu
        if gpu > 0:
            if gpu > self.max_gpu:
                return None
            if (
                replicas > 1
                and sum(len(fam[k]) for fam in families for k in range(gpu, self.max_gpu + 1)) < replicas
            ):
                return None
            chosen: _Placement = []
            for k in range(gpu, self.max_gpu + 1):
                for fam in families:
                    for i in fam[k]:
                        row = free[i]
                        for j, amount in nonzero:
                            if row[j] < amount:
                                break
                        else:
                            chosen.append((i, 1))
                            if len(chosen) == replicas:
                                return chosen
            return None
        placement: _Placement = []
        left = replicas
        for k in range(self.max_gpu + 1):
            for fam in families:
                for i in fam[k]:
                    room = self._room(free[i], nonzero, left)
                    if room > 0:
                        placement.append((i, room))
                        left -= room
                        if left == 0:
                            return placement
        return None

    @staticmethod
    def _room(row: Sequence[int], nonzero: Sequence[tuple[int, int]], cap: int) -> int:
        room = cap
        for j, amount in nonzero:
            fits = row[j] // amount if row[j] > 0 else 0
            if fits < room:
                room = fits
        return room

    def place(
        self, shape: _Shape, candidates: Sequence[int], extra: Mapping[int, Sequence[int]] | None
    ) -> _Placement | None:
        """Where the shape fits on `candidates`, with `extra` free on some nodes (preemption)."""
        if shape.replicas <= 0:
            return []
        if shape.missing:
            return None
        rows: list[tuple[int, int, Sequence[int]]] = []
        for i in candidates:
            row: Sequence[int] = self.free[i]
            if extra is not None and i in extra:
                row = [a + b for a, b in zip(row, extra[i], strict=True)]
            slot = self.gpu_slot[i]
            rows.append((max(row[slot], 0) if slot >= 0 else 0, i, row))
        rows.sort(key=lambda entry: (entry[0], entry[1]))
        left = shape.replicas
        placement: _Placement = []
        for _, i, row in rows:
            room = self._room(row, shape.nonzero, 1 if shape.gpu > 0 else left)
            if room > 0:
                placement.append((i, room))
                left -= room
                if left == 0:
                    return placement
        return None

    # --- committing ---

    def commit(
        self,
        w: QueuedWorkload,
        shape: _Shape,
        placement: _Placement,
        freed: Mapping[int, list[int]] | None = None,
        freed_devices: Mapping[int, list[int]] | None = None,
    ) -> list[PodPlacement]:
        """Take the placement's resources; with `freed`, from the victims' share first (held)."""
        if freed is None and freed_devices is None:
            return self._commit_free(w, shape, placement)
        resources = shape.resources
        pods: list[PodPlacement] = []
        for i, count in placement:
            row = self.free[i]
            total = self.total_tainted if self.tainted[i] else self.total_plain
            spare = freed.get(i) if freed is not None else None
            for j, amount in shape.nonzero:
                need = amount * count
                if spare is not None:
                    use = min(need, max(spare[j], 0))
                    spare[j] -= use
                    need -= use
                if need:
                    before = max(row[j], 0)
                    row[j] -= need
                    total[j] -= before - max(row[j], 0)
            slot = self.gpu_slot[i]
            take = resources.get(self.names[slot], 0) if slot >= 0 else 0
            victim_devices = freed_devices.get(i, []) if freed_devices is not None else []
            node_id = self.nodes[i].id
            for _ in range(count):
                gpus: tuple[int, ...] = ()
                if take:
                    from_victims = victim_devices[:take]
                    del victim_devices[:take]
                    rest = take - len(from_victims)
                    gpus = tuple(sorted(from_victims + self.devices[i][:rest]))
                    del self.devices[i][:rest]
                pods.append(PodPlacement(node_id=node_id, resources=resources, gpus=gpus))
            if take:
                family = self.buckets_tainted if self.tainted[i] else self.buckets_plain
                del family[self.bucket_of[i]][i]
                self.bucket_of[i] = self._gpu_free(i)
                family[self.bucket_of[i]][i] = None
        self.admitted.append((w.id, pods))
        return pods

    def _commit_free(self, w: QueuedWorkload, shape: _Shape, placement: _Placement) -> list[PodPlacement]:
        """`commit` onto free capacity only (no victims): the path of nearly every admission."""
        resources = shape.resources
        nonzero = shape.nonzero
        pods: list[PodPlacement] = []
        for i, count in placement:
            row = self.free[i]
            tainted = self.tainted[i]
            total = self.total_tainted if tainted else self.total_plain
            for j, amount in nonzero:
                before = row[j]
                after = before - amount * count
                row[j] = after
                if before > 0:  # the totals count free amounts above zero only
                    total[j] -= before - after if after > 0 else before
            slot = self.gpu_slot[i]
            take = resources.get(self.names[slot], 0) if slot >= 0 else 0
            node_id = self.nodes[i].id
            devices = self.devices[i]  # ascending: taken from the front, never given back
            for _ in range(count):
                gpus: tuple[int, ...] = ()
                if take:
                    gpus = tuple(devices[:take])
                    del devices[:take]
                pod = _NEW(PodPlacement)
                _SET_NODE(pod, node_id)
                _SET_RESOURCES(pod, resources)
                _SET_GPUS(pod, gpus)
                pods.append(pod)
            if take:
                family = self.buckets_tainted if tainted else self.buckets_plain
                del family[self.bucket_of[i]][i]
                left = row[slot]
                key = self.bucket_of[i] = left if left > 0 else 0
                family[key][i] = None
        self.admitted.append((w.id, pods))
        return pods

    # --- preemption ---

    def preempt(self, w: QueuedWorkload, shape: _Shape) -> tuple[list[PodPlacement], list[str]] | None:
        """Admit `w` by evicting a minimal set of lower-priority workloads, or None (with a note)."""
        cached = shape.preempt_note.get(w.priority)
        if cached is not None:
            return None
        if shape.missing:
            shape.preempt_note[w.priority] = ""
            return None
        candidates_nodes = self.eligible(shape.ckey)
        if not candidates_nodes:
            shape.preempt_note[w.priority] = ""
            return None
        reachable = set(candidates_nodes)
        if self.victim_order is None:
            self.victim_order = _victim_order(self.running)
        candidates = [
            r
            for r in self.victim_order
            if r.priority < w.priority
            and r.preemptible
            and r.id not in self.evicted
            and any(self.node_index.get(pod.node_id, -1) in reachable for pod in r.pods)
        ]
        if not candidates:
            shape.preempt_note[w.priority] = "no running workload of lower priority to preempt"
            return None

        def fits(victims: Sequence[RunningWorkload]) -> bool:
            return self.place(shape, candidates_nodes, self._freed(victims)[0]) is not None

        if not fits(candidates):
            shape.preempt_note[w.priority] = (
                f"preempting all {_plural(len(candidates), 'lower-priority workload')} would not be enough"
            )
            return None
        low, high = 1, len(candidates)
        while low < high:
            middle = (low + high) // 2
            if fits(candidates[:middle]):
                high = middle
            else:
                low = middle + 1
        chosen = list(candidates[:low])
        for victim in reversed(chosen[:-1]):
            trial = [v for v in chosen if v is not victim]
            if fits(trial):
                chosen = trial
        freed, freed_devices = self._freed(chosen)
        placement = self.place(shape, candidates_nodes, freed)
        if placement is None:  # pragma: no cover - fits() said it does
            return None
        victim_ids = [v.id for v in chosen]
        for victim_id in victim_ids:
            self.evicted[victim_id] = w.id
        pods = self.commit(w, shape, placement, {i: list(row) for i, row in freed.items()}, freed_devices)
        return pods, victim_ids

    def _freed(self, victims: Sequence[RunningWorkload]) -> tuple[dict[int, list[int]], dict[int, list[int]]]:
        freed: dict[int, list[int]] = {}
        devices: dict[int, list[int]] = {}
        for r in victims:
            for pod in r.pods:
                i = self.node_index.get(pod.node_id, -1)
                if i < 0:
                    continue
                row = freed.setdefault(i, [0] * len(self.names))
                for name, amount in pod.resources.items():
                    row[self.index[name]] += amount
                if pod.gpus:
                    devices.setdefault(i, []).extend(pod.gpus)
        for found in devices.values():
            found.sort()
        return freed, devices

    # --- reasons (on the final state) ---

    def diagnose(self, priority: int, shape: _Shape) -> tuple[PendingCause, str]:
        """Why the shape does not fit a workload of `priority`, on the state at the end of the cycle."""
        if shape.reason is None:
            shape.reason = self._diagnose(shape)
        cause, text = shape.reason
        note = shape.preempt_note.get(priority, "") if self.snapshot.workspace.enable_preempt else ""
        return cause, f"{text}; {note}" if note else text

    def _where(self, ckey: _ConstraintKey, count: int) -> str:
        _, specified, labels = ckey
        what = " and ".join(
            part for part, on in (("specified nodes", specified), ("required labels", labels)) if on
        )
        return f" on the {_plural(count, 'node')} matching the {what}" if what else ""

    def _diagnose(self, shape: _Shape) -> tuple[PendingCause, str]:
        if not self.nodes:
            return "unavailable", "The workspace has no nodes"
        _, specified, labels = shape.ckey
        matching = self.matching.get((specified, labels))
        if matching is None:
            wanted = set(specified)
            matching = self.matching[(specified, labels)] = [
                i
                for i, n in enumerate(self.nodes)
                if (not wanted or n.id in wanted) and _matches(n.labels, labels)
            ]
        if specified and not matching:
            return "constraints", f"None of the specified nodes is in the workspace: {', '.join(specified)}"
        if labels and not matching:
            shown = ", ".join(f"{k}={v}" for k, v in labels)
            return "constraints", f"No node has the required labels {shown}"
        usable = self.eligible(shape.ckey)
        if not usable:
            down = sum(1 for i in matching if not self.nodes[i].available)
            tainted = [i for i in matching if self.nodes[i].available and self.tainted[i]]
            parts = []
            if down:
                parts.append(f"{down} not available")
            if tainted:
                taint = next(t for t in self.nodes[tainted[0]].taints if t.effect in BLOCKING_TAINT_EFFECTS)
                parts.append(f"{len(tainted)} tainted, e.g. {taint}")
            scope = "All nodes" if not (specified or labels) else "All matching nodes"
            return (
                "unavailable",
                f"{scope} are unavailable ({_plural(len(matching), 'node')}: {', '.join(parts)})",
            )
        where = self._where(shape.ckey, len(matching))
        shortages = self._quota(shape, matching, usable, where)
        if shortages:
            return "insufficient", "; ".join(shortages)
        return "fragmentation", self._fragmentation(shape, usable, where)

    def _quota(self, shape: _Shape, matching: Sequence[int], usable: Sequence[int], where: str) -> list[str]:
        tolerate = shape.ckey[0]
        usable_set = set(usable)
        messages = []
        for name, amount in sorted(shape.items, key=lambda item: _resource_order(item[0])):
            need = amount * shape.replicas
            j = self.index.get(name)
            free = 0
            if j is not None:
                free_key = (j, shape.ckey)
                found = self.free_on.get(free_key)
                if found is None:
                    found = self.free_on[free_key] = sum(max(self.free[i][j], 0) for i in usable)
                free = found
            if need <= free:
                continue
            text = (
                f"Insufficient {name}{where}: need {format_amount(name, need)}, "
                f"free {format_amount(name, free)}"
            )
            cached = self.breakdowns.get((name, shape.ckey))
            if cached is None:
                cached = self.breakdowns[(name, shape.ckey)] = self._breakdown(
                    name, j, matching, usable_set, tolerate
                )
            parts = cached
            messages.append(f"{text} ({', '.join(parts)})" if parts else text)
        return messages

    def _breakdown(
        self, name: str, j: int | None, matching: Sequence[int], usable: set[int], tolerate: bool
    ) -> list[str]:
        if j is None or not any(self.alloc[i][j] for i in matching):
            return [f"no node has {name}"]
        used: dict[str, int] = {}
        freeing: dict[str, int] = {}
        for owner, victim_of, pod in self._occupants():
            i = self.node_index.get(pod.node_id, -1)
            amount = pod.resources.get(name, 0)
            if i in usable and amount > 0:
                if victim_of:
                    freeing[victim_of] = freeing.get(victim_of, 0) + amount
                else:
                    used[owner] = used.get(owner, 0) + amount
        parts = []
        in_use = sum(used.values())
        if in_use:
            parts.append(f"{format_amount(name, in_use)} in use by {_plural(len(used), 'workload')}")
        if freeing:
            whom = next(iter(freeing)) if len(freeing) == 1 else _plural(len(freeing), "workload")
            parts.append(f"{format_amount(name, sum(freeing.values()))} being freed by preemption for {whom}")
        down = sum(self.alloc[i][j] for i in matching if not self.nodes[i].available)
        if down:
            parts.append(f"{format_amount(name, down)} on unavailable nodes")
        tainted = sum(self.alloc[i][j] for i in matching if self.nodes[i].available and i not in usable)
        if tainted and not tolerate:
            parts.append(f"{format_amount(name, tainted)} on tainted nodes")
        return parts

    def _occupants(self) -> list[tuple[str, str, PodPlacement]]:
        """Every pod on the nodes at the end: (workload id, requester if it is a victim, pod)."""
        if self.occupants is None:
            self.occupants = [(r.id, self.evicted.get(r.id, ""), pod) for r in self.running for pod in r.pods]
            self.occupants += [(wid, "", pod) for wid, pods in self.admitted for pod in pods]
        return self.occupants

    def _fragmentation(self, shape: _Shape, usable: Sequence[int], where: str) -> str:
        items = sorted(shape.items, key=lambda item: _resource_order(item[0]))
        replicas = shape.replicas
        if shape.gpu > 0:
            counts = {
                name: sum(1 for i in usable if self.free[i][self.index[name]] >= amount)
                for name, amount in items
            }
            combined = sum(1 for i in usable if self._room(self.free[i], shape.nonzero, 1) > 0)
            short = [name for name, _ in items if counts[name] < replicas]
            if short:
                name = min(short, key=lambda n: (counts[n], _resource_order(n)))
                amount = dict(items)[name]
                nodes = _plural(replicas, "node")
                return (
                    f"Insufficient {_short_name(name)}{where} due to node fragmentation: needs "
                    f"{nodes} with {format_amount(name, amount)} free, {_has(counts[name])}"
                )
            wants = " and ".join(f"{format_amount(n, a)} {_short_name(n)}" for n, a in items)
            return (
                f"Insufficient resources{where} due to node fragmentation: needs "
                f"{_plural(replicas, 'node')} with {wants} free, {_has(combined)}"
            )
        rooms = {
            name: sum(max(self.free[i][self.index[name]], 0) // amount for i in usable)
            for name, amount in items
        }
        combined = sum(self._room(self.free[i], shape.nonzero, replicas) for i in usable)
        short = [name for name, _ in items if rooms[name] < replicas]
        if short:
            name = min(short, key=lambda n: (rooms[n], _resource_order(n)))
            amount = dict(items)[name]
            return (
                f"Insufficient {name}{where} due to node fragmentation: needs room for {replicas} pods "
                f"with {format_amount(name, amount)} each, nodes have room for {rooms[name]}"
            )
        wants = " and ".join(f"{format_amount(n, a)} {n}" for n, a in items)
        return (
            f"Insufficient resources{where} due to node fragmentation: needs room for {replicas} pods "
            f"with {wants} each, nodes have room for {combined}"
        )

    def free_after(self) -> dict[str, int]:
        return {name: self.total_plain[j] + self.total_tainted[j] for j, name in enumerate(self.names)}


def _victim_order(running: Iterable[RunningWorkload]) -> list[RunningWorkload]:
    """Preemption order: lowest priority, then largest (GPUs, cpu, memory), then newest, then id."""

    def size(r: RunningWorkload) -> tuple[int, int, int]:
        gpus = sum(pod.resources.get(name, 0) for pod in r.pods for name in q.GPU_RESOURCE_NAMES)
        cpu = sum(pod.resources.get(q.CPU, 0) for pod in r.pods)
        return gpus, cpu, sum(pod.resources.get(q.MEMORY, 0) for pod in r.pods)

    order = sorted(running, key=lambda r: r.id)
    order.sort(key=lambda r: r.submitted, reverse=True)  # stable: newest first among equals
    order.sort(key=lambda r: (r.priority, *(-x for x in size(r))))
    return order


def queue_key(w: QueuedWorkload) -> tuple[bool, int, datetime, str]:
    """The queue order: failed-over first, then higher priority, then older, then id."""
    return (not w.failed_over, -w.priority, w.submitted, w.id)


def _queue_order(queued: Iterable[QueuedWorkload]) -> list[QueuedWorkload]:
    """`sorted(queued, key=queue_key)` as four stable sorts on single attributes (least
    significant first): C-level keys and comparisons, about three times faster on 10,000."""
    order = sorted(queued, key=_BY_ID)
    order.sort(key=_BY_SUBMITTED)
    order.sort(key=_BY_PRIORITY, reverse=True)  # reverse=True keeps equal keys in order
    order.sort(key=_BY_FAILED_OVER, reverse=True)
    return order


_BY_ID = attrgetter("id")
_BY_SUBMITTED = attrgetter("submitted")
_BY_PRIORITY = attrgetter("priority")
_BY_FAILED_OVER = attrgetter("failed_over")
_WAITING, _BLOCKED, _UNFIT = 0, 1, 2

assert tuple(f.name for f in fields(Pending)) == ("workload_id", "position", "reason", "cause")
_SET_ID, _SET_POSITION, _SET_REASON, _SET_CAUSE = (
    getattr(Pending, name).__set__ for name in ("workload_id", "position", "reason", "cause")
)
assert tuple(f.name for f in fields(Admission)) == ("workload_id", "pods", "preempted")
_SET_ADMITTED, _SET_PODS, _SET_PREEMPTED = (
    getattr(Admission, name).__set__ for name in ("workload_id", "pods", "preempted")
)


def _pending(workload_id: str, position: int, reason: str, cause: PendingCause) -> Pending:
    item = _NEW(Pending)
    _SET_ID(item, workload_id)
    _SET_POSITION(item, position)
    _SET_REASON(item, reason)
    _SET_CAUSE(item, cause)
    return item


def decide(snapshot: Snapshot) -> Decision:
    """One scheduling cycle over `snapshot` (see the module docstring for the rules)."""
    if not gc.isenabled():
        return _decide(snapshot)
    # A cycle over 10,000 workloads allocates some 15,000 container objects, none of them in a
    # cycle (everything it drops is freed by reference counting). Left on, the collector runs
    # twenty-odd times during one decision and, as the survivors pile up, a full collection of the
    # whole process heap every few decisions (about 50 ms each in a worker). Off for the decision,
    # it runs once afterwards over what was allocated. Re-enabled only by whoever disabled it.
    gc.disable()
    try:
        return _decide(snapshot)
    finally:
        gc.enable()


def _decide(snapshot: Snapshot) -> Decision:
    queue = _queue_order(snapshot.queued)
    ids = {w.id for w in queue}
    if len(ids) != len(queue):
        raise ValueError("duplicate workload ids in the queue")
    if any(r.id in ids for r in snapshot.running):
        raise ValueError("a workload is both queued and running")
    cycle = _Cycle(snapshot)
    fifo = snapshot.workspace.queue_policy != "balance"
    preempt = snapshot.workspace.enable_preempt
    order = "in fifo order" if fifo else "of higher priority in balance order"
    admissions: list[Admission] = []
    preemptions: list[Preemption] = []
    pending: list[Pending] = []
    append = pending.append
    unfit: list[tuple[Pending, _Shape, int]] = []
    """Pending entries whose reason is diagnosed on the final state, with shape and priority."""
    head = ""  # fifo: the first workload that did not fit
    ahead = 0  # pending workloads ahead that are not held by `waiting`
    block_level: int | None = None  # balance: highest priority that did not fit
    counts: dict[int, int] = {}  # balance: pending (not waiting) per priority
    firsts: dict[int, tuple[int, str]] = {}  # balance: first pending per priority (position, id)
    # balance: priority -> (pending of higher priorities, the first of them), valid until a
    # pending workload of a higher priority is counted.
    blockers: dict[int, tuple[int, str]] = {}
    last_number, last_first, last_reason = 0, "", ""  # runs of workloads blocked alike share a text
    stopped = False  # fifo: everything after the head waits behind it, with no placement search
    for w in queue:
        if w.waiting:
            append(_pending(w.id, len(pending) + 1, w.waiting, "waiting"))
            continue
        if stopped:
            if ahead == 1:
                reason = f"Blocked by 1 earlier workload {order}: {head}"
            else:
                reason = f"Blocked by {ahead} earlier workloads {order}, first: {head}"
            append(_pending(w.id, len(pending) + 1, reason, "blocked"))
            ahead += 1
            continue
        priority = w.priority
        if block_level is not None and priority < block_level:
            found = blockers.get(priority)
            if found is None:
                higher = [p for p in counts if p > priority]
                found = blockers[priority] = (
                    sum(counts[p] for p in higher),
                    min(firsts[p] for p in higher)[1],
                )
            number, first = found
            if number != last_number or first != last_first:
                last_number, last_first = number, first
                if number == 1:
                    last_reason = f"Blocked by 1 earlier workload {order}: {first}"
                else:
                    last_reason = f"Blocked by {number} earlier workloads {order}, first: {first}"
            item = _NEW(Pending)
            _SET_ID(item, w.id)
            _SET_POSITION(item, len(pending) + 1)
            _SET_REASON(item, last_reason)
            _SET_CAUSE(item, "blocked")
            append(item)
            if priority in firsts:  # _count, inlined: the common case of this hot path
                counts[priority] += 1
                if len(blockers) > 1:
                    for lower in [p for p in blockers if p < priority]:
                        del blockers[lower]
            else:
                _count(priority, len(pending), w.id, counts, firsts, blockers)
            continue
        shape = cycle.shape(w)
        placement = None if shape.unfit else cycle.find(shape)
        if placement is not None:
            admission = _NEW(Admission)
            _SET_ADMITTED(admission, w.id)
            _SET_PODS(admission, tuple(cycle.commit(w, shape, placement)))
            _SET_PREEMPTED(admission, ())
            admissions.append(admission)
            continue
        shape.unfit = True
        if preempt:
            outcome = cycle.preempt(w, shape)
            if outcome is not None:
                pods, victims = outcome
                admissions.append(Admission(w.id, tuple(pods), tuple(victims)))
                preemptions.append(Preemption(w.id, tuple(victims)))
                continue
        item = _pending(w.id, len(pending) + 1, "", "insufficient")
        append(item)
        unfit.append((item, shape, priority))
        ahead += 1
        _count(priority, len(pending), w.id, counts, firsts, blockers)
        if fifo:
            head, stopped = w.id, True
        else:
            block_level = priority if block_level is None else max(block_level, priority)
    # Reasons of the unfit on the state at the end of the cycle, once per shape and priority.
    diagnosed: dict[tuple[_Shape, int], tuple[PendingCause, str]] = {}
    for item, shape, priority in unfit:
        key = (shape, priority)
        found_reason = diagnosed.get(key)
        if found_reason is None:
            found_reason = diagnosed[key] = cycle.diagnose(priority, shape)
        _SET_CAUSE(item, found_reason[0])
        _SET_REASON(item, found_reason[1])
    return Decision(
        admissions=tuple(admissions),
        preemptions=tuple(preemptions),
        pending=tuple(pending),
        free=cycle.free_after(),
    )


def _count(
    priority: int,
    position: int,
    workload_id: str,
    counts: dict[int, int],
    firsts: dict[int, tuple[int, str]],
    blockers: dict[int, tuple[int, str]],
) -> None:
    """One more pending (not waiting) workload of `priority`, at `position`."""
    counts[priority] = counts.get(priority, 0) + 1
    if priority not in firsts:
        firsts[priority] = (position, workload_id)
    if blockers:
        for lower in [p for p in blockers if p < priority]:
            del blockers[lower]
