"""The `primus-safe` command as a user runs it: real subprocesses, real Temporal, real databases."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import stat
import subprocess
import sysconfig
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from temporalio.client import Client, WorkflowExecutionStatus
from temporalio.testing import WorkflowEnvironment

from primus_safe.embedded import registry_binary
from tests.fixtures import postgres

CLI = os.path.join(sysconfig.get_path("scripts"), "primus-safe")
API_PORT = 18088
TEMPORAL_PORT = 18233
UI_PORT = 18234
REGISTRY_PORT = 18235
API = f"http://127.0.0.1:{API_PORT}"


def clean_env(**extra: str) -> dict[str, str]:
    """The caller's environment without any PRIMUS_* setting, plus `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PRIMUS_")}
    env.update(extra)
    return env


def run_cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    assert os.access(CLI, os.X_OK), f"{CLI} missing: pip install -e ."
    return subprocess.run([CLI, *args], env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class CliProcess:
    """A long-running `primus-safe` command whose output goes to files (a pipe could fill up)."""

    args: list[str]
    env: dict[str, str]
    workdir: Path
    proc: subprocess.Popen[bytes] | None = None
    stdout_path: Path = field(init=False)
    stderr_path: Path = field(init=False)

    def __post_init__(self) -> None:
        run = uuid.uuid4().hex[:6]
        self.stdout_path = self.workdir / f"{self.args[0]}-{run}.out"
        self.stderr_path = self.workdir / f"{self.args[0]}-{run}.err"

    def start(self) -> CliProcess:
        assert os.access(CLI, os.X_OK), f"{CLI} missing: pip install -e ."
        with self.stdout_path.open("wb") as out, self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen([CLI, *self.args], env=self.env, stdout=out, stderr=err)
        return self

    @property
    def stdout(self) -> str:
        return self.stdout_path.read_text(errors="replace")

    def output(self) -> str:
        return f"stdout:\n{self.stdout}\nstderr:\n{self.stderr_path.read_text(errors='replace')[-4000:]}"

    async def wait_ready(self, url: str, within: float = 90) -> None:
        """Poll `url` until it answers 200; fail with the output if the process ends first."""
        assert self.proc is not None
        deadline = time.monotonic() + within
        async with httpx.AsyncClient(timeout=5) as http:
            while time.monotonic() < deadline:
                assert self.proc.poll() is None, f"exited with {self.proc.returncode}\n{self.output()}"
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return
                await asyncio.sleep(0.25)
        raise AssertionError(f"{url} not ready after {within}s\n{self.output()}")

    async def terminate(self, within: float = 60) -> int:
        """SIGTERM by PID and wait for the exit code."""
        assert self.proc is not None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        return await asyncio.to_thread(self.proc.wait, within)

    def kill(self) -> None:
        """Clean-up after a failed test: SIGKILL by PID if still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[CliProcess]]:
    """Every CLI process a test starts; killed by PID (with an orphaned Temporal child) afterwards."""
    started: list[CliProcess] = []
    yield started
    for proc in started:
        proc.kill()
    for pid_file in [*tmp_path.rglob("temporal.pid"), *tmp_path.rglob("registry.pid")]:
        with contextlib.suppress(ValueError, ProcessLookupError):
            os.kill(int(pid_file.read_text()), signal.SIGKILL)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def login(http: httpx.AsyncClient, name: str, password: str) -> dict[str, str]:
    resp = await http.post(f"{API}/api/v1/login", json={"name": name, "password": password})
    assert resp.status_code == 200, resp.text
    return {"Authorization": f"Bearer {resp.json()['token']}"}


async def wait_local_node(
    http: httpx.AsyncClient, admin: dict[str, str], proc: CliProcess, within: float = 180
) -> None:
    """Wait until `up` says the local node, its cluster and the default workspace are ready."""
    deadline = time.monotonic() + within
    while "local node: ready" not in proc.stdout:
        assert "local node: set-up failed" not in proc.stdout, proc.output()
        assert time.monotonic() < deadline, proc.output()
        await asyncio.sleep(0.5)
    workspace = (await http.get(f"{API}/api/v1/workspaces/local-default", headers=admin)).json()
    assert workspace["phase"] == "Running" and workspace["isDefault"] is True, workspace
    node = (await http.get(f"{API}/api/v1/nodes/local", headers=admin)).json()
    assert node["phase"] == "Ready" and node["local"] is True, node


async def test_up_runs_everything_and_keeps_state_across_restarts(
    tmp_path: Path, processes: list[CliProcess]
) -> None:
    data = tmp_path / "data"
    args = [
        "up",
        "--data-dir",
        str(data),
        "--api-port",
        str(API_PORT),
        "--temporal-port",
        str(TEMPORAL_PORT),
        "--ui-port",
        str(UI_PORT),
        "--registry-port",
        str(REGISTRY_PORT),
    ]
    home = tmp_path / "home"  # the local node's commands (hosts cluster directories) run here
    home.mkdir()
    first = CliProcess([*args, "--no-local-node"], clean_env(HOME=str(home)), tmp_path)
    processes.append(first.start())
    await first.wait_ready(f"{API}/readyz")

    password_file = data / "admin-password"
    assert stat.S_IMODE(password_file.stat().st_mode) == 0o600
    assert stat.S_IMODE((data / "secret.key").stat().st_mode) == 0o600
    password = password_file.read_text().strip()
    assert password in first.stdout and str(password_file) in first.stdout
    for url in (f"{API}/api/v1", f"{API}/docs", f"http://127.0.0.1:{UI_PORT}"):
        assert url in first.stdout
    if registry_binary():
        assert f"127.0.0.1:{REGISTRY_PORT}" in first.stdout

    async with httpx.AsyncClient(timeout=30) as http:
        admin = await login(http, "root", password)
        assert (await http.get(f"{API}/api/v1/users/self", headers=admin)).json()["name"] == "root"
        resp = await http.post(f"{API}/api/v1/users", json={"name": "kept-user", "password": "plum-kettle9"})
        assert resp.status_code == 200, resp.text
        assert (await http.get(f"http://127.0.0.1:{UI_PORT}/")).status_code == 200
        assert (await http.get(f"{API}/docs")).status_code == 200
        assert "Local node: off" in first.stdout
        assert (await http.get(f"{API}/api/v1/nodes", headers=admin)).json()["totalCount"] == 0

    temporal = await Client.connect(f"127.0.0.1:{TEMPORAL_PORT}")
    schedules = [s.id async for s in await temporal.list_schedules()]
    assert "system/token-purge" in schedules  # the worker ran
    # a workflow nobody serves stays Running: it must survive the restart
    parked = await temporal.start_workflow("ParkedForRestartTest", id="cli-test-parked", task_queue="nobody")

    children = {pid_file.stem: int(pid_file.read_text()) for pid_file in data.glob("*.pid")}
    expected = {"temporal", "registry"} if registry_binary() else {"temporal"}
    assert set(children) == expected
    assert all(pid_alive(pid) for pid in children.values())
    assert await first.terminate() == 0, first.output()
    for name, pid in children.items():
        assert not pid_alive(pid), f"{name} still running"
        assert not (data / f"{name}.pid").exists()
    assert (data / "temporal.log").stat().st_size > 0

    second = CliProcess(args, clean_env(HOME=str(home)), tmp_path)  # the local node by default
    processes.append(second.start())
    await second.wait_ready(f"{API}/readyz")
    assert "password" not in second.stdout.lower()
    async with httpx.AsyncClient(timeout=30) as http:
        await login(http, "kept-user", "plum-kettle9")
        admin = await login(http, "root", password)
        await wait_local_node(http, admin, second)
        for path in ("nodes", "clusters", "workspaces"):
            assert (await http.get(f"{API}/api/v1/{path}", headers=admin)).json()["totalCount"] == 1

    temporal = await Client.connect(f"127.0.0.1:{TEMPORAL_PORT}")
    assert "system/token-purge" in [s.id async for s in await temporal.list_schedules()]
    described = await temporal.get_workflow_handle(parked.id).describe()
    assert described.status == WorkflowExecutionStatus.RUNNING
    await temporal.get_workflow_handle(parked.id).terminate("test done")
    assert await second.terminate() == 0, second.output()


def test_up_reports_a_busy_temporal_port(tmp_path: Path) -> None:
    """When a port is taken, `up` says which and exits 1 without a traceback or leftovers."""
    import socket

    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", TEMPORAL_PORT))
        busy.listen()
        result = run_cli(
            "up",
            "--data-dir",
            str(tmp_path / "d"),
            "--api-port",
            str(API_PORT),
            "--temporal-port",
            str(TEMPORAL_PORT),
            "--ui-port",
            str(UI_PORT),
            "--registry-port",
            str(REGISTRY_PORT),
            env=clean_env(),
        )
    assert result.returncode == 1, result.stdout + result.stderr
    assert f"127.0.0.1:{TEMPORAL_PORT} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize("command", ["api", "worker"])
def test_refuses_to_start_without_secret_key(tmp_path: Path, command: str) -> None:
    result = run_cli(command, env=clean_env(PRIMUS_DATA_DIR=str(tmp_path)))
    assert result.returncode == 2
    assert "PRIMUS_SECRET_KEY is not set" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout
    assert not (tmp_path / "secret.key").exists()


def test_invalid_setting_is_reported_readably(tmp_path: Path) -> None:
    result = run_cli("api", env=clean_env(PRIMUS_DATA_DIR=str(tmp_path), PRIMUS_API_PORT="not-a-port"))
    assert result.returncode == 2
    assert "api_port" in result.stderr and "Traceback" not in result.stderr


def test_db_upgrade_and_downgrade(tmp_path: Path) -> None:
    db_file = tmp_path / "cli.db"
    env = clean_env(PRIMUS_DATABASE_URL=f"sqlite:///{db_file}")
    result = run_cli("db", "upgrade", env=env)
    assert result.returncode == 0, result.stderr

    def tables() -> set[str]:
        with contextlib.closing(sqlite3.connect(db_file)) as conn:
            rows = conn.execute("SELECT name FROM sqlite_master WHERE type='table'").fetchall()
        return {name for (name,) in rows}

    assert {"users", "user_tokens", "alembic_version"} <= tables()
    result = run_cli("db", "downgrade", "base", env=env)
    assert result.returncode == 0, result.stderr
    assert tables() <= {"alembic_version"}


@pytest.fixture
async def pg_database() -> AsyncIterator[str]:
    with postgres.server_url() as server, postgres.scratch_database(server) as url:
        yield url


async def test_separate_api_and_worker_processes_on_postgresql(
    tmp_path: Path,
    processes: list[CliProcess],
    pg_database: str,
    temporal_env: WorkflowEnvironment,
) -> None:
    """The production shape: migrate + create-admin once, then `api` and `worker` as their own processes."""
    run = uuid.uuid4().hex[:8]
    env = clean_env(
        PRIMUS_DATA_DIR=str(tmp_path),
        PRIMUS_DATABASE_URL=pg_database,
        PRIMUS_TEMPORAL_ADDRESS=temporal_env.client.service_client.config.target_host,
        PRIMUS_SECRET_KEY=Fernet.generate_key().decode(),
        PRIMUS_ADMIN_PASSWORD="deployment-root-password",
        PRIMUS_QUEUE_CONTROL=f"control-{run}",
        PRIMUS_QUEUE_SSH=f"ssh-{run}",
        PRIMUS_QUEUE_IMAGES=f"images-{run}",
        PRIMUS_USER_CLEANUP_TIMEOUT_SECONDS="10",
    )
    assert run_cli("db", "upgrade", env=env).returncode == 0
    created = run_cli("create-admin", env=env)
    assert created.returncode == 0, created.stderr
    assert "PRIMUS_ADMIN_PASSWORD" in created.stdout
    again = run_cli("create-admin", env=env)
    assert again.returncode == 0 and "already exists" in again.stdout

    worker = CliProcess(["worker"], env, tmp_path)
    processes.append(worker.start())
    api = CliProcess(["api", "--no-migrate", "--port", str(API_PORT)], env, tmp_path)
    processes.append(api.start())
    await api.wait_ready(f"{API}/readyz")

    async with httpx.AsyncClient(timeout=30) as http:
        admin = await login(http, "root", "deployment-root-password")
        resp = await http.post(f"{API}/api/v1/users", json={"name": "leaving", "password": "plum-kettle9"})
        user_id = resp.json()["id"]
        assert (await http.delete(f"{API}/api/v1/users/{user_id}", headers=admin)).status_code == 200
    # the clean-up workflow finishes only if the separate worker process serves the control queue
    handle = temporal_env.client.get_workflow_handle(f"user-cleanup/{user_id}")
    await asyncio.wait_for(handle.result(), timeout=60)

    assert await api.terminate() == 0, api.output()
    assert await worker.terminate() == 0, worker.output()
