"""Faults end to end on a `hosts` cluster of real sshd hosts: a NoExecute fault moves a running
workload to the other node and stopping it makes the node schedulable again; the node probe
raises its `ssh-unreachable` fault only after N missed checks in a row (failing the workload
over then, not before) and clears it after M answers."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node
from domain.faults import ADDON_CHECK, DISK_FULL, GPU_COUNT, SSH_UNREACHABLE
from domain.nodes import ProbeInput, ProbeSummary
from tests.conftest import Platform
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.polling import poll_json
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.workloads import (
    WL,
    HostCluster,
    add_workspace,
    cluster_fixture,
    submit,
    wait_phase,
    workload_body,
)
from workflows.fault import FaultWorkflow
from workflows.node_probe import NodeProbeWorkflow

SSH_PORT = 16500
FAULTS = "/api/v1/faults"
NODES = "/api/v1/nodes"


farm, hosts = farm_fixtures(SSH_PORT, 2)
cluster = cluster_fixture()


def node_of(detail: dict[str, Any]) -> str:
    nodes = {p["adminNodeName"] for p in detail["pods"] if p["phase"] == "Running"}
    assert len(nodes) == 1, detail["pods"]
    return nodes.pop()


async def running_on(api: httpx.AsyncClient, admin: dict[str, str], workload_id: str, dispatch: int) -> str:
    detail = await poll_json(
        api,
        admin,
        f"{WL}/{workload_id}",
        lambda b: (
            b["phase"] == "Running"
            and b["dispatchCount"] == dispatch
            and any(p["phase"] == "Running" for p in b["pods"])
        ),
        within=60,
    )
    return node_of(detail)


async def set_flavor_gpus(platform: Platform, flavor_id: str, count: int) -> None:
    """Give the cluster's flavor `count` GPUs (the test machine has none)."""
    async with platform.state.sessions() as session, session.begin():
        flavor = await session.get(NodeFlavor, flavor_id)
        assert flavor is not None
        spec = {k: v for k, v in flavor.spec.items() if k != "gpu"}
        if count:
            spec["gpu"] = {"product": "MI300X", "resourceName": "amd.com/gpu", "quantity": str(count)}
        flavor.spec = spec


async def node_view(api: httpx.AsyncClient, admin: dict[str, str], node_id: str) -> dict[str, Any]:
    return dict((await api.get(f"{NODES}/{node_id}", headers=admin)).json())


