"""The SQLite write gate (`db.session.WriteGatedConnection`): one write transaction at a time
per database file, in this process and across processes, handed over at commit or rollback,
reads never gated."""

from __future__ import annotations

import fcntl
import os
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from db.session import WriteGatedConnection, write_gate


def connect(path: Path, timeout: float = 5.0) -> WriteGatedConnection:
    conn = sqlite3.connect(path, timeout=timeout, factory=WriteGatedConnection, check_same_thread=False)
    assert isinstance(conn, WriteGatedConnection)
    return conn


@pytest.fixture
def path(tmp_path: Path) -> Path:
    db = tmp_path / "gate.db"
    with sqlite3.connect(db) as conn:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, v TEXT)")
    return db


def test_a_second_writer_waits_for_the_first_commit_and_reads_pass(path: Path) -> None:
    first, second = connect(path), connect(path)
    gate = write_gate(str(path))
    first.execute("SELECT count(*) FROM t")
    assert not gate.locked()  # reads never take it
    first.execute("INSERT INTO t (v) VALUES ('a')")  # opens the write transaction: takes the gate
    assert gate.locked()
    assert second.execute("SELECT count(*) FROM t").fetchone() == (0,)  # a read is not gated
    done = threading.Event()
    seen: list[int] = []

    def write() -> None:
        second.execute("INSERT INTO t (v) VALUES ('b')")
        seen.append(second.execute("SELECT count(*) FROM t").fetchone()[0])
        second.commit()
        done.set()

    writer = threading.Thread(target=write)
    writer.start()
    assert not done.wait(0.3)  # blocked on the gate, not failed
    first.commit()
    assert done.wait(5)
    writer.join()
    assert seen == [2]  # it wrote after the first commit, seeing it
    assert not gate.locked()
    first.close()
    second.close()


def test_rollback_after_a_failed_statement_and_close_hand_the_gate_over(path: Path) -> None:
    first, second = connect(path, timeout=0.2), connect(path, timeout=0.2)
    first.execute("INSERT INTO t (id, v) VALUES (1, 'a')")
    with pytest.raises(sqlite3.IntegrityError):
        first.execute("INSERT INTO t (id, v) VALUES (1, 'again')")
    first.rollback()
    assert not write_gate(str(path)).locked()
    second.execute("INSERT INTO t (v) VALUES ('b')")
    second.close()  # closing mid-transaction rolls back and frees the gate
    assert not write_gate(str(path)).locked()
    first.execute("INSERT INTO t (v) VALUES ('c')")
    first.commit()
    assert [r[0] for r in first.execute("SELECT v FROM t ORDER BY id")] == ["c"]
    first.close()


def test_a_writer_gives_up_after_its_timeout_as_sqlite_would(path: Path) -> None:
    first, second = connect(path), connect(path, timeout=0.2)
    first.execute("INSERT INTO t (v) VALUES ('a')")
    with pytest.raises(sqlite3.OperationalError, match="database is locked"):
        second.execute("UPDATE t SET v = 'b'")
    first.commit()
    second.execute("UPDATE t SET v = 'b'")  # nothing was left held by the failed attempt
    second.commit()
    first.close()
    second.close()


HOLDER = """
import sys
from db.session import WriteGatedConnection
import sqlite3
conn = sqlite3.connect(sys.argv[1], factory=WriteGatedConnection)
conn.execute("INSERT INTO t (v) VALUES ('other process')")
print("holding", flush=True)
sys.stdin.readline()
conn.commit()
print("committed", flush=True)
sys.stdin.readline()
"""


def test_the_writer_of_another_process_holds_the_lock_file_until_it_commits(path: Path) -> None:
    """The API and the worker are two processes on one file: a writer of one holds an exclusive
    flock on `<db>-writer` for its whole transaction, so the other's writer waits on it."""
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parent.parent)},
    )
    try:
        assert holder.stdout is not None and holder.stdin is not None
        assert holder.stdout.readline().strip() == "holding"
        probe = os.open(f"{path}-writer", os.O_RDWR)
        with pytest.raises(BlockingIOError):
            fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)
        mine = connect(path, timeout=0.2)
        with pytest.raises(sqlite3.OperationalError, match="database is locked"):
            mine.execute("INSERT INTO t (v) VALUES ('mine')")
        assert not write_gate(str(path)).locked()  # the failed attempt gave the gate back

        waiting = connect(path, timeout=10)
        done = threading.Event()

        def write() -> None:
            waiting.execute("INSERT INTO t (v) VALUES ('after')")
            waiting.commit()
            done.set()

        writer = threading.Thread(target=write)
        writer.start()
        assert not done.wait(0.3)  # waits for the other process, does not fail
        holder.stdin.write("\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "committed"
        assert done.wait(5)
        writer.join()
        rows = [r[0] for r in waiting.execute("SELECT v FROM t ORDER BY id")]
        assert rows == ["other process", "after"]
        fcntl.flock(probe, fcntl.LOCK_EX | fcntl.LOCK_NB)  # nobody holds it now
        fcntl.flock(probe, fcntl.LOCK_UN)
        os.close(probe)
        mine.close()
        waiting.close()
    finally:
        holder.kill()
        holder.wait()
