"""What the scheduler decides, seen through the workload API on real sshd hosts: positions and
exact pending reasons (fifo, balance, fragmentation, an unavailable node), preemption by a
priority-2 workload, and a Deployment patched to 2 replicas."""

from __future__ import annotations

from typing import Any

import httpx

from db import node_status
from db.workspaces import bound_nodes
from domain.nodes import UnavailableReason
from domain.timefmt import utcnow
from tests.conftest import Platform
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.polling import poll_json
from tests.fixtures.sshd import farm_fixtures
from tests.fixtures.workloads import (
    WL,
    HostCluster,
    add_workspace,
    cluster_fixture,
    submit,
    wait_phase,
    workload_body,
)
from workflows.workload import WorkloadWorkflow

SSH_PORT = 16472
GPU = "amd.com/gpu"


farm, hosts = farm_fixtures(SSH_PORT, 2)
cluster = cluster_fixture()


def gpu_job(workspace_id: str, script: str, gpus: int, replicas: int = 1, **changes: Any) -> dict[str, Any]:
    return workload_body(workspace_id, script, resource={"gpu": str(gpus), "replica": replicas}, **changes)


async def pending(
    api: httpx.AsyncClient, admin: dict[str, str], workload_id: str, text: str
) -> dict[str, Any]:
    """The workload once it is pending with a message containing `text`."""
    return await poll_json(api, admin, f"{WL}/{workload_id}", lambda b: text in b["message"], within=30)


async def test_fifo_reasons_positions_and_queue_endpoint(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "fifo", replica=1)
    big = await submit(api, admin, gpu_job(workspace_id, "sleep 30", 8))
    await wait_phase(api, admin, big, "Running")
    second = await submit(api, admin, gpu_job(workspace_id, "true", 8))
    third = await submit(api, admin, gpu_job(workspace_id, "true", 1))
    detail = await pending(api, admin, second, f"Insufficient {GPU}")
    assert detail["message"] == f"Insufficient {GPU}: need 8, free 0 (8 in use by 1 workload)"
    assert detail["schedulerOrder"] == 1 and detail["queuePosition"] == 1
    blocked = await pending(api, admin, third, "Blocked by")
    assert blocked["message"].startswith(f"Blocked by 1 earlier workload in fifo order: {second}")
    assert blocked["schedulerOrder"] == 2
    listed = (
        await api.get(WL, params={"workspaceId": workspace_id, "phase": "Pending"}, headers=admin)
    ).json()
    assert {i["workloadId"]: i["schedulerOrder"] for i in listed["items"]} == {second: 1, third: 2}
    queue = (await api.get(f"/api/v1/workspaces/{workspace_id}/queue", headers=admin)).json()
    assert [i["workloadId"] for i in queue["items"]] == [second, third]
    await api.post(f"{WL}/stop", json={"workloadIds": [big, second, third]}, headers=admin)
    for workload_id in (big, second, third):
        assert (await api.get(f"{WL}/{workload_id}", headers=admin)).json()["phase"] == "Stopped"


async def test_balance_lets_a_small_job_pass_and_fragmentation_is_named(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "balance", queuePolicy="balance")
    spread = await submit(api, admin, gpu_job(workspace_id, "sleep 30", 4, replicas=2))
    await wait_phase(api, admin, spread, "Running")
    whole = await submit(api, admin, gpu_job(workspace_id, "true", 8))
    detail = await pending(api, admin, whole, "fragmentation")
    assert detail["message"] == "Insufficient gpu due to node fragmentation: needs 1 node with 8 free, 0 have"
    small = await submit(api, admin, gpu_job(workspace_id, "echo small", 2))
    assert (await wait_phase(api, admin, small, "Succeeded", "Failed"))["phase"] == "Succeeded"
    assert (await api.get(f"{WL}/{whole}", headers=admin)).json()["phase"] == "Pending"
    await api.post(f"{WL}/stop", json={"workloadIds": [spread, whole]}, headers=admin)


