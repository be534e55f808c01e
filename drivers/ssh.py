"""A blocking SSH client on paramiko: connect, run commands, copy files, typed errors.

Host keys are trusted on first use: the caller passes the fingerprint it stored earlier (or
None) and the client refuses a different key *before* sending any credential. Commands are
argv lists joined with `shlex.join`, so no argument is ever interpreted by the remote shell;
fixed scripts that need a shell are passed as one argument to `sh -c`.
"""

from __future__ import annotations

import base64
import hashlib
import io
import select
import shlex
import socket
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Protocol, Self

import paramiko

KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class SSHError(Exception):
    """Base of every SSH failure; `reason` is a short readable sentence."""

    kind = "SSHError"

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class Unreachable(SSHError):
    """The host did not answer, refused the connection, or broke the SSH handshake."""

    kind = "Unreachable"


class AuthenticationFailed(SSHError):
    """The host rejected the credentials."""

    kind = "AuthenticationFailed"


class HostKeyChanged(SSHError):
    """The host presented a different key than the one trusted on first use."""

    kind = "HostKeyChanged"

    def __init__(self, expected: str, actual: str) -> None:
        super().__init__(
            f"the host key changed: expected {expected}, got {actual}; if the machine was "
            "reinstalled, an administrator clears hostKeyFingerprint by updating the node"
        )
        self.expected = expected
        self.actual = actual


class CommandFailed(SSHError):
    """A command exited with a non-zero code (or was killed by its timeout)."""

    kind = "CommandFailed"

    def __init__(self, command: str, exit_code: int, output: str) -> None:
        tail = output.strip().splitlines()[-1:] or [""]
        super().__init__(f"`{command}` exited with code {exit_code}: {tail[0][:200]}".rstrip(": "))
        self.exit_code = exit_code
        self.output = output


@dataclass(frozen=True)
class SSHTarget:
    """Where and how to log in. `known_fingerprint` is None until the first connection."""

    host: str
    port: int
    username: str
    password: str = field(default="", repr=False)
    private_key_pem: str = field(default="", repr=False)
    known_fingerprint: str | None = None


@dataclass(frozen=True)
class CommandResult:
    """Exit code and combined stdout+stderr of a command."""

    exit_code: int
    output: str


def fingerprint(key: paramiko.PKey) -> str:
    """The key's OpenSSH SHA256 fingerprint, prefixed with its type: `ssh-ed25519 SHA256:...`."""
    digest = base64.b64encode(hashlib.sha256(key.asbytes()).digest()).decode().rstrip("=")
    return f"{key.get_name()} SHA256:{digest}"


def load_private_key(pem: str) -> paramiko.PKey:
    """Parse an unencrypted private key in OpenSSH or PEM form."""
    for cls in KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(pem))
        except (paramiko.SSHException, ValueError, TypeError):
            continue
    raise AuthenticationFailed("the private key of the ssh secret cannot be read")


def command_line(argv: Sequence[str]) -> str:
    """A command line in which every argument is quoted."""
    return shlex.join(argv)


