"""The workspace scheduler end to end: queue rows in the database, `workspace-scheduler/<id>` on
the real Temporal dev server, cycles deciding with `domain.scheduler.decide`, and what
`GET /workspaces/{id}/queue` shows. Runs on SQLite and PostgreSQL.

Nodes are database rows bound to the workspace (no machine behind them), so the node probe
schedule is paused while these tests run.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import os
import random
import signal as signal_module
import uuid
from pathlib import Path
from typing import Any

import httpx
from cryptography.fernet import Fernet
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import ActivityEnvironment

from activities.scheduler import SchedulerActivities
from api.workflow_calls import tell_scheduler
from db import node_status, queue_status
from db.migrate import upgrade
from db.node_flavors import NodeFlavor
from db.nodes import Node
from db.scheduling import QueueEntry
from db.session import SessionFactory, create_engine, session_factory
from db.workspaces import Workspace
from domain.node_flavors import CpuSpec, FlavorSpec, GpuSpec
from domain.nodes import UnavailableReason
from domain.scheduling import ADMITTED, QUEUED, QueueRequest, SchedulerInput, scheduler_workflow_id
from domain.timefmt import utcnow
from tests.conftest import Platform
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.polling import poll_json, until
from tests.fixtures.worker_processes import WorkerProcesses
from workflows.common import RESOURCE_TYPE, WORKSPACE
from workflows.workspace_scheduler import WorkspaceSchedulerWorkflow, search_attributes

GPU = "amd.com/gpu"
GIB = 1024**3


async def make_workspace(
    sessions: SessionFactory, *, nodes: int, policy: str = "fifo", preempt: bool = False
) -> tuple[str, list[str]]:
    """A workspace with `nodes` Ready nodes of an 8-GPU flavor bound to it."""
    suffix = uuid.uuid4().hex[:6]
    workspace_id, flavor_id, now = f"c1-ws-{suffix}", f"gpu8-{suffix}", utcnow()
    spec = FlavorSpec(
        cpu=CpuSpec(quantity="64"), memory="512Gi", gpu=GpuSpec(resource_name=GPU, quantity="8")
    )
    node_ids = [f"n{i}-{suffix}" for i in range(nodes)]
    async with sessions() as session, session.begin():
        session.add(
            NodeFlavor(
                id=flavor_id, display_name=flavor_id, spec=spec.stored(), created_at=now, updated_at=now
            )
        )
        session.add(
            Workspace(
                id=workspace_id,
                name=f"ws-{suffix}",
                cluster_id="c1",
                flavor_id=flavor_id,
                replica=nodes,
                queue_policy=policy,
                enable_preempt=preempt,
                phase="Running",
                created_at=now,
                updated_at=now,
            )
        )
        for index, node_id in enumerate(node_ids):
            session.add(
                Node(
                    id=node_id,
                    node_name=node_id,
                    private_ip=f"192.0.2.{index + 1}-{suffix}",
                    flavor_id=flavor_id,
                    template_id="t",
                    ssh_secret_id="s",
                    cluster_id="c1",
                    workspace_id=workspace_id,
                    phase="Ready",
                    onboarded=True,
                    addons_template_id="t",
                    addons_installed=True,
                    created_at=now,
                    updated_at=now,
                )
            )
    return workspace_id, node_ids


async def submit(
    platform: Platform,
    workspace_id: str,
    workload_id: str,
    *,
    gpus: int,
    replicas: int = 1,
    priority: int = 0,
) -> None:
    """Queue a workload as its lifecycle workflow will (enqueue, then tell the scheduler)."""
    request = QueueRequest(
        workload_id=workload_id,
        workspace_id=workspace_id,
        priority=priority,
        request={"cpu": 4, "memory": 32 * GIB, GPU: gpus},
        replicas=replicas,
    )
    async with platform.state.sessions() as session, session.begin():
        assert await queue_status.enqueue(session, request=request, now=utcnow())
    await tell(platform, workspace_id, f"submit {workload_id}")


async def tell(platform: Platform, workspace_id: str, reason: str) -> None:
    await tell_scheduler(
        platform.state.temporal,
        workspace_id=workspace_id,
        reason=reason,
        task_queue=platform.settings.queues.control,
        period_seconds=3600,
    )


async def entries(platform: Platform, workspace_id: str) -> dict[str, QueueEntry]:
    async with platform.state.sessions() as session:
        rows = await session.execute(select(QueueEntry).where(QueueEntry.workspace_id == workspace_id))
        return {e.workload_id: e for e in rows.scalars()}


async def queue(
    api: httpx.AsyncClient, admin: dict[str, str], workspace_id: str, done: Any
) -> dict[str, Any]:
    return await poll_json(api, admin, f"/api/v1/workspaces/{workspace_id}/queue", done, within=30)


def settled(admitted: int, pending: int) -> Any:
    """A queue answer where the last cycle saw every entry (each pending one has a position)."""

    def done(body: dict[str, Any]) -> bool:
        return (
            body["admittedCount"] == admitted
            and body["totalCount"] == pending
            and all(i["schedulerOrder"] > 0 for i in body["items"])
        )

    return done


def reasons(body: dict[str, Any]) -> dict[str, tuple[int, str]]:
    return {i["workloadId"]: (i["schedulerOrder"], i["reason"]) for i in body["items"]}


async def test_fifo_positions_reasons_and_free_resources_follow_the_cluster(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, quiet_probe: None
) -> None:
    workspace_id, (a, b) = await make_workspace(platform.state.sessions, nodes=2)
    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_unavailable(
            session, node_id=b, reason=UnavailableReason.FAULT, ref="f1", message="gpu fault", now=utcnow()
        )
    await submit(platform, workspace_id, "w1", gpus=8)
    await submit(platform, workspace_id, "w2", gpus=8, replicas=2)
    await submit(platform, workspace_id, "w3", gpus=4)

    body = await queue(api, admin, workspace_id, settled(1, 2))
    stored = await entries(platform, workspace_id)
    assert stored["w1"].state == ADMITTED and [p["node_id"] for p in stored["w1"].placement] == [a]
    pending = reasons(body)
    assert pending["w2"][0] == 1 and GPU in pending["w2"][1] and "unavailable" in pending["w2"][1]
    assert pending["w3"][0] == 2
    assert (
        pending["w3"][1].startswith("Blocked by 1 earlier workload in fifo order")
        and "w2" in pending["w3"][1]
    )
    assert body["freeResources"][GPU] == 0  # a is full, b is held by the fault
    assert body["queuePolicy"] == "fifo"

    # The fault clears: b's 8 GPUs are free, w2 needs 16, and says who holds the rest.
    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_available(session, node_id=b, reason=UnavailableReason.FAULT, ref="f1")
    await tell(platform, workspace_id, "node recovered")
    expected = f"Insufficient {GPU}: need 16, free 8 (8 in use by 1 workload)"
    body = await queue(api, admin, workspace_id, lambda b: reasons(b).get("w2", (0, ""))[1] == expected)
    assert body["freeResources"][GPU] == 8
    detail = (await api.get(f"/api/v1/workspaces/{workspace_id}", headers=admin)).json()
    assert (detail["usedQuota"][GPU], detail["availQuota"][GPU]) == (8, 8)
    assert reasons(body)["w3"][0] == 2  # fifo: w3 would fit on b but must wait behind w2

    # w1 ends: w2 takes both nodes, w3 is next and waits for capacity.
    async with platform.state.sessions() as session, session.begin():
        assert await queue_status.withdraw(session, workload_id="w1")
    await tell(platform, workspace_id, "w1 finished")
    body = await queue(api, admin, workspace_id, settled(1, 1))
    stored = await entries(platform, workspace_id)
    assert stored["w2"].state == ADMITTED
    assert sorted(p["node_id"] for p in stored["w2"].placement) == [a, b]
    assert reasons(body)["w3"][0] == 1 and GPU in reasons(body)["w3"][1]
    assert body["freeResources"][GPU] == 0
    # The quotas and the node views follow the admission at once.
    detail = (await api.get(f"/api/v1/workspaces/{workspace_id}", headers=admin)).json()
    assert detail["usedQuota"][GPU] == 16 and detail["availQuota"][GPU] == 0
    assert detail["usedNodeCount"] == 2
    node = (await api.get(f"/api/v1/nodes/{a}", headers=admin)).json()
    assert node["availResources"][GPU] == 0
    assert node["workloads"] == [{"id": "w2", "userId": "", "workspaceId": workspace_id}]
    # every admission was told (the workload workflows do not exist yet: the notice is dropped)
    await until(lambda: _all_notified(platform, workspace_id))


async def _all_notified(platform: Platform, workspace_id: str) -> bool:
    return all(e.notified for e in (await entries(platform, workspace_id)).values())


async def test_balance_lets_smaller_work_pass_but_never_past_a_higher_priority(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, quiet_probe: None
) -> None:
    workspace_id, _ = await make_workspace(platform.state.sessions, nodes=1, policy="balance")
    await submit(platform, workspace_id, "big", gpus=8, replicas=2)
    await submit(platform, workspace_id, "small", gpus=4)
    await queue(api, admin, workspace_id, lambda b: b["admittedCount"] == 1)
    assert (await entries(platform, workspace_id))["small"].state == ADMITTED  # passed "big"

    await submit(platform, workspace_id, "urgent", gpus=8, priority=1)
    await submit(platform, workspace_id, "later", gpus=4)  # would fit the 4 free GPUs
    body = await queue(api, admin, workspace_id, settled(1, 3))
    stored = await entries(platform, workspace_id)
    assert stored["later"].state == QUEUED, "a lower priority passed a higher one"
    order = reasons(body)
    assert order["urgent"][0] == 1 and order["later"][0] > order["urgent"][0]
    assert "urgent" in order["later"][1] or "priority" in order["later"][1]


async def test_preemption_evicts_the_lower_priority_workload_back_to_the_queue(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, quiet_probe: None
) -> None:
    workspace_id, (a,) = await make_workspace(platform.state.sessions, nodes=1, preempt=True)
    await submit(platform, workspace_id, "low", gpus=8)
    await queue(api, admin, workspace_id, lambda b: b["admittedCount"] == 1)
    await submit(platform, workspace_id, "high", gpus=8, priority=2)

    async def swapped() -> bool:
        stored = await entries(platform, workspace_id)
        return stored["high"].state == ADMITTED and stored["low"].state == QUEUED

    await until(swapped)
    stored = await entries(platform, workspace_id)
    assert [p["node_id"] for p in stored["high"].placement] == [a]
    assert stored["low"].placement == [] and stored["low"].admitted_at is None
    body = await queue(api, admin, workspace_id, lambda b: reasons(b).get("low", (0, ""))[0] == 1)
    assert body["admittedCount"] == 1 and GPU in reasons(body)["low"][1]
    await until(lambda: _all_notified(platform, workspace_id))
    handle = platform.state.temporal.get_workflow_handle(scheduler_workflow_id(workspace_id))
    await replay_and_keep(handle, [WorkspaceSchedulerWorkflow], "workspace-scheduler-preemption")


async def test_a_retried_cycle_admits_nothing_twice_and_still_tells(
    api: httpx.AsyncClient, platform: Platform, quiet_probe: None
) -> None:
    """A worker that dies after the cycle committed: the retry re-decides over what was committed
    (the admitted workload holds its GPUs), admits nothing new, and returns the notice again."""
    workspace_id, _ = await make_workspace(platform.state.sessions, nodes=1)
    async with platform.state.sessions() as session, session.begin():
        for name in ("first", "second"):
            request = QueueRequest(
                workload_id=f"{name}-{workspace_id}", workspace_id=workspace_id, request={GPU: 8}
            )
            await queue_status.enqueue(session, request=request, now=utcnow())
    activities = SchedulerActivities(platform.state.sessions, platform.settings.reserve_percents)
    env = ActivityEnvironment()
    once = await env.run(activities.cycle, workspace_id)
    again = await env.run(activities.cycle, workspace_id)
    assert (once.admitted, again.admitted) == (1, 0)
    assert [n.workload_id for n in once.notices] == [n.workload_id for n in again.notices]
    assert [n.workload_id for n in once.notices] == [f"first-{workspace_id}"]
    assert once.notices[0].admitted and once.notices[0].placements[0].gpus == list(range(8))
    stored = await entries(platform, workspace_id)
    assert [e.state for e in stored.values()].count(ADMITTED) == 1
    await env.run(activities.mark_notified, again.notices)
    assert (await env.run(activities.cycle, workspace_id)).notices == []
    # An entry queued twice is one entry (the enqueue activity retried).
    async with platform.state.sessions() as session, session.begin():
        request = QueueRequest(workload_id=f"first-{workspace_id}", workspace_id=workspace_id, request={})
        assert not await queue_status.enqueue(session, request=request, now=utcnow())


async def test_the_scheduler_workflow_is_findable_and_one_per_workspace(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, quiet_probe: None
) -> None:
    workspace_id, _ = await make_workspace(platform.state.sessions, nodes=1)
    for reason in ("a", "b", "c"):
        await tell(platform, workspace_id, reason)  # signal-with-start: one workflow, three signals
    handle = platform.state.temporal.get_workflow_handle(scheduler_workflow_id(workspace_id))
    described = await handle.describe()
    assert described.typed_search_attributes.get(RESOURCE_TYPE) == "workspace-scheduler"
    assert described.typed_search_attributes.get(WORKSPACE) == workspace_id
    query = f'PrimusResourceType="workspace-scheduler" AND PrimusWorkspace="{workspace_id}"'

    async def listed() -> bool:
        return [w.id async for w in platform.state.temporal.list_workflows(query)] == [handle.id]

    await until(listed)
    # Deleting the workspace ends its scheduler at the next cycle.
    async with platform.state.sessions() as session, session.begin():
        await session.delete(await session.get(Workspace, workspace_id))
    await tell(platform, workspace_id, "workspace deleted")
    await handle.result()
    await replay_and_keep(handle, [WorkspaceSchedulerWorkflow], "workspace-scheduler-until-deleted")
    assert (await api.get(f"/api/v1/workspaces/{workspace_id}/queue", headers=admin)).status_code == 404


async def test_killing_the_worker_mid_cycles_loses_no_admission_and_admits_nothing_twice(
    temporal_client: Client, tmp_path: Path
) -> None:
    """A worker process killed (SIGKILL) again and again while the scheduler cycles through a
    burst of workloads finishing and starting: after each restart the queue settles with every
    node's GPUs held at most once, every free slot filled in queue order, and every admission told."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    upgrade(url)
    run = uuid.uuid4().hex[:8]
    control = f"control-{run}"
    env = {
        **os.environ,
        "PRIMUS_DATABASE_URL": url,
        "PRIMUS_TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "PRIMUS_SECRET_KEY": Fernet.generate_key().decode(),
        "PRIMUS_QUEUE_CONTROL": control,
        "PRIMUS_QUEUE_SSH": f"ssh-{run}",
        "PRIMUS_QUEUE_IMAGES": f"images-{run}",
        "PRIMUS_NODE_PROBE_INTERVAL_SECONDS": "86400",
    }
    engine = create_engine(url)
    sessions = session_factory(engine)
    workers = WorkerProcesses(env, tmp_path)
    try:
        workspace_id, node_ids = await make_workspace(sessions, nodes=4)
        names = [f"job-{i:02d}" for i in range(24)]
        async with sessions() as session, session.begin():
            for name in names:
                request = QueueRequest(workload_id=name, workspace_id=workspace_id, request={GPU: 4})
                await queue_status.enqueue(session, request=request, now=utcnow())

        async def signal(reason: str) -> None:
            await tell_scheduler(
                temporal_client,
                workspace_id=workspace_id,
                reason=reason,
                task_queue=control,
                period_seconds=1,
            )

        finished: list[str] = []
        for round_ in range(4):
            worker = workers.start()
            log = tmp_path / f"worker-{round_}.log"
            await until(functools.partial(_ready, log))
            await signal(f"round {round_}")
            await asyncio.sleep(random.uniform(0.0, 0.6))  # somewhere in the cycles (one a second)
            worker.send_signal(signal_module.SIGKILL)
            worker.wait()
            # Two admitted workloads finish while no worker runs.
            async with sessions() as session, session.begin():
                admitted = [e for e in (await entries_in(session, workspace_id)) if e.state == ADMITTED]
                for entry in admitted[:2]:
                    finished.append(entry.workload_id)
                    await queue_status.withdraw(session, workload_id=entry.workload_id)
        workers.start()
        await signal("final")

        async def settled_queue() -> bool:
            async with sessions() as session:
                rows = await entries_in(session, workspace_id)
            admitted = [e for e in rows if e.state == ADMITTED]
            return len(admitted) == 8 and all(e.notified for e in rows)

        await until(settled_queue, within=60)
        async with sessions() as session:
            rows = await entries_in(session, workspace_id)
        held: dict[tuple[str, int], str] = {}
        for entry in (e for e in rows if e.state == ADMITTED):
            for pod in entry.placement:
                for gpu in pod["gpus"]:
                    assert (pod["node_id"], gpu) not in held, f"GPU {gpu} of {pod['node_id']} held twice"
                    held[(pod["node_id"], gpu)] = entry.workload_id
        assert len(held) == 32 and {n for n, _ in held} == set(node_ids)
        # fifo: the admitted ones are the earliest of those left
        left = [n for n in names if n not in finished]
        assert sorted(e.workload_id for e in rows if e.state == ADMITTED) == left[:8]
        assert [e.workload_id for e in sorted(rows, key=lambda e: e.position) if e.state == QUEUED] == left[
            8:
        ]
    finally:
        workers.close()
        with contextlib.suppress(Exception):
            await temporal_client.get_workflow_handle(scheduler_workflow_id(workspace_id)).terminate()
        await engine.dispose()


