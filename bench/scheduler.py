"""Benchmark: the scheduler's decision and its cycle. Prints figures, asserts nothing.

1. **The Kueue baseline mix** (kubernetes-sigs/kueue test/performance/scheduler/configs/baseline:
   30 queues of 20 units; per queue 350 small workloads of 1 unit for 200 ms arriving every
   100 ms, 100 medium of 5 units for 500 ms every 500 ms, 50 large of 20 units for 1000 ms every
   1200 ms; priorities small < medium < large; 15,000 workloads) through the real `decide` in
   virtual time: a cycle at every arrival and every finish. Each queue is a `balance` workspace of
   one 20-unit node (Kueue's BestEffortFIFO; no cohort borrowing here, so the queues are
   independent). Prints the makespan against the capacity bound (total unit-seconds / capacity)
   and the real seconds spent deciding. Kueue's own end-to-end figure on this mix is 351 s.
2. **One cycle at scale**: 10,000 pending workloads over 1,000 nodes of 8 GPUs (half the
   capacity in use): p50/p99 of `decide`, then the cycle activity with its database round trip
   (load, decide, write 10,000 positions and reasons, commit) on SQLite and on PostgreSQL.

    .venv/bin/python bench/scheduler.py [--runs 5] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Without `--postgres` (or PRIMUS_TEST_POSTGRES_URL) a throwaway PostgreSQL server is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import heapq
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import update

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from activities.scheduler import SchedulerActivities
from db import queue_status
from db.migrate import upgrade
from db.node_flavors import NodeFlavor
from db.nodes import Node as NodeRow
from db.scheduling import QueueEntry
from db.session import create_engine, session_factory
from db.urls import async_url
from db.workspaces import Workspace as WorkspaceRow
from domain import scheduler as s
from domain.node_flavors import CpuSpec, FlavorSpec, GpuSpec, ReservePercents
from domain.scheduling import QUEUED, QueueRequest
from tests.fixtures import postgres

UNIT = "cpu"
GPU = "amd.com/gpu"
EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
CLASSES = (  # name, count, every ms, runtime ms, units, priority
    ("small", 350, 100, 200, 1, 0),
    ("medium", 100, 500, 500, 5, 1),
    ("large", 50, 1200, 1000, 20, 2),
)
QUEUES, QUOTA = 30, 20


# --- 1. the Kueue baseline mix in virtual time -----------------------------------------------------


def simulate_queue(index: int) -> tuple[float, float, int]:
    """One queue of the mix: (makespan s, seconds deciding, cycles)."""
    arrivals: list[tuple[int, str, int, int, int]] = []  # time ms, id, units, runtime, priority
    for name, count, every, runtime, units, priority in CLASSES:
        for i in range(count):
            arrivals.append((i * every, f"q{index}-{name}-{i:03d}", units, runtime, priority))
    arrivals.sort()
    node = s.Node(id=f"node-{index}", allocatable={UNIT: QUOTA})
    workspace = s.Workspace(id=f"q{index}", queue_policy="balance")
    queued: dict[str, s.QueuedWorkload] = {}
    running: dict[str, s.RunningWorkload] = {}
    runtimes = {a[1]: a[3] for a in arrivals}
    finishes: list[tuple[int, str]] = []
    now, next_arrival, deciding, cycles, makespan = 0, 0, 0.0, 0, 0
    while next_arrival < len(arrivals) or finishes or queued:
        times = []
        if next_arrival < len(arrivals):
            times.append(arrivals[next_arrival][0])
        if finishes:
            times.append(finishes[0][0])
        if not times:
            break
        now = min(times)
        while next_arrival < len(arrivals) and arrivals[next_arrival][0] == now:
            at, wid, units, _, priority = arrivals[next_arrival]
            queued[wid] = s.QueuedWorkload(
                id=wid, submitted=EPOCH + timedelta(milliseconds=at), request={UNIT: units}, priority=priority
            )
            next_arrival += 1
        while finishes and finishes[0][0] == now:
            _, wid = heapq.heappop(finishes)
            running.pop(wid, None)
            makespan = now
        started = time.perf_counter()
        decision = s.decide(
            s.Snapshot(
                workspace=workspace,
                nodes=[node],
                queued=list(queued.values()),
                running=list(running.values()),
            )
        )
        deciding += time.perf_counter() - started
        cycles += 1
        for admission in decision.admissions:
            workload = queued.pop(admission.workload_id)
            running[workload.id] = s.RunningWorkload(
                id=workload.id, priority=workload.priority, submitted=workload.submitted, pods=admission.pods
            )
            heapq.heappush(finishes, (now + runtimes[workload.id], workload.id))
    return makespan / 1000, deciding, cycles


def kueue_mix() -> None:
    total_unit_seconds = sum(count * units * runtime / 1000 for _, count, _, runtime, units, _ in CLASSES)
    bound = total_unit_seconds * QUEUES / (QUEUES * QUOTA)
    results = [simulate_queue(i) for i in range(QUEUES)]
    makespan = max(r[0] for r in results)
    deciding = sum(r[1] for r in results)
    cycles = sum(r[2] for r in results)
    print("1. Kueue baseline mix (15,000 workloads, 30 queues of 20 units), virtual time")
    print(f"   capacity bound {bound:.1f} s, makespan {makespan:.1f} s, ratio {makespan / bound:.3f}")
    print(f"   (Kueue's end-to-end figure on this mix: 351 s, {351 / bound:.1f}x the bound)")
    print(
        f"   {cycles} cycles, {deciding:.2f} s deciding in all ({deciding / cycles * 1e3:.3f} ms per cycle)"
    )


# --- 2. one cycle at scale -------------------------------------------------------------------------

NODES, PENDING, GPUS = 1000, 10_000, 8


def big_snapshot() -> s.Snapshot:
    """1,000 8-GPU nodes, half of them busy with 4-GPU pods, and 10,000 pending workloads."""
    nodes = [s.Node(id=f"n{i:04d}", allocatable={UNIT: 128, GPU: GPUS}) for i in range(NODES)]
    running = [
        s.RunningWorkload(
            id=f"run-{i:04d}",
            priority=1,
            submitted=EPOCH,
            pods=(s.PodPlacement(node_id=f"n{i:04d}", resources={UNIT: 16, GPU: 4}, gpus=(0, 1, 2, 3)),),
        )
        for i in range(NODES)
    ]
    shapes = ((1, 8), (2, 8), (1, 4), (4, 8), (1, 2))  # replicas, GPUs per pod
    queued = [
        s.QueuedWorkload(
            id=f"w{i:05d}",
            submitted=EPOCH + timedelta(seconds=i),
            request={UNIT: 8, GPU: shapes[i % len(shapes)][1]},
            replicas=shapes[i % len(shapes)][0],
            priority=i % 3,
        )
        for i in range(PENDING)
    ]
    return s.Snapshot(
        workspace=s.Workspace(id="big", queue_policy="balance"), nodes=nodes, queued=queued, running=running
    )


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def decide_at_scale(runs: int) -> None:
    snapshot = big_snapshot()
    times = []
    for _ in range(max(runs, 5) * 4):
        started = time.perf_counter()
        decision = s.decide(snapshot)
        times.append((time.perf_counter() - started) * 1e3)
    print("2. one cycle: 10,000 pending workloads over 1,000 nodes")
    print(
        f"   decide: p50 {percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms "
        f"over {len(times)} runs ({len(decision.admissions)} admitted, {len(decision.pending)} pending)"
    )


async def load_database(url: str) -> None:
    """The workspace, flavor, nodes and queue rows of the big snapshot (no admitted ones)."""
    upgrade(url)
    engine = create_engine(async_url(url))
    sessions = session_factory(engine)
    now = datetime.now(UTC)
    spec = FlavorSpec(cpu=CpuSpec(quantity="128"), memory="1Ti", gpu=GpuSpec(resource_name=GPU, quantity="8"))
    async with sessions() as session, session.begin():
        session.add(
            NodeFlavor(id="gpu8", display_name="gpu8", spec=spec.stored(), created_at=now, updated_at=now)
        )
        session.add(
            WorkspaceRow(
                id="big",
                name="big",
                cluster_id="c",
                flavor_id="gpu8",
                queue_policy="balance",
                phase="Running",
                created_at=now,
                updated_at=now,
            )
        )
        for i in range(NODES):
            session.add(
                NodeRow(
                    id=f"n{i:04d}",
                    node_name=f"n{i:04d}",
                    private_ip=f"10.{i // 250}.{i % 250}.1",
                    flavor_id="gpu8",
                    template_id="t",
                    ssh_secret_id="s",
                    workspace_id="big",
                    phase="Ready",
                    onboarded=True,
                    addons_template_id="t",
                    addons_installed=True,
                    created_at=now,
                    updated_at=now,
                )
            )
    shapes = ((1, 8), (2, 8), (1, 4), (4, 8), (1, 2))  # replicas, GPUs per pod
    async with sessions() as session, session.begin():
        for i in range(PENDING):
            replicas, gpus = shapes[i % len(shapes)]
            request = QueueRequest(
                workload_id=f"w{i:05d}",
                workspace_id="big",
                priority=i % 3,
                request={UNIT: 8, GPU: gpus},
                replicas=replicas,
            )
            await queue_status.enqueue(session, request=request, now=now + timedelta(microseconds=i))
    await engine.dispose()


async def cycle_with_database(url: str, runs: int) -> tuple[list[float], list[float]]:
    """Milliseconds of the cycle activity (load, decide, write, commit) over `runs` runs: a first
    cycle over a queue never decided (every row written), then a steady-state one over the
    unchanged queue (nothing to write)."""
    engine = create_engine(async_url(url))
    activities = SchedulerActivities(session_factory(engine), ReservePercents())
    sessions = session_factory(engine)
    first: list[float] = []
    steady: list[float] = []
    written: list[int] = []
    try:
        for _ in range(runs):
            async with sessions() as session, session.begin():  # never decided (not timed)
                await session.execute(
                    update(QueueEntry).values(
                        state=QUEUED, placement=[], admitted_at=None, notified=True, position=0, reason=""
                    )
                )
            admitted = 0
            for times in (first, steady):
                started = time.perf_counter()
                result = await activities.cycle("big")
                times.append((time.perf_counter() - started) * 1e3)
                written.append(result.written)
                admitted += result.admitted
                assert admitted + result.pending == PENDING, (admitted, result.pending)
    finally:
        await engine.dispose()
    print(f"   rows written per cycle (first, steady): {written}")
    return first, steady


@contextlib.contextmanager
def postgres_url(given: str | None) -> Iterator[str]:
    if given:
        with postgres.scratch_database(given) as url:
            yield url
        return
    with postgres.server_url() as server, postgres.scratch_database(server) as url:
        yield url


async def database_cycles(runs: int, pg: str | None) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = f"sqlite:///{Path(tmp) / 'bench.db'}"
        await load_database(sqlite)
        lite = await cycle_with_database(sqlite, runs)
    with postgres_url(pg) as url:
        await load_database(url)
        post = await cycle_with_database(url, runs)
    for name, (first, steady) in (("SQLite", lite), ("PostgreSQL", post)):
        for kind, times in (("first", first), ("steady", steady)):
            print(
                f"   cycle activity on {name}, {kind}: median {statistics.median(times):.0f} ms, "
                f"p99 {percentile(times, 99):.0f} ms over {len(times)} runs (10,000 queue rows read each)"
            )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--postgres", default=os.environ.get("PRIMUS_TEST_POSTGRES_URL"))
    args = parser.parse_args()
    kueue_mix()
    decide_at_scale(args.runs)
    asyncio.run(database_cycles(args.runs, args.postgres))


if __name__ == "__main__":
    main()