async def test_a_no_execute_fault_moves_the_workload_and_its_stop_frees_the_node(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "faults")
    workload_id = await submit(api, admin, workload_body(workspace_id, "sleep 300", maxRetry=1))
    first = await running_on(api, admin, workload_id, 1)

    resp = await api.post(
        FAULTS,
        json={"nodeId": first, "monitorId": "001", "message": "gpu lost", "effect": "NoExecute"},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    fault_id = resp.json()["id"]
    second = await running_on(api, admin, workload_id, 2)
    assert second != first
    detail = (await api.get(f"{WL}/{workload_id}", headers=admin)).json()
    failover = [c for c in detail["conditions"] if c["type"] == "AdminFailover"]
    assert failover and "fault 001: gpu lost" in failover[0]["message"], detail["conditions"]
    held = await node_view(api, admin, first)
    assert held["available"] is False and "fault 001: gpu lost" in held["message"]
    listed = (await api.get(FAULTS, params={"nodeId": first}, headers=admin)).json()
    assert [(i["id"], i["phase"], i["deletionTime"]) for i in listed["items"]] == [
        (fault_id, "Succeeded", "")
    ]

    # stopped, the node is schedulable again: a workload pinned to it runs there
    assert (await api.post(f"{FAULTS}/{fault_id}/stop", headers=admin)).status_code == 200
    await poll_json(api, admin, f"{NODES}/{first}", lambda b: b["available"] is True and b["taints"] == [])
    handle = platform.state.temporal.get_workflow_handle(f"fault/{fault_id}")
    assert await handle.result() == "Closed"
    await replay_and_keep(handle, [FaultWorkflow], "fault-no-execute-failover-then-stopped")
    pinned = await submit(api, admin, workload_body(workspace_id, "echo pinned", specifiedNodes=[first]))
    done = await wait_phase(api, admin, pinned, "Succeeded", "Failed")
    assert done["phase"] == "Succeeded" and {p["adminNodeName"] for p in done["pods"]} == {first}
    await api.post(f"{WL}/{workload_id}/stop", headers=admin)
    await wait_phase(api, admin, workload_id, "Stopped")


async def probe(platform: Platform) -> ProbeSummary:
    """One pass of the node probe, as the `system/node-probe` schedule starts it."""
    settings = platform.settings
    result: ProbeSummary = await platform.state.temporal.execute_workflow(
        NodeProbeWorkflow.run,
        ProbeInput(
            ssh_queue=settings.queues.ssh,
            timings=settings.node_timings(),
            failover_monitors=list(settings.fault_failover_monitors),
        ),
        id=f"test-probe-{uuid.uuid4().hex[:8]}",
        task_queue=settings.queues.control,
    )
    return result


async def test_the_probe_raises_its_fault_after_n_misses_and_clears_it_after_m_answers(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    platform: Platform,
    farm: SSHFarm,
    hosts: list[SSHHost],
    cluster: HostCluster,
) -> None:
    settings = platform.settings
    saved = (settings.fault_raise_after_probes, settings.fault_clear_after_probes)
    settings.fault_raise_after_probes, settings.fault_clear_after_probes = 2, 2
    await set_flavor_gpus(platform, cluster.flavor_id, 0)  # only the SSH check may fail here
    workspace_id = await add_workspace(api, admin, cluster, "probed")
    workload_id = await submit(api, admin, workload_body(workspace_id, "sleep 300", maxRetry=1))
    node_id = await running_on(api, admin, workload_id, 1)
    host = hosts[cluster.node_ids.index(node_id)]
    farm.stop(host)
    try:
        # one missed check: the node is SSHFailed, but no fault and no failover
        await probe(platform)
        view = await node_view(api, admin, node_id)
        assert view["phase"] == "SSHFailed", view
        assert (await api.get(FAULTS, params={"nodeId": node_id}, headers=admin)).json()["totalCount"] == 0
        detail = (await api.get(f"{WL}/{workload_id}", headers=admin)).json()
        assert (detail["phase"], detail["dispatchCount"]) == ("Running", 1)

        # the second in a row raises the fault: the workload moves to the other node
        await probe(platform)
        raised = await poll_json(
            api,
            admin,
            f"{FAULTS}?nodeId={node_id}",
            lambda b: [i["phase"] for i in b["items"]] == ["Succeeded"],
        )
        fault = raised["items"][0]
        assert (fault["monitorId"], fault["source"], fault["deletionTime"]) == (SSH_UNREACHABLE, "probe", "")
        assert await running_on(api, admin, workload_id, 2) != node_id
    finally:
        farm.start(host)
    # one answer is not enough to clear it; the second is
    await probe(platform)
    assert (await node_view(api, admin, node_id))["phase"] == "Ready"
    assert (await api.get(FAULTS, params={"onlyOpen": "true"}, headers=admin)).json()["totalCount"] == 1
    await probe(platform)
    await poll_json(api, admin, f"{FAULTS}?onlyOpen=true", lambda b: b["totalCount"] == 0)
    await poll_json(api, admin, f"{NODES}/{node_id}", lambda b: b["available"] is True)
    lines = (await api.get(f"{NODES}/{node_id}/logs", headers=admin)).json()["logs"]
    assert any(f"fault {SSH_UNREACHABLE} raised" in line and "2 failed probes" in line for line in lines), (
        lines
    )
    assert any(f"fault {SSH_UNREACHABLE} cleared" in line and "2 good probes" in line for line in lines), (
        lines
    )
    settings.fault_raise_after_probes, settings.fault_clear_after_probes = saved
    await api.post(f"{WL}/{workload_id}/stop", headers=admin)
    await wait_phase(api, admin, workload_id, "Stopped")


async def test_the_probe_raises_and_clears_gpu_and_disk_faults_with_hysteresis(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    """The flavor promises 8 GPUs the machine does not have, and the disk threshold is set below
    the machine's use: both health faults are raised after two probes, none after one; back to
    a GPU-less flavor and the normal threshold, both clear after two good probes."""
    settings = platform.settings
    saved = (
        settings.fault_raise_after_probes,
        settings.fault_clear_after_probes,
        settings.fault_disk_full_percent,
    )
    settings.fault_raise_after_probes, settings.fault_clear_after_probes = 2, 2
    settings.fault_disk_full_percent = 1
    await set_flavor_gpus(platform, cluster.flavor_id, 8)
    node_id = cluster.node_ids[0]
    try:
        await probe(platform)
        assert (await api.get(FAULTS, params={"nodeId": node_id}, headers=admin)).json()["totalCount"] == 0
        await probe(platform)
        raised = await poll_json(
            api,
            admin,
            f"{FAULTS}?nodeId={node_id}&onlyOpen=true",
            lambda b: (
                sorted(i["monitorId"] for i in b["items"]) == [DISK_FULL, GPU_COUNT]
                and {i["phase"] for i in b["items"]} == {"Succeeded"}
            ),
        )
        messages = {i["monitorId"]: i["message"] for i in raised["items"]}
        assert "the flavor has 8 GPUs but the node shows none" in messages[GPU_COUNT]
        assert "full (threshold 1%)" in messages[DISK_FULL]
        view = await node_view(api, admin, node_id)
        assert view["available"] is False and {t["key"] for t in view["taints"]} == {GPU_COUNT, DISK_FULL}
        # fixed: one good probe is not enough, the second clears both
        settings.fault_disk_full_percent = 95
        await set_flavor_gpus(platform, cluster.flavor_id, 0)
        await probe(platform)
        assert (await api.get(FAULTS, params={"nodeId": node_id, "onlyOpen": "true"}, headers=admin)).json()[
            "totalCount"
        ] == 2
        await probe(platform)
        await poll_json(
            api, admin, f"{FAULTS}?nodeId={node_id}&onlyOpen=true", lambda b: b["totalCount"] == 0
        )
        await poll_json(
            api, admin, f"{NODES}/{node_id}", lambda b: b["available"] is True and b["taints"] == []
        )
        lines = (await api.get(f"{NODES}/{node_id}/logs", headers=admin)).json()["logs"]
        for monitor in (GPU_COUNT, DISK_FULL):
            assert any(f"fault {monitor} raised" in line for line in lines), lines
            assert any(f"fault {monitor} cleared" in line for line in lines), lines
    finally:
        (
            settings.fault_raise_after_probes,
            settings.fault_clear_after_probes,
            settings.fault_disk_full_percent,
        ) = saved


async def test_the_probe_checks_the_templates_addons_and_raises_a_fault_on_drift(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, farm: SSHFarm, cluster: HostCluster
) -> None:
    """The node template's addon (a catalogue one) is checked at every probe: a setting changed
    by hand after installation raises `addon-check` after two probes; put back, it clears."""
    settings = platform.settings
    saved = (
        settings.fault_raise_after_probes,
        settings.fault_clear_after_probes,
        dict(settings.node_commands),
    )
    settings.fault_raise_after_probes, settings.fault_clear_after_probes = 2, 2
    root = farm.home / f"sysroot-{uuid.uuid4().hex[:6]}"
    setting = root / "proc/sys/kernel/numa_balancing"
    setting.parent.mkdir(parents=True)
    setting.write_text("0\n")
    conf = root / "etc/sysctl.d/90-primus-numa-balancing.conf"
    conf.parent.mkdir(parents=True)
    conf.write_text("kernel.numa_balancing = 0\n")
    settings.node_commands = {
        **settings.node_commands,
        "run_addon": ["env", f"PRIMUS_ADDON_ROOT={root}", "bash", "{script}"],
    }
    await set_flavor_gpus(platform, cluster.flavor_id, 0)
    async with platform.state.sessions() as session, session.begin():
        node = await session.get(Node, cluster.node_ids[0])
        assert node is not None
        template = await session.get(NodeTemplate, node.template_id)
        assert template is not None
        template.addons = ["disable-numa-balancing"]
    node_id = cluster.node_ids[0]
    try:
        await probe(platform)
        await probe(platform)
        assert (await api.get(FAULTS, params={"nodeId": node_id}, headers=admin)).json()["totalCount"] == 0
        setting.write_text("1\n")  # changed by hand after the addon ran
        await probe(platform)
        assert (await api.get(FAULTS, params={"nodeId": node_id}, headers=admin)).json()["totalCount"] == 0
        await probe(platform)
        raised = await poll_json(
            api, admin, f"{FAULTS}?nodeId={node_id}&onlyOpen=true", lambda b: b["totalCount"] == 1
        )
        fault = raised["items"][0]
        assert fault["monitorId"] == ADDON_CHECK and fault["source"] == "probe"
        assert (
            "disable-numa-balancing" in fault["message"] and "numa_balancing is 1, not 0" in fault["message"]
        )
        assert setting.read_text() == "1\n"  # the check changed nothing
        setting.write_text("0\n")
        await probe(platform)
        await probe(platform)
        await poll_json(
            api, admin, f"{FAULTS}?nodeId={node_id}&onlyOpen=true", lambda b: b["totalCount"] == 0
        )
    finally:
        settings.fault_raise_after_probes, settings.fault_clear_after_probes, settings.node_commands = saved
