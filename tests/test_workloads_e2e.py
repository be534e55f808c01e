"""Workloads end to end on a `hosts` cluster: real processes on sshd test hosts through the
HostDriver, the workspace scheduler and the `workload/<id>` workflow."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import httpx
from temporalio.api.sdk.v1 import WorkflowMetadata
from temporalio.client import Client

from domain.timefmt import parse_time
from tests.conftest import Platform
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.polling import poll_json, until
from tests.fixtures.sshd import SSHHost, farm_fixtures
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

SSH_PORT = 16470


farm, hosts = farm_fixtures(SSH_PORT, 2)
cluster = cluster_fixture()


PRINT_RANKS = 'echo "rank=$RANK world=$WORLD_SIZE master=$MASTER_ADDR gpus=$CUDA_VISIBLE_DEVICES"'


async def test_pytorchjob_on_two_nodes_succeeds_with_both_logs(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster, hosts: list[SSHHost]
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "train")
    body = workload_body(workspace_id, PRINT_RANKS, resource={"replica": 2, "gpu": "4"})
    workload_id = await submit(api, admin, body)
    detail = await wait_phase(api, admin, workload_id, "Succeeded", "Failed")
    assert detail["phase"] == "Succeeded", detail
    assert detail["dispatchCount"] == 1
    pods = {p["podId"]: p for p in detail["pods"]}
    assert set(pods) == {f"{workload_id}-master-0", f"{workload_id}-worker-0"}
    assert {p["nodeName"] for p in pods.values()} == set(cluster.node_ids)
    assert [c["type"] for c in detail["conditions"]][:2] == ["AdminScheduled", "AdminDispatched"]
    assert detail["conditions"][-1]["type"] == "K8sSucceeded"
    assert detail["conditions"][-1]["reason"] == "run_1_times"
    master_ip = pods[f"{workload_id}-master-0"]["hostIP"]
    for rank, pod in enumerate(sorted(pods)):
        logs = await api.get(f"{WL}/{workload_id}/pods/{pod}/logs", headers=admin)
        assert logs.status_code == 200, logs.text
        assert logs.json()["logs"][0].startswith(f"rank={rank} world=2 master={master_ip} gpus=")
    assert detail["nodes"] == [
        sorted(cluster.node_ids, key=lambda n: pods[f"{workload_id}-master-0"]["nodeName"] != n)
    ]


async def test_exit_1_with_max_retry_2_runs_three_times_then_fails_with_details(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "retry")
    body = workload_body(workspace_id, 'echo "boom on run $DISPATCH_COUNT"; exit 1', maxRetry=2)
    workload_id = await submit(api, admin, body)
    detail = await wait_phase(api, admin, workload_id, "Succeeded", "Failed", within=90)
    assert detail["phase"] == "Failed"
    assert detail["dispatchCount"] == 3
    failovers = [c for c in detail["conditions"] if c["type"] == "AdminFailover"]
    assert [c["reason"] for c in failovers] == ["run_1_times", "run_2_times"]
    assert "failed after 3 runs" in detail["message"]
    assert "main=1" in detail["message"] or "pytorch=1" in detail["message"], detail["message"]
    assert "boom on run 3" in detail["message"]
    assert detail["endTime"] and detail["secondsUntilTimeout"] == 0
    handle = platform.state.temporal.get_workflow_handle(f"workload/{workload_id}")
    await replay_and_keep(handle, [WorkloadWorkflow], "workload-failover-then-failed")


async def test_timeout_stops_the_workload(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "timeout")
    workload_id = await submit(api, admin, workload_body(workspace_id, "sleep 300", timeout=2))
    running = await wait_phase(api, admin, workload_id, "Running")
    assert 0 <= running["secondsUntilTimeout"] <= 2
    detail = await wait_phase(api, admin, workload_id, "Stopped", "Failed", "Succeeded", within=30)
    assert detail["phase"] == "Stopped"
    assert detail["message"] == "the workload timed out after 2 s"
    assert detail["conditions"][-1]["type"] == "AdminStopped"
    await _no_pods_left(api, admin, workload_id)


async def _no_pods_left(api: httpx.AsyncClient, admin: dict[str, str], workload_id: str) -> None:
    async def gone() -> bool:
        detail = (await api.get(f"{WL}/{workload_id}", headers=admin)).json()
        logs = await api.get(f"{WL}/{workload_id}/pods/{detail['pods'][0]['podId']}/logs", headers=admin)
        return logs.status_code == 404

    await until(gone, within=30)


async def _listed(client: Client, query: str) -> list[str]:
    """Workflow ids the visibility query finds (visibility trails a moment behind)."""
    ids: list[str] = []

    async def found() -> bool:
        ids[:] = [w.id async for w in client.list_workflows(query)]
        return bool(ids)

    await until(found, within=15)
    return ids


async def test_stop_answers_when_stopped_and_removes_the_pods(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "stop")
    workload_id = await submit(api, admin, workload_body(workspace_id, "sleep 300"))
    await wait_phase(api, admin, workload_id, "Running")
    # the Temporal UI finds it by id, workspace and phase, and shows where it waits
    client = platform.state.temporal
    for query in (
        f'PrimusResourceId="{workload_id}"',
        f'PrimusWorkspace="{workspace_id}" AND PrimusPhase="Running" AND PrimusKind="PyTorchJob"',
    ):
        found = await _listed(client, query)
        assert found == [f"workload/{workload_id}"], query
    handle = client.get_workflow_handle(f"workload/{workload_id}")
    metadata = await handle.query("__temporal_workflow_metadata", result_type=WorkflowMetadata)
    assert "watching the pods" in metadata.current_details  # what the UI shows as current details
    assert "watching the pods" in (await api.get(f"{WL}/{workload_id}", headers=admin)).json()["currentStep"]
    resp = await api.post(f"{WL}/{workload_id}/stop", headers=admin)
    assert resp.status_code == 200, resp.text
    detail = (await api.get(f"{WL}/{workload_id}", headers=admin)).json()
    assert detail["phase"] == "Stopped"
    assert detail["message"] == "the workload is stopped by root"
    await _no_pods_left(api, admin, workload_id)
    # the queue gave its capacity back
    queue = (await api.get(f"/api/v1/workspaces/{workspace_id}/queue", headers=admin)).json()
    assert queue["admittedCount"] == 0
    resp = await api.post(f"/api/custom/workloads/{workload_id}/stop", headers=admin)
    assert resp.status_code == 200  # stopping an ended workload changes nothing
    resp = await api.delete(f"{WL}/{workload_id}", headers=admin)
    assert resp.status_code == 200
    assert (await api.get(f"{WL}/{workload_id}", headers=admin)).status_code == 404
    listed = (await api.get(WL, params={"workspaceId": workspace_id}, headers=admin)).json()
    assert listed["totalCount"] == 0


async def test_dependencies_wait_and_a_failed_one_fails_the_dependent(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "deps")
    first = await submit(api, admin, workload_body(workspace_id, "sleep 2; echo first"))
    second = await submit(api, admin, workload_body(workspace_id, "echo second", dependencies=[first]))
    waiting = await poll_json(
        api, admin, f"{WL}/{second}", lambda b: "Waiting for dependency" in b["message"]
    )
    assert waiting["phase"] == "Pending" and first in waiting["message"]
    assert (await wait_phase(api, admin, second, "Succeeded", "Failed"))["phase"] == "Succeeded"
    first_detail = (await api.get(f"{WL}/{first}", headers=admin)).json()
    assert first_detail["endTime"] <= (await api.get(f"{WL}/{second}", headers=admin)).json()["startTime"]

    failing = await submit(api, admin, workload_body(workspace_id, "sleep 1; exit 3"))
    dependent = await submit(api, admin, workload_body(workspace_id, "echo never", dependencies=[failing]))
    detail = await wait_phase(api, admin, dependent, "Failed", "Succeeded", within=60)
    assert detail["phase"] == "Failed"
    assert detail["message"] == f"dependency workload {failing} failed"
    assert detail["dispatchCount"] == 0


async def test_cron_start_waits_without_blocking_the_queue(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "cron", replica=1)
    start = datetime.now(UTC) + timedelta(seconds=4)
    later = await submit(
        api,
        admin,
        workload_body(
            workspace_id, "echo later", cronJobs=[{"schedule": start.strftime("%Y-%m-%dT%H:%M:%S.000Z")}]
        ),
    )
    now = await submit(api, admin, workload_body(workspace_id, "echo now"))
    waiting = await poll_json(api, admin, f"{WL}/{later}", lambda b: b["message"] != "", within=10)
    assert waiting["phase"] == "Pending" and waiting["message"].startswith("Waiting for start time")
    assert (await wait_phase(api, admin, now, "Succeeded", "Failed"))["phase"] == "Succeeded"
    assert (await api.get(f"{WL}/{later}", headers=admin)).json()["dispatchCount"] == 0
    detail = await wait_phase(api, admin, later, "Succeeded", "Failed", within=30)
    assert detail["phase"] == "Succeeded"
    assert parse_time(detail["startTime"]) >= start.replace(microsecond=0)


async def test_a_silent_supervised_run_is_a_hang_and_a_node_fault_fails_over(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "supervise")
    platform.settings.workload_hang_seconds = 3
    try:
        silent = await submit(
            api, admin, workload_body(workspace_id, "echo started; sleep 120", isSupervised=True)
        )
    finally:
        platform.settings.workload_hang_seconds = 1200
    detail = await wait_phase(api, admin, silent, "Failed", "Succeeded", within=60)
    assert detail["phase"] == "Failed"
    assert "no log output for" in detail["message"] and "(limit 3 s)" in detail["message"]

    faulty = await submit(api, admin, workload_body(workspace_id, "sleep 120", maxRetry=1))
    await wait_phase(api, admin, faulty, "Running")
    # while it runs, its cluster cannot be deleted
    resp = await api.delete(f"/api/v1/clusters/{cluster.cluster_id}", headers=admin)
    assert resp.status_code == 409 and faulty in resp.json()["errorMessage"], resp.text
    handle = platform.state.temporal.get_workflow_handle(f"workload/{faulty}")
    await handle.signal("failover", "the node n0 has fault primus-safe.001, detail: gpu lost")
    again = await poll_json(api, admin, f"{WL}/{faulty}", lambda b: b["dispatchCount"] == 2, within=60)
    failover = [c for c in again["conditions"] if c["type"] == "AdminFailover"]
    assert failover and "gpu lost" in failover[0]["message"]
    await api.post(f"{WL}/{faulty}/stop", headers=admin)
