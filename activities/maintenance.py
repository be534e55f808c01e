"""Housekeeping activities run by the system schedules: log retention and ops-job TTLs.

Both are idempotent sweeps: a retried run finds less to do, never something done twice.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from temporalio import activity

from db import log_lines, logs, ops_job_status
from db.ops_jobs import expiring_jobs
from db.session import SessionFactory
from domain.timefmt import utcnow

LINE_BATCH = 5000
"""Log store lines deleted per transaction."""


class MaintenanceActivities:
    """Holds the database and the directory ops-job artifacts live in."""

    def __init__(self, sessions: SessionFactory, archive_dir: Path, *, line_batch: int = LINE_BATCH) -> None:
        self._sessions = sessions
        self._archive_dir = archive_dir
        self._line_batch = line_batch

    @activity.defn(name="maintenance.purge_logs")
    async def purge_logs(self, retention_days: int) -> int:
        """Delete operation log lines and log store lines (pods' output, service records)
        older than `retention_days`, the latter in batches; returns how many."""
        before = utcnow() - timedelta(days=retention_days)
        async with self._sessions() as session, session.begin():
            deleted = await logs.purge_before(session, before=before)
        while True:
            async with self._sessions() as session, session.begin():
                count = await log_lines.purge_batch(session, before=before, batch=self._line_batch)
            deleted += count
            activity.heartbeat(deleted)
            if count < self._line_batch:
                return deleted

    @activity.defn(name="maintenance.expire_ops_jobs")
    async def expire_ops_jobs(self, _: None = None) -> list[str]:
        """Ended ops jobs whose `ttlSecondsAfterFinished` passed: their archives (dumplog) are
        removed and the job is marked expired (the record stays, as upstream's database row
        does). Returns the job ids."""
        now = utcnow()
        async with self._sessions() as session:
            jobs = await expiring_jobs(session, now=now)
        done = []
        for job in jobs:
            (self._archive_dir / f"{job.id}.tar.gz").unlink(missing_ok=True)
            async with self._sessions() as session, session.begin():
                if await ops_job_status.expire(session, job_id=job.id, now=now):
                    done.append(job.id)
        return done
