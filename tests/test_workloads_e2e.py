"""Workloads end to end on a `hosts` cluster: real processes on sshd test hosts through the
HostDriver, the workspace scheduler and the `workload/<id>` workflow."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from tests.conftest import Platform
from tests.fixtures.sshd import SSHFarm, SSHHost, sshd_farm
from tests.fixtures.workloads import WL, HostCluster, add_host_cluster, add_workspace, submit, wait_phase, workload_body

SSH_PORT = 16470


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm(port=SSH_PORT) as started:
        yield started


@pytest.fixture(scope="module")
def hosts(farm: SSHFarm) -> list[SSHHost]:
    return farm.add_hosts(2)


@pytest.fixture
async def cluster(api: httpx.AsyncClient, platform: Platform, farm: SSHFarm, hosts: list[SSHHost]) -> HostCluster:
    return await add_host_cluster(platform, farm, hosts)


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
    assert detail["nodes"] == [sorted(cluster.node_ids, key=lambda n: pods[f"{workload_id}-master-0"]["nodeName"] != n)]
