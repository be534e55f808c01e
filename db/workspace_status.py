"""The one writer of a workspace's status: guarded transitions, called only from workspace activities.

A workspace's status is its `phase` (Creating -> Running -> Deleting; `Abnormal` is derived when
shown, never stored) and `message`. The target node count (`replica`) is spec, but when nodes are
added or removed by id it moves with the binding, in the same transaction, so it is written here
too. Node bindings change through `db.node_status`. The API writes the rest of the spec and the
deletion request (`deleting_at`).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import node_status
from db.workspaces import Workspace, delete_workspace
from domain import workspaces as rules


async def _set(session: AsyncSession, where: ColumnElement[bool], now: datetime, **values: Any) -> bool:
    result = await session.execute(update(Workspace).where(where).values(**values, updated_at=now))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def finish_creation(session: AsyncSession, *, workspace_id: str, message: str, now: datetime) -> bool:
    """Creating -> Running (namespace prepared, nodes bound); False when no longer Creating."""
    where = and_(
        Workspace.id == workspace_id, Workspace.phase == rules.CREATING, Workspace.deleting_at.is_(None)
    )
    return await _set(session, where, now, phase=rules.RUNNING, message=message[:1024])


async def record_message(session: AsyncSession, *, workspace_id: str, message: str, now: datetime) -> bool:
    """Why the last step failed ("" once it succeeded), whatever the phase; False when the
    message was already that (or the workspace is gone)."""
    where = and_(Workspace.id == workspace_id, Workspace.message != message[:1024])
    return await _set(session, where, now, message=message[:1024])


async def record_target(session: AsyncSession, *, workspace_id: str, replica: int, now: datetime) -> bool:
    """The target node count after nodes were added or removed, while not being deleted."""
    where = and_(Workspace.id == workspace_id, Workspace.deleting_at.is_(None))
    return await _set(session, where, now, replica=max(replica, 0))


async def begin_delete(session: AsyncSession, *, workspace_id: str, now: datetime) -> bool:
    """Any phase -> Deleting (the deletion was requested); False when already Deleting."""
    where = and_(Workspace.id == workspace_id, Workspace.phase != rules.DELETING)
    return await _set(session, where, now, phase=rules.DELETING, message="")


async def remove(session: AsyncSession, *, workspace_id: str, now: datetime) -> bool:
    """The teardown is done: every node unbound, the record, managers and secrets removed."""
    await node_status.unbind_workspace(session, workspace_id=workspace_id, node_ids=None, now=now)
    return await delete_workspace(session, workspace_id=workspace_id)
