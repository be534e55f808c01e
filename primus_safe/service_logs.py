"""Our own services' log records, kept in the log store for `POST /service/{name}/logs`.

A `logging.Handler` on the root logger turns each record into one JSON line (`time`, `level`,
`logger`, `message`, `exception`) and puts it on a bounded queue; a background task writes the
queue in batches with its own session, off the request path. A full queue drops records and
counts them (a line says how many), it never blocks the caller. Records of the database
drivers, and any emitted while the writer itself writes, are not stored: the writer never feeds
on its own logging. Nothing is added to a record's message, so what is stored is exactly what
the console shows.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import itertools
import json
import logging
import os
import queue
import socket
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

from db.log_lines import NewLine, add_lines
from db.session import SessionFactory
from primus_safe.settings import Settings

API, WORKER = "api", "worker"
BATCH = 1000
IGNORED = ("sqlalchemy", "aiosqlite", "psycopg", "asyncpg", __name__)
"""Loggers never stored: the writer's own database calls would log about themselves."""
_WRITING: contextvars.ContextVar[bool] = contextvars.ContextVar("service_logs_writing", default=False)
_ACTIVE: dict[str, ServiceLogHandler] = {}
"""The handler writing to each database, by its URL: one per store in a process."""


def service_of(logger_name: str, default: str) -> str:
    """The service a record belongs to: the API's and the worker's modules by name (both run in
    one process under `up`), anything else the process's own."""
    head = logger_name.split(".", 1)[0]
    if head in ("api", "uvicorn", "fastapi"):
        return API
    if head in ("activities", "workflows", "temporalio") or logger_name.startswith("primus_safe.worker"):
        return WORKER
    return default


class ServiceLogHandler(logging.Handler):
    """Queues records as store lines; thread-safe, never blocks."""

    def __init__(self, service: str, *, capacity: int = 10_000, level: int | str = logging.INFO) -> None:
        super().__init__(level)
        self.service = service
        self._queue: queue.Queue[NewLine] = queue.Queue(maxsize=capacity)
        self._dropped = 0
        self._lock = threading.Lock()
        host = socket.gethostname()
        self.host, self.pod = host, f"{host}-{os.getpid()}"
        self._seq = itertools.count(time.time_ns() // 1000)  # unique across restarts of this pod

    def emit(self, record: logging.LogRecord) -> None:
        if _WRITING.get() or record.name.startswith(IGNORED):
            return
        try:
            line = self.to_line(record)
        except Exception:  # a record that cannot be formatted (bad arguments)
            self.handleError(record)
            return
        try:
            self._queue.put_nowait(line)
        except queue.Full:
            self.note_dropped(1)

    def to_line(self, record: logging.LogRecord) -> NewLine:
        at = datetime.fromtimestamp(record.created, UTC)
        body = {
            "time": at.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            body["exception"] = logging.Formatter().formatException(record.exc_info)
        return self.line(
            at, json.dumps(body), level=record.levelname, service=service_of(record.name, self.service)
        )

    def line(self, at: datetime, text: str, *, level: str, service: str) -> NewLine:
        return NewLine(
            at=at,
            line=text,
            service=service,
            pod=self.pod,
            node=self.host,
            container=service,
            seq=next(self._seq),
            level=level[:8],
        )

    def note_dropped(self, count: int) -> None:
        with self._lock:
            self._dropped += count

    def take_dropped(self) -> int:
        with self._lock:
            count, self._dropped = self._dropped, 0
            return count

    def drain(self, limit: int) -> list[NewLine]:
        lines: list[NewLine] = []
        while len(lines) < limit:
            try:
                lines.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return lines


async def flush(handler: ServiceLogHandler, sessions: SessionFactory) -> int:
    """Write everything queued (and a line counting drops); returns the lines written. A failed
    write counts its lines as dropped: logging it would only queue more."""
    token = _WRITING.set(True)
    written = 0
    try:
        while True:
            lines = handler.drain(BATCH)
            dropped = handler.take_dropped()
            if dropped:
                message = f"{dropped} log records dropped: the service log queue was full or unwritable"
                text = json.dumps({"level": "WARNING", "logger": __name__, "message": message})
                lines.append(handler.line(datetime.now(UTC), text, level="WARNING", service=handler.service))
            if not lines:
                return written
            try:
                async with sessions() as session, session.begin():
                    await add_lines(session, lines)
            except Exception:
                handler.note_dropped(len(lines))
                return written
            written += len(lines)
    finally:
        _WRITING.reset(token)


@contextlib.asynccontextmanager
async def service_logs(
    sessions: SessionFactory,
    service: str,
    *,
    store: str = "",
    level: str = "INFO",
    capacity: int = 10_000,
    flush_seconds: float = 1.0,
) -> AsyncIterator[ServiceLogHandler | None]:
    """Store this process's log records while inside; a second use for the same `store` (the
    database URL: the API and the worker of `up`) shares the first one's handler and yields
    None. (Platforms on other databases in one process, as in the tests, each store every
    record of the process.)"""
    if store in _ACTIVE:
        yield None
        return
    handler = ServiceLogHandler(service, capacity=capacity, level=level.upper())
    root = logging.getLogger()
    root.addHandler(handler)
    _ACTIVE[store] = handler
    stop = asyncio.Event()

    async def run() -> None:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), flush_seconds)
            await flush(handler, sessions)

    task = asyncio.create_task(run(), name="service-log-writer")
    try:
        yield handler
    finally:
        stop.set()
        with contextlib.suppress(Exception):
            await task
        root.removeHandler(handler)
        del _ACTIVE[store]
        await flush(handler, sessions)


def of_settings(
    settings: Settings, sessions: SessionFactory, service: str
) -> contextlib.AbstractAsyncContextManager[ServiceLogHandler | None]:
    """`service_logs` as the settings configure it."""
    return service_logs(
        sessions,
        service,
        store=settings.sqlalchemy_url,
        level=settings.service_log_level,
        capacity=settings.service_log_queue,
        flush_seconds=settings.service_log_flush_seconds,
    )
