"""`primus-safe login` and `primus-safe workload ...` against the real API served on a loopback port.

Most commands run in-process (Typer's runner, in a thread so the event loop keeps serving the
API); the login and the live `submit --wait` / `logs -f` run as the real `primus-safe` program.
"""

from __future__ import annotations

import asyncio
import json
import os
import stat
import sysconfig
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
import uvicorn
import yaml
from click.testing import Result
from typer.testing import CliRunner

from api.workflow_calls import tell_scheduler
from domain.scheduling import scheduler_workflow_id
from primus_safe.cli_login import login
from primus_safe.cli_workload import LogFollower, workload_app
from tests.conftest import ADMIN_PASSWORD, Platform
from tests.fixtures.polling import poll_json
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.workloads import WL, add_host_cluster, command
from tests.fixtures.workloads import add_workspace as add_host_workspace
from tests.fixtures.workspaces import add_workspace

PORT = 18120
BASE = f"http://127.0.0.1:{PORT}"
SSH_PORT = 16480
CLI = os.path.join(sysconfig.get_path("scripts"), "primus-safe")

commands = typer.Typer()
commands.command("login")(login)
commands.add_typer(workload_app, name="workload")


@pytest.fixture
async def served(platform: Platform, api: httpx.AsyncClient) -> AsyncIterator[str]:
    """The platform's app on 127.0.0.1:PORT (its lifespan is the platform fixture's)."""
    app = platform.http._transport.app  # type: ignore[attr-defined]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=PORT, lifespan="off", log_config=None))
    serving = asyncio.create_task(server.serve())
    for _ in range(500):
        if server.started:
            break
        await asyncio.sleep(0.02)
    assert server.started, "uvicorn did not start"
    try:
        yield BASE
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


