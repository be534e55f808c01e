"""The log store's writes: a line sent twice is stored once; collection resumes after the last line."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select

from db.log_lines import LogLine, NewLine, add_lines, last_positions
from domain.timefmt import utcnow
from tests.conftest import Platform


async def test_lines_sent_twice_are_stored_once_and_positions_resume(platform: Platform, api: object) -> None:
    now = utcnow()

    def line(pod: str, seq: int, stream: str = "stdout", dispatch: int = 1) -> NewLine:
        return NewLine(
            at=now + timedelta(seconds=seq),
            line=f"{pod} line {seq}",
            workload_id="w-store",
            dispatch_count=dispatch,
            pod=pod,
            node="n1",
            container="main",
            stream=stream,
            seq=seq,
        )

    async with platform.state.sessions() as session, session.begin():
        await add_lines(session, [line("p0", i) for i in range(1, 4)] + [line("p1", 1, "stderr")])
    async with platform.state.sessions() as session, session.begin():  # a retried batch overlaps
        await add_lines(session, [line("p0", i) for i in range(3, 6)] + [line("p0", 1, dispatch=2)])
    async with platform.state.sessions() as session:
        stored = (await session.scalars(select(LogLine.line).order_by(LogLine.id))).all()
        positions = await last_positions(session, workload_id="w-store", dispatch_count=1)
    assert stored == [
        "p0 line 1",
        "p0 line 2",
        "p0 line 3",
        "p1 line 1",
        "p0 line 4",
        "p0 line 5",
        "p0 line 1",
    ]
    assert positions == {("p0", "main", "stdout"): 5, ("p1", "main", "stderr"): 1}
