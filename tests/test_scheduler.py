"""The pure scheduling decision (`domain.scheduler.decide`): examples of each rule and Hypothesis
properties over random snapshots (capacity, gang placement, queue order, preemption, determinism,
reasons)."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain import scheduler as s

GPU = "amd.com/gpu"
T0 = datetime(2026, 12, 1, tzinfo=UTC)
PROPERTY = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def node(node_id: str, gpus: int = 8, cpu: int = 64, **extra: object) -> s.Node:
    return s.Node(id=node_id, allocatable={"cpu": cpu, GPU: gpus}, **extra)  # type: ignore[arg-type]


def job(
    job_id: str, gpus: int, replicas: int = 1, priority: int = 0, at: int = 0, cpu: int = 4, **extra: object
) -> s.QueuedWorkload:
    return s.QueuedWorkload(
        id=job_id,
        submitted=T0 + timedelta(seconds=at),
        request={"cpu": cpu, GPU: gpus} if gpus else {"cpu": cpu},
        replicas=replicas,
        priority=priority,
        **extra,  # type: ignore[arg-type]
    )


def snap(
    nodes: list[s.Node],
    queued: list[s.QueuedWorkload],
    running: list[s.RunningWorkload] | None = None,
    policy: s.QueuePolicy = "fifo",
    preempt: bool = False,
) -> s.Snapshot:
    return s.Snapshot(
        workspace=s.Workspace(id="ws", queue_policy=policy, enable_preempt=preempt),
        nodes=nodes,
        queued=queued,
        running=running or [],
    )


def as_running(decision: s.Decision, queued: list[s.QueuedWorkload]) -> list[s.RunningWorkload]:
    by_id = {w.id: w for w in queued}
    return [
        s.RunningWorkload(
            id=a.workload_id,
            priority=by_id[a.workload_id].priority,
            submitted=by_id[a.workload_id].submitted,
            pods=a.pods,
        )
        for a in decision.admissions
    ]


# --- examples --------------------------------------------------------------------------------------


def test_two_4_gpu_pods_of_different_workloads_share_an_8_gpu_node() -> None:
    decision = s.decide(snap([node("a")], [job("x", 4), job("y", 4, at=1)]))
    pods = {a.workload_id: a.pods[0] for a in decision.admissions}
    assert set(pods) == {"x", "y"}
    assert set(pods["x"].gpus).isdisjoint(pods["y"].gpus)
    assert sorted(pods["x"].gpus + pods["y"].gpus) == list(range(8))


def test_gpu_pods_of_one_workload_go_to_distinct_nodes_cpu_pods_may_share() -> None:
    gpu = s.decide(snap([node("a")], [job("g", 2, replicas=2)]))
    assert gpu.admissions == () and gpu.pending[0].cause == "fragmentation"
    cpu = s.decide(snap([node("a")], [job("c", 0, replicas=2)]))
    assert [p.node_id for p in cpu.admissions[0].pods] == ["a", "a"]


def test_fifo_blocks_and_balance_passes_but_not_past_a_higher_priority() -> None:
    queued = [job("big", 8, replicas=2), job("small", 4, at=1)]
    fifo = s.decide(snap([node("a")], queued))
    assert fifo.admissions == ()
    assert [(p.workload_id, p.position) for p in fifo.pending] == [("big", 1), ("small", 2)]
    assert fifo.pending[1].reason.startswith("Blocked by 1 earlier workload in fifo order")
    balance = s.decide(snap([node("a")], queued, policy="balance"))
    assert [a.workload_id for a in balance.admissions] == ["small"]
    urgent = [job("urgent", 8, replicas=2, priority=1), job("later", 4, at=1)]
    held = s.decide(snap([node("a")], urgent, policy="balance"))
    assert held.admissions == () and [p.workload_id for p in held.pending] == ["urgent", "later"]


def test_order_is_failed_over_then_priority_then_submit_time_then_id() -> None:
    queued = [
        job("b-old", 8, priority=1, at=0),
        job("a-new", 8, priority=1, at=5),
        job("high", 8, priority=2, at=9),
        job("back", 8, priority=0, at=9, failed_over=True),
        job("a-old", 8, priority=1, at=0),
    ]
    decision = s.decide(snap([], queued))
    assert [p.workload_id for p in decision.pending] == ["back", "high", "a-old", "b-old", "a-new"]
    assert [p.position for p in decision.pending] == [1, 2, 3, 4, 5]


def test_reasons_name_the_shortfall_and_the_blockers() -> None:
    running = [
        s.RunningWorkload(
            id="r",
            priority=0,
            submitted=T0,
            pods=(s.PodPlacement(node_id="a", resources={GPU: 8}, gpus=tuple(range(8))),),
        )
    ]
    nodes = [node("a"), node("b"), node("c", available=False)]
    decision = s.decide(snap(nodes, [job("w", 8, replicas=3)], running))
    assert decision.pending[0].reason == (
        "Insufficient amd.com/gpu: need 24, free 8 (8 in use by 1 workload, 8 on unavailable nodes)"
    )
    none = s.decide(snap([node("a", available=False)], [job("w", 1)]))
    assert none.pending[0].reason.startswith("All nodes are unavailable")
    waiting = s.decide(snap([node("a")], [job("w", 1, waiting="Waiting for dependency d (Running)")]))
    assert waiting.pending[0].reason == "Waiting for dependency d (Running)"


def test_taints_block_unless_tolerated() -> None:
    tainted = node("a", taints=(s.Taint(key="primus-safe.fault", effect="NoSchedule"),))
    assert s.decide(snap([tainted], [job("w", 1)])).admissions == ()
    assert s.decide(snap([tainted], [job("w", 1, tolerate_all=True)])).admissions != ()


def test_preemption_takes_the_lowest_priority_then_the_largest_then_the_newest() -> None:
    def pod(node_id: str, gpus: range) -> s.PodPlacement:
        return s.PodPlacement(node_id=node_id, resources={GPU: len(gpus)}, gpus=tuple(gpus))

    running = [
        s.RunningWorkload(id="p1-old", priority=1, submitted=T0, pods=(pod("a", range(0, 4)),)),
        s.RunningWorkload(id="p0-small", priority=0, submitted=T0, pods=(pod("a", range(4, 6)),)),
        s.RunningWorkload(
            id="p0-big", priority=0, submitted=T0, pods=(pod("a", range(6, 8)), pod("b", range(0, 8)))
        ),
    ]
    decision = s.decide(snap([node("a"), node("b")], [job("hi", 8, priority=2)], running, preempt=True))
    assert [(p.requester_id, p.victim_ids) for p in decision.preemptions] == [("hi", ("p0-big",))]
    assert decision.admissions[0].preempted == ("p0-big",)
    equal = s.decide(snap([node("a")], [job("same", 8, priority=1)], running[:1], preempt=True))
    assert equal.preemptions == ()  # only strictly lower priorities are evicted


# --- properties ------------------------------------------------------------------------------------


@st.composite
def snapshots(draw: st.DrawFn) -> s.Snapshot:
    """Random workspaces: up to 5 nodes (some unavailable or tainted), running work placed by an
    earlier decision, and up to 10 queued workloads of mixed shapes and priorities."""
    nodes = [
        s.Node(
            id=f"n{i}",
            allocatable={"cpu": draw(st.sampled_from([8, 16, 64])), GPU: draw(st.sampled_from([0, 4, 8]))},
            available=draw(st.booleans()) or i == 0,
            taints=(s.Taint(key="t"),) if draw(st.integers(0, 5)) == 0 else (),
        )
        for i in range(draw(st.integers(0, 5)))
    ]

    def workloads(prefix: str, count: int) -> list[s.QueuedWorkload]:
        return [
            job(
                f"{prefix}{i}",
                draw(st.sampled_from([0, 1, 2, 4, 8])),
                replicas=draw(st.integers(1, 3)),
                priority=draw(st.integers(0, 2)),
                at=draw(st.integers(0, 20)),
                cpu=draw(st.sampled_from([1, 4, 16])),
                tolerate_all=draw(st.booleans()),
                failed_over=draw(st.integers(0, 6)) == 0,
            )
            for i in range(count)
        ]

    earlier = workloads("r", draw(st.integers(0, 6)))
    running = as_running(s.decide(snap(nodes, earlier, policy="balance")), earlier)
    policy: s.QueuePolicy = draw(st.sampled_from(["fifo", "balance"]))
    return snap(nodes, workloads("q", draw(st.integers(0, 10))), running, policy, draw(st.booleans()))


def queue_order(snapshot: s.Snapshot) -> list[s.QueuedWorkload]:
    return sorted(snapshot.queued, key=s.queue_key)


@PROPERTY
@given(snapshots())
def test_capacity_is_never_exceeded_on_any_node_or_gpu(snapshot: s.Snapshot) -> None:
    decision = s.decide(snapshot)
    evicted = set(decision.evicted)
    holding = [p for r in snapshot.running if r.id not in evicted for p in r.pods]
    holding += [p for a in decision.admissions for p in a.pods]
    nodes = {n.id: n for n in snapshot.nodes}
    for node_id in {p.node_id for p in holding}:
        pods = [p for p in holding if p.node_id == node_id]
        for name, amount in nodes[node_id].allocatable.items():
            assert sum(p.resources.get(name, 0) for p in pods) <= amount, (node_id, name)
        gpus = [g for p in pods for g in p.gpus]
        assert len(gpus) == len(set(gpus)), f"a GPU of {node_id} is held twice"
        assert all(0 <= g < nodes[node_id].allocatable.get(GPU, 0) for g in gpus)
    for admission in decision.admissions:
        for pod in admission.pods:
            assert nodes[pod.node_id].available


@PROPERTY
@given(snapshots())
def test_gang_placement_is_all_or_nothing_and_gpu_pods_use_distinct_nodes(snapshot: s.Snapshot) -> None:
    decision = s.decide(snapshot)
    queued = {w.id: w for w in snapshot.queued}
    for admission in decision.admissions:
        workload = queued[admission.workload_id]
        assert len(admission.pods) == workload.replicas
        if workload.request.get(GPU, 0):
            assert len({p.node_id for p in admission.pods}) == workload.replicas
            assert all(len(p.gpus) == workload.request[GPU] for p in admission.pods)
        if not workload.tolerate_all:
            tainted = {n.id for n in snapshot.nodes if n.taints}
            assert not tainted & {p.node_id for p in admission.pods}


@PROPERTY
@given(snapshots())
def test_every_queued_workload_is_admitted_or_has_a_position_and_a_reason(snapshot: s.Snapshot) -> None:
    decision = s.decide(snapshot)
    admitted = {a.workload_id for a in decision.admissions}
    pending = {p.workload_id for p in decision.pending}
    assert admitted | pending == {w.id for w in snapshot.queued} and not admitted & pending
    assert [p.position for p in decision.pending] == list(range(1, len(decision.pending) + 1))
    assert all(p.reason.strip() for p in decision.pending)
    order = [w.id for w in queue_order(snapshot) if w.id in pending]
    assert [p.workload_id for p in decision.pending] == order


@PROPERTY
@given(snapshots())
def test_fifo_admits_a_prefix_and_balance_never_passes_a_higher_priority(snapshot: s.Snapshot) -> None:
    decision = s.decide(snapshot)
    admitted = {a.workload_id for a in decision.admissions}
    order = queue_order(snapshot)
    if snapshot.workspace.queue_policy == "fifo":
        flags = [w.id in admitted for w in order]
        assert flags == sorted(flags, reverse=True), "fifo admitted a workload behind one left pending"
    else:
        for index, waiting in enumerate(order):
            if waiting.id in admitted:
                continue
            passed = [w for w in order[index + 1 :] if w.id in admitted]
            assert all(w.priority >= waiting.priority for w in passed), "a lower priority passed a higher one"


@PROPERTY
@given(snapshots(), st.integers(0, 2))
def test_preemption_evicts_only_strictly_lower_priorities_and_only_as_many_as_needed(
    snapshot: s.Snapshot, priority: int
) -> None:
    requester = job("req", 8, priority=priority, at=99)
    alone = snap(list(snapshot.nodes), [requester], list(snapshot.running), preempt=True)
    decision = s.decide(alone)
    by_id = {r.id: r for r in snapshot.running}
    for preemption in decision.preemptions:
        victims = set(preemption.victim_ids)
        assert all(by_id[v].priority < priority for v in victims)
        assert [a.workload_id for a in decision.admissions] == ["req"]
        for spared in victims:  # every victim was needed: keeping any one of them, it does not fit
            kept = [r for r in snapshot.running if r.id not in victims or r.id == spared]
            without = s.decide(snap(list(snapshot.nodes), [requester], kept))
            assert without.admissions == (), f"{spared} was evicted needlessly"
    if not decision.preemptions and not decision.admissions:
        # nothing lower to evict could make room: evicting every lower priority does not either
        kept = [r for r in snapshot.running if r.priority >= priority]
        assert s.decide(snap(list(snapshot.nodes), [requester], kept)).admissions == ()


@PROPERTY
@given(snapshots(), st.randoms(use_true_random=False))
def test_the_decision_depends_on_the_snapshot_not_on_its_order(
    snapshot: s.Snapshot, rng: random.Random
) -> None:
    shuffled = [list(snapshot.nodes), list(snapshot.queued), list(snapshot.running)]
    for items in shuffled:
        rng.shuffle(items)
    again = snap(
        shuffled[0],
        shuffled[1],
        shuffled[2],
        snapshot.workspace.queue_policy,
        snapshot.workspace.enable_preempt,
    )
    assert s.decide(snapshot) == s.decide(again)


def test_decision_objects_equal_constructed_ones_and_the_collector_is_left_as_found() -> None:
    import gc

    queued = [
        job(f"w{i}", g, replicas=r, priority=i % 3, at=i)
        for i, (g, r) in enumerate([(4, 1), (8, 2), (2, 1)] * 4)
    ]
    decision = s.decide(snap([node("a"), node("b")], queued, policy="balance"))
    for p in decision.pending:
        assert p == s.Pending(p.workload_id, p.position, p.reason, p.cause) and p.reason
    for a in decision.admissions:
        assert a == s.Admission(
            a.workload_id, tuple(s.PodPlacement(x.node_id, x.resources, x.gpus) for x in a.pods)
        )
    assert gc.isenabled()
    gc.disable()
    try:
        s.decide(snap([node("a")], queued))
        assert not gc.isenabled()
    finally:
        gc.enable()
