"""Log search over `log_lines`, one query layer for SQLite FTS5 and PostgreSQL pg_trgm.

Every search is one ordered page (`at`, `id`) plus a total counted up to `TOTAL_CAP`, so its
cost follows the lines it returns (at most `MAX_WINDOW` + the cap), not the lines stored:

- no keyword: the `(workload_id, at, id)` / `(workload_id, pod, at, id)` / `(service, at, id)`
  indexes in order;
- keywords: each is tested exactly (`instr` / `strpos`, case-sensitive); the trigram index
  (migration 0019) finds the candidates. PostgreSQL's planner chooses between the GIN index
  and the time-ordered scan from its statistics. On SQLite the count always walks the FTS5
  candidates in rowid order and stops at the cap; the page does too (sorting them) when a probe
  finds fewer than `PROBE`, else it walks the time-ordered index, where a common word's first
  page comes soonest.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Integer,
    Select,
    column,
    func,
    literal,
    literal_column,
    select,
    table,
    tuple_,
    type_coerce,
)
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute

from db.log_lines import LogLine
from domain.log_search import TOTAL_CAP, LogQuery, fts5_query, indexed_keywords, like_pattern

FTS_TABLE = "log_lines_fts"
TRIGRAM_INDEX = "ix_log_lines_line_trgm"
PROBE = TOTAL_CAP
"""SQLite uses the FTS5 index when a keyword set has fewer candidates than this."""

FTS = table(FTS_TABLE, column("rowid", Integer))

SEARCH_INDEX_NAMES = frozenset(
    {
        FTS_TABLE,
        *(f"{FTS_TABLE}_{shadow}" for shadow in ("data", "idx", "config", "docsize", "content")),
        TRIGRAM_INDEX,
    }
)
"""Objects of migration 0019 that are not SQLAlchemy models (FTS5 tables, the trigram index)."""


@dataclass(frozen=True)
class Page:
    """The rows of one search and how many lines match in all (capped at `TOTAL_CAP`)."""

    total: int
    rows: list[LogLine]


def is_search_index(name: str | None) -> bool:
    """True for the search index's tables and index (not in the models; autogenerate skips them)."""
    return name in SEARCH_INDEX_NAMES


async def search(session: AsyncSession, query: LogQuery) -> Page:
    """One page of matching lines in time order and the total (capped at `TOTAL_CAP`)."""
    page, total = await statements(session, query)
    rows = list((await session.scalars(page)).all())
    return Page(total=int(await session.scalar(total) or 0), rows=rows)


async def statements(session: AsyncSession, query: LogQuery) -> tuple[Select[LogLine], Select[int]]:
    """The page and the capped count of `query` (the benchmark EXPLAINs them)."""
    sqlite = session.get_bind().dialect.name == "sqlite"
    exact, match = _keyword_conditions(query.keywords, sqlite=sqlite)
    plain = _filters(query, sqlite=sqlite, col=_plain) + exact
    page = _page(select(LogLine).where(*plain), query, _plain)
    capped = select(LogLine.id).where(*plain)
    if match is not None:  # SQLite: the FTS5 candidates, in rowid order, looked up one by one
        driven = _filters(query, sqlite=sqlite, col=_unindexed) + exact
        candidates = FTS.join(LogLine, LogLine.id == FTS.c.rowid)
        capped = select(LogLine.id).select_from(candidates).where(_fts_match(match), *driven)
        probe = select(FTS.c.rowid).where(_fts_match(match)).limit(PROBE).subquery()
        if int(await session.scalar(select(func.count()).select_from(probe)) or 0) < PROBE:
            few = select(LogLine).select_from(candidates).where(_fts_match(match), *driven)
            page = _page(few, query, _unindexed)
    return page, select(func.count()).select_from(capped.limit(TOTAL_CAP).subquery())


