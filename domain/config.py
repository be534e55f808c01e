"""Typed configuration handed to activities and workflows by the composition root.

`primus_safe.settings.Settings` reads the environment; only the composition root (`primus_safe`)
and `api` read it. Everything below them receives one of these frozen dataclasses (or a function returning the
current one) through its constructor, so a layer never reaches up for process-wide settings and
tests pass plain values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias, TypeVar

T = TypeVar("T")

Source: TypeAlias = T | Callable[[], T]
"""A config, or a function returning the current one (the composition root passes
`settings.node_config` so a changed setting takes effect without rebuilding the worker)."""


def current(source: Source[T]) -> T:
    """The config a source stands for now."""
    return source() if callable(source) else source


@dataclass(frozen=True)
class SSHConfig:
    """How nodes are reached over SSH."""

    connect_timeout_seconds: float = 10.0
    """Dial, banner and authentication timeout."""
    command_timeout_seconds: int = 900
    """Upper bound of one remote command (an addon script)."""
    max_parallel: int = 128
    """Threads for blocking SSH calls: how many nodes one worker talks to at once."""


@dataclass(frozen=True)
class NodeConfig:
    """What node activities need: SSH limits, machine commands and the addon scripts."""

    ssh: SSHConfig = field(default_factory=SSHConfig)
    commands: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Machine commands (name -> argv template), e.g. `set_hostname`, `run_addon`."""
    addon_dir: Path | None = None
    """Directory of addon scripts `<name>.sh` overriding the shipped catalogue."""
    fault_raise_after: int = 3
    """Failed probes in a row that raise the node's `ssh-unreachable` fault."""
    fault_clear_after: int = 2
    """Good probes in a row that clear it."""
    disk_full_percent: int = 95
    """Root file system use at which the `disk-full` health check fails."""


@dataclass(frozen=True)
class ClusterConfig:
    """What cluster activities need: SSH limits, the provisioning bound and machine commands."""

    ssh: SSHConfig = field(default_factory=SSHConfig)
    provision_timeout_seconds: int = 7200
    """Upper bound of one provisioning run (a kubespray playbook)."""
    commands: Mapping[str, Sequence[str]] = field(default_factory=dict)
    """Machine commands; `container_run` runs the kubespray image."""


@dataclass(frozen=True)
class InternalRegistry:
    """The registry images are imported into."""

    address: str
    """`host:port` (or a URL with its scheme)."""
    username: str = ""
    password: str = field(default="", repr=False)
    insecure: bool = False
    """Plain HTTP (no TLS)."""


@dataclass(frozen=True)
class ImageConfig:
    """What image activities need: the internal registry and the copy tuning."""

    internal: InternalRegistry | None = None
    """None when no internal registry is configured."""
    allow_loopback_sources: bool = False
    """Let every source host, not only registered image registries, be on loopback or a private
    network (a single-user test machine only); link-local and metadata are always refused."""
    parallel_layers: int = 6
    chunk_bytes: int = 32 * 1024 * 1024
    """Bytes per upload request when copying a blob: the unit of progress and resumption."""
    request_timeout_seconds: float = 60.0
    blob_timeout_seconds: int = 3600
    heartbeat_timeout_seconds: int = 30
    progress_interval_seconds: float = 1.0
    """How often a blob copy shows its progress inside an upload request."""


@dataclass(frozen=True)
class LogCollectConfig:
    """How the pod watches collect the pods' output into the log store."""

    interval_seconds: float = 2.0
    """A watch reads new output at least this often while the pods print."""
    batch_bytes: int = 1024 * 1024
    """Bytes read per pod stream per read (one database transaction takes a read's lines)."""
    flush_seconds: float = 60.0
    """Upper bound of the final read of the pods' output before they are removed."""
