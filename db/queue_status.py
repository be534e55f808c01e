"""The one writer of the workspace queues: enqueue, withdraw, and a cycle's decision.

Every statement is guarded by the state it expects, so a retried cycle (its worker killed after
the commit) re-decides over what was committed and admits nothing twice, and an entry withdrawn
meanwhile is never admitted. A decision is written in a handful of bulk statements however many
workloads it touches. The caller owns the transaction.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from pydantic import TypeAdapter
from sqlalchemy import String, Text, and_, bindparam, delete, select, text, type_coerce, update
from sqlalchemy import cast as sql_cast
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from db.base import UTCDateTime
from db.scheduling import QueueEntry
from domain import scheduler as s
from domain.scheduling import ADMITTED, QUEUED, Notice, Placement, QueueRequest, placement_json, placements


async def enqueue(session: AsyncSession, *, request: QueueRequest, now: datetime) -> bool:
    """Queue a workload; False when it already has an entry (a retry, or queued already)."""
    dialect = session.get_bind().dialect.name
    insert = (postgresql if dialect == "postgresql" else sqlite).insert(QueueEntry)
    statement = (
        insert.values(
            workload_id=request.workload_id,
            workspace_id=request.workspace_id,
            user_id=request.user_id,
            state=QUEUED,
            priority=request.priority,
            submitted_at=now,
            request=request.request,
            replicas=request.replicas,
            specified_nodes=request.specified_nodes,
            required_labels=request.required_labels,
            tolerate_all=request.tolerate_all,
            failed_over=request.failed_over,
            waiting=request.waiting[:1024],
            placement=[],
            position=0,
            reason="",
            notified=True,
            updated_at=now,
        )
        .on_conflict_do_nothing(index_elements=["workload_id"])
        .returning(QueueEntry.workload_id)
    )
    return (await session.execute(statement)).first() is not None


async def withdraw(session: AsyncSession, *, workload_id: str) -> bool:
    """The workload ended or was stopped: its entry (and what it held) is gone."""
    result = await session.execute(delete(QueueEntry).where(QueueEntry.workload_id == workload_id))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def apply_decision(
    session: AsyncSession,
    *,
    workspace_id: str,
    decision: s.Decision,
    now: datetime,
    shown: Mapping[str, tuple[int, str]] | None = None,
) -> int:
    """Write one cycle's outcome: evictions back to the queue, admissions with their placements
    (only of entries still queued), and each pending entry's position and reason where it differs
    from `shown` (what is stored; None: write them all). Returns how many rows were written."""
    mine = QueueEntry.workspace_id == workspace_id
    if decision.evicted:
        await session.execute(
            update(QueueEntry)
            .where(mine, QueueEntry.workload_id.in_(decision.evicted), QueueEntry.state == ADMITTED)
            .values(
                state=QUEUED,
                placement=[],
                admitted_at=None,
                notified=False,
                reason="preempted by a higher-priority workload",
                updated_at=now,
            )
        )
    if decision.admissions:
        await _update_queued(
            session,
            now=now,
            fields={"pods": "json"},
            assign="state = :admitted, placement = {pods}, position = 0, reason = '', "
            "admitted_at = :now, notified = false, updated_at = :now",
            rows=[
                {"wid": a.workload_id, "pods": placement_json(placements(a.pods))}
                for a in decision.admissions
            ],
        )
    changed = [
        p
        for p in decision.pending
        if shown is None or shown.get(p.workload_id) != (p.position, p.reason[:1024])
    ]
    if changed:
        await _update_queued(
            session,
            now=now,
            fields={"pos": "int", "why": "text"},
            assign="position = {pos}, reason = {why}, updated_at = :now",
            rows=[{"wid": p.workload_id, "pos": p.position, "why": p.reason[:1024]} for p in changed],
        )
    return len(decision.evicted) + len(decision.admissions) + len(changed)


async def unnotified(session: AsyncSession, *, workspace_id: str) -> list[Notice]:
    """Admissions and evictions whose workflows have not been told yet (including those of an
    earlier attempt whose worker died after committing)."""
    # Core columns, no ORM objects (so nothing stale from before this transaction's bulk
    # updates), and each placement validated from its JSON text in one pydantic-core call.
    c = QueueEntry.__table__.c
    rows = await session.execute(
        select(c.workload_id, c.state, type_coerce(sql_cast(c.placement, Text), Text).label("placement"))
        .where(c.workspace_id == workspace_id, c.notified.is_(False))
        .order_by(c.workload_id)
    )
    return [
        Notice(
            workload_id=r.workload_id,
            admitted=r.state == ADMITTED,
            placements=_PLACEMENTS.validate_json(r.placement) if r.placement else [],
        )
        for r in rows
    ]


_PLACEMENTS = TypeAdapter(list[Placement])


async def _update_queued(
    session: AsyncSession,
    *,
    now: datetime,
    fields: Mapping[str, str],
    assign: str,
    rows: Sequence[Mapping[str, Any]],
) -> None:
    """Update many still-queued entries in one statement, each with its own values: the rows
    travel as one JSON array joined in SQL by `wid` (`json_each` on SQLite, `json_to_recordset`
    on PostgreSQL), where an executemany spends some 20 microseconds a row in bind processing.
    `assign` names each row field as `{field}` (typed by `fields`, in PostgreSQL types) and may
    use `:now` and `:admitted`.

    The guard is `state <> Admitted` (the entry is still queued), and no workspace filter: the ids
    are primary keys from the workspace's own snapshot. An equality guard on an unanalysed table
    makes PostgreSQL expect a single row and join by nested loop over the whole rowset per entry
    (12 s for 10,000 entries); this one keeps it on a hash join or primary-key lookups."""
    if session.get_bind().dialect.name == "postgresql":
        record = ", ".join(f"{name} {kind}" for name, kind in {"wid": "text", **fields}.items())
        values = assign.format(**{name: f"r.{name}" for name in fields})
        sql = (
            f"UPDATE workload_queue AS q SET {values} "
            f"FROM json_to_recordset(CAST(:rows AS json)) AS r({record}) "
            "WHERE q.workload_id = r.wid AND q.state <> :admitted"
        )
    else:  # the unary + keeps SQLite on the primary key (a state index would scan per row)
        values = assign.format(**{name: f"json_extract(r.value, '$.{name}')" for name in fields})
        sql = (
            f"UPDATE workload_queue SET {values} FROM json_each(:rows) AS r "
            "WHERE workload_queue.workload_id = json_extract(r.value, '$.wid') "
            "AND +workload_queue.state <> :admitted"
        )
    statement = text(sql).bindparams(
        bindparam("rows", json.dumps(list(rows)), type_=String),
        bindparam("admitted", ADMITTED, type_=String),
        bindparam("now", now, type_=UTCDateTime),
    )
    await session.execute(statement)


async def mark_notified(session: AsyncSession, *, notices: Sequence[Notice], now: datetime) -> None:
    """The workflows of these notices were told (a notice is cleared only for the state it told)."""
    for admitted in (True, False):
        ids = [n.workload_id for n in notices if n.admitted == admitted]
        if ids:
            await session.execute(
                update(QueueEntry)
                .where(
                    and_(
                        QueueEntry.workload_id.in_(ids),
                        QueueEntry.state == (ADMITTED if admitted else QUEUED),
                    )
                )
                .values(notified=True, updated_at=now)
            )
