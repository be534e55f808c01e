"""Laptop mode: the local transport, the derived flavor, and `up`'s local-node set-up run against the
real platform (API in-process, real Temporal worker, both database backends): node `local` Ready,
hosts cluster `local` Ready, workspace `local-default` Running with the derived quota, and a
second run that creates nothing."""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus

from domain.nodes import NodeFacts
from drivers.local import LOCAL_FINGERPRINT, LocalConnection
from drivers.ssh import CommandFailed, Unreachable
from primus_safe.local_node import (
    CLUSTER_ID,
    FLAVOR_ID,
    NODE_ID,
    WORKSPACE_ID,
    discover_facts,
    ensure_local_node,
    local_flavor,
)
from tests.conftest import ADMIN_PASSWORD, Platform, login

GI = 1024**3

# --- the local transport ---------------------------------------------------------------------------


def test_local_connection_runs_in_home_without_platform_secrets(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("PRIMUS_SECRET_KEY", "must-not-leak")
    lines: list[str] = []
    with LocalConnection() as conn:
        assert conn.host_fingerprint == LOCAL_FINGERPRINT
        result = conn.run(
            ["sh", "-c", 'pwd; echo "key=${PRIMUS_SECRET_KEY:-unset}"; echo "$1" >&2', "x", "a b; $(no)"],
            timeout=10,
            on_line=lines.append,
        )
        assert lines == [str(tmp_path), "key=unset", "a b; $(no)"]
        assert result.exit_code == 0
        assert conn.run(["wc", "-c"], timeout=10, stdin=b"x" * 200_000).output.strip() == "200000"
        conn.put(b"#!/bin/sh\necho hi\n", "script.sh", mode=0o700)
        assert (tmp_path / "script.sh").stat().st_mode & 0o777 == 0o700
        assert conn.get("script.sh") == b"#!/bin/sh\necho hi\n"
        with pytest.raises(FileNotFoundError):
            conn.get("missing")
        with pytest.raises(CommandFailed) as failed:
            conn.run(["sh", "-c", "echo oops; exit 3"], timeout=10)
        assert failed.value.exit_code == 3 and "oops" in failed.value.reason
        assert conn.run(["false"], timeout=10, check=False).exit_code == 1
        with pytest.raises(CommandFailed) as missing:
            conn.run(["no-such-command-primus"], timeout=10)
        assert missing.value.exit_code == 127
        started = time.monotonic()
        with pytest.raises(CommandFailed, match="timed out"):
            conn.run(["sleep", "30"], timeout=0.5)
        assert time.monotonic() - started < 5


def test_local_connection_close_stops_a_running_command() -> None:
    conn = LocalConnection()

    def close_soon() -> None:
        time.sleep(0.3)
        conn.close()

    threading.Thread(target=close_soon).start()
    started = time.monotonic()
    with pytest.raises(Unreachable):
        conn.run(["sleep", "30"], timeout=60)
    assert time.monotonic() - started < 5
    with pytest.raises(Unreachable):
        conn.run(["true"], timeout=5)


def test_facts_of_this_machine() -> None:
    facts = discover_facts()
    assert facts.cpu_cores == os.cpu_count()
    assert facts.memory_bytes > 0


# --- the derived flavor ----------------------------------------------------------------------------


def test_flavor_is_every_core_and_half_the_memory_by_default_and_capped_by_the_settings() -> None:
    facts = NodeFacts(
        cpu_cores=8, memory_bytes=16 * GI, gpu_count=2, gpu_tool="amd-smi", gpu_products=["MI300X"]
    )
    assert local_flavor(facts, cpu=None, memory=None) == {
        "cpu": {"quantity": "8"},
        "memory": "8192Mi",
        "gpu": {"product": "MI300X", "resourceName": "amd.com/gpu", "quantity": "2"},
    }
    capped = local_flavor(facts, cpu=2, memory="3Gi")
    assert capped["cpu"] == {"quantity": "2"} and capped["memory"] == "3072Mi"
    beyond = local_flavor(facts, cpu=64, memory="1Ti")  # never more than the machine has
    assert beyond["cpu"] == {"quantity": "8"} and beyond["memory"] == "16384Mi"
    small = local_flavor(NodeFacts(cpu_cores=1, memory_bytes=GI), cpu=None, memory=None)
    assert small == {"cpu": {"quantity": "1"}, "memory": "512Mi"}
    nvidia = local_flavor(
        NodeFacts(cpu_cores=4, memory_bytes=8 * GI, gpu_count=1, gpu_tool="nvidia-smi"), cpu=None, memory=None
    )
    assert nvidia["gpu"]["resourceName"] == "nvidia.com/gpu"


# --- the set-up against the platform ---------------------------------------------------------------


async def _gone(http: httpx.AsyncClient, path: str, headers: dict[str, str], within: float = 60) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if (await http.get(path, headers=headers)).status_code == 404:
            return
        await asyncio.sleep(0.2)
    raise AssertionError(f"{path} still there after {within}s")


@pytest.fixture
async def local_platform(
    platform: Platform, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> AsyncIterator[Platform]:
    """The platform as `up` runs it (dev mode: local nodes allowed), commands of the local node in
    a scratch $HOME; afterwards the workspace, cluster and node are deleted through the API, so the
    ids are free for the other database backend."""
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setattr(platform.settings, "dev_mode", True)
    yield platform
    headers = await login(api, "root", ADMIN_PASSWORD)
    for path in (f"/workspaces/{WORKSPACE_ID}", f"/clusters/{CLUSTER_ID}", f"/nodes/{NODE_ID}"):
        with contextlib.suppress(AssertionError):
            await api.delete(f"/api/v1{path}", headers=headers)
            await _gone(api, f"/api/v1{path}", headers)
    for workflow_id in (
        f"workspace/{WORKSPACE_ID}",
        f"workspace-scheduler/{WORKSPACE_ID}",
        f"cluster/{CLUSTER_ID}",
        f"node/{NODE_ID}",
    ):
        handle = platform.state.temporal.get_workflow_handle(workflow_id)
        with contextlib.suppress(Exception):
            if (await handle.describe()).status == WorkflowExecutionStatus.RUNNING:
                await handle.terminate("test done")


async def test_local_node_setup_makes_node_cluster_and_workspace_once(
    local_platform: Platform, api: httpx.AsyncClient, tmp_path: Path
) -> None:
    settings = local_platform.settings
    headers = await login(api, "root", ADMIN_PASSWORD)
    progress: list[str] = []
    first = await ensure_local_node(api, settings, headers=headers, say=progress.append, within=180, poll=0.2)
    assert first.created == [
        f"flavor {FLAVOR_ID}",
        f"node template {FLAVOR_ID}",
        f"node {NODE_ID}",
        f"cluster {CLUSTER_ID}",
        f"workspace {WORKSPACE_ID}",
    ]
    facts = discover_facts()
    assert first.flavor == local_flavor(facts, cpu=None, memory=None)

    node = (await api.get(f"/api/v1/nodes/{NODE_ID}", headers=headers)).json()
    assert node["phase"] == "Ready" and node["local"] is True and node["available"] is True, node
    assert node["internalIP"] == "127.0.0.1" and node["clusterId"] == CLUSTER_ID
    assert node["workspace"]["id"] == WORKSPACE_ID and node["sshSecretId"] == ""
    cluster = (await api.get(f"/api/v1/clusters/{CLUSTER_ID}", headers=headers)).json()
    assert cluster["phase"] == "Ready" and cluster["provisioner"] == "hosts" and cluster["nodes"] == [NODE_ID]
    workspace = (await api.get(f"/api/v1/workspaces/{WORKSPACE_ID}", headers=headers)).json()
    assert workspace["phase"] == "Running" and workspace["isDefault"] is True
    assert workspace["targetNodeCount"] == 1 and workspace["currentNodeCount"] == 1
    cores = facts.cpu_cores
    memory = facts.memory_bytes // 2 // (1024 * 1024) * 1024 * 1024
    assert workspace["totalQuota"]["cpu"] == cores and workspace["totalQuota"]["memory"] == memory, workspace

    # the same steps as any node, without SSH; the hosts provisioner prepared the pods directory
    lines = (await api.get(f"/api/v1/nodes/{NODE_ID}/logs", headers=headers)).json()["logs"]
    assert any("reached this machine (local node, no SSH)" in line for line in lines), lines
    assert any(f"facts: {facts.cpu_cores} CPU cores" in line for line in lines), lines
    assert (tmp_path / ".primus-safe" / "clusters" / CLUSTER_ID / "pods").is_dir()
    for workflow_id in (f"node/{NODE_ID}", f"cluster/{CLUSTER_ID}", f"workspace/{WORKSPACE_ID}"):
        described = await local_platform.state.temporal.get_workflow_handle(workflow_id).describe()
        assert described.status == WorkflowExecutionStatus.RUNNING, workflow_id

    second = await ensure_local_node(api, settings, headers=headers, within=60, poll=0.2)
    assert second.created == []
    for path in ("/nodes", "/clusters", "/workspaces"):
        body = (await api.get(f"/api/v1{path}", headers=headers)).json()
        assert body["totalCount"] == 1, (path, body)
    flavors = (await api.get("/api/v1/nodeflavors", headers=headers)).json()
    assert [f["flavorId"] for f in flavors["items"]] == [FLAVOR_ID]

    # a changed cap re-derives the flavor in place
    settings_cap = settings.model_copy(update={"local_node_cpu": 1})
    third = await ensure_local_node(api, settings_cap, headers=headers, within=60, poll=0.2)
    assert third.created == []
    flavor = (await api.get(f"/api/v1/nodeflavors/{FLAVOR_ID}", headers=headers)).json()
    assert flavor["cpu"]["quantity"] == "1"


async def test_local_nodes_are_refused_outside_up_and_need_no_ssh(
    platform: Platform, api: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    headers = await login(api, "root", ADMIN_PASSWORD)
    assert (
        await api.post(
            "/api/v1/nodeflavors",
            json={"name": "f", "cpu": {"quantity": "1"}, "memory": "1Gi"},
            headers=headers,
        )
    ).status_code == 200
    assert (
        await api.post(
            "/api/v1/nodetemplates", json={"templateId": "t", "addOnTemplates": []}, headers=headers
        )
    ).status_code == 200
    body = {"privateIP": "127.0.0.1", "local": True, "flavorId": "f", "templateId": "t"}
    resp = await api.post("/api/v1/nodes", json=body, headers=headers)
    assert resp.status_code == 400 and "primus-safe up" in resp.json()["errorMessage"], resp.text
    monkeypatch.setattr(platform.settings, "dev_mode", True)
    resp = await api.post("/api/v1/nodes", json={**body, "hostname": "renamed"}, headers=headers)
    assert resp.status_code == 400 and "host name" in resp.json()["errorMessage"], resp.text
    resp = await api.post("/api/v1/nodes", json={**body, "sshSecretId": "s"}, headers=headers)
    assert resp.status_code == 400 and "without SSH" in resp.json()["errorMessage"], resp.text
    remote = {"privateIP": "10.9.8.7", "flavorId": "f", "templateId": "t"}
    resp = await api.post("/api/v1/nodes", json=remote, headers=headers)
    assert resp.status_code == 400 and "sshSecretId" in resp.json()["errorMessage"], resp.text


def test_local_node_settings_are_validated() -> None:
    from pydantic import ValidationError

    from primus_safe.settings import Settings

    settings = Settings(local_node_cpu=2, local_node_memory="8Gi")
    assert settings.local_node is True and settings.local_node_cpu == 2
    for bad in ({"local_node_memory": "lots"}, {"local_node_memory": "0"}, {"local_node_cpu": 0}):
        with pytest.raises(ValidationError):
            Settings(**bad)
