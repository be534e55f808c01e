"""The worker: every workflow and activity, on their named task queues, plus system schedules."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from datetime import timedelta

from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleOverlapPolicy,
    SchedulePolicy,
    ScheduleSpec,
    ScheduleUpdate,
    ScheduleUpdateInput,
)
from temporalio.worker import Worker

from activities.cluster import ClusterActivities
from activities.fault import FaultActivities
from activities.image_import import ImageImportActivities, ImportProgressActivities
from activities.images import ImageActivities
from activities.maintenance import MaintenanceActivities
from activities.node import NodeActivities
from activities.ops_job import OpsJobActivities
from activities.scheduler import SchedulerActivities
from activities.users import UserActivities
from activities.workload import WorkloadActivities
from activities.workspace import WorkspaceActivities
from db.encryption import SecretBox
from db.session import SessionFactory
from domain.images import RegistryStatsInput
from domain.nodes import ProbeInput
from primus_safe.service_logs import WORKER
from primus_safe.service_logs import of_settings as service_logs_of
from primus_safe.settings import Settings
from workflows.cluster import ClusterWorkflow, NodeManageWorkflow
from workflows.fault import FaultWorkflow
from workflows.image_delete import ImageDeleteWorkflow
from workflows.image_import import ImageImportWorkflow
from workflows.maintenance import (
    LOG_RETENTION_SCHEDULE,
    TTL_CLEANUP_SCHEDULE,
    LogRetentionWorkflow,
    TTLCleanupWorkflow,
)
from workflows.node import NodeWorkflow
from workflows.node_probe import SCHEDULE_ID as NODE_PROBE_SCHEDULE
from workflows.node_probe import NodeProbeWorkflow
from workflows.ops_job import OpsJobWorkflow
from workflows.pod_read import PodReadWorkflow
from workflows.registry_stats import SCHEDULE_ID as REGISTRY_STATS_SCHEDULE
from workflows.registry_stats import RegistryStatsWorkflow
from workflows.source_check import SourceCheckWorkflow
from workflows.token_purge import SCHEDULE_ID as TOKEN_PURGE_SCHEDULE
from workflows.token_purge import TokenPurgeWorkflow
from workflows.user_cleanup import UserCleanupWorkflow
from workflows.workload import WorkloadWorkflow
from workflows.workspace import WorkspaceWorkflow
from workflows.workspace_scheduler import WorkspaceSchedulerWorkflow

log = logging.getLogger(__name__)

CONTROL_WORKFLOWS: list[type] = [
    UserCleanupWorkflow,
    TokenPurgeWorkflow,
    NodeWorkflow,
    NodeProbeWorkflow,
    ImageImportWorkflow,
    ImageDeleteWorkflow,
    RegistryStatsWorkflow,
    ClusterWorkflow,
    NodeManageWorkflow,
    WorkspaceWorkflow,
    WorkspaceSchedulerWorkflow,
    WorkloadWorkflow,
    PodReadWorkflow,
    FaultWorkflow,
    OpsJobWorkflow,
    LogRetentionWorkflow,
    TTLCleanupWorkflow,
    SourceCheckWorkflow,
]


def build_workers(
    client: Client,
    settings: Settings,
    sessions: SessionFactory,
    closing: contextlib.AsyncExitStack | None = None,
) -> Sequence[Worker]:
    """One worker per task queue; the control queue carries workflows and database activities.
    What holds connections (the registry clients) is closed with `closing`, when given."""
    users = UserActivities(sessions)
    nodes = NodeActivities(sessions, SecretBox(settings.encryption_key()), settings.node_config)
    clusters = ClusterActivities(sessions, SecretBox(settings.encryption_key()), settings.cluster_config)
    workspaces = WorkspaceActivities(sessions, SecretBox(settings.encryption_key()))
    scheduler = SchedulerActivities(sessions, settings.reserve_percents)
    workloads = WorkloadActivities(
        sessions, SecretBox(settings.encryption_key()), log_collect=settings.log_collect_config()
    )
    faults = FaultActivities(sessions, SecretBox(settings.encryption_key()))
    maintenance = MaintenanceActivities(sessions, settings.data_dir / "opsjobs")
    ops_jobs = OpsJobActivities(sessions, SecretBox(settings.encryption_key()), settings.data_dir / "opsjobs")
    control = Worker(
        client,
        task_queue=settings.queues.control,
        workflows=CONTROL_WORKFLOWS,
        activities=[
            users.delete_public_keys,
            users.delete_tokens,
            users.delete_user,
            users.purge_expired_tokens,
            nodes.finish,
            nodes.delete,
            nodes.probe_targets,
            clusters.finish,
            clusters.begin_delete,
            clusters.abort_delete,
            clusters.note,
            clusters.remove,
            clusters.node_finish,
            clusters.claim_nodes,
            clusters.begin_node_manage,
            workspaces.claim_nodes,
            workspaces.change_nodes,
            workspaces.finish,
            workspaces.note,
            workspaces.begin_delete,
            workspaces.remove,
            ImportProgressActivities(sessions).record_external_progress,
            scheduler.cycle,
            scheduler.mark_notified,
            scheduler.enqueue,
            scheduler.withdraw,
            workloads.load,
            workloads.dependencies,
            workloads.set_waiting,
            workloads.failover,
            workloads.updating,
            workloads.apply_patch,
            workloads.finish,
            workloads.mark_deleted,
            faults.apply,
            faults.close,
            faults.remove,
            ops_jobs.start,
            ops_jobs.record_node,
            ops_jobs.finish,
            ops_jobs.mark_deleted,
            ops_jobs.node_busy,
            maintenance.purge_logs,
            maintenance.expire_ops_jobs,
        ],
    )
    workload_io = Worker(
        client,
        task_queue=settings.queues.workloads,
        activities=[workloads.dispatch, workloads.watch, workloads.remove_pods, workloads.read],
        max_concurrent_activities=settings.workload_max_watches,
    )
    ssh = Worker(
        client,
        task_queue=settings.queues.ssh,
        activities=[
            nodes.prepare,
            nodes.reach,
            nodes.set_hostname,
            nodes.discover_facts,
            nodes.install_addons,
            nodes.probe,
            clusters.provision,
            clusters.reset,
            clusters.manage_node,
            workspaces.prepare_namespace,
            workspaces.remove_namespace,
            workspaces.label_nodes,
            faults.push_taints,
            nodes.job_addons,
            nodes.job_reboot,
            ops_jobs.dump_logs,
            ops_jobs.preflight,
        ],
        max_concurrent_activities=settings.ssh_max_parallel,
        max_heartbeat_throttle_interval=timedelta(seconds=2),  # a stop reaches a running step in seconds
    )
    return [control, ssh, workload_io, build_image_worker(client, settings, sessions, closing)]


def build_image_worker(
    client: Client,
    settings: Settings,
    sessions: SessionFactory,
    closing: contextlib.AsyncExitStack | None = None,
) -> Worker:
    """The images queue: registry I/O of image imports (blob copies heartbeat and resume), image
    deletions and the registry check. Its registry connections are closed with `closing`."""
    images = ImageImportActivities(sessions, settings.image_config, SecretBox(settings.encryption_key()))
    if closing is not None:
        closing.push_async_callback(images.aclose)
    steps = ImageActivities(sessions, client, settings.image_config)
    return Worker(
        client,
        task_queue=settings.queues.images,
        activities=[
            images.check_source,
            images.reset,
            images.resolve,
            images.copy_blob,
            images.push_manifests,
            images.finish,
            steps.cancel_import,
            steps.delete_manifest,
            steps.remove,
            steps.registry_stats,
        ],
        max_concurrent_activities=max(8, settings.images_parallel_layers * 4),
        max_heartbeat_throttle_interval=timedelta(seconds=2),  # layer progress stays current in the UI
    )


async def upsert_schedule(
    client: Client, schedule_id: str, schedule: Schedule, *, trigger: bool = False
) -> None:
    """Create the schedule, or update its action and spec keeping its state: a schedule paused
    in the Temporal UI stays paused (with its note) across worker restarts."""
    try:
        await client.create_schedule(schedule_id, schedule, trigger_immediately=trigger)
    except ScheduleAlreadyRunningError:

        def _update(current: ScheduleUpdateInput) -> ScheduleUpdate:
            schedule.state = current.description.schedule.state
            return ScheduleUpdate(schedule=schedule)

        handle = client.get_schedule_handle(schedule_id)
        await handle.update(_update)
        if trigger:
            await handle.trigger()


def _every(seconds: float) -> ScheduleSpec:
    return ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=max(1.0, seconds)))])


async def ensure_schedules(client: Client, settings: Settings) -> None:
    """Create or update the system schedules (visible, and pausable, under Schedules in the
    Temporal UI): token purge, node probe (the health check), registry stats, log retention,
    ops-job TTLs."""
    skip = SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP)
    control = settings.queues.control
    token_purge = Schedule(
        action=ScheduleActionStartWorkflow(
            TokenPurgeWorkflow.run, id="system/token-purge-run", task_queue=control
        ),
        spec=_every(settings.token_purge_interval_seconds),
        policy=skip,
    )
    await upsert_schedule(client, TOKEN_PURGE_SCHEDULE, token_purge)
    await ensure_node_probe_schedule(client, settings)
    await ensure_registry_stats_schedule(client, settings)
    retention = Schedule(
        action=ScheduleActionStartWorkflow(
            LogRetentionWorkflow.run,
            settings.log_retention_days,
            id="system/log-retention-run",
            task_queue=control,
        ),
        spec=_every(settings.log_retention_interval_seconds),
        policy=skip,
    )
    await upsert_schedule(client, LOG_RETENTION_SCHEDULE, retention)
    ttl = Schedule(
        action=ScheduleActionStartWorkflow(
            TTLCleanupWorkflow.run, id="system/ttl-cleanup-run", task_queue=control
        ),
        spec=_every(settings.ttl_cleanup_interval_seconds),
        policy=skip,
    )
    await upsert_schedule(client, TTL_CLEANUP_SCHEDULE, ttl)


async def ensure_node_probe_schedule(client: Client, settings: Settings) -> None:
    """The `system/node-probe` schedule: every node's SSH reachability and health, every probe
    interval."""
    probe = ProbeInput(
        ssh_queue=settings.queues.ssh,
        concurrency=settings.node_probe_concurrency,
        timings=settings.node_timings(),
        failover_monitors=list(settings.fault_failover_monitors),
    )
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            NodeProbeWorkflow.run, probe, id="system/node-probe-run", task_queue=settings.queues.control
        ),
        spec=_every(settings.node_probe_interval_seconds),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await upsert_schedule(client, NODE_PROBE_SCHEDULE, schedule)


async def ensure_registry_stats_schedule(client: Client, settings: Settings) -> None:
    """The `system/registry-stats` schedule: the internal registry's health and catalogue size,
    recorded for `GET /harbor/stats`; run at once when created and on every worker start."""
    every = timedelta(seconds=max(1, settings.images_stats_interval_seconds))
    schedule = Schedule(
        action=ScheduleActionStartWorkflow(
            RegistryStatsWorkflow.run,
            RegistryStatsInput(
                activity_queue=settings.queues.images,
                timeout_seconds=int(max(30, settings.images_request_timeout_seconds * 2)),
            ),
            id="system/registry-stats-run",
            task_queue=settings.queues.control,
            execution_timeout=max(every, timedelta(minutes=5)),  # a run no worker takes ends
        ),
        spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=every)]),
        policy=SchedulePolicy(overlap=ScheduleOverlapPolicy.SKIP),
    )
    await upsert_schedule(client, REGISTRY_STATS_SCHEDULE, schedule, trigger=True)


async def run_workers(
    client: Client, settings: Settings, sessions: SessionFactory, stop: asyncio.Event
) -> None:
    """Run every worker until `stop` is set, then shut them down gracefully (storing the
    worker's log records meanwhile when `service_logs` is on)."""
    async with contextlib.AsyncExitStack() as stack:
        if settings.service_logs:
            await stack.enter_async_context(service_logs_of(settings, sessions, WORKER))
        await ensure_schedules(client, settings)
        workers = build_workers(client, settings, sessions, stack)
        tasks = [asyncio.create_task(w.run()) for w in workers]
        log.info("worker running on %s", ", ".join(w.task_queue for w in workers))
        stopper = asyncio.create_task(stop.wait())
        done, _ = await asyncio.wait([*tasks, stopper], return_when=asyncio.FIRST_COMPLETED)
        await asyncio.gather(*(w.shutdown() for w in workers), return_exceptions=True)
        for task in tasks:
            if task in done and task.exception() is not None:
                raise task.exception()  # type: ignore[misc]
