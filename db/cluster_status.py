"""The one writer of a cluster's status: guarded transitions, called only from cluster activities.

A cluster's status is its `phase`, `step`, `message`, and what provisioning produced (`endpoint`,
`kubeconfig_encrypted`, `work_dir`). The API writes the spec, `is_protected` and the deletion
request (`deleting_at`); everything else changes here, each change one guarded statement
returning whether it applied. Node bindings change through `db.node_status`, in the same
transaction where both move together.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import node_status
from db.clusters import Cluster, delete_cluster
from domain import clusters as rules


async def _set(session: AsyncSession, where: ColumnElement[bool], now: datetime, **values: Any) -> bool:
    result = await session.execute(update(Cluster).where(where).values(**values, updated_at=now))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def begin_step(session: AsyncSession, *, cluster_id: str, step: str, now: datetime) -> bool:
    """A provisioning step (Provisioning, Resetting) starts; False when it already was the step."""
    return await _set(session, and_(Cluster.id == cluster_id, Cluster.step != step), now, step=step)


async def record_provisioned(
    session: AsyncSession,
    *,
    cluster_id: str,
    endpoint: str,
    work_dir: str,
    kubeconfig_encrypted: str,
    now: datetime,
) -> bool:
    """What a provisioning run produced, while the cluster is still being created."""
    where = and_(Cluster.id == cluster_id, Cluster.phase == rules.CREATING)
    return await _set(
        session, where, now, endpoint=endpoint, work_dir=work_dir, kubeconfig_encrypted=kubeconfig_encrypted
    )


async def finish_creation(
    session: AsyncSession, *, cluster: Cluster, phase: str, message: str, now: datetime
) -> bool:
    """Creating -> Ready (its control-plane nodes become bound) or Failed with the reason.
    False when the cluster is no longer being created (a retry after it applied)."""
    where = and_(Cluster.id == cluster.id, Cluster.phase == rules.CREATING)
    if not await _set(session, where, now, phase=phase, message=message[:1024], step=""):
        return False
    if phase == rules.READY:
        await node_status.bind_control_plane(
            session, cluster_id=cluster.id, node_ids=cluster.control_plane_nodes, now=now
        )
    return True


async def begin_delete(session: AsyncSession, *, cluster_id: str, now: datetime) -> bool:
    """Any phase -> Deleting (the deletion was requested); False when already Deleting."""
    where = and_(Cluster.id == cluster_id, Cluster.phase != rules.DELETING)
    return await _set(session, where, now, phase=rules.DELETING, step="", message="")


async def abort_delete(session: AsyncSession, *, cluster_id: str, message: str, now: datetime) -> bool:
    """Deleting -> Failed with the reason; the deletion request is dropped, so it may be retried."""
    where = and_(Cluster.id == cluster_id, Cluster.phase == rules.DELETING)
    return await _set(
        session, where, now, phase=rules.FAILED, step="", message=message[:1024], deleting_at=None
    )


async def remove(session: AsyncSession, *, cluster_id: str, now: datetime) -> bool:
    """The teardown is done: nodes unbound, the record and its log removed."""
    await node_status.release_cluster(session, cluster_id=cluster_id, now=now)
    return await delete_cluster(session, cluster_id=cluster_id)
