"""Log search: a workload's pod output and our own services' log records, from the log store
(`db.log_search`), in OpenSearch's answer shape. Workload logs are visible to whoever sees the
workload (others get 404); service logs to administrators only."""

from __future__ import annotations

import time
from datetime import UTC, datetime

from fastapi import APIRouter

from api.deps import Admin, CurrentUser, Session
from api.routes.workloads import visible_workload
from api.schemas import logs as views
from api.schemas.common import ERROR_RESPONSES
from db import log_search
from db.log_lines import LogLine
from domain import log_search as rules
from domain.errors import Invalid, NotFound
from domain.timefmt import parse_time, utcnow

router = APIRouter(tags=["logs"], responses=ERROR_RESPONSES)

DISPATCH_LABEL = "primus_safe.workload.dispatch.count"
WORKLOAD_LABEL = "primus_safe.workload.id"


@router.post(
    "/workloads/{WorkloadId}/logs",
    response_model=views.LogSearchResponse,
    response_model_exclude_none=True,
    summary="Search a workload's logs",
)
async def workload_logs(
    WorkloadId: str, caller: CurrentUser, session: Session, body: views.LogQueryBody | None = None
) -> views.LogSearchResponse:
    """Lines of the workload's pods in time order: keywords are case-sensitive substrings, all
    required; `podNames` (else `nodeNames`) keep lines of those pods (nodes)."""
    started = time.perf_counter()
    body = body or views.LogQueryBody()
    workload = await visible_workload(session, caller, WorkloadId)
    since, until = rules.workload_window(
        _time("since", body.since),
        _time("until", body.until),
        created=workload.created_at,
        ended=workload.end_time if workload.ended else None,
        now=utcnow(),
    )
    query = _query(body, since, until, workload_id=workload.id)
    page = await log_search.search(session, query)
    return _answer(started, page.total, [_hit(row) for row in page.rows])


@router.post(
    "/workloads/{WorkloadId}/logs/{DocumentId}/context",
    response_model=views.LogSearchResponse,
    response_model_exclude_none=True,
    summary="The lines around one line of a workload's log",
)
async def workload_log_context(
    WorkloadId: str,
    DocumentId: str,
    caller: CurrentUser,
    session: Session,
    body: views.LogQueryBody | None = None,
) -> views.LogSearchResponse:
    """`limit` lines (default 10, at most 1000) before and after the line `DocumentId` of the
    same pod, container and dispatch, oldest first, the line itself included (`line` 0)."""
    started = time.perf_counter()
    body = body or views.LogQueryBody()
    workload = await visible_workload(session, caller, WorkloadId)
    count = body.limit or rules.CONTEXT_DEFAULT
    if not 0 < count <= rules.CONTEXT_MAX:
        raise Invalid(f"limit (lines on each side) must be between 1 and {rules.CONTEXT_MAX}")
    anchor = await log_search.get_line(session, line_id=_line_id(DocumentId))
    if anchor is None or anchor.workload_id != workload.id:
        raise NotFound("Log", DocumentId)
    before, after = await log_search.around(session, anchor, count=count)
    hits = [_hit(row, line=i - len(before)) for i, row in enumerate([*before, anchor, *after])]
    return _answer(started, len(hits), hits)


@router.post(
    "/service/{ServiceName}/logs",
    response_model=views.LogSearchResponse,
    response_model_exclude_none=True,
    summary="Search our own services' logs (admin)",
)
async def service_logs(
    ServiceName: str, _: Admin, session: Session, body: views.LogQueryBody | None = None
) -> views.LogSearchResponse:
    """The API's (`primus-safe-apiserver`, `primus-safe-webhooks`, `api`) or the worker's
    (`primus-safe-job-manager`, `primus-safe-resource-manager`, `worker`) log records; without
    `since`, the 168 hours before `until`."""
    started = time.perf_counter()
    body = body or views.LogQueryBody()
    service = rules.SERVICES.get(ServiceName)
    if service is None:
        raise NotFound("Service", ServiceName)
    since, until = rules.service_window(_time("since", body.since), _time("until", body.until), now=utcnow())
    page = await log_search.search(session, _query(body, since, until, service=service))
    hits = [_hit(row, app=ServiceName) for row in page.rows]
    return _answer(started, page.total, hits)


def _query(
    body: views.LogQueryBody, since: datetime, until: datetime, *, workload_id: str = "", service: str = ""
) -> rules.LogQuery:
    offset, limit = rules.check_page(body.offset, body.limit)
    return rules.LogQuery(
        since=since,
        until=until,
        workload_id=workload_id,
        service=service,
        offset=offset,
        limit=limit,
        ascending=rules.check_order(body.order),
        keywords=rules.check_keywords(body.keywords),
        pods=rules.csv(body.pod_names),
        nodes=rules.csv(body.node_names),
        dispatch_count=body.dispatch_count,
    )


def _time(field: str, text: str) -> datetime | None:
    if not text.strip():
        return None
    try:
        return parse_time(text)
    except ValueError:
        raise Invalid(f"{field}: {text!r} is not a time like 2006-01-02T15:04:05.000Z") from None


def _line_id(text: str) -> int:
    if not text.isdigit() or len(text) > 18:
        raise NotFound("Log", text)
    return int(text)


def _timestamp(at: datetime) -> str:
    at = at.astimezone(UTC) if at.tzinfo else at
    return at.strftime("%Y-%m-%dT%H:%M:%S.") + f"{at.microsecond // 1000:03d}Z"


def _hit(row: LogLine, *, line: int | None = None, app: str = "") -> views.HitView:
    if app:
        labels = {"app": app}
    else:
        labels = {WORKLOAD_LABEL: row.workload_id, DISPATCH_LABEL: str(row.dispatch_count)}
    return views.HitView(
        id=str(row.id),
        source=views.SourceView(
            timestamp=_timestamp(row.at),
            stream=row.stream,
            message=row.line,
            level=row.level if app else None,
            kubernetes=views.KubernetesView(
                pod_name=row.pod, host=row.node, container_name=row.container, labels=labels
            ),
        ),
        line=line,
    )


def _answer(started: float, total: int, hits: list[views.HitView]) -> views.LogSearchResponse:
    return views.LogSearchResponse(
        took=round((time.perf_counter() - started) * 1000),
        hits=views.HitsView(
            total=views.TotalView(value=total, relation=rules.total_relation(total)), hits=hits
        ),
    )