def _page(statement: Select[LogLine], query: LogQuery, col: Column) -> Select[LogLine]:
    at, line_id = col(LogLine.at), col(LogLine.id)
    order = (at, line_id) if query.ascending else (at.desc(), line_id.desc())
    return statement.order_by(*order).offset(query.offset).limit(query.limit)


async def get_line(session: AsyncSession, *, line_id: int) -> LogLine | None:
    """One stored line."""
    return await session.get(LogLine, line_id)


async def around(
    session: AsyncSession, anchor: LogLine, *, count: int
) -> tuple[list[LogLine], list[LogLine]]:
    """Up to `count` lines before and after `anchor` of the same pod, container and dispatch
    (service records: of the same process), both oldest first."""
    same = [
        LogLine.workload_id == anchor.workload_id,
        LogLine.service == anchor.service,
        LogLine.pod == anchor.pod,
        LogLine.dispatch_count == anchor.dispatch_count,
        LogLine.container == anchor.container,
    ]
    key = tuple_(LogLine.at, LogLine.id)
    here = tuple_(literal(anchor.at, LogLine.at.type), literal(anchor.id, LogLine.id.type))
    before = await session.scalars(
        select(LogLine).where(*same, key < here).order_by(LogLine.at.desc(), LogLine.id.desc()).limit(count)
    )
    after = await session.scalars(
        select(LogLine).where(*same, key > here).order_by(LogLine.at, LogLine.id).limit(count)
    )
    return list(reversed(before.all())), list(after.all())


Column = Callable[[InstrumentedAttribute[Any]], ColumnElement[Any]]


def _plain(column: InstrumentedAttribute[Any]) -> ColumnElement[Any]:
    return column.expression


def _unindexed(column: InstrumentedAttribute[Any]) -> ColumnElement[Any]:
    """SQLite's `+column`: the same value, but no index may serve the term. SQLite plans without
    statistics (nobody runs ANALYZE), taking an equality for a few rows, so without this it would
    walk a workload's whole time range instead of looking its few candidates up by rowid."""
    return type_coerce(literal_column(f"+{LogLine.__tablename__}.{column.key}"), column.type)


def _filters(query: LogQuery, *, sqlite: bool, col: Column) -> list[ColumnElement[bool]]:
    owner = (
        col(LogLine.service) == query.service
        if query.service
        else col(LogLine.workload_id) == query.workload_id
    )
    conditions = [owner, col(LogLine.at) >= query.since, col(LogLine.at) <= query.until]
    if query.dispatch_count > 0:
        conditions.append(LogLine.dispatch_count == query.dispatch_count)
    if query.pods:
        # one pod: its (workload, pod, at) range in order; several: SQLite would read each pod's
        # range and sort, so it walks the workload's time order instead (PostgreSQL's planner picks)
        pod = col(LogLine.pod) if len(query.pods) == 1 or not sqlite else _unindexed(LogLine.pod)
        conditions.append(pod.in_(query.pods))
    elif query.nodes:
        conditions.append(LogLine.node.in_(query.nodes))
    return conditions


def _keyword_conditions(
    keywords: tuple[str, ...], *, sqlite: bool
) -> tuple[list[ColumnElement[bool]], str | None]:
    """The exact test of every keyword (with PostgreSQL's indexable LIKE), and on SQLite the
    FTS5 expression of the candidates when a keyword is long enough for the index."""
    if not keywords:
        return [], None
    find = func.instr if sqlite else func.strpos
    exact: list[ColumnElement[bool]] = [find(LogLine.line, k) > 0 for k in keywords]
    indexed = indexed_keywords(keywords)
    if not indexed:
        return exact, None
    if not sqlite:  # LIKE is case-sensitive here and the GIN index serves it; the planner decides
        return [LogLine.line.like(like_pattern(k), escape="\\") for k in indexed] + exact, None
    return exact, fts5_query(indexed)


def _fts_match(match: str) -> ColumnElement[bool]:
    return literal_column(FTS_TABLE).op("MATCH")(match)
