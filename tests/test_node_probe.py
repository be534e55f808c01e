"""The `system/node-probe` schedule against real sshd: a stopped sshd turns a Ready node SSHFailed
(with when and why), a restarted one turns it Ready again, and a node that never finished
onboarding because it was down is onboarded once the probe sees it reachable."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import ScheduleOverlapPolicy

from db.nodes import Node
from domain.nodes import READY, SSH_FAILED
from primus_safe.worker import ensure_node_probe_schedule
from tests.conftest import Platform
from tests.fixtures.nodes import (
    add_flavor,
    add_ssh_secret,
    add_template,
    prepare_node_settings,
    reset_user_home,
    this_machine_flavor,
    wait_for_node,
)
from tests.fixtures.sshd import SSHFarm, SSHHost, sshd_farm
from workflows.common import PHASE, RESOURCE_ID
from workflows.node import workflow_id
from workflows.node_probe import SCHEDULE_ID

NODES = "/api/v1/nodes"


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm() as started:
        yield started


@pytest.fixture
async def probed(
    api: httpx.AsyncClient, platform: Platform, farm: SSHFarm, tmp_path: Path
) -> AsyncIterator[Platform]:
    previous = prepare_node_settings(platform.settings, farm, tmp_path / "addons")
    reset_user_home(farm)
    await add_flavor(platform.state.sessions, "this-machine", this_machine_flavor())
    await add_template(platform.state.sessions, "quick", ["ok-addon"])
    await add_ssh_secret(platform.state.sessions, platform.state.box, "ssh-key", farm, key=True)
    # the schedule is shared by every platform of the run: point it at this one's queues
    await ensure_node_probe_schedule(platform.state.temporal, platform.settings)
    yield platform
    for name, value in previous.items():
        setattr(platform.settings, name, value)


async def register(api: httpx.AsyncClient, admin: dict[str, str], host: SSHHost) -> str:
    body = {
        "privateIP": host.address,
        "port": host.port,
        "flavorId": "this-machine",
        "templateId": "quick",
        "sshSecretId": "ssh-key",
    }
    resp = await api.post(NODES, json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["nodeId"])


async def run_probe(platform: Platform) -> None:
    """Trigger the schedule now (as the Temporal UI's "Trigger" button does)."""
    handle = platform.state.temporal.get_schedule_handle(SCHEDULE_ID)
    await handle.trigger(overlap=ScheduleOverlapPolicy.ALLOW_ALL)


async def until(check: Callable[[], Awaitable[bool]], within: float = 30) -> None:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await check():
            return
        await asyncio.sleep(0.3)
    raise AssertionError("condition not met in time")


async def node_view(api: httpx.AsyncClient, admin: dict[str, str], node_id: str) -> dict[str, Any]:
    return dict((await api.get(f"{NODES}/{node_id}", headers=admin)).json())


async def workflow_phase(platform: Platform, node_id: str) -> str | None:
    described = await platform.state.temporal.get_workflow_handle(workflow_id(node_id)).describe()
    assert described.typed_search_attributes.get(RESOURCE_ID) == node_id
    return described.typed_search_attributes.get(PHASE)


async def test_probe_moves_node_between_ready_and_ssh_failed(
    api: httpx.AsyncClient, admin: dict[str, str], probed: Platform, farm: SSHFarm
) -> None:
    host = farm.add_hosts(1)[0]
    node_id = await register(api, admin, host)
    await wait_for_node(api, admin, node_id, phases=(READY,))
    described = await probed.state.temporal.get_schedule_handle(SCHEDULE_ID).describe()
    assert (
        described.schedule.spec.intervals[0].every.total_seconds()
        == probed.settings.node_probe_interval_seconds
    )

    farm.stop(host)
    await run_probe(probed)

    async def failed() -> bool:
        return (await node_view(api, admin, node_id))["phase"] == SSH_FAILED

    await until(failed)
    node = await node_view(api, admin, node_id)
    assert node["available"] is False and "refused" in node["message"].lower(), node
    assert node["phaseChangedTime"] and node["lastProbeTime"]
    async with probed.state.sessions() as session:
        stored = await session.get(Node, node_id)
        assert stored is not None and stored.phase_changed_at is not None and stored.last_probe_at is not None
        failed_at = stored.phase_changed_at
    lines = (await api.get(f"{NODES}/{node_id}/logs", headers=admin)).json()["logs"]
    assert any("probe: unreachable" in line and "SSHFailed" in line for line in lines), lines

    async def mirrored(phase: str) -> Callable[[], Awaitable[bool]]:
        async def check() -> bool:
            return await workflow_phase(probed, node_id) == phase

        return check

    await until(await mirrored(SSH_FAILED))

    farm.start(host)
    await run_probe(probed)

    async def ready() -> bool:
        view = await node_view(api, admin, node_id)
        return bool(view["phase"] == READY and view["available"])

    await until(ready)
    async with probed.state.sessions() as session:
        stored = await session.get(Node, node_id)
        assert (
            stored is not None and stored.phase_changed_at is not None and stored.phase_changed_at > failed_at
        )
    lines = (await api.get(f"{NODES}/{node_id}/logs", headers=admin)).json()["logs"]
    assert any("probe: reachable again" in line for line in lines)
    await until(await mirrored(READY))


async def test_probe_retries_onboarding_of_a_node_that_was_down(
    api: httpx.AsyncClient, admin: dict[str, str], probed: Platform, farm: SSHFarm
) -> None:
    host = farm.add_hosts(1)[0]
    farm.stop(host)
    node_id = await register(api, admin, host)
    node = await wait_for_node(api, admin, node_id, phases=(SSH_FAILED, READY), within=30)
    assert node["phase"] == SSH_FAILED and node["isAddonsInstalled"] is False
    farm.start(host)
    await run_probe(probed)

    async def onboarded() -> bool:
        view = await node_view(api, admin, node_id)
        return bool(view["phase"] == READY and view["isAddonsInstalled"] and view["available"])

    await until(onboarded)
