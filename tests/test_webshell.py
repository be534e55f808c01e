"""The web shell end to end: a WebSocket client (`websockets`) against the API as `primus-safe
api` serves it (uvicorn on a loopback port), a shell in a running HostDriver pod on an sshd test
host, and the session records."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from sqlalchemy import select, update
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from db.users import User
from db.workspaces import WorkspaceManager
from primus_safe.serve import ApiServer, RedactQueryTokens, api_server
from tests.conftest import Platform, login, register
from tests.fixtures.polling import until
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.workloads import WL, add_host_cluster, add_workspace, submit, wait_phase, workload_body

SSH_PORT = 16520
HTTP_PORT = 16521
IDLE_HTTP_PORT = 16522
SESSIONS = "/api/v1/webshell/sessions"


farm, hosts = farm_fixtures(SSH_PORT, 1)


@contextlib.asynccontextmanager
async def serving(server: ApiServer) -> AsyncIterator[None]:
    task = asyncio.create_task(server.serve())
    try:
        await until(lambda: _started(server, task), within=30)
        assert not task.done(), "uvicorn stopped during start-up"
        yield
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, timeout=30)


async def _started(server: ApiServer, task: asyncio.Task[None]) -> bool:
    return server.started or task.done()


@pytest.fixture(scope="module")
async def shell_url(platform: Platform) -> AsyncIterator[str]:
    """The API served as `primus-safe api` serves it, on the platform's database and Temporal."""
    async with serving(api_server(platform.settings, "127.0.0.1", HTTP_PORT)):
        yield f"ws://127.0.0.1:{HTTP_PORT}"


@dataclass
class Pod:
    workload_id: str
    pod: str
    workspace_id: str
    owner: dict[str, str]
    owner_token: str

    def path(self, **query: object) -> str:
        text = "&".join(f"{k}={v}" for k, v in query.items())
        return f"{WL}/{self.workload_id}/pods/{self.pod}/webshell" + (f"?{text}" if text else "")


@pytest.fixture
async def pod(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    platform: Platform,
    farm: SSHFarm,
    hosts: list[SSHHost],
    alice: dict[str, str],
) -> AsyncIterator[Pod]:
    """A running pod of alice's workload in a workspace where bob is a member too."""
    await register(api, "bob")
    cluster = await add_host_cluster(platform, farm, hosts)
    workspace_id = await add_workspace(api, admin, cluster, "shell")
    async with platform.state.sessions() as session, session.begin():
        await session.execute(
            update(User).where(User.name.in_(["alice", "bob"])).values(workspaces=[workspace_id])
        )
    body = workload_body(workspace_id, "sleep 600", resource={"cpu": "0", "memory": "64Mi"})
    workload_id = await submit(api, alice, body)
    detail = await wait_phase(api, alice, workload_id, "Running", "Failed")
    assert detail["phase"] == "Running", detail
    token = alice["Authorization"].removeprefix("Bearer ")
    pod_id = detail["pods"][0]["podId"]
    yield Pod(workload_id, pod_id, workspace_id, alice, token)
    await api.post(f"{WL}/{workload_id}/stop", headers=admin)

    async def pod_process_gone() -> bool:  # a stopped workload's pods are removed after Stopped
        found = await asyncio.create_subprocess_exec(
            "pgrep", "-f", f"primus-pod:.*/{pod_id}$", stdout=asyncio.subprocess.DEVNULL
        )
        return await found.wait() == 1

    await until(pod_process_gone, within=60)


def _open(url: str, path: str, headers: dict[str, str] | None = None) -> Any:
    return connect(url + path, additional_headers=headers or {}, proxy=None, open_timeout=20)


async def read_until(ws: ClientConnection, marker: bytes, within: float = 15) -> bytes:
    """Output frames (all binary) until `marker` has arrived."""
    out = b""
    deadline = time.monotonic() + within
    while marker not in out:
        frame = await asyncio.wait_for(ws.recv(), timeout=max(0.1, deadline - time.monotonic()))
        assert isinstance(frame, bytes), f"a text frame from the server: {frame!r}"
        out += frame
    return out


async def refusal(url: str, path: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, Any]]:
    """The HTTP answer to an upgrade the server refuses."""
    with pytest.raises(InvalidStatus) as refused:
        async with _open(url, path, headers):
            pass
    response = refused.value.response
    return response.status_code, json.loads(response.body or b"{}")


async def closed(ws: ClientConnection, within: float = 15) -> None:
    with contextlib.suppress(ConnectionClosed):
        while True:
            await asyncio.wait_for(ws.recv(), timeout=within)


