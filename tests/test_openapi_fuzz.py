"""Fuzz every operation in /openapi.json as the administrator: no input may cause a 5xx.

The schema is read from the app at collection time, so routes added later are fuzzed without
changes here. The API and worker run for real (uvicorn on a loopback port, SQLite, the test
Temporal server) in a background thread with their own event loop.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import schemathesis
from cryptography.fernet import Fernet
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from db.migrate import upgrade
from primus_safe.bootstrap import ensure_admin
from primus_safe.serve import api_server, connections, run_until_stopped
from primus_safe.settings import Settings
from tests.conftest import ADMIN_PASSWORD, make_settings

MAX_EXAMPLES = 10
START_TIMEOUT_SECONDS = 60

schema = schemathesis.openapi.from_dict(
    create_app(Settings(secret_key=Fernet.generate_key().decode())).openapi(),
    # The coverage phase tries each parameter's boundaries deterministically; 405s are tested elsewhere.
    config=schemathesis.Config.from_dict({"phases": {"coverage": {"unexpected-methods": []}}}),
)


class LivePlatform:
    """API + worker served from a thread; `url` once started."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = ""
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), name="fuzz-platform")

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        server = api_server(self.settings, "127.0.0.1", 0)

        def ready() -> None:
            self.url = f"http://127.0.0.1:{server.bound_port}"
            self._ready.set()

        try:
            async with connections(self.settings) as conn:
                await ensure_admin(conn.sessions, self.settings)
                await run_until_stopped(self._stop, api=server, worker=conn.worker(), on_ready=ready)
        except BaseException as exc:
            self._error = exc
            raise
        finally:
            self._ready.set()

    def __enter__(self) -> LivePlatform:
        self._thread.start()
        if not self._ready.wait(START_TIMEOUT_SECONDS) or not self.url:
            self.__exit__()
            raise RuntimeError(f"the API did not start: {self._error!r}")
        return self

    def __exit__(self, *_: object) -> None:
        if self._loop is not None and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(60)
        assert not self._thread.is_alive(), "the fuzzed platform did not stop"


class AdminToken:
    """The administrator's Authorization header, renewed after a fuzzed logout revoked it."""

    def __init__(self, base_url: str) -> None:
        self.base_url = base_url
        self.headers = self.login()

    def login(self) -> dict[str, str]:
        resp = httpx.post(f"{self.base_url}/api/v1/login", json={"name": "root", "password": ADMIN_PASSWORD})
        assert resp.status_code == 200, f"admin login failed (did a fuzzed call change root?): {resp.text}"
        return {"Authorization": f"Bearer {resp.json()['token']}"}

    def renew(self) -> None:
        self.headers = self.login()


@pytest.fixture(scope="session")
def fuzz_target(
    temporal_env: WorkflowEnvironment, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[AdminToken]:
    """A migrated SQLite platform with the admin logged in."""
    data_dir: Path = tmp_path_factory.mktemp("fuzz")
    database_url = f"sqlite+aiosqlite:///{data_dir / 'primus.db'}"
    upgrade(database_url)
    address = temporal_env.client.service_client.config.target_host
    with LivePlatform(make_settings(data_dir, database_url, address)) as live:
        yield AdminToken(live.url)


@schema.parametrize()
@settings(
    max_examples=MAX_EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_no_server_errors(case: schemathesis.Case, fuzz_target: AdminToken) -> None:
    response = case.call(base_url=fuzz_target.base_url, headers=fuzz_target.headers, timeout=30)
    case.validate_response(response, checks=[not_a_server_error])
    if response.status_code == 401 or case.operation.path.endswith("/logout"):
        fuzz_target.renew()
