"""The queue's bulk statements (`db.queue_status.apply_decision`) and the cycle's Core reads
(`db.scheduling`), on SQLite and PostgreSQL: each row gets its own values, guards hold, and
what the decision reads equals what was written."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import timedelta

import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from db import node_status, queue_status
from db.node_flavors import NodeFlavor
from db.nodes import Node
from db.scheduling import QueueEntry, queue_state, scheduler_nodes
from db.session import SessionFactory, create_engine, session_factory
from domain import scheduler as s
from domain.node_flavors import CpuSpec, FlavorSpec, GpuSpec, ReservePercents
from domain.nodes import UnavailableReason
from domain.scheduling import ADMITTED, QUEUED, QueueRequest
from domain.timefmt import utcnow

GPU = "amd.com/gpu"


@pytest.fixture
async def sessions(database_url: str) -> AsyncIterator[SessionFactory]:
    engine = create_engine(database_url)
    try:
        yield session_factory(engine)
    finally:
        await engine.dispose()


async def enqueue(sessions: SessionFactory, workspace: str, ids: list[str]) -> None:
    now = utcnow()
    async with sessions() as session, session.begin():
        for i, wid in enumerate(ids):
            request = QueueRequest(
                workload_id=wid, workspace_id=workspace, priority=i % 3, request={"cpu": 2, GPU: 1}
            )
            assert await queue_status.enqueue(session, request=request, now=now + timedelta(seconds=i))


def pod(node: str, gpus: tuple[int, ...]) -> s.PodPlacement:
    return s.PodPlacement(node_id=node, resources={"cpu": 2, GPU: len(gpus)}, gpus=gpus)


async def test_each_entry_gets_its_own_position_reason_and_placement(sessions: SessionFactory) -> None:
    workspace = f"ws-{uuid.uuid4().hex[:6]}"
    ids = [f"{workspace}-{i}" for i in range(5)]
    await enqueue(sessions, workspace, ids)
    decision = s.Decision(
        admissions=(
            s.Admission(workload_id=ids[0], pods=(pod("n1", (0, 1)), pod("n2", (3,)))),
            s.Admission(workload_id=ids[1], pods=(pod("n3", (2,)),)),
        ),
        preemptions=(),
        pending=(
            s.Pending(ids[2], 1, 'Insufficient amd.com/gpu: need 16, free 8 — "quoted" é', "insufficient"),
            s.Pending(ids[3], 2, "Blocked by 1 earlier workload in fifo order: x", "blocked"),
            s.Pending(ids[4], 3, "Blocked by 2 earlier workloads in fifo order, first: x", "blocked"),
        ),
        free={},
    )
    async with sessions() as session, session.begin():
        written = await queue_status.apply_decision(
            session, workspace_id=workspace, decision=decision, now=utcnow()
        )
    assert written == 5
    async with sessions() as session:
        rows = {e.workload_id: e for e in await _entries(session, workspace)}
        state = await queue_state(session, workspace_id=workspace)
    assert [rows[i].state for i in ids] == [ADMITTED, ADMITTED, QUEUED, QUEUED, QUEUED]
    assert rows[ids[0]].placement == [
        {"node_id": "n1", "resources": {"cpu": 2, GPU: 2}, "gpus": [0, 1]},
        {"node_id": "n2", "resources": {"cpu": 2, GPU: 1}, "gpus": [3]},
    ]
    assert rows[ids[0]].admitted_at is not None and not rows[ids[0]].notified
    assert [(rows[i].position, rows[i].reason) for i in ids[2:]] == [
        (p.position, p.reason) for p in decision.pending
    ]
    # What the next cycle reads is what was written.
    assert state.shown == {p.workload_id: (p.position, p.reason) for p in decision.pending}
    assert {r.id: r.pods for r in state.running} == {a.workload_id: a.pods for a in decision.admissions}
    assert [w.id for w in state.queued] == ids[2:]
    assert [w.priority for w in state.queued] == [2, 0, 1]
    assert all(w.submitted.tzinfo is not None for w in state.queued)
    assert state.queued[0].request == {"cpu": 2, GPU: 1}


async def test_only_still_queued_entries_are_written(sessions: SessionFactory) -> None:
    """An admission or a position for an entry admitted or withdrawn meanwhile changes nothing,
    and entries whose shown position and reason are unchanged are not rewritten."""
    workspace = f"ws-{uuid.uuid4().hex[:6]}"
    ids = [f"{workspace}-{i}" for i in range(3)]
    await enqueue(sessions, workspace, ids)
    first = s.Decision(
        admissions=(s.Admission(ids[0], (pod("n1", (0,)),)),), preemptions=(), pending=(), free={}
    )
    async with sessions() as session, session.begin():
        await queue_status.apply_decision(session, workspace_id=workspace, decision=first, now=utcnow())
        assert await queue_status.withdraw(session, workload_id=ids[1])
    stale = s.Decision(
        admissions=(s.Admission(ids[0], (pod("n9", (7,)),)), s.Admission(ids[1], (pod("n9", (6,)),))),
        preemptions=(),
        pending=(s.Pending(ids[2], 1, "same as shown", "blocked"),),
        free={},
    )
    async with sessions() as session, session.begin():
        written = await queue_status.apply_decision(
            session,
            workspace_id=workspace,
            decision=stale,
            now=utcnow(),
            shown={ids[2]: (1, "same as shown")},
        )
    assert written == 2  # the two admissions were attempted, the unchanged pending entry skipped
    async with sessions() as session:
        rows = {e.workload_id: e for e in await _entries(session, workspace)}
    assert set(rows) == {ids[0], ids[2]}  # the withdrawn entry was not recreated
    assert rows[ids[0]].placement[0]["node_id"] == "n1"  # the admitted one kept its placement
    assert (rows[ids[2]].position, rows[ids[2]].reason) == (0, "")


async def test_nodes_as_the_decision_sees_them(sessions: SessionFactory) -> None:
    """Allocatable after the reserve, labels, taints, and a held node unavailable."""
    workspace = f"ws-{uuid.uuid4().hex[:6]}"
    now = utcnow()
    spec = FlavorSpec(
        cpu=CpuSpec(quantity="64"), memory="256Gi", gpu=GpuSpec(resource_name=GPU, quantity="8")
    )
    async with sessions() as session, session.begin():
        session.add(
            NodeFlavor(id=workspace, display_name="f", spec=spec.stored(), created_at=now, updated_at=now)
        )
        for i, taints in enumerate(([], [{"key": "primus-safe.x", "value": "1", "effect": "NoExecute"}], [])):
            session.add(
                Node(
                    id=f"{workspace}-n{i}",
                    node_name=f"n{i}",
                    private_ip=f"127.0.{uuid.uuid4().int % 250}.{i + 1}",
                    flavor_id=workspace,
                    template_id="t",
                    ssh_secret_id="s",
                    workspace_id=workspace,
                    phase="Ready",
                    onboarded=True,
                    addons_template_id="t",
                    addons_installed=True,
                    labels={"rack": f"r{i}"},
                    taints=taints,
                    created_at=now,
                    updated_at=now,
                )
            )
    async with sessions() as session, session.begin():
        await node_status.mark_unavailable(
            session,
            node_id=f"{workspace}-n2",
            reason=UnavailableReason.FAULT,
            ref="f1",
            message="fault",
            now=now,
        )
    async with sessions() as session:
        nodes = {
            n.id: n for n in await scheduler_nodes(session, workspace_id=workspace, reserve=ReservePercents())
        }
    n0, n1, n2 = (nodes[f"{workspace}-n{i}"] for i in range(3))
    assert n0.available and n0.labels == {"rack": "r0"} and n0.taints == ()
    assert n0.allocatable[GPU] == 8 and 0 < n0.allocatable["cpu"] <= 64
    assert n1.available and n1.taints == (s.Taint(key="primus-safe.x", value="1", effect="NoExecute"),)
    assert not n2.available


async def _entries(session: AsyncSession, workspace: str) -> list[QueueEntry]:
    return list(
        (await session.execute(select(QueueEntry).where(QueueEntry.workspace_id == workspace))).scalars()
    )
