"""Benchmark: the log store and its search. Prints figures, asserts nothing.

1,000,000 lines of training output (Megatron-style iteration lines with numbers, about 1% with
`WARNING`, 0.1% `ERROR ... NCCL timeout`) over 8 pods of one workload, on SQLite and PostgreSQL:

1. **Ingest**: lines per second through `add_lines`, in batches of 1,000 lines of one pod per
   transaction (as a collection writes them), with the search index kept by the database.
2. **Queries** through `db.log_search` (page of 100 and the capped total, as the route runs them),
   p50/p99 over `--queries` runs each: a rare keyword, a common keyword (1%), a keyword on every
   line, a pod-filtered page at a random offset (both orders), and a context query (10 lines on
   each side of a random line). Each query's plan is printed once (EXPLAIN).

    .venv/bin/python bench/logs.py [--lines 1000000] [--queries 200] [--postgres postgresql://postgres@127.0.0.1:5432/test]

Without `--postgres` (or PRIMUS_TEST_POSTGRES_URL) a throwaway PostgreSQL server is started.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from db import log_search
from db.log_lines import NewLine, add_lines
from db.migrate import upgrade
from db.session import SessionFactory, create_engine, session_factory
from db.urls import async_url
from domain.log_search import LogQuery
from tests.fixtures import postgres

WORKLOAD = "bench-pretrain"
PODS = [f"{WORKLOAD}-master-0", *(f"{WORKLOAD}-worker-{i}" for i in range(7))]
START = datetime(2026, 1, 1, tzinfo=UTC)
STEP = timedelta(milliseconds=10)
BATCH = 1000
RARE, COMMON, EVERYWHERE = "NCCL timeout", "WARNING", "iteration"


def training_line(rnd: random.Random, pod: int, i: int) -> str:
    """One line as a Megatron-style training job prints it."""
    roll = rnd.random()
    stamp = (START + i * STEP).strftime("%Y-%m-%d %H:%M:%S")
    if roll < 0.001:
        return (
            f"[{stamp}] [rank{pod}] ERROR: NCCL timeout in ProcessGroupNCCL allreduce, SeqNum={i}, 1800008 ms"
        )
    if roll < 0.011:
        return f"[{stamp}] WARNING: found NaN in gradients, loss scale reduced to {2 ** rnd.randint(8, 16)}.0"
    return (
        f"[{stamp}] iteration {i:8d} / 11800000 | consumed samples: {i * 32} | elapsed time per "
        f"iteration(ms): {rnd.uniform(15000, 19000):.1f} | learning rate: {rnd.uniform(1e-5, 3e-4):.3E} | "
        f"global batch size: 2880 | lm loss: {rnd.uniform(1.5, 7):.6E} | loss scale: 1.0 | "
        f"grad norm: {rnd.uniform(0.5, 4):.3f} | number of skipped iterations: 0 | "
        f"TFLOPs: {rnd.uniform(350, 380):.2f} |"
    )


async def ingest(sessions: SessionFactory, lines: int) -> tuple[float, list[float]]:
    """Lines per second over the whole load, and the milliseconds of each batch."""
    rnd = random.Random(12)
    per_pod = lines // len(PODS)
    batch_ms: list[float] = []
    started = time.perf_counter()
    for first in range(0, per_pod, BATCH):
        for p, pod in enumerate(PODS):
            batch = [
                NewLine(
                    at=START + (i * len(PODS) + p) * STEP,
                    line=training_line(rnd, p, i),
                    workload_id=WORKLOAD,
                    dispatch_count=1,
                    pod=pod,
                    node=f"node-{p}",
                    container="pytorch",
                    seq=i + 1,
                )
                for i in range(first, min(first + BATCH, per_pod))
            ]
            t = time.perf_counter()
            async with sessions() as session, session.begin():
                await add_lines(session, batch)
            batch_ms.append((time.perf_counter() - t) * 1e3)
    return per_pod * len(PODS) / (time.perf_counter() - started), batch_ms


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def query(lines: int, **changes: Any) -> LogQuery:
    end = START + lines * STEP
    return LogQuery(since=START, until=end, workload_id=WORKLOAD, **changes)


async def explain(session: AsyncSession, statement: Any) -> list[str]:
    dialect = session.get_bind().dialect
    sql = str(statement.compile(dialect=dialect, compile_kwargs={"literal_binds": True}))
    prefix = "EXPLAIN QUERY PLAN " if dialect.name == "sqlite" else "EXPLAIN "
    rows = await session.execute(text(prefix + sql))
    return [str(r[-1]) for r in rows]


async def timed(
    sessions: SessionFactory, runs: int, call: Callable[[AsyncSession], Awaitable[Any]]
) -> list[float]:
    times = []
    for _ in range(runs):
        async with sessions() as session:
            t = time.perf_counter()
            await call(session)
            times.append((time.perf_counter() - t) * 1e3)
    return times


async def queries(sessions: SessionFactory, lines: int, runs: int) -> None:
    rnd = random.Random(7)
    async with sessions() as session:
        max_id = int(await session.scalar(text("SELECT max(id) FROM log_lines")) or 0)

    def search(make: Callable[[], LogQuery]) -> Callable[[AsyncSession], Awaitable[Any]]:
        async def run(session: AsyncSession) -> Any:
            return await log_search.search(session, make())

        return run

    async def context(session: AsyncSession) -> Any:
        anchor = await log_search.get_line(session, line_id=rnd.randint(1, max_id))
        assert anchor is not None
        return await log_search.around(session, anchor, count=10)

    cases: list[tuple[str, Callable[[], LogQuery]]] = [
        (f"rare keyword {RARE!r}", lambda: query(lines, keywords=(RARE,))),
        (f"common keyword {COMMON!r}", lambda: query(lines, keywords=(COMMON,))),
        (
            f"keyword on every line {EVERYWHERE!r}",
            lambda: query(lines, keywords=(EVERYWHERE,), ascending=False),
        ),
        (f"two keywords {RARE!r} + 'rank3'", lambda: query(lines, keywords=(RARE, "rank3"))),
        (
            "one pod, random offset",
            lambda: query(lines, pods=(rnd.choice(PODS),), offset=rnd.randint(0, 9900)),
        ),
        ("one pod, desc", lambda: query(lines, pods=(rnd.choice(PODS),), ascending=False)),
        ("two nodes", lambda: query(lines, nodes=("node-2", "node-5"), offset=rnd.randint(0, 9900))),
    ]
    async with sessions() as session:
        for name, make in cases:
            page, _ = await log_search.statements(session, make())
            found = await log_search.search(session, make())
            print(f"   {name}: total {found.total}, plan:")
            for step in await explain(session, page):
                print(f"      {step}")
    for name, make in cases:
        times = await timed(sessions, runs, search(make))
        print(f"   {name}: p50 {percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms")
    times = await timed(sessions, runs, context)
    print(
        f"   context (10 each side): p50 {percentile(times, 50):.1f} ms, p99 {percentile(times, 99):.1f} ms"
    )


async def bench(name: str, url: str, lines: int, runs: int) -> None:
    upgrade(url)
    engine = create_engine(async_url(url))
    sessions = session_factory(engine)
    try:
        rate, batch_ms = await ingest(sessions, lines)
        median, p99 = statistics.median(batch_ms), round(percentile(batch_ms, 99))
        print(f"{name}: ingest {rate:,.0f} lines/s ({lines:,}; batch of {BATCH}: {median:.0f} ms, p99 {p99})")
        if name == "PostgreSQL":
            async with engine.connect() as conn:  # what autovacuum does soon after a bulk load
                await conn.execute(text("ANALYZE log_lines"))
                await conn.commit()
        await queries(sessions, lines, runs)
    finally:
        await engine.dispose()


@contextlib.contextmanager
def postgres_url(given: str | None) -> Iterator[str]:
    if given:
        with postgres.scratch_database(given) as url:
            yield url
        return
    with postgres.server_url() as server, postgres.scratch_database(server) as url:
        yield url


async def main_async(lines: int, runs: int, pg: str | None, only: str) -> None:
    if only in ("", "sqlite"):
        with tempfile.TemporaryDirectory() as tmp:
            await bench("SQLite", f"sqlite:///{Path(tmp) / 'bench.db'}", lines, runs)
    if only in ("", "postgresql"):
        with postgres_url(pg) as url:
            await bench("PostgreSQL", url, lines, runs)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--lines", type=int, default=1_000_000)
    parser.add_argument("--queries", type=int, default=200, help="runs of each query")
    parser.add_argument("--postgres", default=os.environ.get("PRIMUS_TEST_POSTGRES_URL"))
    parser.add_argument("--only", choices=["", "sqlite", "postgresql"], default="")
    args = parser.parse_args()
    asyncio.run(main_async(args.lines, args.queries, args.postgres, args.only))


if __name__ == "__main__":
    main()
