"""Log search rules: the query, its paging and time window, and how keywords match.

A keyword matches a line that contains it verbatim (case-sensitive substring; spaces and
punctuation are part of it); several keywords must all match. Both databases find candidates
with a trigram index (SQLite FTS5 `trigram`, PostgreSQL `pg_trgm`), which needs at least
`MIN_INDEXED` characters; shorter keywords only filter. Totals are exact up to `TOTAL_CAP` and
reported as `gte` beyond, as OpenSearch's default `track_total_hits` does.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from domain.errors import Invalid

MAX_WINDOW = 10_000
"""offset + limit of one search (upstream's max docs per query)."""
DEFAULT_LIMIT = 100
TOTAL_CAP = 10_000
"""Totals are counted up to here; beyond, `total.relation` is `gte`."""
MIN_INDEXED = 3
"""Shortest keyword a trigram index can find."""
MAX_KEYWORDS = 16
MAX_KEYWORD_LENGTH = 256
CONTEXT_DEFAULT = 10
"""Lines on each side of a context query when its body gives no `limit`."""
CONTEXT_MAX = 1000
SERVICE_WINDOW = timedelta(hours=168)
"""A service log search without `since` looks this far back from `until`."""

SERVICES = {
    "primus-safe-apiserver": "api",
    "primus-safe-webhooks": "api",
    "primus-safe-job-manager": "worker",
    "primus-safe-resource-manager": "worker",
    "api": "api",
    "worker": "worker",
}
"""Service names of the contract (and ours) -> the `service` of our stored log records: the API
does the apiserver's and the webhooks' work, the worker the job and resource managers'."""


@dataclass(frozen=True)
class LogQuery:
    """One search of the log store: a workload's lines (`workload_id`) or a service's (`service`)."""

    since: datetime
    until: datetime
    workload_id: str = ""
    service: str = ""
    offset: int = 0
    limit: int = DEFAULT_LIMIT
    ascending: bool = True
    keywords: tuple[str, ...] = ()
    pods: tuple[str, ...] = ()
    nodes: tuple[str, ...] = ()
    """Ignored when `pods` is given."""
    dispatch_count: int = 0
    """0: every dispatch."""


def total_relation(total: int) -> str:
    """OpenSearch's `hits.total.relation`: `gte` once the count reached the cap."""
    return "gte" if total >= TOTAL_CAP else "eq"


def csv(text: str) -> tuple[str, ...]:
    """`a, b,,c` -> ("a", "b", "c")."""
    return tuple(dict.fromkeys(part.strip() for part in text.split(",") if part.strip()))


def check_page(offset: int, limit: int) -> tuple[int, int]:
    """The page; `limit` 0 means the default. offset + limit beyond `MAX_WINDOW` is refused."""
    if offset < 0 or limit < 0:
        raise Invalid("invalid query offset or limit")
    limit = limit or DEFAULT_LIMIT
    if offset + limit > MAX_WINDOW:
        raise Invalid(f"offset + limit cannot exceed {MAX_WINDOW} (offset {offset}, limit {limit})")
    return offset, limit


def check_order(order: str) -> bool:
    """True for ascending; "" means asc."""
    if order not in ("", "asc", "desc"):
        raise Invalid("the order parameter only supports asc and desc")
    return order != "desc"


def check_keywords(keywords: list[str]) -> tuple[str, ...]:
    """The keywords, trimmed, without empty ones and repeats."""
    if len(keywords) > MAX_KEYWORDS:
        raise Invalid(f"at most {MAX_KEYWORDS} keywords")
    kept = tuple(dict.fromkeys(k.strip() for k in keywords if k.strip()))
    for keyword in kept:
        if len(keyword) > MAX_KEYWORD_LENGTH:
            raise Invalid(f"a keyword is at most {MAX_KEYWORD_LENGTH} characters")
    return kept


def workload_window(
    since: datetime | None,
    until: datetime | None,
    *,
    created: datetime,
    ended: datetime | None,
    now: datetime,
) -> tuple[datetime, datetime]:
    """Upstream's window: until = min(until, end) with end the workload's end (or now); since
    defaults to the creation and is never before it."""
    end = min(ended or now, now)
    until = min(until, end) if until is not None else end
    since = max(since, created) if since is not None else created
    if since > until:
        raise Invalid("the since time is later than until time")
    return since, until


def service_window(
    since: datetime | None, until: datetime | None, *, now: datetime
) -> tuple[datetime, datetime]:
    """A service's window: until defaults to now, since to `SERVICE_WINDOW` before until."""
    until = min(until, now) if until is not None else now
    since = since if since is not None else until - SERVICE_WINDOW
    if since > until:
        raise Invalid("the since time is later than until time")
    return since, until


def indexed_keywords(keywords: tuple[str, ...]) -> tuple[str, ...]:
    """The keywords a trigram index can find."""
    return tuple(k for k in keywords if len(k) >= MIN_INDEXED)


def trigrams(keyword: str) -> list[str]:
    """The distinct three-character pieces of `keyword`, in order."""
    return list(dict.fromkeys(keyword[i : i + 3] for i in range(len(keyword) - 2)))


def fts5_query(keywords: tuple[str, ...]) -> str:
    """An FTS5 MATCH expression for rows holding every trigram of every keyword: the candidates
    of a `detail=none` trigram index (which answers single-token terms only); the exact test is
    the caller's."""
    pieces = dict.fromkeys(t for k in keywords for t in trigrams(k))
    return " AND ".join('"' + t.replace('"', '""') + '"' for t in pieces)


def like_pattern(keyword: str) -> str:
    r"""`%keyword%` with `\`, `%` and `_` escaped (for `LIKE ... ESCAPE '\'`)."""
    escaped = keyword.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"