async def test_owner_runs_commands_resizes_and_exits(shell_url: str, pod: Pod) -> None:
    async with _open(shell_url, pod.path(cmd="bash", rows=30, cols=100), pod.owner) as ws:
        await ws.send(b'echo "product=$((6*7)) tty=$(tty | cut -c1-8)"; echo "size=$(stty size)"\n')
        out = await read_until(ws, b"size=30 100")
        assert b"product=42 tty=/dev/pts" in out
        # the contract's JSON message, sent as a binary frame like the input
        await ws.send(json.dumps({"type": "resize", "rows": 40, "cols": 120}).encode())
        await ws.send(b'echo "size=$(stty size)"\n')
        await read_until(ws, b"size=40 120")
        # upstream's text frame: RESIZE <cols> <rows>
        await ws.send("RESIZE 132 43")
        await ws.send(b'echo "size=$(stty size)"\n')
        await read_until(ws, b"size=43 132")
        await ws.send(b"exit 3\n")
        await closed(ws)
        assert ws.close_code == 1000
        assert ws.close_reason == "shell exited with code 3"


async def test_shell_falls_back_and_defaults_to_sh(shell_url: str, pod: Pod) -> None:
    # no zsh on the test host: bash runs instead
    async with _open(shell_url, pod.path(cmd="zsh"), pod.owner) as ws:
        await ws.send(b'echo "exe=$(basename "$(readlink /proc/$$/exe)")."\n')
        await read_until(ws, b"exe=bash.")
    # no cmd: sh (the contract's default), sized 40x120 by default
    async with _open(shell_url, pod.path(), pod.owner) as ws:
        await ws.send(b'echo "bash=[$BASH_VERSION] size=$(stty size)"\n')
        await read_until(ws, b"bash=[] size=40 120")


async def test_who_may_open_a_shell(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, shell_url: str, pod: Pod
) -> None:
    bob = await login(api, "bob", "plum-kettle9")
    await register(api, "carol")
    carol = await login(api, "carol", "plum-kettle9")
    # bob is a member of the workspace, but not the owner
    status, body = await refusal(shell_url, pod.path(), bob)
    assert status == 403 and body["errorCode"] == "Primus.00003", body
    assert "owner" in body["errorMessage"]
    # carol may not use the workspace: the workload does not exist for her
    status, body = await refusal(shell_url, pod.path(), carol)
    assert status == 404 and pod.workload_id in body["errorMessage"], body
    # no token, a bad token
    assert (await refusal(shell_url, pod.path()))[0] == 401
    assert (await refusal(shell_url, pod.path(token="nope")))[0] == 401
    # unknown pod, wrong namespace, bad parameters
    other = Pod(pod.workload_id, pod.pod + "x", pod.workspace_id, pod.owner, pod.owner_token)
    status, body = await refusal(shell_url, other.path(), pod.owner)
    assert status == 404 and other.pod in body["errorMessage"], body
    assert (await refusal(shell_url, pod.path(namespace="elsewhere"), pod.owner))[0] == 404
    status, body = await refusal(shell_url, pod.path(cmd="fish"), pod.owner)
    assert status == 400 and "cmd" in body["errorMessage"], body
    assert (await refusal(shell_url, pod.path(rows=0), pod.owner))[0] == 400
    # a manager of the workspace may, and so may an admin
    async with platform.state.sessions() as session, session.begin():
        bob_id = await session.scalar(select(User.id).where(User.name == "bob"))
        assert bob_id is not None
        session.add(WorkspaceManager(workspace_id=pod.workspace_id, user_id=bob_id))
    for headers in (bob, admin):
        async with _open(shell_url, pod.path(namespace=pod.workspace_id), headers) as ws:
            await ws.send(b"echo who=$((40+2))\n")
            await read_until(ws, b"who=42")


async def test_token_by_query_parameter_and_cookie(shell_url: str, pod: Pod) -> None:
    async with _open(shell_url, pod.path(token=pod.owner_token)) as ws:
        await ws.send(b"echo q=$((1+1))\n")
        await read_until(ws, b"q=2")
    async with _open(shell_url, pod.path(), {"Cookie": f"Token={pod.owner_token}"}) as ws:
        await ws.send(b"echo c=$((2+1))\n")
        await read_until(ws, b"c=3")


async def test_eleventh_session_is_refused(
    api: httpx.AsyncClient, admin: dict[str, str], shell_url: str, pod: Pod
) -> None:
    async with contextlib.AsyncExitStack() as stack:
        shells = [await stack.enter_async_context(_open(shell_url, pod.path(), pod.owner)) for _ in range(10)]
        status, body = await refusal(shell_url, pod.path(), pod.owner)
        assert status == 429 and body["errorCode"] == "Primus.00012", body
        assert "at most 10" in body["errorMessage"]
        # the limit is per user: the admin still opens one
        async with _open(shell_url, pod.path(), admin) as ws:
            await ws.send(b"echo admin=$((7*6))\n")
            await read_until(ws, b"admin=42")
        # once one of alice's ends, she may open another
        await shells[0].close()

        async def freed() -> bool:
            try:
                async with _open(shell_url, pod.path(), pod.owner) as ws:
                    await ws.send(b"echo again=$((5*5))\n")
                    await read_until(ws, b"again=25")
                    return True
            except InvalidStatus as exc:
                assert exc.response.status_code == 429
                return False

        await until(freed, within=15)


