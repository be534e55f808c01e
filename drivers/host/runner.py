"""Where the scripts run: `sh -c` on the local host, or over one kept SSH connection per node."""

from __future__ import annotations

import contextlib
import shlex
import subprocess
import threading
from collections.abc import Sequence
from typing import Protocol

import paramiko

from drivers.execution import DriverError, ShellSession
from drivers.host.shell import LocalShell, SSHShell
from drivers.ssh import SSHConnection, SSHError, SSHTarget, connect


class Runner(Protocol):
    """Runs a script with its arguments on one node, and opens shells there."""

    def run(self, script: str, args: Sequence[str], timeout: float) -> tuple[int, str]:
        """The script's exit code and its output (stdout and stderr together)."""
        ...

    def shell(self, argv: Sequence[str], rows: int, cols: int) -> ShellSession:
        """`argv` on a pseudo-terminal."""
        ...

    def close(self) -> None:
        """Release the connection, if any."""
        ...


class LocalRunner:
    """The control-plane host itself."""

    def run(self, script: str, args: Sequence[str], timeout: float) -> tuple[int, str]:
        try:
            proc = subprocess.run(
                ["sh", "-c", script, "primus", *args],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            )
        except subprocess.TimeoutExpired as exc:
            raise DriverError(f"a local command timed out after {timeout:.0f} s") from exc
        return proc.returncode, proc.stdout.decode(errors="replace")

    def shell(self, argv: Sequence[str], rows: int, cols: int) -> ShellSession:
        return LocalShell(argv, rows, cols)

    def close(self) -> None:
        pass


class SSHRunner:
    """A remote node: one connection, opened on first use, reopened once after a dropped one."""

    def __init__(self, target: SSHTarget, timeout: float) -> None:
        self._target = target
        self._timeout = timeout
        self._conn: SSHConnection | None = None
        self._lock = threading.Lock()

    def _connection(self) -> SSHConnection:
        if self._conn is None:
            self._conn = connect(self._target, timeout=self._timeout)
        return self._conn

    def run(self, script: str, args: Sequence[str], timeout: float) -> tuple[int, str]:
        with self._lock:
            for attempt in (1, 2):
                try:
                    result = self._connection().run(
                        ["sh", "-c", script, "primus", *args], timeout=timeout, check=False
                    )
                    return result.exit_code, result.output
                except SSHError as exc:
                    self._drop()
                    if attempt == 2 or exc.kind != "Unreachable":
                        raise DriverError(f"{self._target.host}: {exc.reason}") from exc
        raise AssertionError("unreachable")

    def shell(self, argv: Sequence[str], rows: int, cols: int) -> ShellSession:
        with self._lock:
            try:
                transport: paramiko.Transport = self._connection()._transport  # the channel needs a PTY
                channel = transport.open_session(timeout=self._timeout)
                channel.get_pty(term="xterm", width=cols, height=rows)
                channel.exec_command(shlex.join(argv))
            except (SSHError, paramiko.SSHException, OSError, EOFError) as exc:
                self._drop()
                raise DriverError(f"{self._target.host}: cannot open a shell: {exc}") from exc
        return SSHShell(channel)

    def _drop(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None

    def close(self) -> None:
        with self._lock:
            self._drop()
