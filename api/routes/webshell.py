"""The web shell: `GET /workloads/{id}/pods/{podId}/webshell` upgrades to a WebSocket relaying a
TTY in the pod, and `GET /webshell/sessions` lists the session records (admins).

Everything that can refuse a session happens before the upgrade is accepted, so a refusal is an
HTTP answer with the usual error body (401, 403, 404, 400, 409, 429, 503): the token (header,
`Token` cookie or `token` query parameter), the caller's right (the workload's owner, the
workspace's managers, admins), the pod (recorded, running, in `namespace`), the per-user limit
and opening the terminal itself. The terminal comes from the injected `TerminalOpener` (the API
never imports a driver; `primus_safe.webshell` runs the blocking driver calls in threads).

After the upgrade: client frames (binary or text) are keystrokes, except resize messages
(`domain.webshell.client_frame`); the shell's output goes back as binary frames. The session
ends when the shell exits (close 1000), the client closes, or no input came for
`PRIMUS_WEBSHELL_IDLE_SECONDS` (close 4408); its record says which.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from typing import Annotated

from fastapi import APIRouter, Query, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from api.deps import Admin, Caller, Paging, Session, caller_for_token, connection_token
from api.errors import error_response
from api.routes.workspaces import access
from api.schemas import webshell as views
from api.schemas.common import ERROR_RESPONSES, ListResponse
from api.state import AppState
from db import webshell_sessions as records
from db.webshell_sessions import WebShellSession
from db.workloads import get_workload
from db.workspaces import get_workspace
from domain.errors import Conflict, Forbidden, Invalid, LimitReached, NotFound, PrimusError, Unavailable
from domain.errors import not_found as kind_not_found
from domain.pods import PodStatus
from domain.timefmt import format_time, utcnow
from domain.webshell import (
    HEARTBEAT_SECONDS,
    MAX_COLS,
    MAX_ROWS,
    SHELLS,
    Resize,
    ShellTarget,
    Terminal,
    client_frame,
)
from domain.workloads import main_container

log = logging.getLogger(__name__)

router = APIRouter(tags=["webshell"], responses=ERROR_RESPONSES)

TOKEN_PARAM = "token"
DEFAULT_ROWS = 40
DEFAULT_COLS = 120
CLOSE_SHELL_EXITED = 1000
CLOSE_ERROR = 1011
CLOSE_IDLE = 4408


def _size(params: dict[str, str], name: str, default: int, top: int) -> int:
    text = params.get(name, "")
    if text == "":
        return default
    if not text.isdigit() or not 1 <= int(text) <= top:
        raise Invalid(f"{name}: must be an integer from 1 to {top}")
    return int(text)


@dataclass(frozen=True)
class _Request:
    namespace: str
    container: str
    cmd: str
    rows: int
    cols: int


def _request(params: dict[str, str]) -> _Request:
    cmd = params.get("cmd") or "sh"
    if cmd not in SHELLS:
        raise Invalid(f"cmd: must be one of {', '.join(SHELLS)}")
    return _Request(
        namespace=params.get("namespace", ""),
        container=params.get("container", ""),
        cmd=cmd,
        rows=_size(params, "rows", DEFAULT_ROWS, MAX_ROWS),
        cols=_size(params, "cols", DEFAULT_COLS, MAX_COLS),
    )


async def _target(
    session: Session, caller: Caller, workload_id: str, pod_id: str, req: _Request
) -> ShellTarget:
    """Where the caller may open the shell; the reason as an error when not."""
    workload = await get_workload(session, workload_id=workload_id)
    if workload is None:
        raise kind_not_found("Workload", workload_id)
    workspace = await get_workspace(session, workspace_id=workload.workspace_id)
    role = await access(session, caller, workspace) if workspace is not None else ""
    if not role and caller.is_admin:
        role = "admin"
    if not role:
        raise kind_not_found("Workload", workload_id)
    if role not in ("admin", "manager") and workload.user_id != caller.id:
        raise Forbidden(
            f"Only the owner of workload {workload_id}, its workspace's managers and administrators "
            "may open a shell in its pods"
        )
    if req.namespace and req.namespace != workload.workspace_id:
        raise NotFound("Pod", pod_id, message=f"pod {pod_id} not found in namespace {req.namespace}")
    pod = next((PodStatus.model_validate(p) for p in workload.pods if p.get("name") == pod_id), None)
    if pod is None:
        raise NotFound("Pod", pod_id)
    if pod.phase != "Running":
        raise Conflict(f"pod {pod_id} is not running (phase {pod.phase})")
    container = req.container or main_container(workload.kind)
    if pod.containers and container not in {c.name for c in pod.containers}:
        raise NotFound("Container", container, message=f"container {container} not found in pod {pod_id}")
    return ShellTarget(
        cluster_id=workload.cluster_id,
        namespace=workload.workspace_id,
        pod=pod_id,
        node=pod.node,
        container=container,
        cmd=req.cmd,
        rows=req.rows,
        cols=req.cols,
    )


async def _deny(websocket: WebSocket, exc: PrimusError) -> None:
    """Answer the upgrade request with the error (status and body) instead of accepting it."""
    headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
    response = error_response(exc.status, exc.code, exc.error_message, headers)
    try:
        await websocket.send_denial_response(response)
    except RuntimeError:  # a server without the denial extension: close before accepting (403)
        await websocket.close(code=1008, reason=exc.error_message[:120])


async def _finish(
    state: AppState,
    record_id: int,
    reason: str,
    *,
    exit_code: int | None = None,
    input_bytes: int = 0,
    output_bytes: int = 0,
) -> None:
    async with state.sessions() as session, session.begin():
        await records.finish(
            session,
            session_id=record_id,
            now=utcnow(),
            reason=reason,
            exit_code=exit_code,
            input_bytes=input_bytes,
            output_bytes=output_bytes,
        )


async def _open(websocket: WebSocket, workload_id: str, pod_id: str) -> tuple[int, Terminal]:
    """Authorise, record and open the terminal; raises the refusal."""
    state: AppState = websocket.app.state.primus
    req = _request(dict(websocket.query_params))
    async with state.sessions() as session:
        caller = await caller_for_token(session, connection_token(websocket, TOKEN_PARAM))
        target = await _target(session, caller, workload_id, pod_id, req)
    if state.terminals is None:
        raise Unavailable("the web shell is not available in this API process")
    now = utcnow()
    row = WebShellSession(
        user_id=caller.id,
        user_name=caller.user.name,
        workload_id=workload_id,
        workspace_id=target.namespace,
        cluster_id=target.cluster_id,
        pod=pod_id,
        node=target.node,
        container=target.container,
        cmd=target.cmd,
        client=websocket.client.host if websocket.client else "",
        started_at=now,
        alive_at=now,
        end_reason="",
        input_bytes=0,
        output_bytes=0,
    )
    limit = state.settings.webshell_max_sessions_per_user
    async with state.sessions() as session, session.begin():
        started = await records.start(session, row, limit=limit)
    if not started:
        raise LimitReached(f"at most {limit} web shell sessions per user may be open at once")
    try:
        terminal = await state.terminals.open(target)
    except BaseException as exc:
        reason = exc.error_message if isinstance(exc, PrimusError) else f"could not open: {exc!r}"
        await asyncio.shield(_finish(state, row.id, f"refused: {reason}"))
        raise
    return row.id, terminal


@router.websocket("/workloads/{WorkloadId}/pods/{PodId}/webshell")
async def webshell(websocket: WebSocket, WorkloadId: str, PodId: str) -> None:
    """A TTY in the pod over a WebSocket (see the module docstring)."""
    try:
        record_id, terminal = await _open(websocket, WorkloadId, PodId)
    except PrimusError as exc:
        await _deny(websocket, exc)
        return
    state: AppState = websocket.app.state.primus
    relay = _Relay(websocket, terminal, state, record_id)
    try:
        await websocket.accept()
        await relay.run()
    finally:
        await asyncio.shield(relay.end())


class _Relay:
    """Pumps frames between the WebSocket and the terminal until one side ends or input stops."""

    def __init__(self, websocket: WebSocket, terminal: Terminal, state: AppState, record_id: int) -> None:
        self._ws = websocket
        self._terminal = terminal
        self._state = state
        self._record_id = record_id
        self._idle = state.settings.webshell_idle_seconds
        self._loop = asyncio.get_running_loop()
        self._last_input = self._loop.time()
        self._input_bytes = 0
        self._output_bytes = 0
        self._reason = "ended by the server"
        self._close_code: int | None = None

    async def run(self) -> None:
        tasks = [
            asyncio.create_task(self._from_client()),
            asyncio.create_task(self._from_shell()),
            asyncio.create_task(self._watch()),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
            for task in done:
                if not task.cancelled() and task.exception() is not None:
                    exc = task.exception()
                    if isinstance(exc, WebSocketDisconnect | OSError):
                        self._reason = f"client disconnected (code {getattr(exc, 'code', 1006)})"
                    else:
                        log.error("web shell relay failed", exc_info=exc)
                        self._reason, self._close_code = f"relay failed: {exc!r}", CLOSE_ERROR
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _from_client(self) -> None:
        while True:
            message = await self._ws.receive()
            if message["type"] == "websocket.disconnect":
                self._reason = f"client closed (code {message.get('code', 1000)})"
                return
            data = message.get("bytes")
            if data is None:
                data = message.get("text")
            if data is None:
                continue
            self._last_input = self._loop.time()
            frame = client_frame(data)
            if isinstance(frame, Resize):
                await self._terminal.resize(frame.rows, frame.cols)
            elif frame:
                self._input_bytes += len(frame)
                await self._terminal.write(frame)

    async def _from_shell(self) -> None:
        while True:
            data = await self._terminal.read()
            if not data:
                code = self._terminal.exit_code
                self._reason = "shell exited" + (f" with code {code}" if code is not None else "")
                self._close_code = CLOSE_SHELL_EXITED
                return
            self._output_bytes += len(data)
            await self._ws.send_bytes(data)

    async def _watch(self) -> None:
        """Close an idle session; mark the record alive meanwhile."""
        next_beat = self._loop.time() + HEARTBEAT_SECONDS
        while True:
            now = self._loop.time()
            idle_at = self._last_input + self._idle
            if now >= idle_at:
                self._reason = f"idle: no input for {self._idle:g} s"
                self._close_code = CLOSE_IDLE
                return
            if now >= next_beat:
                async with self._state.sessions() as session, session.begin():
                    await records.mark_alive(session, session_id=self._record_id, now=utcnow())
                next_beat = now + HEARTBEAT_SECONDS
            await asyncio.sleep(max(0.05, min(idle_at, next_beat) - now))

    async def end(self) -> None:
        """Close the terminal and the socket, and record how the session ended."""
        with contextlib.suppress(Exception):
            await self._terminal.close()
        if self._close_code is not None and self._ws.application_state == WebSocketState.CONNECTED:
            with contextlib.suppress(Exception):
                await self._ws.close(code=self._close_code, reason=self._reason[:120])
        await _finish(
            self._state,
            self._record_id,
            self._reason,
            exit_code=self._terminal.exit_code,
            input_bytes=self._input_bytes,
            output_bytes=self._output_bytes,
        )


# --- the records ---------------------------------------------------------------------------------


def session_item(row: WebShellSession) -> views.WebShellSessionItem:
    now = utcnow()
    state = row.state(now)
    until = row.ended_at or (row.alive_at if state == "Lost" else now)
    return views.WebShellSessionItem(
        id=row.id,
        user_id=row.user_id,
        user_name=row.user_name,
        workload_id=row.workload_id,
        workspace_id=row.workspace_id,
        cluster_id=row.cluster_id,
        pod_id=row.pod,
        node_name=row.node,
        container=row.container,
        cmd=row.cmd,
        client_address=row.client,
        state=state,
        start_time=format_time(row.started_at),
        end_time=format_time(row.ended_at),
        duration_seconds=max(0, int((until - row.started_at).total_seconds())),
        end_reason=row.end_reason,
        exit_code=row.exit_code,
        input_bytes=row.input_bytes,
        output_bytes=row.output_bytes,
    )


@router.get(
    "/webshell/sessions",
    response_model=ListResponse[views.WebShellSessionItem],
    summary="Web shell sessions (admins)",
)
async def list_webshell_sessions(
    _: Admin,
    session: Session,
    page: Paging,
    user_id: Annotated[str, Query(alias="userId", max_length=80)] = "",
    workload_id: Annotated[str, Query(alias="workloadId", max_length=63)] = "",
) -> ListResponse[views.WebShellSessionItem]:
    """Every web shell session, newest first: who opened which pod's shell, when, for how long,
    and how it ended."""
    rows, total = await records.list_sessions(
        session, user_id=user_id, workload_id=workload_id, limit=page.limit, offset=page.offset
    )
    return ListResponse[views.WebShellSessionItem](total_count=total, items=[session_item(r) for r in rows])