async def test_an_unavailable_node_is_named_and_its_recovery_admits(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "faulty", replica=1)
    async with platform.state.sessions() as session:
        node_id = (await bound_nodes(session, workspace_id=workspace_id))[0].id
    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_unavailable(
            session,
            node_id=node_id,
            reason=UnavailableReason.FAULT,
            ref="f1",
            message="gpu fault",
            now=utcnow(),
        )
    waiting = await submit(api, admin, gpu_job(workspace_id, "echo ok", 1))
    detail = await pending(api, admin, waiting, "unavailable")
    assert detail["message"] == "All nodes are unavailable (1 node: 1 not available)"
    async with platform.state.sessions() as session, session.begin():
        await node_status.mark_available(session, node_id=node_id, reason=UnavailableReason.FAULT, ref="f1")
    # nobody signals the scheduler here: its periodic cycle must notice the recovery
    assert (await wait_phase(api, admin, waiting, "Succeeded", "Failed", within=30))["phase"] == "Succeeded"


async def test_priority_2_preempts_and_the_victim_requeues_and_succeeds(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    cluster: HostCluster,
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "preempt", enablePreempt=True, isDefault=True)
    victim = await submit(api, admin, gpu_job(workspace_id, "sleep 3; echo victim done", 8, replicas=2))
    await wait_phase(api, admin, victim, "Running")
    refused = await api.post(WL, json=gpu_job(workspace_id, "true", 8, priority=2), headers=alice)
    assert refused.status_code == 403 and "priority 2" in refused.json()["errorMessage"]
    urgent = await submit(api, admin, gpu_job(workspace_id, "sleep 4; echo urgent", 8, priority=2))
    # the victim is queued again, first in line, and says who holds what it needs
    requeued = await poll_json(
        api,
        admin,
        f"{WL}/{victim}",
        lambda b: b["phase"] == "Pending" and b["schedulerOrder"] == 1,
        within=30,
    )
    assert requeued["message"].startswith(f"Insufficient {GPU}") or "preempted" in requeued["message"]
    assert (await wait_phase(api, admin, urgent, "Succeeded", "Failed", within=60))["phase"] == "Succeeded"
    detail = await wait_phase(api, admin, victim, "Succeeded", "Failed", within=60)
    assert detail["phase"] == "Succeeded", detail
    assert detail["maxRetry"] == 0 and detail["dispatchCount"] == 2
    failovers = [c for c in detail["conditions"] if c["type"] == "AdminFailover"]
    assert len(failovers) == 1 and "preempted" in failovers[0]["message"]
    handle = platform.state.temporal.get_workflow_handle(f"workload/{victim}")
    await replay_and_keep(handle, [WorkloadWorkflow], "workload-preempted-then-succeeded")


async def test_deployment_patched_to_two_replicas_rolls_out(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "serve")
    body = workload_body(workspace_id, "sleep 300", groupVersionKind={"kind": "Deployment", "version": "v1"})
    workload_id = await submit(api, admin, body)
    running = await wait_phase(api, admin, workload_id, "Running")
    assert len(running["pods"]) == 1
    resp = await api.patch(f"{WL}/{workload_id}", json={"replica": 2}, headers=admin)
    assert resp.status_code == 200, resp.text
    rolled = await poll_json(
        api,
        admin,
        f"{WL}/{workload_id}",
        lambda b: b["phase"] == "Running" and len(b["pods"]) == 2 and b["dispatchCount"] == 2,
        within=60,
    )
    assert rolled["resource"]["replica"] == 2
    assert any(c["type"] == "K8sUpdating" for c in rolled["conditions"])
    assert all(p["phase"] == "Running" for p in rolled["pods"])
    assert (await api.delete(f"{WL}/{workload_id}", headers=admin)).status_code == 200
    assert (await api.get(f"{WL}/{workload_id}", headers=admin)).status_code == 404
