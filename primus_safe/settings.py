"""Settings for every process, read from `PRIMUS_*` environment variables."""

from __future__ import annotations

import os
import secrets
from functools import lru_cache
from pathlib import Path
from typing import Literal

from cryptography.fernet import Fernet
from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from db.urls import async_url as async_url  # re-exported: the URL helpers live with the database
from db.urls import sync_url as sync_url
from domain import quantity as q
from domain.clusters import ClusterTimings
from domain.config import (
    ClusterConfig,
    ImageConfig,
    InternalRegistry,
    LogCollectConfig,
    NodeConfig,
    SSHConfig,
)
from domain.node_flavors import ReservePercents
from domain.nodes import NodeTimings


class SettingsError(RuntimeError):
    """The configuration cannot be used as it stands."""


def _default_data_dir() -> Path:
    return Path(os.environ.get("XDG_DATA_HOME", Path.home() / ".local" / "share")) / "primus-safe"


class TaskQueues(BaseSettings):
    """Temporal task queues: control flow apart from slow I/O so one cannot starve the other."""

    model_config = SettingsConfigDict(env_prefix="PRIMUS_QUEUE_", extra="ignore")

    control: str = "primus-control"
    ssh: str = "primus-ssh"
    images: str = "primus-images"
    workloads: str = "primus-workloads"
    """Driver calls of workloads: dispatch, the long-running pod watches, removal."""