async def test_idle_session_is_closed(platform: Platform, pod: Pod) -> None:
    settings = platform.settings.model_copy(update={"webshell_idle_seconds": 1.5})
    async with serving(api_server(settings, "127.0.0.1", IDLE_HTTP_PORT)):
        url = f"ws://127.0.0.1:{IDLE_HTTP_PORT}"
        async with _open(url, pod.path(), pod.owner) as ws:
            # input keeps it open past the idle time...
            for i in range(6):
                await ws.send(f"echo tick={i}\n".encode())
                await asyncio.sleep(0.5)
            await read_until(ws, b"tick=5")
            # ...silence closes it
            started = time.monotonic()
            await closed(ws, within=10)
            assert 1.0 <= time.monotonic() - started <= 6
            assert ws.close_code == 4408
            assert ws.close_reason == "idle: no input for 1.5 s"


async def test_sessions_are_recorded_for_admins(
    api: httpx.AsyncClient, admin: dict[str, str], shell_url: str, pod: Pod
) -> None:
    async with _open(shell_url, pod.path(cmd="sh", container="pytorch"), pod.owner) as ws:
        await ws.send(b"echo rec=$((3*3))\n")
        await read_until(ws, b"rec=9")
        listed = (await api.get(SESSIONS, headers=admin)).json()
        assert listed["totalCount"] == 1 and listed["items"][0]["state"] == "Open", listed
        await ws.send(b"exit\n")
        await closed(ws)
    assert (await refusal(shell_url, pod.path(cmd="fish"), pod.owner))[0] == 400  # refused before any record

    async def ended() -> bool:
        items = (await api.get(SESSIONS, headers=admin)).json()["items"]
        return bool(items) and items[0]["state"] == "Ended"

    await until(ended, within=10)
    # a client that goes away ends its shell too
    async with _open(shell_url, pod.path(), pod.owner) as ws:
        await ws.send(b'echo "pid=$$."\n')
        out = await read_until(ws, b".\r\n")
        pid = out.split(b"pid=")[-1].split(b".")[0].decode()
        assert pid.isdigit(), out

    async def gone() -> bool:
        async with _open(shell_url, pod.path(), pod.owner) as probe:
            await probe.send(f'echo "alive=$(kill -0 {pid} 2>/dev/null && echo 1 || echo 0)."\n'.encode())
            answer = await read_until(probe, b"alive=", within=10)
            while not re.search(rb"alive=[01]\.", answer):
                answer += await read_until(probe, b".", within=10)
            return b"alive=0." in answer

    await until(gone, within=15)
    listed = (await api.get(SESSIONS, headers=admin)).json()
    reasons = [i["endReason"] for i in listed["items"]]
    assert any(r.startswith("client closed (code 1000)") for r in reasons), reasons
    listed = (
        await api.get(SESSIONS, params={"workloadId": pod.workload_id, "limit": 1}, headers=admin)
    ).json()
    assert listed["totalCount"] >= 3 and len(listed["items"]) == 1
    item = (await api.get(SESSIONS, params={"offset": listed["totalCount"] - 1}, headers=admin)).json()[
        "items"
    ][0]
    assert item["userName"] == "alice" and item["userId"].startswith("user-alice")
    assert (item["workloadId"], item["podId"], item["workspaceId"]) == (
        pod.workload_id,
        pod.pod,
        pod.workspace_id,
    )
    assert (item["container"], item["cmd"], item["clientAddress"]) == ("pytorch", "sh", "127.0.0.1")
    assert item["endReason"] == "shell exited with code 0" and item["exitCode"] == 0
    assert item["startTime"] and item["endTime"] and item["durationSeconds"] >= 0
    assert item["inputBytes"] == len(b"echo rec=$((3*3))\n") + len(b"exit\n")
    assert item["outputBytes"] > 0
    # users do not see them
    resp = await api.get(SESSIONS, headers=pod.owner)
    assert resp.status_code == 403, resp.text
    assert (await api.get(SESSIONS, params={"userId": "nobody"}, headers=admin)).json()["totalCount"] == 0


def test_tokens_in_query_strings_are_not_logged(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.webshell.redact")
    logger.addFilter(RedactQueryTokens())
    with caplog.at_level(logging.INFO, logger="test.webshell.redact"):
        logger.info('%s - "WebSocket %s" [accepted]', "127.0.0.1:5", "/x/webshell?cmd=sh&token=s3cr3t&rows=4")
    assert "s3cr3t" not in caplog.text
    assert "/x/webshell?cmd=sh&token=***&rows=4" in caplog.text
