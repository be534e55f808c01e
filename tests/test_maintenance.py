"""The housekeeping schedules on the real Temporal dev server, on SQLite and PostgreSQL: log
retention, ops-job TTLs, and schedules keeping a pause made in the UI across worker restarts."""

from __future__ import annotations

import uuid
from datetime import timedelta

import httpx
from sqlalchemy import func, select

from db.logs import OperationLog
from db.ops_jobs import OpsJob
from domain.timefmt import utcnow
from primus_safe.worker import ensure_schedules
from tests.conftest import Platform
from workflows.maintenance import (
    LOG_RETENTION_SCHEDULE,
    TTL_CLEANUP_SCHEDULE,
    LogRetentionWorkflow,
    TTLCleanupWorkflow,
)


async def test_log_retention_deletes_only_lines_older_than_the_retention(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    now = utcnow()
    async with platform.state.sessions() as session, session.begin():
        for age_days, text in ((40, "old"), (31, "older than 30 days"), (29, "recent"), (0, "new")):
            session.add(
                OperationLog(
                    resource_type="node",
                    resource_id="n1",
                    created_at=now - timedelta(days=age_days),
                    line=text,
                )
            )
    deleted = await platform.state.temporal.execute_workflow(
        LogRetentionWorkflow.run,
        30,
        id=f"test-retention-{uuid.uuid4().hex[:6]}",
        task_queue=platform.settings.queues.control,
    )
    assert deleted == 2
    async with platform.state.sessions() as session:
        left = (await session.execute(select(OperationLog.line).order_by(OperationLog.id))).scalars().all()
    assert left == ["recent", "new"]


async def test_ttl_cleanup_expires_ended_jobs_past_their_ttl_and_removes_their_archive(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    now = utcnow()
    archive_dir = platform.settings.data_dir / "opsjobs"
    archive_dir.mkdir(parents=True, exist_ok=True)
    jobs = {
        "past": (now - timedelta(seconds=120), 60),
        "within": (now - timedelta(seconds=10), 3600),
        "running": (None, 1),
    }
    async with platform.state.sessions() as session, session.begin():
        for name, (ended, ttl) in jobs.items():
            session.add(
                OpsJob(
                    id=f"dump-{name}",
                    name="dump",
                    type="dumplog",
                    phase="Succeeded" if ended else "Running",
                    ttl_seconds_after_finished=ttl,
                    created_at=now - timedelta(hours=1),
                    ended_at=ended,
                    updated_at=now,
                )
            )
            (archive_dir / f"dump-{name}.tar.gz").write_bytes(b"archive")
    expired = await platform.state.temporal.execute_workflow(
        TTLCleanupWorkflow.run,
        id=f"test-ttl-{uuid.uuid4().hex[:6]}",
        task_queue=platform.settings.queues.control,
    )
    assert expired == ["dump-past"]
    assert not (archive_dir / "dump-past.tar.gz").exists()
    assert (archive_dir / "dump-within.tar.gz").exists() and (archive_dir / "dump-running.tar.gz").exists()
    async with platform.state.sessions() as session:
        marked = (
            await session.execute(select(func.count()).where(OpsJob.expired_at.is_not(None)))
        ).scalar_one()
    assert marked == 1
    again = await platform.state.temporal.execute_workflow(
        TTLCleanupWorkflow.run,
        id=f"test-ttl-{uuid.uuid4().hex[:6]}",
        task_queue=platform.settings.queues.control,
    )
    assert again == []  # idempotent


async def test_schedules_use_the_settings_and_keep_a_pause_across_restarts(platform: Platform) -> None:
    client = platform.state.temporal
    await ensure_schedules(client, platform.settings)
    described = {
        schedule_id: await client.get_schedule_handle(schedule_id).describe()
        for schedule_id in (LOG_RETENTION_SCHEDULE, TTL_CLEANUP_SCHEDULE)
    }
    assert described[LOG_RETENTION_SCHEDULE].schedule.spec.intervals[0].every == timedelta(
        seconds=platform.settings.log_retention_interval_seconds
    )
    assert described[TTL_CLEANUP_SCHEDULE].schedule.spec.intervals[0].every == timedelta(
        seconds=platform.settings.ttl_cleanup_interval_seconds
    )
    handle = client.get_schedule_handle(TTL_CLEANUP_SCHEDULE)
    await handle.pause(note="paused in the UI by an operator")
    try:
        await ensure_schedules(client, platform.settings)  # what a worker restart does
        state = (await handle.describe()).schedule.state
        assert state.paused and state.note == "paused in the UI by an operator"
    finally:
        await handle.unpause()
