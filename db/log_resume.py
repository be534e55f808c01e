"""Where a collection of a dispatch's pod output resumes, from the lines already stored.

Per stream: the last stored `seq` (the host driver counts that many lines into the output file),
the whole second of that line's time and how many stored lines are at or after it (the
Kubernetes log is read from that second, and those lines are skipped).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from db.log_lines import LogLine, last_positions
from domain.pod_output import OutputKey, OutputPosition, whole_second


async def resume_positions(
    session: AsyncSession, *, workload_id: str, dispatch_count: int
) -> dict[OutputKey, OutputPosition]:
    """The position after the last stored line of each stream of one dispatch."""
    positions: dict[OutputKey, OutputPosition] = {}
    for (pod, container, stream), seq in (
        await last_positions(session, workload_id=workload_id, dispatch_count=dispatch_count)
    ).items():
        same_stream = (
            LogLine.workload_id == workload_id,
            LogLine.dispatch_count == dispatch_count,
            LogLine.pod == pod,
            LogLine.container == container,
            LogLine.stream == stream,
        )
        at = await session.scalar(select(LogLine.at).where(*same_stream, LogLine.seq == seq))
        if at is None:
            positions[(pod, container, stream)] = OutputPosition(seq=seq)
            continue
        since = whole_second(at)
        cut = datetime.fromisoformat(since.replace("Z", "+00:00"))
        same = await session.scalar(select(func.count()).where(*same_stream, LogLine.at >= cut))
        positions[(pod, container, stream)] = OutputPosition(seq=seq, since=since, same=int(same or 0))
    return positions