@pytest.fixture
def config_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private XDG_CONFIG_HOME for the in-process commands and the subprocesses."""
    home = tmp_path / "config"
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home))
    return home


async def cli(*args: str, stdin: str | None = None) -> Result:
    """Run a command in-process, in a thread (the API it calls is served by this event loop)."""
    return await asyncio.to_thread(CliRunner().invoke, commands, list(args), input=stdin)


async def program(*args: str, stdin: str = "", within: float = 90) -> tuple[int, str, str]:
    """Run the installed `primus-safe` program; returns (exit code, stdout, stderr)."""
    proc = await asyncio.create_subprocess_exec(
        CLI,
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "COLUMNS": "200"},
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), within)
    return int(proc.returncode or 0), out.decode(), err.decode()


async def logged_in(base: str) -> None:
    result = await cli("login", "--api", base, "--user", "root", "--password-stdin", stdin=ADMIN_PASSWORD)
    assert result.exit_code == 0, result.output


# --- login ---------------------------------------------------------------------------------------


async def test_login_saves_the_token_privately_and_never_prints_it(
    served: str, config_home: Path, platform: Platform
) -> None:
    code, out, err = await program(
        "login", "--api", served, "--user", "root", "--password-stdin", stdin=ADMIN_PASSWORD + "\n"
    )
    assert code == 0, err
    path = config_home / "primus-safe" / "login.json"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    saved = json.loads(path.read_text())
    assert saved["api"] == served
    assert saved["token"] not in out + err
    assert "Logged in" in out
    resp = await platform.http.get(WL, headers={"Authorization": f"Bearer {saved['token']}"})
    assert resp.status_code == 200

    code, _, err = await program(
        "login", "--api", served, "--user", "root", "--password-stdin", stdin="bad\n"
    )
    assert code == 1
    assert "login failed: the user name or password is incorrect" in err
    assert json.loads(path.read_text()) == saved  # a failed login keeps the previous one


async def test_commands_without_a_login_say_how_to_log_in(config_home: Path) -> None:
    result = await cli("workload", "list")
    assert result.exit_code == 1
    assert "run primus-safe login first" in result.stderr


# --- workloads on sshd test hosts ----------------------------------------------------------------


farm, hosts = farm_fixtures(SSH_PORT, 1)


@pytest.fixture
async def empty_workspace(
    platform: Platform, api: httpx.AsyncClient, farm: SSHFarm, hosts: list[SSHHost]
) -> AsyncIterator[str]:
    """A Running workspace without nodes (on a hosts cluster, whose driver needs a node to remove
    pods), and the scheduler its workflow would start: workloads there wait with a reason."""
    cluster = await add_host_cluster(platform, farm, hosts)
    workspace_id = f"cli-{uuid.uuid4().hex[:6]}"
    await add_workspace(platform.state.sessions, workspace_id, cluster_id=cluster.cluster_id)
    await tell_scheduler(
        platform.state.temporal,
        workspace_id=workspace_id,
        reason="test workspace",
        task_queue=platform.settings.queues.control,
        period_seconds=platform.settings.scheduler_period_seconds,
    )
    yield workspace_id
    await platform.state.temporal.get_workflow_handle(scheduler_workflow_id(workspace_id)).terminate()


async def test_submit_list_get_stop_delete(
    served: str,
    config_home: Path,
    platform: Platform,
    admin: dict[str, str],
    tmp_path: Path,
    empty_workspace: str,
) -> None:
    ws = empty_workspace
    await logged_in(served)
    body = {
        "displayName": "from-file",
        "workspaceId": ws,
        "image": "none",
        "entryPoint": command("echo from a file"),
        "resource": {"cpu": "1", "memory": "1Gi", "replica": 2},
    }
    spec = tmp_path / "job.yaml"
    spec.write_text(yaml.safe_dump(body))
    from_file = await cli("workload", "submit", str(spec))
    assert from_file.exit_code == 0, from_file.output
    file_id = from_file.stdout.strip()
    assert file_id.startswith("from-file-")

    from_command = await cli(
        "workload", "submit", "--command", "python train.py", "--workspace", ws,
        "--replica", "1", "--env", "A=1", "--env", "B=x=y",
    )  # fmt: skip
    assert from_command.exit_code == 0, from_command.output
    command_id = from_command.stdout.strip()
    assert command_id.startswith("python-train-")
    detail = (await platform.http.get(f"{WL}/{command_id}", headers=admin)).json()
    assert detail["env"] == {"A": "1", "B": "x=y"}
    assert detail["groupVersionKind"]["kind"] == "PyTorchJob"
    assert detail["resource"]["cpu"] == "1" and detail["resource"]["memory"] == "1Gi"

    listed = await cli("workload", "list", "--workspace", ws)
    assert listed.exit_code == 0, listed.output
    header, *rows = listed.stdout.splitlines()
    assert header.split() == ["ID", "KIND", "PHASE", "WORKSPACE", "REPLICAS", "AGE", "RUNTIME", "MESSAGE"]
    by_id = {row.split()[0]: row.split() for row in rows}
    assert set(by_id) == {file_id, command_id}
    assert by_id[file_id][1:5] == ["PyTorchJob", "Pending", ws, "2"]

    waiting = await poll_json(
        platform.http, admin, f"{WL}/{file_id}", lambda b: bool(b["message"]) and b["schedulerOrder"] > 0
    )
    shown = await cli("workload", "get", file_id)
    assert shown.exit_code == 0, shown.output
    parsed = yaml.safe_load(shown.stdout)
    assert parsed["phase"] == "Pending"
    assert parsed["message"] == waiting["message"]
    assert parsed["schedulerOrder"] == waiting["schedulerOrder"]
    listed = await cli("workload", "list", "--workspace", ws)
    assert f"#{waiting['schedulerOrder']} {waiting['message']}" in listed.stdout
    as_json = await cli("workload", "get", file_id, "--json")
    assert json.loads(as_json.stdout)["workloadId"] == file_id

    stopped = await cli("workload", "stop", file_id)
    assert stopped.exit_code == 0, stopped.output
    assert stopped.stdout.strip() == f"Stopped {file_id}."
    shown = await cli("workload", "get", file_id, "--json")
    assert json.loads(shown.stdout)["phase"] == "Stopped"
    only_pending = await cli("workload", "list", "--phase", "Pending")
    assert file_id not in only_pending.stdout and command_id in only_pending.stdout

    deleted = await cli("workload", "delete", command_id)
    assert deleted.exit_code == 0, deleted.output
    listed = await cli("workload", "list", "--workspace", ws)
    assert command_id not in listed.stdout and file_id in listed.stdout


async def test_api_errors_exit_1_with_the_api_message(served: str, config_home: Path, tmp_path: Path) -> None:
    await logged_in(served)
    missing = await cli("workload", "get", "no-such-workload")
    assert missing.exit_code == 1
    assert "no-such-workload" in missing.stderr and "not found" in missing.stderr.lower()
    bad = await cli("workload", "submit", "--command", "true", "--workspace", "nope")
    assert bad.exit_code == 1
    assert bad.stderr.strip() == "error: Workspace nope not found."
    spec = tmp_path / "list.yaml"
    spec.write_text("- not a mapping\n")
    wrong = await cli("workload", "submit", str(spec))
    assert wrong.exit_code == 2 and "must hold one mapping" in wrong.stderr


# --- a workload that runs ------------------------------------------------------------------------


async def test_submit_wait_then_logs_follow_prints_each_line_once(
    served: str,
    config_home: Path,
    platform: Platform,
    api: httpx.AsyncClient,
    admin: dict[str, str],
    farm: SSHFarm,
    hosts: list[SSHHost],
) -> None:
    cluster = await add_host_cluster(platform, farm, hosts)
    workspace_id = await add_host_workspace(api, admin, cluster, "cli-run")
    code, _, err = await program(
        "login", "--api", served, "--user", "root", "--password-stdin", stdin=ADMIN_PASSWORD
    )
    assert code == 0, err
    script = "echo first; sleep 3; echo second"
    code, out, err = await program(
        "workload", "submit", "--command", script, "--workspace", workspace_id, "--name", "two", "--wait"
    )
    assert code == 0, err
    workload_id = out.strip()
    assert workload_id.startswith("two-")
    assert "Running" in err or "Succeeded" in err, err  # the status lines, on stderr
    code, out, err = await program("workload", "logs", workload_id, "-f")
    assert code == 0, err
    assert out == "first\nsecond\n"
    detail: dict[str, Any] = (await api.get(f"{WL}/{workload_id}", headers=admin)).json()
    assert detail["phase"] == "Succeeded"
    code, out, _ = await program("workload", "logs", workload_id, "--tail", "1")
    assert code == 0 and out == "second\n"


# --- finding new lines in tail windows -----------------------------------------------------------


def test_log_follower_counts_while_the_whole_log_is_known() -> None:
    follower = LogFollower()
    assert follower.new_lines(["a", "a"], 10) == ["a", "a"]
    assert follower.new_lines(["a", "a", "a"], 10) == ["a"]  # repeated lines are still new
    assert follower.new_lines(["b"], 10) == ["b"]  # shorter: a new run's log


def test_log_follower_aligns_truncated_windows_on_their_overlap() -> None:
    follower = LogFollower()
    assert follower.new_lines(["3", "4"], 2) == ["3", "4"]  # a tail of a longer log
    assert follower.new_lines(["1", "2", "3", "4", "5"], 10) == ["5"]
    assert follower.new_lines(["5", "6", "7"], 3) == ["6", "7"]
    assert follower.new_lines(["x", "y", "z"], 3) == ["x", "y", "z"]  # no overlap: all new
