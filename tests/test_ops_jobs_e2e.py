"""Ops jobs end to end on real sshd hosts: an addon job in batches, one failing node failing it,
a reboot job waiting for the node to come back, a dumplog archive, and stop."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import signal as signal_module
import tarfile
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from temporalio.client import Client

from db.encryption import SecretBox
from db.logs import OperationLog
from db.migrate import upgrade
from db.ops_jobs import OpsJob
from db.session import create_engine, session_factory
from domain import ops_jobs as rules
from domain.logs import LogResource
from domain.nodes import ProbeInput
from domain.timefmt import utcnow
from tests.conftest import Platform
from tests.fixtures.nodes import prepare_node_settings
from tests.fixtures.polling import poll_json, until
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.worker_processes import WorkerProcesses
from tests.fixtures.workloads import (
    HostCluster,
    add_host_cluster,
    add_workspace,
    submit,
    wait_phase,
    workload_body,
)
from workflows.node_probe import NodeProbeWorkflow
from workflows.ops_job import OpsJobWorkflow

SSH_PORT = 16510
JOBS = "/api/v1/opsjobs"

BATCH_ADDON = 'echo "batch-addon on $(echo $SSH_CONNECTION | cut -d" " -f3)"; sleep 1\n'
CHECK_ADDON = (
    'me=$(echo $SSH_CONNECTION | cut -d" " -f3)\n'
    'if [ "$me" = "$(cat "$HOME/fail-host" 2>/dev/null)" ]; then\n'
    '  echo "disk check failed on $me" >&2; exit 4\n'
    "fi\n"
    'echo "check passed on $me"\n'
)
TICK_ADDON = 'for i in $(seq 60); do echo tick >> "$HOME/ticks"; sleep 0.5; done\n'
REBOOT_STANDIN = '#!/bin/sh\necho "$(echo $SSH_CONNECTION | cut -d" " -f3)" >> "$HOME/reboot-requests"\n'


farm, hosts = farm_fixtures(SSH_PORT, 4)


@pytest.fixture
async def cluster(
    api: httpx.AsyncClient, platform: Platform, farm: SSHFarm, hosts: list[SSHHost], tmp_path: Path
) -> AsyncIterator[HostCluster]:
    previous = prepare_node_settings(platform.settings, farm, tmp_path / "addons")
    (tmp_path / "addons" / "batch-addon.sh").write_text("#!/usr/bin/env bash\n" + BATCH_ADDON)
    (tmp_path / "addons" / "check-addon.sh").write_text("#!/usr/bin/env bash\n" + CHECK_ADDON)
    (tmp_path / "addons" / "tick-addon.sh").write_text("#!/usr/bin/env bash\n" + TICK_ADDON)
    farm.write_user_file("bin/reboot-standin", REBOOT_STANDIN)
    platform.settings.node_commands = {
        **platform.settings.node_commands,
        "reboot": [str(farm.home / "bin/reboot-standin")],
    }
    for name in ("fail-host", "reboot-requests", "ticks"):
        (farm.home / name).unlink(missing_ok=True)
    yield await add_host_cluster(platform, farm, hosts)
    for name, value in previous.items():
        setattr(platform.settings, name, value)


async def create(api: httpx.AsyncClient, admin: dict[str, str], body: dict[str, Any]) -> str:
    resp = await api.post(JOBS, json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["jobId"])


async def ended(
    api: httpx.AsyncClient, admin: dict[str, str], job_id: str, within: float = 90
) -> dict[str, Any]:
    body: dict[str, Any] = await poll_json(
        api, admin, f"{JOBS}/{job_id}", lambda b: b["phase"] in ("Succeeded", "Failed"), within=within
    )
    return body


async def run_probe(platform: Platform) -> None:
    """One pass of the node probe (as its schedule starts it)."""
    settings = platform.settings
    await platform.state.temporal.execute_workflow(
        NodeProbeWorkflow.run,
        ProbeInput(ssh_queue=settings.queues.ssh, timings=settings.node_timings()),
        id=f"test-probe-{uuid.uuid4().hex[:8]}",
        task_queue=settings.queues.control,
    )


async def node_lines(platform: Platform, node_id: str, needle: str) -> list[OperationLog]:
    async with platform.state.sessions() as session:
        rows = await session.execute(
            select(OperationLog)
            .where(OperationLog.resource_type == LogResource.NODE.value, OperationLog.resource_id == node_id)
            .order_by(OperationLog.id)
        )
        return [r for r in rows.scalars() if needle in r.line]


async def test_an_addon_job_runs_in_batches_and_one_failing_node_fails_it(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    platform: Platform,
    farm: SSHFarm,
    hosts: list[SSHHost],
    cluster: HostCluster,
) -> None:
    nodes = sorted(cluster.node_ids)
    body = {
        "name": "addon-batches",
        "type": "addon",
        "inputs": [
            {"name": "addon.template", "value": "batch-addon"},
            {"name": "cluster", "value": cluster.cluster_id},
        ],
        "batchCount": 2,
    }
    job = await ended(api, admin, await create(api, admin, body))
    assert (job["phase"], job["message"]) == ("Succeeded", "success: 4, fail: 0"), job
    assert [(n["nodeId"], n["phase"]) for n in job["nodes"]] == [(n, "Succeeded") for n in nodes]
    assert job["startTime"] and job["endTime"] and job["conditions"][-1]["reason"] == "JobSucceeded"
    # the node logs show two batches: the second starts only after the first is done
    starts = {
        n: (await node_lines(platform, n, f"ops job {job['jobId']}: addons batch-addon started"))[0]
        for n in nodes
    }
    dones = {n: (await node_lines(platform, n, f"ops job {job['jobId']}: addons done"))[0] for n in nodes}
    first, second = nodes[:2], nodes[2:]
    assert max(dones[n].created_at for n in first) <= min(starts[n].created_at for n in second)
    assert max(starts[n].created_at for n in first) < min(dones[n].created_at for n in first)  # in parallel
    assert any("batch-addon on" in r.line for r in await node_lines(platform, nodes[3], "batch-addon on"))

    # one node whose check fails, with availableRatio 1.0: the job fails naming it and its output
    bad = nodes[1]
    (farm.home / "fail-host").write_text(hosts[cluster.node_ids.index(bad)].address)
    body = {
        "name": "addon-check",
        "type": "addon",
        "inputs": [
            {"name": "addon.template", "value": "check-addon"},
            {"name": "cluster", "value": cluster.cluster_id},
        ],
        "batchCount": 2,
        "availableRatio": 1.0,
    }
    failed = await ended(api, admin, await create(api, admin, body))
    assert failed["phase"] == "Failed", failed
    assert "The number of failures has reached the threshold(1)" in failed["message"]
    assert f"node {bad}" in failed["message"] and "exit code 4" in failed["message"], failed["message"]
    states = {n["nodeId"]: n["phase"] for n in failed["nodes"]}
    assert states[bad] == "Failed" and states[nodes[0]] == "Succeeded"
    assert states[nodes[2]] == states[nodes[3]] == "Pending"  # the second batch never ran
    assert [c["reason"] for c in failed["conditions"] if c["type"] == bad] == ["NodeFailed"]
    lines = [r.line for r in await node_lines(platform, bad, "disk check failed")]
    assert lines, "the failing addon's output is in the node's log"
    (farm.home / "fail-host").unlink()


async def test_a_reboot_job_waits_for_the_node_to_come_back(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    platform: Platform,
    farm: SSHFarm,
    hosts: list[SSHHost],
    cluster: HostCluster,
) -> None:
    node_id = sorted(cluster.node_ids)[0]
    host = hosts[cluster.node_ids.index(node_id)]
    requests = farm.home / "reboot-requests"

    async def stand_in_reboot() -> None:
        while not requests.exists():  # a file written over SSH: nothing to wait on but polling  # noqa: ASYNC110
            await asyncio.sleep(0.1)
        await asyncio.to_thread(farm.stop, host)
        await run_probe(platform)  # the node probe sees it down meanwhile: SSHFailed
        down = (await api.get(f"/api/v1/nodes/{node_id}", headers=admin)).json()
        assert down["phase"] == "SSHFailed" and down["available"] is False, down
        await asyncio.sleep(2)
        await asyncio.to_thread(farm.start, host)

    machine = asyncio.create_task(stand_in_reboot())
    job_id = await create(
        api, admin, {"name": "reboot-one", "type": "reboot", "inputs": [{"name": "node", "value": node_id}]}
    )
    held = await poll_json(
        api, admin, f"/api/v1/nodes/{node_id}", lambda b: b["available"] is False, within=30
    )
    assert "rebooting" in held["message"]
    job = await ended(api, admin, job_id, within=120)
    await machine
    assert job["phase"] == "Succeeded", job
    assert job["outputs"] == [{"name": "node", "value": node_id}]
    assert requests.read_text().split() == [host.address]
    node = (await api.get(f"/api/v1/nodes/{node_id}", headers=admin)).json()
    assert node["phase"] == "Ready" and node["available"] is True, node
    logs = (await api.get(f"/api/v1/nodes/{node_id}/reboot/logs", headers=admin)).json()["logs"]
    assert any("requested by ops job" in line for line in logs)
    assert any("the node went down" in line for line in logs) and any(
        "answers again" in line for line in logs
    )


async def test_a_dumplog_job_archives_the_pod_logs_and_a_stop_ends_a_waiting_job(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "dumps")
    workload_id = await submit(
        api,
        admin,
        workload_body(workspace_id, "for i in 1 2 3; do echo line-$i; done", resource={"replica": 2}),
    )
    await wait_phase(api, admin, workload_id, "Succeeded")
    job = await ended(
        api,
        admin,
        await create(
            api,
            admin,
            {"name": "dump", "type": "dumplog", "inputs": [{"name": "workload", "value": workload_id}]},
        ),
    )
    assert job["phase"] == "Succeeded", job
    outputs = {o["name"]: o["value"] for o in job["outputs"]}
    with tarfile.open(outputs["endpoint"]) as archive:
        names = sorted(archive.getnames())
        assert len(names) == 2 and all(n.startswith(f"{workload_id}/") for n in names)
        text = archive.extractfile(names[0]).read().decode()  # type: ignore[union-attr]
    assert "line-1" in text and "line-3" in text
    assert int(outputs["size"]) > 0

    # a securityUpgrade addon job waits while a workload runs on its node; stop ends it
    busy = await submit(
        api, admin, workload_body(workspace_id, "sleep 300", specifiedNodes=[sorted(cluster.node_ids)[0]])
    )
    await wait_phase(api, admin, busy, "Running")
    body = {
        "name": "careful",
        "type": "addon",
        "inputs": [
            {"name": "addon.template", "value": "batch-addon"},
            {"name": "node", "value": sorted(cluster.node_ids)[0]},
        ],
        "securityUpgrade": True,
    }
    job_id = await create(api, admin, body)
    await poll_json(api, admin, f"{JOBS}/{job_id}", lambda b: b["phase"] == "Running")
    assert (await api.post(f"{JOBS}/{job_id}/stop", headers=admin)).status_code == 200
    stopped = await ended(api, admin, job_id)
    assert (stopped["phase"], stopped["message"]) == ("Failed", "The job is stopped")
    assert [n["phase"] for n in stopped["nodes"]] == ["Pending"]
    assert (await api.delete(f"{JOBS}/{job_id}", headers=admin)).status_code == 200
    await poll_json(api, admin, JOBS, lambda b: job_id not in [i["jobId"] for i in b["items"]])
    await api.post(f"/api/v1/workloads/{busy}/stop", headers=admin)


async def test_a_worker_killed_mid_batch_resumes_without_rerunning_finished_nodes(
    temporal_client: Client, farm: SSHFarm, hosts: list[SSHHost], tmp_path: Path
) -> None:
    """An addon job of four one-node batches; its worker process is killed (SIGKILL) while the
    second node runs. Another worker finishes the job: the first node never runs again, the one
    in flight runs at most twice (its activity is retried), every node ends Succeeded."""
    url = f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    upgrade(url)
    run = uuid.uuid4().hex[:8]
    key = Fernet.generate_key().decode()
    addons = tmp_path / "addons"
    addons.mkdir()
    (addons / "slow-count.sh").write_text(
        '#!/usr/bin/env bash\necho "$(echo $SSH_CONNECTION | cut -d" " -f3)" >> "$HOME/slow-count"\nsleep 2\n'
    )
    (farm.home / "slow-count").unlink(missing_ok=True)
    env = {
        **os.environ,
        "PRIMUS_DATABASE_URL": url,
        "PRIMUS_TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "PRIMUS_SECRET_KEY": key,
        "PRIMUS_QUEUE_CONTROL": f"control-{run}",
        "PRIMUS_QUEUE_SSH": f"ssh-{run}",
        "PRIMUS_QUEUE_IMAGES": f"images-{run}",
        "PRIMUS_QUEUE_WORKLOADS": f"workloads-{run}",
        "PRIMUS_NODE_PROBE_INTERVAL_SECONDS": "86400",
        "PRIMUS_NODE_ADDON_DIR": str(addons),
        "PRIMUS_NODE_COMMANDS": json.dumps({"run_addon": ["bash", "{script}"]}),
        "PRIMUS_NODE_HEARTBEAT_TIMEOUT_SECONDS": "5",
    }
    engine = create_engine(url)
    sessions = session_factory(engine)
    workers = WorkerProcesses(env, tmp_path)
    state = SimpleNamespace(state=SimpleNamespace(sessions=sessions, box=SecretBox(key.encode())))
    cluster = await add_host_cluster(state, farm, hosts)  # type: ignore[arg-type]
    nodes = sorted(cluster.node_ids)
    job_id = f"resume-{run[:5]}"
    now = utcnow()
    async with sessions() as session, session.begin():
        session.add(
            OpsJob(
                id=job_id,
                name="resume",
                type="addon",
                node_ids=nodes,
                cluster_id=cluster.cluster_id,
                user_id="root",
                phase="Pending",
                spec={"addons": ["slow-count"]},
                created_at=now,
                updated_at=now,
            )
        )
    params = rules.OpsJobWorkflowInput(
        job_id=job_id,
        type="addon",
        node_ids=nodes,
        addons=["slow-count"],
        batch_count=1,
        ssh_queue=f"ssh-{run}",
    )
    handle = await temporal_client.start_workflow(
        OpsJobWorkflow.run, params, id=f"opsjob/{job_id}", task_queue=f"control-{run}"
    )
    ran = farm.home / "slow-count"

    def runs() -> list[str]:
        return ran.read_text().split() if ran.exists() else []

    address = {n: hosts[cluster.node_ids.index(n)].address for n in nodes}
    try:
        worker = workers.start()

        async def second_node_runs() -> bool:
            return len(runs()) >= 2

        await until(second_node_runs, within=60)
        worker.send_signal(signal_module.SIGKILL)
        worker.wait()
        workers.start()
        assert await handle.result() == "Succeeded"
        async with sessions() as session:
            job = await session.get(OpsJob, job_id)
        assert job is not None and job.phase == "Succeeded", job and job.message
        assert set(job.node_results) == set(nodes) and all(r["ok"] for r in job.node_results.values())
        counts = {n: runs().count(address[n]) for n in nodes}
        assert counts[nodes[0]] == 1, counts  # finished before the kill: never again
        assert 1 <= counts[nodes[1]] <= 2, counts  # in flight: retried at most once
        assert counts[nodes[2]] == counts[nodes[3]] == 1, counts
    finally:
        workers.close()
        await engine.dispose()


async def test_a_preflight_job_runs_a_check_on_each_node_and_reports_its_lines(
    api: httpx.AsyncClient, admin: dict[str, str], cluster: HostCluster
) -> None:
    nodes = sorted(cluster.node_ids)[:2]
    script = (
        'echo "starting checks"\n'
        'echo "[SUCCESS] gpu check passed on rank $RANK"\n'
        'if [ "$RANK" = "1" ]; then echo "[ERROR] disk check failed on rank $RANK"; fi\n'
        'echo "done"\n'
    )
    body = {
        "name": "preflight-check",
        "type": "preflight",
        "inputs": [{"name": "node", "value": n} for n in nodes],
        "resource": {"cpu": "0", "memory": "64Mi"},
        "image": "none",
        "entryPoint": base64.b64encode(script.encode()).decode(),
        "env": {"CHECK_DISK": "true"},
    }
    job = await ended(api, admin, await create(api, admin, body), within=120)
    assert job["phase"] == "Failed" and job["message"] == f"checks failed on {nodes[1]}", job
    outputs = {o["name"]: json.loads(o["value"]) for o in job["outputs"]}
    assert outputs[nodes[0]] == ["[SUCCESS] gpu check passed on rank 0"]
    assert outputs[nodes[1]] == [
        "[SUCCESS] gpu check passed on rank 1",
        "[ERROR] disk check failed on rank 1",
    ]
    assert {n["nodeId"]: n["phase"] for n in job["nodes"]} == {nodes[0]: "Succeeded", nodes[1]: "Failed"}
    assert (
        job["image"] == "none"
        and job["env"] == {"CHECK_DISK": "true"}
        and job["resource"]["memory"] == "64Mi"
    )
    missing = {k: v for k, v in body.items() if k != "image"}
    resp = await api.post(JOBS, json=missing, headers=admin)
    assert resp.status_code == 400 and "image" in resp.json()["errorMessage"], resp.text


async def test_stopping_an_addon_job_stops_the_remote_command_and_a_timeout_ends_a_job(
    api: httpx.AsyncClient, admin: dict[str, str], farm: SSHFarm, cluster: HostCluster
) -> None:
    ticks = farm.home / "ticks"

    def count() -> int:
        return len(ticks.read_text().splitlines()) if ticks.exists() else 0

    node = sorted(cluster.node_ids)[0]
    inputs = [{"name": "addon.template", "value": "tick-addon"}, {"name": "node", "value": node}]
    job_id = await create(api, admin, {"name": "ticking", "type": "addon", "inputs": inputs})

    async def ticking() -> bool:
        return count() >= 3

    await until(ticking, within=30)
    assert (await api.post(f"{JOBS}/{job_id}/stop", headers=admin)).status_code == 200
    stopped = await ended(api, admin, job_id)
    assert (stopped["phase"], stopped["message"]) == ("Failed", "The job is stopped")
    settled = count()  # the job ends once its step is cancelled and the command hung up
    await asyncio.sleep(3)
    assert count() <= settled + 1 < 60, "the remote addon kept running after the job was stopped"

    timed = await create(api, admin, {"name": "slow", "type": "addon", "inputs": inputs, "timeoutSecond": 2})
    job = await ended(api, admin, timed)
    assert (job["phase"], job["message"]) == ("Failed", "The job is timeout, timeoutSecond: 2"), job
