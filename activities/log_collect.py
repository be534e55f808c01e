"""Collecting a dispatch's pod output into the log store (`db.log_lines`), one row per line.

Used by the pod watch (`workload.watch`: a read every poll while the pods run, a final flush
once they ended) and by the pod removal (a last flush before the pods go). A collector starts
from the positions the stored lines give (`db.log_resume`), so a watch resumed after a worker
restart goes on after the last stored line; a line read twice (two collectors at once, or a
write that committed just before the worker died) is dropped by the store's unique position.
Each read is bounded (`LogCollectConfig.batch_bytes` per stream) and stored in one transaction.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

from sqlalchemy.ext.asyncio import AsyncSession

from db.log_lines import NewLine, add_lines
from db.log_resume import resume_positions
from db.session import SessionFactory
from domain.config import LogCollectConfig
from domain.errors import NotFound
from domain.pod_output import OutputKey, OutputPosition
from domain.pods import PodStatus
from drivers.execution import DISPATCH_COUNT_LABEL, DriverError, ExecutionDriver

log = logging.getLogger(__name__)

Blocking = Callable[..., Awaitable[Any]]
Write = Callable[[Callable[[AsyncSession], Awaitable[None]]], Awaitable[None]]


@dataclass(frozen=True)
class Collected:
    """What one read stored: `lines` new lines; `more` when a stream has more waiting."""

    lines: int = 0
    more: bool = False


def dispatch_of(pod: PodStatus, default: int) -> int:
    """The dispatch a pod belongs to, by its label (`default` when it has none)."""
    text = pod.labels.get(DISPATCH_COUNT_LABEL, "")
    return int(text) if text.isdigit() else default


class OutputCollector:
    """Collects the output of one dispatch's pods."""

    def __init__(
        self,
        *,
        sessions: SessionFactory,
        write: Write,
        blocking: Blocking,
        namespace: str,
        workload_id: str,
        dispatch_count: int,
        config: LogCollectConfig,
    ) -> None:
        self._sessions = sessions
        self._write = write
        self._blocking = blocking
        self._namespace = namespace
        self._workload_id = workload_id
        self._dispatch = dispatch_count
        self._config = config
        self._positions: dict[OutputKey, OutputPosition] = {}

    async def resume(self) -> None:
        """Start after the lines already stored."""
        async with self._sessions() as session:
            self._positions = await resume_positions(
                session, workload_id=self._workload_id, dispatch_count=self._dispatch
            )

    def _mine(self, pods: Sequence[PodStatus]) -> list[PodStatus]:
        return [p for p in pods if dispatch_of(p, self._dispatch) == self._dispatch]

    async def collect(self, driver: ExecutionDriver, pods: Sequence[PodStatus]) -> Collected:
        """Read what the pods printed since the last read and store it. A driver error is logged
        and stores nothing (the next read tries again from the same positions)."""
        mine = self._mine(pods)
        if not mine:
            return Collected()
        try:
            batches = await self._blocking(
                driver.read_output,
                self._namespace,
                self._workload_id,
                mine,
                dict(self._positions),
                max_bytes=self._config.batch_bytes,
            )
        except (DriverError, NotFound) as exc:
            log.warning("cannot read the output of %s: %s", self._workload_id, exc)
            return Collected()
        rows = [
            NewLine(
                at=line.at,
                line=line.text,
                workload_id=self._workload_id,
                dispatch_count=self._dispatch,
                pod=batch.pod,
                node=batch.node,
                container=batch.container,
                stream=batch.stream,
                seq=batch.position.seq + index,
            )
            for batch in batches
            for index, line in enumerate(batch.lines, start=1)
        ]
        if rows:
            await self._write(partial(add_lines, lines=rows))
        for batch in batches:  # only once stored: a failed write reads the same lines again
            self._positions[batch.key] = batch.after
        return Collected(lines=len(rows), more=any(b.more for b in batches))

    async def flush(
        self,
        driver: ExecutionDriver,
        pods: Sequence[PodStatus],
        *,
        seconds: float | None = None,
        heartbeat: Callable[[], None] | None = None,
    ) -> int:
        """Read until nothing is left (or `seconds` passed): the final read of ended pods."""
        deadline = time.monotonic() + (self._config.flush_seconds if seconds is None else seconds)
        total = 0
        while True:
            got = await self.collect(driver, pods)
            total += got.lines
            if heartbeat is not None:
                heartbeat()
            if not got.more:
                return total
            if time.monotonic() >= deadline:
                log.warning("the output of %s was not read to its end in time", self._workload_id)
                return total
