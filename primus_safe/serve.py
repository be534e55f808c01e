"""Run the API (uvicorn) and the Temporal worker in one event loop until told to stop.

Shutdown order: the API stops taking requests first, then the worker drains; the caller stops
the embedded services (Temporal) last.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from dataclasses import dataclass
from typing import Any

import uvicorn
from temporalio.client import Client

from api.app import create_app
from db.session import SessionFactory, create_engine, session_factory
from primus_safe.settings import Settings
from primus_safe.temporal import connect
from primus_safe.webshell import DriverTerminals
from primus_safe.worker import run_workers

log = logging.getLogger(__name__)

WORKER_STOP_TIMEOUT_SECONDS = 30.0
WorkerRunner = Callable[[asyncio.Event], Coroutine[Any, Any, None]]


class ApiServer(uvicorn.Server):
    """uvicorn that leaves signal handling to the caller, which decides the shutdown order."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    @property
    def bound_port(self) -> int:
        """The port actually listened on (useful with port 0)."""
        port: int = self.servers[0].sockets[0].getsockname()[1]
        return port


_TOKEN_IN_QUERY = re.compile(r"([?&]token=)[^&\s\"]*", re.IGNORECASE)


class RedactQueryTokens(logging.Filter):
    """Masks `token=` query parameters (the web shell's) in uvicorn's request lines."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple):
            record.args = tuple(
                _TOKEN_IN_QUERY.sub(r"\1***", a) if isinstance(a, str) else a for a in record.args
            )
        if isinstance(record.msg, str):
            record.msg = _TOKEN_IN_QUERY.sub(r"\1***", record.msg)
        return True


def _redact_tokens() -> None:
    for name in ("uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactQueryTokens) for f in logger.filters):
            logger.addFilter(RedactQueryTokens())


def api_server(settings: Settings, host: str, port: int) -> ApiServer:
    """The API served by uvicorn (WebSockets included, for the web shell); logs go through the
    root logger the CLI configures, without tokens sent as query parameters."""
    _redact_tokens()
    config = uvicorn.Config(
        create_app(settings, terminals=DriverTerminals),
        host=host,
        port=port,
        log_config=None,
        lifespan="on",
        server_header=False,
        ws="websockets-sansio",  # the web shell; fails at start-up if `websockets` is missing
    )
    return ApiServer(config)


@dataclass
class Connections:
    """The database sessions and Temporal client the worker and the bootstrap share."""

    settings: Settings
    sessions: SessionFactory
    temporal: Client

    def worker(self) -> WorkerRunner:
        """The worker, bound to these connections, as `run_until_stopped` expects it."""
        return lambda stop: run_workers(self.temporal, self.settings, self.sessions, stop)


@contextlib.asynccontextmanager
async def connections(settings: Settings) -> AsyncIterator[Connections]:
    """Open the database engine and the Temporal client; dispose of the engine afterwards."""
    engine = create_engine(settings.sqlalchemy_url)
    try:
        temporal = await connect(settings)
        yield Connections(settings=settings, sessions=session_factory(engine), temporal=temporal)
    finally:
        await engine.dispose()


async def _serve(server: ApiServer) -> None:
    try:
        await server.serve()
    except SystemExit as exc:  # uvicorn exits when it cannot bind or its lifespan fails
        raise RuntimeError(f"the API server stopped during start-up (exit code {exc.code})") from None


async def _wait_started(server: ApiServer, task: asyncio.Task[None], stop: asyncio.Event) -> bool:
    """True once uvicorn listens; False if it ended or `stop` was set first."""
    while not server.started:
        if task.done() or stop.is_set():
            return False
        await asyncio.sleep(0.05)
    return True


async def run_until_stopped(
    stop: asyncio.Event,
    *,
    api: ApiServer | None = None,
    worker: WorkerRunner | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve until `stop` is set or a component ends; then stop the API, then the worker.

    Raises the first component failure, after both are stopped.
    """
    worker_stop = asyncio.Event()
    api_task = asyncio.create_task(_serve(api)) if api is not None else None
    worker_task = asyncio.create_task(worker(worker_stop)) if worker is not None else None
    tasks: list[asyncio.Task[None]] = [t for t in (api_task, worker_task) if t is not None]
    stopper = asyncio.create_task(stop.wait())
    try:
        ready = True
        if api is not None and api_task is not None:
            ready = await _wait_started(api, api_task, stop)
        if ready and on_ready is not None:
            on_ready()
        await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopper.cancel()
        if api is not None and api_task is not None:
            api.should_exit = True
            await asyncio.wait([api_task])
        if worker_task is not None:
            worker_stop.set()
            done, _ = await asyncio.wait([worker_task], timeout=WORKER_STOP_TIMEOUT_SECONDS)
            if not done:
                log.warning("the worker did not stop within %ss; cancelling it", WORKER_STOP_TIMEOUT_SECONDS)
                worker_task.cancel()
                await asyncio.wait([worker_task])
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            raise task.exception()  # type: ignore[misc]
    if not stop.is_set():
        raise RuntimeError("a component stopped on its own")
