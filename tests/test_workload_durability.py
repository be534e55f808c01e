"""A workload survives its worker being killed and the Temporal server restarting mid-run, and
its entry point runs exactly once (it appends a line to a file on the node: the test counts).

Own Temporal dev server (persisted to a file, so it can restart) and a worker in a separate
process (so it can be SIGKILLed); the API runs in-process against the same server."""

from __future__ import annotations

import os
import shutil
import signal
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from api.app import create_app
from api.state import AppState
from db.migrate import upgrade
from primus_safe.bootstrap import ensure_admin
from primus_safe.embedded import TemporalDevServer
from tests.conftest import ADMIN_PASSWORD, Platform, login, make_settings
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.worker_processes import WorkerProcesses, worker_env
from tests.fixtures.workloads import WL, add_host_cluster, add_workspace, submit, wait_phase, workload_body
from workflows.workload import WorkloadWorkflow

SSH_PORT = 16474
TEMPORAL_PORT = 17320
TEMPORAL_UI_PORT = 17321


farm, hosts = farm_fixtures(SSH_PORT, 2)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory the sshd hosts' login user can write (pytest's tmp dirs are root-only)."""
    path = Path(tempfile.mkdtemp(prefix="primus-runs-"))
    path.chmod(0o777)
    try:
        yield path
    finally:
        shutil.rmtree(path, ignore_errors=True)


def temporal_server(data_dir: Path) -> TemporalDevServer:
    return TemporalDevServer(data_dir=data_dir, port=TEMPORAL_PORT, ui_port=TEMPORAL_UI_PORT)


@pytest.fixture
async def world(tmp_path: Path) -> AsyncIterator[tuple[Platform, WorkerProcesses, list[TemporalDevServer]]]:
    """API in-process, worker processes, and a Temporal server persisted in `tmp_path/temporal`
    (the test may replace it: every server in the list is stopped afterwards)."""
    temporal_dir = tmp_path / "temporal"
    temporal_dir.mkdir()
    server = temporal_server(temporal_dir)
    await server.start()
    servers = [server]
    url = f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    upgrade(url)
    settings = make_settings(tmp_path, url, server.address)
    env = worker_env(settings, workload_poll_seconds="0.5", scheduler_period_seconds="5")
    workers = WorkerProcesses(env, tmp_path)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            state: AppState = app.state.primus
            await ensure_admin(state.sessions, settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield Platform(settings=settings, state=state, http=http), workers, servers
    finally:
        workers.close()
        for each in servers:
            await each.stop()


async def test_killed_worker_and_restarted_server_run_the_entry_point_exactly_once(
    world: tuple[Platform, WorkerProcesses, list[TemporalDevServer]],
    farm: SSHFarm,
    hosts: list[SSHHost],
    shared_dir: Path,
) -> None:
    platform, workers, servers = world
    api = platform.http
    admin = await login(api, "root", ADMIN_PASSWORD)
    first = workers.start()
    cluster = await add_host_cluster(platform, farm, hosts)
    workspace_id = await add_workspace(api, admin, cluster, "durable")
    counter = shared_dir / "count"
    script = f'echo "$POD_NAME $DISPATCH_COUNT" >> {counter}; sleep 8; echo finished'
    workload_id = await submit(api, admin, workload_body(workspace_id, script, resource={"replica": 2}))
    await wait_phase(api, admin, workload_id, "Running", within=60)

    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    await servers[0].stop()  # the pods keep running on their nodes meanwhile
    restarted = temporal_server(servers[0].data_dir)
    servers.append(restarted)
    await restarted.start()
    workers.start()

    detail = await wait_phase(api, admin, workload_id, "Succeeded", "Failed", within=120)
    assert detail["phase"] == "Succeeded", detail
    assert detail["dispatchCount"] == 1
    lines = counter.read_text().splitlines()
    assert sorted(lines) == sorted([f"{workload_id}-master-0 1", f"{workload_id}-worker-0 1"]), lines
    logs = await api.get(f"{WL}/{workload_id}/pods/{workload_id}-master-0/logs", headers=admin)
    assert logs.json()["logs"] == ["finished"]
    handle = platform.state.temporal.get_workflow_handle(f"workload/{workload_id}")
    await replay_and_keep(handle, [WorkloadWorkflow], "workload-worker-killed-server-restarted")
