"""Engine and session factory. SQLite gets WAL mode, foreign keys and a write gate on every
connection."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import threading
import time
from typing import Any

from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

SessionFactory = async_sessionmaker[AsyncSession]


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cursor = dbapi_conn.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


_WRITES = ("INSERT", "UPDATE", "DELETE", "REPLACE")
_GATES: dict[str, threading.Lock] = {}
_GATES_LOCK = threading.Lock()


_LOCK_FILES: dict[str, int] = {}
LOCK_POLL_SECONDS = 0.001
"""How often the one waiting writer of a process retries the other processes' lock."""


def write_gate(database: str) -> threading.Lock:
    """The in-process write gate of a SQLite database file (one per path)."""
    with _GATES_LOCK:
        return _GATES.setdefault(database, threading.Lock())


def _lock_file(database: str) -> int | None:
    """The open `<database>-writer` lock file shared with the other processes on the database
    (None for an in-memory or URI database)."""
    if database in ("", ":memory:") or database.startswith("file:"):
        return None
    with _GATES_LOCK:
        fd = _LOCK_FILES.get(database)
        if fd is None:
            fd = os.open(f"{database}-writer", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
            _LOCK_FILES[database] = fd
        return fd


def _take_file_lock(fd: int, deadline: float) -> bool:
    """Take the cross-process writer lock by `deadline` (monotonic); False when it passed."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(LOCK_POLL_SECONDS)


class WriteGatedCursor(sqlite3.Cursor):
    connection: WriteGatedConnection

    def execute(self, sql: str, parameters: Any = (), /) -> WriteGatedCursor:
        self.connection.before_statement(sql)
        return super().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> WriteGatedCursor:
        self.connection.before_statement(sql)
        return super().executemany(sql, parameters)


class WriteGatedConnection(sqlite3.Connection):
    """A connection that takes its database's in-process write gate before the statement that
    opens a write transaction, and gives it back at commit or rollback.

    SQLite has one writer at a time. Without the gate, concurrent writers of this process wait in
    SQLite's busy handler, which polls with sleeps of up to 100 ms while the lock may long be free:
    under load (one event loop for the API and the worker) creates waited up to 12 s, and past the
    busy timeout answered 500 "database is locked". With it they queue on a lock that wakes the
    next one at once (each connection has its own thread in aiosqlite, so the event loop never
    blocks).

    Between processes (the API and the worker of `primus-safe up` share one file) the gate holder
    also takes an exclusive `flock` on `<database>-writer`, which only one thread per process
    ever waits for, polling every millisecond: without it a writer of one process slept in the
    busy handler while the other process's writers handed the lock to each other, and the API's
    inserts waited seconds behind an onboarding worker. Programs that do not take it (the
    sqlite3 shell, Alembic) still meet the busy handler."""

    def __init__(self, database: str, *args: Any, **kwargs: Any) -> None:
        super().__init__(database, *args, **kwargs)
        self._gate = write_gate(str(database))
        self._lock_fd = _lock_file(str(database))
        self._wait = float(kwargs.get("timeout", 5.0))
        self._holding = False

    def cursor(self, factory: Any = WriteGatedCursor) -> Any:
        return super().cursor(factory)

    def execute(self, sql: str, parameters: Any = (), /) -> Any:  # the C shortcut skips cursor()
        return self.cursor().execute(sql, parameters)

    def executemany(self, sql: str, parameters: Any, /) -> Any:
        return self.cursor().executemany(sql, parameters)

    def before_statement(self, sql: str) -> None:
        if self._holding or self.in_transaction or not sql.lstrip()[:7].upper().startswith(_WRITES):
            return
        deadline = time.monotonic() + self._wait
        if not self._gate.acquire(timeout=self._wait):
            raise sqlite3.OperationalError("database is locked")
        if self._lock_fd is not None and not _take_file_lock(self._lock_fd, deadline):
            self._gate.release()
            raise sqlite3.OperationalError("database is locked")
        self._holding = True

    def _give_back(self) -> None:
        self._holding = False
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
        self._gate.release()

    def _release(self) -> None:
        if self._holding and not self.in_transaction:
            self._give_back()

    def commit(self) -> None:
        try:
            super().commit()
        finally:
            self._release()

    def rollback(self) -> None:
        try:
            super().rollback()
        finally:
            self._release()

    def close(self) -> None:
        try:
            super().close()
        finally:
            if self._holding:
                self._give_back()


def create_engine(url: str) -> AsyncEngine:
    """An async engine for `url` (already carrying its async driver)."""
    if url.startswith("sqlite"):
        engine = create_async_engine(
            url, connect_args={"timeout": 30, "factory": WriteGatedConnection}, pool_size=20, max_overflow=20
        )
        event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
        return engine
    return create_async_engine(url, pool_pre_ping=True, pool_size=20, max_overflow=20)


def session_factory(engine: AsyncEngine) -> SessionFactory:
    """Sessions that keep loaded attributes after commit (responses are built after it)."""
    return async_sessionmaker(engine, expire_on_commit=False)