class Connection(Protocol):
    """What activities and provisioners use of a connection to a node: an `SSHConnection`, or
    `drivers.local.LocalConnection` for a node that is this machine."""

    host_fingerprint: str

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    def run(
        self,
        argv: Sequence[str],
        *,
        timeout: float,
        on_line: Callable[[str], None] | None = None,
        check: bool = True,
        hangup: bool = False,
        stdin: bytes = b"",
    ) -> CommandResult: ...

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o600) -> None: ...

    def get(self, remote_path: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes: ...

    def close(self) -> None: ...


class SSHConnection:
    """One authenticated SSH transport. Use as a context manager; not thread-safe."""

    def __init__(self, transport: paramiko.Transport, host_fingerprint: str) -> None:
        self._transport = transport
        self.host_fingerprint = host_fingerprint

    def __enter__(self) -> SSHConnection:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the transport (idempotent)."""
        self._transport.close()

    def is_active(self) -> bool:
        """The transport is still open and authenticated."""
        return bool(self._transport.is_active() and self._transport.is_authenticated())

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
        """Run `argv`, streaming each output line (stdout and stderr merged) to `on_line`.

        With `hangup` the command gets a pseudo-terminal, so closing the connection while it runs
        hangs it up (SIGHUP to its process group): an operation that is stopped stops its remote
        work too. `stdin` is sent to the command, then end of file (not with `hangup`: a
        terminal would echo it). Raises CommandFailed for a non-zero exit (when `check`) or
        when `timeout` passes, and Unreachable when the connection drops.
        """
        if stdin and hangup:
            raise ValueError("stdin cannot be sent through a pseudo-terminal")
        line = command_line(argv)
        try:
            channel = self._transport.open_session(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(f"cannot open a session: {exc or type(exc).__name__}") from exc
        chunks: list[str] = []
        pending = ""
        deadline = time.monotonic() + timeout
        try:
            channel.set_combine_stderr(True)
            if hangup:
                channel.get_pty(term="dumb", width=200)
            channel.exec_command(line)
            if stdin:
                channel.sendall(stdin)
                channel.shutdown_write()
            while True:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommandFailed(line, -1, "".join(chunks) + f"\ntimed out after {timeout:.0f} s")
                readable, _, _ = select.select([channel], [], [], min(left, 1.0))
                if readable:
                    data = channel.recv(65536)
                    if not data:
                        break
                    text = data.decode(errors="replace")
                    chunks.append(text)
                    pending += text
                    *lines, pending = pending.split("\n")
                    if on_line:
                        for one in lines:
                            on_line(one.rstrip("\r"))
                elif channel.exit_status_ready() and not channel.recv_ready():
                    break
            if pending and on_line:
                on_line(pending.rstrip("\r"))
            code = channel.recv_exit_status()
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Unreachable(f"the connection broke while running a command: {exc}") from exc
        finally:
            channel.close()
        output = "".join(chunks)
        if check and code != 0:
            raise CommandFailed(line, code, output)
        return CommandResult(exit_code=code, output=output)

    def put(self, data: bytes, remote_path: str, *, mode: int = 0o600) -> None:
        """Write `data` to `remote_path` over SFTP."""
        try:
            sftp = paramiko.SFTPClient.from_transport(self._transport)
            if sftp is None:
                raise Unreachable("the server refused the SFTP subsystem")
            with sftp:
                with sftp.open(remote_path, "wb") as remote:
                    remote.write(data)
                sftp.chmod(remote_path, mode)
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Unreachable(f"cannot copy {remote_path} over SFTP: {exc}") from exc

    def get(self, remote_path: str, *, max_bytes: int = 16 * 1024 * 1024) -> bytes:
        """Read `remote_path` over SFTP (at most `max_bytes`); FileNotFoundError when it is missing."""
        try:
            sftp = paramiko.SFTPClient.from_transport(self._transport)
            if sftp is None:
                raise Unreachable("the server refused the SFTP subsystem")
            with sftp, sftp.open(remote_path, "rb") as remote:
                return bytes(remote.read(max_bytes))
        except FileNotFoundError:
            raise
        except (OSError, EOFError, paramiko.SSHException) as exc:
            raise Unreachable(f"cannot read {remote_path} over SFTP: {exc}") from exc


def connect(target: SSHTarget, *, timeout: float) -> SSHConnection:
    """Dial, check the host key (trust on first use), authenticate; every step bounded by `timeout`."""
    where = f"{target.host}:{target.port}"
    try:
        sock = socket.create_connection((target.host, target.port), timeout=timeout)
    except TimeoutError as exc:
        raise Unreachable(f"connecting to {where} timed out after {timeout:.0f} s") from exc
    except OSError as exc:
        raise Unreachable(f"cannot connect to {where}: {exc.strerror or exc}") from exc
    transport = paramiko.Transport(sock)
    transport.banner_timeout = timeout
    transport.auth_timeout = timeout
    transport.handshake_timeout = timeout
    try:
        try:
            transport.start_client(timeout=timeout)
        except (paramiko.SSHException, OSError, EOFError) as exc:
            raise Unreachable(f"SSH handshake with {where} failed: {exc or type(exc).__name__}") from exc
        actual = fingerprint(transport.get_remote_server_key())
        if target.known_fingerprint and target.known_fingerprint != actual:
            raise HostKeyChanged(target.known_fingerprint, actual)
        _authenticate(transport, target, where)
    except BaseException:
        transport.close()
        raise
    return SSHConnection(transport, actual)


def _authenticate(transport: paramiko.Transport, target: SSHTarget, where: str) -> None:
    if not (target.private_key_pem or target.password):
        raise AuthenticationFailed("the ssh secret has neither a password nor a private key")
    errors: list[str] = []
    try:
        if target.private_key_pem:
            try:
                transport.auth_publickey(target.username, load_private_key(target.private_key_pem))
            except paramiko.AuthenticationException as exc:
                errors.append(f"key: {exc}")
        if not transport.is_authenticated() and target.password:
            try:
                transport.auth_password(target.username, target.password)
            except paramiko.AuthenticationException as exc:
                errors.append(f"password: {exc}")
    except (paramiko.SSHException, OSError, EOFError) as exc:
        raise Unreachable(f"{where} dropped the connection during authentication: {exc}") from exc
    if not transport.is_authenticated():
        raise AuthenticationFailed(
            f"{where} rejected the credentials of user {target.username} ({'; '.join(errors)})"
        )


class ConnectionPool:
    """Authenticated connections kept idle for a short while so consecutive steps on one host
    share a login. A connection is lent to one user at a time; expired ones are closed on the next
    `take` or `give`. Thread-safe."""

    def __init__(self, idle_seconds: float = 30.0, max_idle: int = 512) -> None:
        self._idle_seconds = idle_seconds
        self._max_idle = max_idle
        self._idle: dict[tuple[str, int, str, str], list[tuple[SSHConnection, float]]] = {}
        self._lock = threading.Lock()

    @staticmethod
    def _key(target: SSHTarget) -> tuple[str, int, str, str]:
        secret = hashlib.sha256(f"{target.password}\0{target.private_key_pem}".encode()).hexdigest()
        return (target.host, target.port, target.username, secret)

    def take(self, target: SSHTarget) -> SSHConnection | None:
        """A live idle connection for exactly this target and trusted host key, or None."""
        found: SSHConnection | None = None
        with self._lock:
            stale = self._expire()
            entries = self._idle.get(self._key(target), [])
            while entries and found is None:
                conn, _ = entries.pop()
                if conn.is_active() and conn.host_fingerprint == (
                    target.known_fingerprint or conn.host_fingerprint
                ):
                    found = conn
                else:
                    stale.append(conn)
        for conn in stale:
            conn.close()
        return found

    def give(self, target: SSHTarget, conn: SSHConnection) -> None:
        """Keep `conn` for a later `take` (closed instead when dead or the pool is full)."""
        with self._lock:
            stale = self._expire()
            size = sum(len(v) for v in self._idle.values())
            if conn.is_active() and size < self._max_idle:
                self._idle.setdefault(self._key(target), []).append((conn, time.monotonic()))
            else:
                stale.append(conn)
        for old in stale:
            old.close()

    def discard(self, target: SSHTarget) -> None:
        """Close the idle connections to `target` (its last step is done)."""
        with self._lock:
            entries = self._idle.pop(self._key(target), [])
        for conn, _ in entries:
            conn.close()

    def close_all(self) -> None:
        """Close every idle connection."""
        with self._lock:
            idle = [conn for entries in self._idle.values() for conn, _ in entries]
            self._idle.clear()
        for conn in idle:
            conn.close()

    def _expire(self) -> list[SSHConnection]:
        deadline = time.monotonic() - self._idle_seconds
        stale: list[tuple[SSHConnection, float]] = []
        for key in list(self._idle):
            keep: list[tuple[SSHConnection, float]] = []
            for conn, since in self._idle[key]:
                (keep if since >= deadline else stale).append((conn, since))
            if keep:
                self._idle[key] = keep
            else:
                del self._idle[key]
        return [conn for conn, _ in stale]