class Settings(BaseSettings):
    """All settings. Durations are seconds so tests can shrink them."""

    model_config = SettingsConfigDict(env_prefix="PRIMUS_", extra="ignore")

    data_dir: Path = Field(default_factory=_default_data_dir)
    database_url: str | None = None
    """SQLAlchemy URL; default: SQLite file `<data_dir>/primus.db` (WAL mode)."""

    temporal_address: str = "127.0.0.1:7233"
    temporal_namespace: str = "default"
    queues: TaskQueues = Field(default_factory=TaskQueues)

    api_host: str = "127.0.0.1"
    api_port: int = 8088
    console_dir: Path | None = None
    """A web console build (upstream's) served at `/`, its `/api/<path>` calls answered as
    `/api/v1/<path>` (`--console DIR`)."""
    authoring_image: str = "docker.io/library/ubuntu:22.04"
    """The default image of Authoring workloads, shown to the console (`GET /envs`)."""

    dev_mode: bool = False
    """Embedded development mode (`primus-safe up`): allows generated secrets."""
    secret_key: str | None = None
    """Fernet key encrypting secrets at rest. Generated into the data dir only in dev mode."""

    token_lifetime_seconds: int = 7 * 24 * 3600
    admin_password: str | None = None
    """Password of `root` when it is first created (refused when too weak); default: generated."""
    password_min_score: int = Field(default=3, ge=0, le=4)
    """Least zxcvbn strength score (0..4) of a new password; 0 keeps only the blank and name rules."""

    login_failures_per_user: int = Field(default=10, ge=1)
    """Failed logins allowed per (user name, client address) in one window before 429."""
    login_failures_per_address: int = Field(default=100, ge=1)
    """Failed logins (and anonymous registration refusals) allowed per client address per window."""
    login_failure_window_seconds: int = Field(default=60, ge=1)
    """The first window; each further tier allows twice the failures over four times the time."""
    login_max_delay_seconds: int = Field(default=900, ge=1)
    """The longest window, so the longest wait a locked-out client is told (`Retry-After`)."""
    login_limit_storage: str = "async+memory://"
    """`limits` storage URI of the counters (per process by default; `async+redis://host:6379`
    shares them between API replicas)."""

    user_cleanup_timeout_seconds: int = 60
    token_purge_interval_seconds: int = 3600

    cpu_reserve_percent: float = 0.1
    memory_reserve_percent: float = 0.05
    ephemeral_storage_reserve_percent: float = 0.05

    cookie_secure: bool = False

    images_internal_registry: str | None = None
    """`host:port` of the registry images are imported into; `up` starts one when unset."""
    images_internal_username: str = ""
    images_internal_password: str = ""
    images_internal_insecure: bool = False
    """Plain HTTP (no TLS) to the internal registry."""
    images_allow_loopback_sources: bool = False
    """Let every import source, not only registered image registries, be on loopback or private
    addresses (single-user test machines only; `up` does not set it); link-local is always refused."""
    images_parallel_layers: int = 6
    """How many blobs one import copies at once."""
    images_chunk_bytes: int = 32 * 1024 * 1024
    """Bytes per upload request (PATCH) when copying a blob: the unit of progress and resumption."""
    images_request_timeout_seconds: float = 60.0
    images_blob_timeout_seconds: int = 3600
    """Upper bound for copying one blob."""
    images_heartbeat_timeout_seconds: int = 30
    images_progress_interval_seconds: float = 1.0
    """How often a blob copy shows its progress inside an upload request."""
    images_stats_interval_seconds: int = 300
    """How often the `system/registry-stats` schedule checks the internal registry."""

    node_probe_interval_seconds: int = 300
    """How often the `system/node-probe` schedule checks every node's SSH reachability."""
    scheduler_period_seconds: int = 30
    """A workspace's scheduler runs a cycle at least this often, signals or not."""
    workload_poll_seconds: float = 2.0
    """How often a running workload's pods are read from its cluster."""
    workload_hang_seconds: int = 1200
    """A supervised workload whose logs stay unchanged this long has hung (upstream's 1200)."""
    workload_io_timeout_seconds: int = 120
    """Upper bound of one driver call of a workload (dispatch, removal)."""
    workload_max_watches: int = 2000
    """Pod watches (one per running workload) one worker runs at once."""
    log_collect_interval_seconds: float = Field(default=2.0, gt=0)
    """A watch reads its pods' new output into the log store at least this often while they print."""
    log_collect_batch_bytes: int = Field(default=1024 * 1024, ge=4096)
    """Bytes of output read per pod stream per read (the host driver reads at least 128 KiB)."""
    log_collect_flush_seconds: float = Field(default=60.0, gt=0)
    """Upper bound of the final read of a workload's output before its pods are removed."""
    node_probe_concurrency: int = 50
    webshell_max_sessions_per_user: int = Field(default=10, ge=1)
    """Web shell sessions one user may have open at once (the next one is refused with 429)."""
    webshell_idle_seconds: float = Field(default=1800.0, gt=0)
    """A web shell session without input from its client for this long is closed."""
    log_retention_days: int = Field(default=30, ge=1)
    """Operation log lines older than this are deleted by the `system/log-retention` schedule."""
    log_retention_interval_seconds: int = Field(default=86400, ge=60)
    service_logs: bool = True
    """Store the API's and the worker's log records in the log store (`POST /service/{name}/logs`)."""
    service_log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Lowest level stored (records below the process's `--log-level` never arrive)."""
    service_log_queue: int = Field(default=10_000, ge=1)
    """Records waiting to be written; beyond, records are dropped and counted."""
    service_log_flush_seconds: float = Field(default=1.0, gt=0)
    """How often the queue is written."""
    ttl_cleanup_interval_seconds: int = Field(default=600, ge=10)
    """How often `system/ttl-cleanup` expires ops jobs past their `ttlSecondsAfterFinished`."""
    ops_job_timeout_seconds: int = Field(default=0, ge=0)
    """`timeoutSecond` of ops jobs that give none (0: no timeout; upstream's chart: 3600)."""
    ops_job_ttl_seconds: int = Field(default=300, ge=0)
    """`ttlSecondsAfterFinished` of ops jobs that give none (upstream's chart: 300)."""
    ops_job_reboot_wait_seconds: int = Field(default=900, ge=10)
    """How long a reboot job waits for a node to answer again."""
    ops_job_idle_poll_seconds: float = Field(default=10.0, gt=0)
    """How often a `securityUpgrade` addon job checks whether a node still runs workloads."""
    fault_raise_after_probes: int = Field(default=3, ge=1)
    """Probes in a row that miss a node before its `ssh-unreachable` fault is raised."""
    fault_clear_after_probes: int = Field(default=2, ge=1)
    """Probes in a row that reach it again before that fault is cleared."""
    fault_disk_full_percent: int = Field(default=95, ge=1, le=100)
    """Root file system use (percent) at which the probe counts a node's `disk-full` check failed."""
    fault_failover_monitors: list[str] = Field(default_factory=lambda: ["ssh-unreachable", "notready"])
    """Monitor ids whose faults fail over the workloads on the node whatever their effect
    (NoExecute faults always do); upstream's chart lists 001, 004, 009, 012, 206 and NotReady."""
    ssh_connect_timeout_seconds: float = 10.0
    """Dial, banner and authentication timeout (upstream: 10 s)."""
    ssh_command_timeout_seconds: int = 900
    """Upper bound for one remote command (an addon script)."""
    ssh_unreachable_attempts: int = 3
    ssh_retry_interval_seconds: float = 2.0
    ssh_max_parallel: int = 128
    """Threads for blocking SSH calls: how many nodes one worker talks to at once."""
    node_heartbeat_timeout_seconds: int = 30
    node_commands: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "set_hostname": ["sudo", "-n", "hostnamectl", "set-hostname", "{hostname}"],
            "reboot": ["sudo", "-n", "reboot"],
            "container_run": [
                "sudo",
                "-n",
                "docker",
                "run",
                "--rm",
                "--network",
                "host",
                "-v",
                "{workdir}:/primus",
                "{image}",
            ],
        }
    )
    """Commands that change the machine itself (PRIMUS_NODE_COMMANDS, JSON): name -> argv template.

    `container_run` runs the kubespray image with the cluster's work dir at /primus; the playbook
    command is appended to it."""
    cluster_provisioner: Literal["hosts", "kubespray"] = "hosts"
    """Default provisioner of new clusters: `hosts` (no Kubernetes) or `kubespray`."""
    cluster_provision_timeout_seconds: int = 7200
    """Upper bound for one provisioning run (a kubespray playbook)."""
    cluster_heartbeat_timeout_seconds: int = 60
    node_addon_dir: Path | None = None
    """Directory of addon scripts `<name>.sh`; default: the shipped `domain/addons`."""

    local_node: bool = True
    """`primus-safe up` registers this machine as the node `local`, in the `hosts` cluster `local`
    with the default workspace `local-default` (`--no-local-node` turns it off)."""
    local_node_cpu: int | None = Field(default=None, ge=1)
    """CPU cores the local node offers to workloads; default every core (the CPU reserve keeps one)."""
    local_node_memory: str | None = None
    """Memory the local node offers to workloads (a quantity such as `16Gi`); default half."""

    @field_validator("local_node_memory")
    @classmethod
    def _memory_quantity(cls, value: str | None) -> str | None:
        if value is not None and q.parse(value) <= 0:
            raise ValueError("must be a positive quantity such as 16Gi")
        return value

    # --- typed configuration for the layers below the composition root ----------------------

    def ssh_config(self) -> SSHConfig:
        """How nodes are reached over SSH."""
        return SSHConfig(
            connect_timeout_seconds=self.ssh_connect_timeout_seconds,
            command_timeout_seconds=self.ssh_command_timeout_seconds,
            max_parallel=self.ssh_max_parallel,
        )

    def node_config(self) -> NodeConfig:
        """What node activities need."""
        return NodeConfig(
            ssh=self.ssh_config(),
            commands=dict(self.node_commands),
            addon_dir=self.node_addon_dir,
            fault_raise_after=self.fault_raise_after_probes,
            fault_clear_after=self.fault_clear_after_probes,
            disk_full_percent=self.fault_disk_full_percent,
        )

    def cluster_config(self) -> ClusterConfig:
        """What cluster activities need."""
        return ClusterConfig(
            ssh=self.ssh_config(),
            provision_timeout_seconds=self.cluster_provision_timeout_seconds,
            commands=dict(self.node_commands),
        )

    def image_config(self) -> ImageConfig:
        """What image activities need."""
        internal = None
        if self.images_internal_registry:
            internal = InternalRegistry(
                address=self.images_internal_registry,
                username=self.images_internal_username,
                password=self.images_internal_password,
                insecure=self.images_internal_insecure,
            )
        return ImageConfig(
            internal=internal,
            allow_loopback_sources=self.images_allow_loopback_sources,
            parallel_layers=self.images_parallel_layers,
            chunk_bytes=self.images_chunk_bytes,
            request_timeout_seconds=self.images_request_timeout_seconds,
            blob_timeout_seconds=self.images_blob_timeout_seconds,
            heartbeat_timeout_seconds=self.images_heartbeat_timeout_seconds,
            progress_interval_seconds=self.images_progress_interval_seconds,
        )

    def log_collect_config(self) -> LogCollectConfig:
        """How the pod watches collect the pods' output."""
        return LogCollectConfig(
            interval_seconds=self.log_collect_interval_seconds,
            batch_bytes=self.log_collect_batch_bytes,
            flush_seconds=self.log_collect_flush_seconds,
        )

    def reserve_percents(self) -> ReservePercents:
        """The share of each node kept from workloads (scheduler and node views)."""
        return ReservePercents(
            cpu=self.cpu_reserve_percent,
            memory=self.memory_reserve_percent,
            ephemeral_storage=self.ephemeral_storage_reserve_percent,
        )

    def node_timings(self) -> NodeTimings:
        """Activity timings of node workflows (travel in workflow inputs)."""
        return NodeTimings(
            connect_timeout=self.ssh_connect_timeout_seconds,
            command_timeout=self.ssh_command_timeout_seconds,
            heartbeat_timeout=self.node_heartbeat_timeout_seconds,
            unreachable_attempts=self.ssh_unreachable_attempts,
            retry_interval=self.ssh_retry_interval_seconds,
        )

    def cluster_timings(self) -> ClusterTimings:
        """Activity timings of cluster workflows (travel in workflow inputs)."""
        return ClusterTimings(
            connect_timeout=self.ssh_connect_timeout_seconds,
            provision_timeout=self.cluster_provision_timeout_seconds,
            heartbeat_timeout=self.cluster_heartbeat_timeout_seconds,
            attempts=self.ssh_unreachable_attempts,
            retry_interval=self.ssh_retry_interval_seconds,
        )

    @property
    def sqlalchemy_url(self) -> str:
        """The async SQLAlchemy URL, with the driver filled in."""
        url = self.database_url or f"sqlite+aiosqlite:///{self.data_dir / 'primus.db'}"
        return async_url(url)

    def encryption_key(self) -> bytes:
        """The Fernet key for secrets at rest.

        Taken from `PRIMUS_SECRET_KEY`; in dev mode generated once into `<data_dir>/secret.key`
        (mode 600) and reused; refused when unset outside dev mode.
        """
        if self.secret_key:
            key = self.secret_key.encode()
        else:
            path = self.data_dir / "secret.key"
            if path.exists():
                key = path.read_bytes().strip()
            elif self.dev_mode:
                self.data_dir.mkdir(parents=True, exist_ok=True)
                key = Fernet.generate_key()
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(key)
            else:
                raise SettingsError(
                    "PRIMUS_SECRET_KEY is not set. Generate one with `python -c 'from cryptography.fernet "
                    "import Fernet; print(Fernet.generate_key().decode())'` "
                    "or run in dev mode (primus-safe up)."
                )
        try:
            Fernet(key)
        except ValueError as exc:
            raise SettingsError(
                "PRIMUS_SECRET_KEY is not a valid Fernet key (32 url-safe base64 bytes)"
            ) from exc
        return key


def random_password() -> str:
    """A password good enough for a generated first admin."""
    return secrets.token_urlsafe(18)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