async def entries_in(session: AsyncSession, workspace_id: str) -> list[QueueEntry]:
    rows = await session.execute(select(QueueEntry).where(QueueEntry.workspace_id == workspace_id))
    return list(rows.scalars())


async def _ready(log: Path) -> bool:
    """The worker process printed that it polls."""
    text = await asyncio.to_thread(lambda: log.read_bytes() if log.exists() else b"")
    return b"worker ready" in text


async def test_the_scheduler_continues_as_new_and_keeps_scheduling(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, quiet_probe: None
) -> None:
    workspace_id, _ = await make_workspace(platform.state.sessions, nodes=1)
    first = await platform.state.temporal.start_workflow(
        WorkspaceSchedulerWorkflow.run,
        SchedulerInput(workspace_id=workspace_id, period_seconds=3600, cycles_per_run=2),
        id=scheduler_workflow_id(workspace_id),
        task_queue=platform.settings.queues.control,
        search_attributes=search_attributes(workspace_id),
    )
    for index in range(4):  # one cycle each
        await submit(platform, workspace_id, f"part-{index}", gpus=2)
        await queue(api, admin, workspace_id, lambda b, n=index + 1: b["admittedCount"] == n)
    handle = platform.state.temporal.get_workflow_handle(first.id)

    async def continued() -> bool:  # a new run took over, with the same id
        return (await handle.describe()).run_id != first.result_run_id

    await until(continued)
    assert (await handle.describe()).status == WorkflowExecutionStatus.RUNNING
    await submit(platform, workspace_id, "after", gpus=0)
    await queue(api, admin, workspace_id, lambda b: b["admittedCount"] == 5)
