"""db/node_status.py, the one writer of a node's status: every transition is guarded by the
state it expects, so concurrent writers (onboarding, the probe, cluster joins, faults) cannot
undo each other. Runs on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime

import pytest
from sqlalchemy import update
from sqlalchemy.ext.asyncio import AsyncSession

from db import node_status
from db.migrate import upgrade
from db.nodes import Node, get_node
from db.session import create_engine, session_factory
from db.urls import async_url
from domain import nodes as rules
from domain.nodes import ProbeVerdict, UnavailableReason, availability
from tests.test_migrations import empty_database

__all__ = ["empty_database"]  # the fixture, parametrised over SQLite and PostgreSQL

NOW = datetime(2026, 12, 2, 12, 0, tzinfo=UTC)
FAULT, REBOOT = UnavailableReason.FAULT, UnavailableReason.REBOOT


@pytest.fixture
async def session(empty_database: str) -> AsyncIterator[AsyncSession]:
    upgrade(empty_database)
    engine = create_engine(async_url(empty_database))
    try:
        async with session_factory(engine)() as db:
            for n, phase in enumerate([rules.READY, rules.READY, rules.READY], start=1):
                db.add(
                    Node(
                        id=f"n{n}",
                        node_name=f"n{n}",
                        private_ip=f"127.0.0.{n}",
                        flavor_id="f",
                        template_id="t",
                        ssh_secret_id="s",
                        phase=phase,
                        onboarded=True,
                        created_at=NOW,
                        updated_at=NOW,
                    )
                )
            await db.commit()
            yield db
    finally:
        await engine.dispose()


async def node(db: AsyncSession, node_id: str) -> Node:
    found = await get_node(db, node_id=node_id, include_deleting=True)
    assert found is not None
    await db.refresh(found)
    return found


async def test_holds_stack_and_clear_independently(session: AsyncSession) -> None:
    assert await node_status.mark_unavailable(session, node_id="n1", reason=FAULT, ref="f-1", now=NOW)
    assert await node_status.mark_unavailable(session, node_id="n1", reason=FAULT, ref="f-2", now=NOW)
    assert await node_status.mark_unavailable(session, node_id="n1", reason=REBOOT, message="kernel", now=NOW)
    # The same hold twice is one hold (an activity retry).
    assert not await node_status.mark_unavailable(session, node_id="n1", reason=FAULT, ref="f-1", now=NOW)
    await session.commit()
    n1 = await node(session, "n1")
    assert [(h.reason, h.ref) for h in n1.hold_list()] == [(FAULT, "f-1"), (FAULT, "f-2"), (REBOOT, "")]
    available, why = availability(
        phase=n1.phase, step="", facts_problem="", addons_installed=True, taints=[], holds=n1.hold_list()
    )
    assert (available, why) == (False, "the node is held unavailable (fault)")

    assert await node_status.mark_available(session, node_id="n1", reason=FAULT, ref="f-1")
    assert await node_status.mark_available(session, node_id="n1", reason=REBOOT)
    assert not await node_status.mark_available(session, node_id="n1", reason=REBOOT)
    await session.commit()
    n1 = await node(session, "n1")
    assert [(h.reason, h.ref) for h in n1.hold_list()] == [(FAULT, "f-2")]

    assert await node_status.mark_available(session, node_id="n1", reason=FAULT, ref="f-2")
    await session.commit()
    n1 = await node(session, "n1")
    assert n1.hold_list() == []
    assert (await node(session, "n2")).hold_list() == []


async def test_probe_never_moves_a_node_mid_step_or_after_it_moved(session: AsyncSession) -> None:
    down = ProbeVerdict(phase=rules.SSH_FAILED, message="unreachable", line="probe: unreachable")
    assert await node_status.begin_step(session, node_id="n1", step="facts", now=NOW)
    assert not await node_status.begin_step(session, node_id="n1", step="facts", now=NOW)  # a retry
    assert (
        await node_status.record_probe(
            session, node_id="n1", seen_phase=rules.READY, reachable=False, verdict=down, now=NOW
        )
        is None
    )
    # The probe saw n2 Ready, but it is Managing by the time its verdict lands.
    assert await node_status.begin_manage(session, node_id="n2", cluster_id="c1", action="add", now=NOW) == ""
    assert (
        await node_status.record_probe(
            session, node_id="n2", seen_phase=rules.READY, reachable=False, verdict=down, now=NOW
        )
        is None
    )
    # n3 takes it and counts its runs of failed and good probes
    assert await node_status.record_probe(
        session, node_id="n3", seen_phase=rules.READY, reachable=False, verdict=down, now=NOW
    ) == (1, 0)
    quiet = ProbeVerdict()
    for expected in ((2, 0), (0, 1), (0, 2), (1, 0)):
        reachable = expected[1] > 0
        assert (
            await node_status.record_probe(
                session,
                node_id="n3",
                seen_phase=rules.SSH_FAILED,
                reachable=reachable,
                verdict=quiet,
                now=NOW,
            )
            == expected
        )
    await session.commit()
    assert (await node(session, "n1")).phase == rules.READY
    assert (await node(session, "n2")).phase == rules.MANAGING
    n3 = await node(session, "n3")
    assert (n3.phase, n3.message, n3.phase_changed_at) == (rules.SSH_FAILED, "unreachable", NOW)


async def test_onboarding_leaves_a_joining_node_to_its_manage_workflow(session: AsyncSession) -> None:
    assert await node_status.begin_manage(session, node_id="n1", cluster_id="c1", action="add", now=NOW) == ""
    assert await node_status.begin_step(session, node_id="n1", step="addons", now=NOW)
    assert not await node_status.finish_onboarding(
        session, node_id="n1", phase=rules.READY, message="", now=NOW
    )
    await session.commit()
    n1 = await node(session, "n1")
    assert (n1.phase, n1.step, n1.cluster_id) == (rules.MANAGING, "", "c1")

    assert await node_status.finish_manage(
        session, node_id="n1", cluster_id="c1", action="add", ok=True, message="", now=NOW
    )
    # Finishing twice (a retry after the commit) changes nothing.
    assert not await node_status.finish_manage(
        session, node_id="n1", cluster_id="c1", action="add", ok=True, message="", now=NOW
    )
    await session.commit()
    n1 = await node(session, "n1")
    assert (n1.phase, n1.cluster_id) == (rules.READY, "c1")


async def test_manage_refusals(session: AsyncSession) -> None:
    assert await node_status.begin_manage(session, node_id="n1", cluster_id="c1", action="add", now=NOW) == ""
    # A retry of an applied start applies again; another cluster is refused.
    assert await node_status.begin_manage(session, node_id="n1", cluster_id="c1", action="add", now=NOW) == ""
    refusal = await node_status.begin_manage(session, node_id="n1", cluster_id="c2", action="add", now=NOW)
    assert refusal == "the node(n1) is already managing"
    refusal = await node_status.begin_manage(session, node_id="n2", cluster_id="c1", action="remove", now=NOW)
    assert refusal == "the node(n2) does not belong to cluster c1"
    refusal = await node_status.begin_manage(session, node_id="gone", cluster_id="c1", action="add", now=NOW)
    assert refusal == "the node no longer exists"
    assert await node_status.begin_step(session, node_id="n3", step="reach", now=NOW)
    refusal = await node_status.begin_manage(session, node_id="n3", cluster_id="c1", action="add", now=NOW)
    assert "busy being onboarded" in refusal


async def test_claim_for_cluster_is_all_or_none(session: AsyncSession) -> None:
    assert await node_status.claim_for_cluster(session, cluster_id="c1", node_ids=["n1"], now=NOW) == []
    await session.commit()
    # n1 belongs to c1: c2 cannot claim it, and the caller rolls the claim of n2 back.
    refused = await node_status.claim_for_cluster(session, cluster_id="c2", node_ids=["n2", "n1"], now=NOW)
    assert refused == ["n1"]
    await session.rollback()
    # A retry by c1 claims again.
    assert await node_status.claim_for_cluster(session, cluster_id="c1", node_ids=["n1"], now=NOW) == []
    await session.commit()
    assert (await node(session, "n2")).cluster_id == ""

    await node_status.bind_control_plane(session, cluster_id="c1", node_ids=["n1"], now=NOW)
    await session.commit()
    refusal = await node_status.begin_manage(session, node_id="n1", cluster_id="c1", action="remove", now=NOW)
    assert "control-plane node" in refusal

    await node_status.release_cluster(session, cluster_id="c1", now=NOW)
    await session.commit()
    n1 = await node(session, "n1")
    assert (n1.cluster_id, n1.is_control_plane, n1.phase) == ("", False, rules.READY)


async def test_a_prepare_pass_trusts_a_key_once_and_sets_the_next_step_while_live(
    session: AsyncSession,
) -> None:
    facts = {"cpu_cores": 8}
    assert await node_status.record_prepared(
        session,
        node_id="n1",
        fingerprint="ssh-ed25519 SHA256:first",
        facts=facts,
        problem="",
        boot_time=None,
        now=NOW,
    )
    await session.commit()
    first = await node(session, "n1")
    assert (first.host_key_fingerprint, first.facts, first.step) == (
        "ssh-ed25519 SHA256:first",
        facts,
        "addons",
    )

    assert await node_status.record_prepared(  # a later pass never replaces the trusted key
        session,
        node_id="n1",
        fingerprint="ssh-ed25519 SHA256:other",
        facts={},
        problem="gpu",
        boot_time=None,
        now=NOW,
    )
    await session.commit()
    again = await node(session, "n1")
    assert (again.host_key_fingerprint, again.facts_problem) == ("ssh-ed25519 SHA256:first", "gpu")

    await session.execute(update(Node).where(Node.id == "n2").values(deleting_at=NOW, step=""))
    assert await node_status.record_prepared(
        session, node_id="n2", fingerprint="k", facts={}, problem="", boot_time=None, now=NOW
    )
    await session.commit()
    assert (await node(session, "n2")).step == ""  # a node being deleted gets no next step
    assert not await node_status.record_prepared(
        session, node_id="gone", fingerprint="k", facts={}, problem="", boot_time=None, now=NOW
    )


async def test_addon_progress_is_kept_only_for_the_template_it_adopted(session: AsyncSession) -> None:
    assert not await node_status.record_addons(  # another template's progress: not recorded
        session, node_id="n1", template_id="t2", done=["a"], installed=False, now=NOW
    )
    assert await node_status.record_addons(
        session, node_id="n1", template_id="t2", done=["a"], installed=False, now=NOW, adopt=True
    )
    assert await node_status.record_addons(
        session, node_id="n1", template_id="t2", done=["a", "b"], installed=True, now=NOW
    )
    await session.commit()
    found = await node(session, "n1")
    assert (found.addons_template_id, found.addons_done, found.addons_installed) == ("t2", ["a", "b"], True)
