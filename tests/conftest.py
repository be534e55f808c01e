"""Shared fixtures: a real Temporal dev server, SQLite and PostgreSQL databases, the app and a worker.

Every API test runs once per database backend (`sqlite`, `postgresql`).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet
from fastapi import FastAPI
from sqlalchemy import delete
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.state import AppState
from db.migrate import upgrade
from db.models import Base
from db.users import User
from primus_safe.bootstrap import ensure_admin
from primus_safe.settings import Settings, TaskQueues
from primus_safe.worker import run_workers
from tests.fixtures import postgres
from tests.fixtures.loop_watchdog import LoopWatchdog, Stall
from tests.fixtures.temporal import start_dev_server
from workflows.node_probe import SCHEDULE_ID as NODE_PROBE_SCHEDULE

ADMIN_PASSWORD = "root-password-for-tests"

_LOOP_STALLS: list[Stall] = []


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that need no platform run first. While a test that is not a coroutine runs, the
    shared event loop runs nothing, which freezes the API and workers of every live platform:
    their activities time out at Temporal and are retried after backoff, long after the test
    that caused it. Before the first platform starts there is nothing to freeze. (After
    pytest's own ordering, so the platforms' grouping by database is kept.)"""
    needs = [item for item in items if "platform" in getattr(item, "fixturenames", ())]
    others = [item for item in items if "platform" not in getattr(item, "fixturenames", ())]
    items[:] = others + needs


@pytest.fixture(scope="session")
async def loop_watchdog() -> AsyncIterator[None]:
    """Record every stretch in which the shared event loop ran nothing while a platform lives
    (printed at the end): a blocking call in the API, the worker or a test."""
    watchdog = LoopWatchdog(asyncio.get_running_loop(), stalls=_LOOP_STALLS)
    watchdog.start()
    try:
        yield
    finally:
        watchdog.stop()


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """List the event-loop stalls: a blocking call in the API, the worker or a test."""
    if not _LOOP_STALLS:
        return
    terminalreporter.section("event loop stalls")
    for stall in _LOOP_STALLS:
        terminalreporter.write_line(f"{stall.noticed_at}: the loop ran nothing for {stall.seconds:.1f} s in")
        terminalreporter.write_line(stall.stack)


@pytest.fixture(scope="session")
async def temporal_env() -> AsyncIterator[WorkflowEnvironment]:
    """One dev server for the whole run."""
    env = await start_dev_server()
    try:
        yield env
    finally:
        await env.shutdown()


@pytest.fixture(scope="session")
def temporal_client(temporal_env: WorkflowEnvironment) -> Client:
    return temporal_env.client


@pytest.fixture(scope="session")
def pg_server() -> Iterator[str]:
    """The PostgreSQL server (started lazily, only when a postgresql test runs)."""
    with postgres.server_url() as url:
        yield url


@pytest.fixture(scope="session", params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A migrated, empty database on each backend."""
    if request.param == "sqlite":
        url = f"sqlite+aiosqlite:///{tmp_path_factory.mktemp('sqlite') / 'primus.db'}"
        upgrade(url)
        yield url
        return
    server = request.getfixturevalue("pg_server")
    with postgres.scratch_database(server) as url:
        upgrade(url)
        yield url


def make_settings(data_dir: Path, database_url: str, temporal_address: str) -> Settings:
    """Settings for a test app: its own task queues so workers never share work across runs."""
    run = uuid.uuid4().hex[:8]
    return Settings(
        data_dir=data_dir,
        database_url=database_url,
        temporal_address=temporal_address,
        secret_key=Fernet.generate_key().decode(),
        admin_password=ADMIN_PASSWORD,
        queues=TaskQueues(
            control=f"control-{run}", ssh=f"ssh-{run}", images=f"images-{run}", workloads=f"workloads-{run}"
        ),
        user_cleanup_timeout_seconds=10,
        workload_poll_seconds=0.5,
        scheduler_period_seconds=5,
    )


@dataclass
class Platform:
    """The running app, its worker and a client to call it."""

    settings: Settings
    state: AppState
    http: httpx.AsyncClient
    app: FastAPI | None = None
    """The ASGI app, for clients that call it from another address."""


@pytest.fixture(scope="session")
async def platform(
    database_url: str,
    temporal_env: WorkflowEnvironment,
    tmp_path_factory: pytest.TempPathFactory,
    loop_watchdog: None,
) -> AsyncIterator[Platform]:
    """API (in-process ASGI) plus a worker, on one database backend."""
    settings = make_settings(
        tmp_path_factory.mktemp("data"), database_url, temporal_env.client.service_client.config.target_host
    )
    app = create_app(settings)
    async with app.router.lifespan_context(app):
        state: AppState = app.state.primus
        await ensure_admin(state.sessions, settings)
        stop = asyncio.Event()
        worker = asyncio.create_task(run_workers(state.temporal, settings, state.sessions, stop))
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            try:
                yield Platform(settings=settings, state=state, http=http, app=app)
            finally:
                stop.set()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(worker, timeout=30)


@pytest.fixture
async def api(platform: Platform) -> AsyncIterator[httpx.AsyncClient]:
    """The API client; every table is emptied after the test (the `root` admin is kept)."""
    platform.http.cookies.clear()
    yield platform.http
    platform.http.cookies.clear()
    await platform.state.login_limits.reset()  # one test's failed logins do not slow the next
    async with platform.state.sessions() as session, session.begin():
        for table in reversed(Base.metadata.sorted_tables):
            if table.name == "users":
                await session.execute(delete(User).where(User.name != "root"))
            else:
                await session.execute(table.delete())


async def login(http: httpx.AsyncClient, name: str, password: str) -> dict[str, str]:
    """Log in and return the Authorization header (the client's cookies are cleared)."""
    resp = await http.post("/api/v1/login", json={"name": name, "password": password})
    assert resp.status_code == 200, resp.text
    http.cookies.clear()
    return {"Authorization": f"Bearer {resp.json()['token']}"}


@pytest.fixture
async def admin(api: httpx.AsyncClient) -> dict[str, str]:
    """Headers of the `root` system administrator."""
    return await login(api, "root", ADMIN_PASSWORD)


async def register(
    http: httpx.AsyncClient, name: str, password: str = "plum-kettle9", **extra: object
) -> str:
    """Register a user and return its id."""
    resp = await http.post("/api/v1/users", json={"name": name, "password": password, **extra})
    assert resp.status_code == 200, resp.text
    return str(resp.json()["id"])


@pytest.fixture
async def alice(api: httpx.AsyncClient) -> dict[str, str]:
    """Headers of a regular user `alice`."""
    await register(api, "alice")
    return await login(api, "alice", "plum-kettle9")


@pytest.fixture
async def bob(api: httpx.AsyncClient) -> dict[str, str]:
    """Headers of a second regular user `bob`."""
    await register(api, "bob")
    return await login(api, "bob", "plum-kettle9")


@pytest.fixture
async def quiet_probe(platform: Platform) -> AsyncIterator[None]:
    """Pause the `system/node-probe` schedule: the test's nodes are database rows with no
    machine to answer it."""
    handle = platform.state.temporal.get_schedule_handle(NODE_PROBE_SCHEDULE)
    await handle.pause(note="a test with nodes that have no machine")
    try:
        yield
    finally:
        await handle.unpause()
