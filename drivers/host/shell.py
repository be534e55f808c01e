"""Interactive shell sessions into a pod: a local pseudo-terminal, or an SSH channel with a PTY."""

from __future__ import annotations

import contextlib
import fcntl
import os
import pty
import select
import struct
import subprocess
import termios
from collections.abc import Sequence

import paramiko

from drivers.execution import ShellSession


class LocalShell(ShellSession):
    """A local command on a pseudo-terminal."""

    def __init__(self, argv: Sequence[str], rows: int, cols: int) -> None:
        self._master, slave = pty.openpty()
        _set_size(self._master, rows, cols)
        self._proc = subprocess.Popen(
            list(argv), stdin=slave, stdout=slave, stderr=slave, preexec_fn=_controlling_tty, close_fds=True
        )
        os.close(slave)
        self._closed = False
        self._eof = False

    def write(self, data: bytes) -> None:
        if not self._closed:
            with contextlib.suppress(OSError):
                os.write(self._master, data)

    def read(self, timeout: float = 1.0) -> bytes:
        if self._closed or self._eof:
            return b""
        readable, _, _ = select.select([self._master], [], [], timeout)
        if not readable:
            return b""
        try:
            data = os.read(self._master, 65536)
        except OSError:  # EIO: the command ended and the terminal is gone
            data = b""
        if not data:
            self._eof = True
            with contextlib.suppress(subprocess.TimeoutExpired):
                self._proc.wait(timeout=5)
        return data

    def resize(self, rows: int, cols: int) -> None:
        if not self._closed:
            _set_size(self._master, rows, cols)

    @property
    def is_open(self) -> bool:
        return not self._closed and not self._eof

    @property
    def exit_code(self) -> int | None:
        code = self._proc.poll()
        if code is None:
            return None
        return code if code >= 0 else 128 - code

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self._proc.pid, 9)
            self._proc.wait(timeout=5)
        with contextlib.suppress(OSError):
            os.close(self._master)


class SSHShell(ShellSession):
    """A remote command on an SSH channel with a PTY."""

    def __init__(self, channel: paramiko.Channel) -> None:
        self._channel = channel
        self._closed = False

    def write(self, data: bytes) -> None:
        if not self._closed and not self._channel.closed:
            with contextlib.suppress(OSError, EOFError, paramiko.SSHException):
                self._channel.sendall(data)

    def read(self, timeout: float = 1.0) -> bytes:
        if self._closed:
            return b""
        if not self._channel.recv_ready():
            if self._channel.exit_status_ready() or self._channel.closed:
                return b""
            select.select([self._channel], [], [], timeout)
        if self._channel.recv_ready():
            return bytes(self._channel.recv(65536))
        return b""

    def resize(self, rows: int, cols: int) -> None:
        if not self._closed:
            with contextlib.suppress(paramiko.SSHException, OSError, EOFError):
                self._channel.resize_pty(width=cols, height=rows)

    @property
    def is_open(self) -> bool:
        if self._closed or self._channel.closed:
            return False
        return not (self._channel.exit_status_ready() and not self._channel.recv_ready())

    @property
    def exit_code(self) -> int | None:
        if not self._channel.exit_status_ready():
            return None
        return int(self._channel.recv_exit_status())

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._channel.close()


def _set_size(fd: int, rows: int, cols: int) -> None:
    with contextlib.suppress(OSError):
        fcntl.ioctl(fd, termios.TIOCSWINSZ, struct.pack("HHHH", rows, cols, 0, 0))


def _controlling_tty() -> None:
    os.setsid()
    fcntl.ioctl(0, termios.TIOCSCTTY, 0)
