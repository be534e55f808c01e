"""The node workflow survives a killed worker: a worker process is SIGKILLed while an addon runs,
a second worker resumes at that addon without re-running the ones before it. While it runs, the
workflow's search attributes and the activity's heartbeat details show the step (as the Temporal
UI does). The recorded history then replays deterministically."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from db.encryption import SecretBox
from db.logs import OperationLog
from db.migrate import upgrade
from db.nodes import Node
from db.session import SessionFactory, create_engine, session_factory
from domain.nodes import READY, NodeTimings
from domain.timefmt import utcnow
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.nodes import (
    SET_HOSTNAME_STANDIN,
    TEST_ADDONS,
    add_flavor,
    add_ssh_secret,
    add_template,
    count_runs,
    reset_user_home,
    this_machine_flavor,
)
from tests.fixtures.polling import until
from tests.fixtures.sshd import SSHFarm, sshd_farm
from tests.fixtures.worker_processes import WorkerProcesses
from workflows.common import PHASE, RESOURCE_ID, RESOURCE_TYPE
from workflows.node import NodeWorkflow, NodeWorkflowInput, workflow_id


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm() as started:
        yield started


@pytest.fixture
async def setup(
    temporal_client: Client, farm: SSHFarm, tmp_path: Path
) -> AsyncIterator[tuple[SessionFactory, WorkerProcesses, dict[str, str]]]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    upgrade(url)
    key = Fernet.generate_key().decode()
    run = uuid.uuid4().hex[:8]
    addon_dir = tmp_path / "addons"
    addon_dir.mkdir()
    for name, body in TEST_ADDONS.items():
        (addon_dir / f"{name}.sh").write_text("#!/usr/bin/env bash\n" + body)
    farm.write_user_file("bin/set-hostname", SET_HOSTNAME_STANDIN)
    env = {
        **os.environ,
        "PRIMUS_DATABASE_URL": url,
        "PRIMUS_TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "PRIMUS_SECRET_KEY": key,
        "PRIMUS_QUEUE_CONTROL": f"control-{run}",
        "PRIMUS_QUEUE_SSH": f"ssh-{run}",
        "PRIMUS_QUEUE_IMAGES": f"images-{run}",
        "PRIMUS_NODE_ADDON_DIR": str(addon_dir),
        "PRIMUS_NODE_COMMANDS": json.dumps(
            {
                "set_hostname": [str(farm.home / "bin/set-hostname"), "{hostname}"],
                "run_addon": ["bash", "{script}"],
            }
        ),
    }
    engine = create_engine(url)
    sessions = session_factory(engine)
    await add_flavor(sessions, "this-machine", this_machine_flavor())
    await add_template(sessions, "with-slow", ["ok-addon", "slow-addon", "second-addon"])
    await add_ssh_secret(sessions, SecretBox(key.encode()), "ssh-key", farm, key=True)
    workers = WorkerProcesses(env, tmp_path)
    reset_user_home(farm)
    try:
        yield sessions, workers, env
    finally:
        workers.close()
        await engine.dispose()


async def test_killed_worker_resumes_at_the_addon_it_was_installing(
    temporal_client: Client, farm: SSHFarm, setup: tuple[SessionFactory, WorkerProcesses, dict[str, str]]
) -> None:
    sessions, workers, env = setup
    host = farm.add_hosts(1)[0]
    node_id = f"kill-test-{uuid.uuid4().hex[:6]}"
    now = utcnow()
    async with sessions() as session, session.begin():
        session.add(
            Node(
                id=node_id,
                hostname="kill-test",
                node_name="kill-test",
                private_ip=host.address,
                port=host.port,
                labels={},
                taints=[],
                flavor_id="this-machine",
                template_id="with-slow",
                ssh_secret_id="ssh-key",
                step="reach",
                addons_done=[],
                created_at=now,
                updated_at=now,
            )
        )
    first = workers.start()
    handle = await temporal_client.start_workflow(
        NodeWorkflow.run,
        NodeWorkflowInput(
            node_id=node_id,
            ssh_queue=env["PRIMUS_QUEUE_SSH"],
            timings=NodeTimings(
                connect_timeout=3, command_timeout=60, heartbeat_timeout=3, retry_interval=0.5
            ),
        ),
        id=workflow_id(node_id),
        task_queue=env["PRIMUS_QUEUE_CONTROL"],
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(RESOURCE_TYPE, "node"), SearchAttributePair(RESOURCE_ID, node_id)]
        ),
    )

    async def slow_addon_running() -> bool:
        described = await handle.describe()
        details: list[Any] = []
        for pending in described.raw_description.pending_activities:
            if pending.heartbeat_details.payloads:
                details.append(json.loads(pending.heartbeat_details.payloads[0].data))
        return (
            count_runs(farm, "slow-addon") == 1
            and {"step": "InstallingAddons", "index": 1, "addon": "slow-addon"} in details
        )

    await until(slow_addon_running)
    # what the Temporal UI shows: node id and step as search attributes, the step as a query
    described = await handle.describe()
    assert described.typed_search_attributes.get(RESOURCE_ID) == node_id
    assert described.typed_search_attributes.get(PHASE) == "InstallingAddons"
    assert await handle.query(NodeWorkflow.current_step) == "InstallingAddons"
    assert count_runs(farm, "ok-addon") == 1

    first.send_signal(signal.SIGKILL)
    first.wait()
    workers.start()

    async def ready() -> bool:
        async with sessions() as session:
            node = await session.get(Node, node_id)
            return bool(node is not None and node.phase == READY and not node.step)

    await until(ready, within=60)
    assert count_runs(farm, "ok-addon") == 1  # finished before the kill: not redone
    assert count_runs(farm, "slow-addon") == 2  # interrupted: run again on the new worker
    assert count_runs(farm, "second-addon") == 1
    async with sessions() as session:
        node = await session.get(Node, node_id)
        assert node is not None and node.addons_done == ["ok-addon", "slow-addon", "second-addon"]
        assert node.is_addons_installed
        lines = [
            row.line
            for row in (
                await session.execute(
                    OperationLog.__table__.select().where(
                        OperationLog.resource_type == "node", OperationLog.resource_id == node_id
                    )
                )
            ).all()
        ]
    assert "resuming addon installation at #2" in lines
    assert "slow-addon finished" in lines
    assert await handle.query(NodeWorkflow.current_step) == READY

    await replay_and_keep(handle, [NodeWorkflow], "node-worker-killed-mid-addon")
