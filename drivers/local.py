"""The local transport: commands and files on this machine, as the current user, with the interface
of `drivers.ssh.SSHConnection` (`run`, `put`, `get`, `close`), so onboarding, probing and cluster
provisioning of a *local* node run the same steps as over SSH.

Like an SSH session, commands start in the user's home directory, relative paths are relative to
it, stdout and stderr are merged, and every argument stays one argument (no shell unless the
command is `sh -c <fixed script>`). The child environment is this process's without any
`PRIMUS_*` variable, so a script never sees the platform's secrets (a remote shell would not either).
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType

from drivers.ssh import CommandFailed, CommandResult, Unreachable, command_line

LOCAL_FINGERPRINT = "local (this machine, no SSH)"
"""What a local node records as its host key: there is none to pin."""


def child_environment() -> dict[str, str]:
    """The environment of local commands: ours minus the platform's own settings and secrets."""
    return {k: v for k, v in os.environ.items() if not k.startswith("PRIMUS_")}


def home() -> Path:
    """Where local commands start and relative paths point: $HOME (read at each call)."""
    return Path(os.environ.get("HOME") or Path.home())


class LocalConnection:
    """Runs on this machine what an `SSHConnection` runs on a remote one. `close` (from another
    thread, as a provisioner's `cancel` does) kills the commands in flight, which then fail like
    a dropped SSH session (`Unreachable`)."""

    host_fingerprint = LOCAL_FINGERPRINT

    def __init__(self) -> None:
        self._running: set[subprocess.Popen[bytes]] = set()
        self._lock = threading.Lock()
        self._closed = False

    def __enter__(self) -> LocalConnection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Kill the process groups of the commands still running (idempotent)."""
        with self._lock:
            self._closed = True
            doomed = list(self._running)
        for proc in doomed:
            _kill_group(proc)

    def is_active(self) -> bool:
        return not self._closed

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
        check: bool = True,
        hangup: bool = False,
        stdin: bytes = b"",
    ) -> CommandResult:
        """Run `argv` in $HOME, streaming each output line to `on_line` (see `SSHConnection.run`;
        every command is in its own process group, killed by `close`, so `hangup` changes nothing).
        `stdin` is written to the command before its output is read (a command reads it first)."""
        line = command_line(argv)
        with self._lock:
            if self._closed:
                raise Unreachable("the local connection was closed")
            try:
                proc = subprocess.Popen(
                    list(argv),
                    cwd=home(),
                    env=child_environment(),
                    stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
                    stdout=subprocess.PIPE,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,  # its own process group: a timeout kills all of it
                )
            except OSError as exc:
                raise CommandFailed(line, 127, f"cannot start {argv[0]}: {exc.strerror or exc}") from exc
            self._running.add(proc)
        try:
            if stdin and proc.stdin is not None:
                with contextlib.suppress(BrokenPipeError):
                    proc.stdin.write(stdin)
                proc.stdin.close()
            output, timed_out = _collect(proc, timeout, on_line)
        finally:
            with self._lock:
                self._running.discard(proc)
        if timed_out:
            raise CommandFailed(line, -1, output + f"\ntimed out after {timeout:.0f} s")
        code = proc.returncode
        if self._closed and code < 0:
            raise Unreachable(f"the local command was stopped: {line[:200]}")
        if check and code != 0:
            raise CommandFailed(line, code, output)
        return CommandResult(exit_code=code, output=output)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o600) -> None:
        """Write `data` to `remote_path` (relative to $HOME) with `mode`."""
        path = home() / remote_path
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            os.chmod(path, mode)
        except OSError as exc:
            raise Unreachable(f"cannot write {remote_path}: {exc.strerror or exc}") from exc

    def get(self, remote_path: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """Read `remote_path` (relative to $HOME), at most `max_bytes`; FileNotFoundError when missing."""
        try:
            with (home() / remote_path).open("rb") as src:
                return src.read(max_bytes)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise Unreachable(f"cannot read {remote_path}: {exc.strerror or exc}") from exc


def _collect(
    proc: subprocess.Popen[bytes], timeout: float, on_line: Callable[[str], None] | None
) -> tuple[str, bool]:
    """Read the merged output until the process ends or `timeout` passes (then kill it)."""
    assert proc.stdout is not None
    chunks: list[str] = []
    pending = ""
    deadline = time.monotonic() + timeout
    timed_out = False
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                timed_out = True
                _kill_group(proc)
                break
            if not sel.select(min(left, 0.5)):
                if proc.poll() is not None:
                    break  # exited; a child it left in the background may hold the pipe open
                continue
            data = os.read(proc.stdout.fileno(), 65536)
            if not data:
                break
            text = data.decode(errors="replace")
            chunks.append(text)
            pending += text
            *lines, pending = pending.split("\n")
            if on_line:
                for one in lines:
                    on_line(one.rstrip("\r"))
    if pending and on_line:
        on_line(pending.rstrip("\r"))
    proc.stdout.close()
    proc.wait()
    return "".join(chunks), timed_out


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
