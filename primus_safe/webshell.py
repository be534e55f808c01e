"""The web shell's driver side: opens a TTY in a pod through the cluster's execution driver and
makes it asynchronous for the API's relay (`api/routes/webshell.py`).

This is the one place the API process talks to a cluster itself rather than through a workflow:
a terminal is interactive and lives as long as its WebSocket. Every blocking driver call runs in
a thread: output is read by one thread per session (backpressure: it waits while the relay has
not sent what it read), writes and resizes by a shared pool.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import threading
from collections.abc import Callable
from functools import partial

from activities.execution import DriverUnavailable, cluster_driver
from db.encryption import SecretBox
from db.session import SessionFactory
from domain.errors import Conflict, NotFound
from domain.webshell import ShellTarget, Terminal, shell_command
from drivers.execution import DriverError, ExecutionDriver, ShellSession
from primus_safe.settings import Settings

log = logging.getLogger(__name__)

READ_POLL_SECONDS = 0.5
OUTPUT_CHUNKS = 64
"""Chunks (up to 64 KiB each) read ahead of the WebSocket before the reader thread waits."""
WRITER_THREADS = 16
_EOF = b""


class DriverTerminal:
    """A `ShellSession` (blocking) as a `domain.webshell.Terminal` (asynchronous)."""

    def __init__(
        self,
        driver: ExecutionDriver,
        shell: ShellSession,
        pool: concurrent.futures.ThreadPoolExecutor,
        loop: asyncio.AbstractEventLoop,
    ) -> None:
        self._driver = driver
        self._shell = shell
        self._pool = pool
        self._loop = loop
        self._output: asyncio.Queue[bytes] = asyncio.Queue(maxsize=OUTPUT_CHUNKS)
        self._stop = threading.Event()
        self._ended = False
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, name="webshell-read", daemon=True)
        self._reader.start()

    def _read_loop(self) -> None:
        try:
            while not self._stop.is_set():
                data = self._shell.read(READ_POLL_SECONDS)
                if data:
                    self._hand_over(data)
                elif not self._shell.is_open:
                    break
        except Exception:  # a broken transport ends the session like an exited shell
            log.exception("web shell output read failed")
        self._hand_over(_EOF)

    def _hand_over(self, data: bytes) -> None:
        """Queue `data` for the relay, waiting while the queue is full (unless stopped)."""
        if self._loop.is_closed():
            return
        future = asyncio.run_coroutine_threadsafe(self._output.put(data), self._loop)
        while True:
            try:
                future.result(timeout=READ_POLL_SECONDS)
                return
            except concurrent.futures.TimeoutError:
                if self._stop.is_set():
                    future.cancel()
                    return
            except (concurrent.futures.CancelledError, RuntimeError):
                return

    async def read(self) -> bytes:
        if self._ended:
            return _EOF
        data = await self._output.get()
        if not data:
            self._ended = True
        return data

    async def _call(self, fn: Callable[..., None], *args: object) -> None:
        await self._loop.run_in_executor(self._pool, partial(fn, *args))

    async def write(self, data: bytes) -> None:
        if not self._closed:
            await self._call(self._shell.write, data)

    async def resize(self, rows: int, cols: int) -> None:
        if not self._closed:
            await self._call(self._shell.resize, rows, cols)

    @property
    def exit_code(self) -> int | None:
        return self._shell.exit_code

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._stop.set()
        await self._loop.run_in_executor(self._pool, self._close_blocking)

    def _close_blocking(self) -> None:
        with contextlib.suppress(Exception):
            self._shell.close()
        self._reader.join(timeout=5)
        with contextlib.suppress(Exception):
            self._driver.close()


class DriverTerminals:
    """Opens terminals through each cluster's execution driver (one driver per session)."""

    def __init__(self, settings: Settings, sessions: SessionFactory, box: SecretBox) -> None:
        self._sessions = sessions
        self._box = box
        self._timeout = settings.ssh_connect_timeout_seconds * 3
        self._pool = concurrent.futures.ThreadPoolExecutor(
            max_workers=WRITER_THREADS, thread_name_prefix="webshell"
        )

    async def open(self, target: ShellTarget) -> Terminal:
        """The target's shell (with its fallback) in its pod; NotFound or Conflict say why not."""
        loop = asyncio.get_running_loop()
        try:
            driver = await cluster_driver(
                self._sessions,
                self._box,
                target.cluster_id,
                request_timeout=self._timeout,
                only_nodes=[target.node] if target.node else None,
            )
        except DriverUnavailable as exc:
            raise Conflict(f"the cluster cannot open a shell: {exc}") from exc
        try:
            shell = await loop.run_in_executor(
                self._pool,
                partial(
                    driver.exec_shell,
                    target.namespace,
                    target.pod,
                    command=shell_command(target.cmd),
                    container=target.container or None,
                    rows=target.rows,
                    cols=target.cols,
                ),
            )
        except BaseException as exc:
            await loop.run_in_executor(self._pool, driver.close)
            if isinstance(exc, NotFound):
                raise NotFound(
                    "Pod", target.pod, message=f"pod {target.pod} not found in its cluster"
                ) from exc
            if isinstance(exc, DriverError):
                raise Conflict(f"the cluster cannot open a shell: {exc}") from exc
            raise
        return DriverTerminal(driver, shell, self._pool, loop)
