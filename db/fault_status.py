"""The one writer of a fault's status and of the node state it owns: guarded transitions called
only from the fault activities (and the probe's, which raises and clears its own faults).

Applying a fault adds its taint (`primus-safe.<monitorId>`) to the node and a `fault` hold
(ref = fault id), closing it removes the hold and, unless another open fault of the same monitor
still needs it, the taint. Both are idempotent, so a retried activity changes nothing twice.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession

from db import node_status
from db.faults import Fault, open_fault
from domain import faults as rules
from domain.nodes import UnavailableReason


async def apply(session: AsyncSession, *, fault: Fault, now: datetime) -> bool:
    """Taint the node and hold it unavailable; phase Succeeded. False when the fault was closed
    meanwhile or its node is gone (then Failed)."""
    if not fault.is_open:
        return False
    tainted = await node_status.set_platform_taint(
        session, node_id=fault.node_id, key=rules.taint_key(fault.monitor_id), effect=fault.effect, now=now
    )
    if not tainted:
        await _set_phase(session, fault.id, rules.FAILED, now)
        return False
    await node_status.mark_unavailable(
        session,
        node_id=fault.node_id,
        reason=UnavailableReason.FAULT,
        ref=fault.id,
        message=rules.hold_message(fault.monitor_id, fault.message),
        now=now,
    )
    await _set_phase(session, fault.id, rules.SUCCEEDED, now)
    return True


async def close(session: AsyncSession, *, fault: Fault, now: datetime) -> bool:
    """Stop the fault: its hold goes, its taint too unless another open fault of the monitor is on
    the node; `deleted_at` set once. Returns whether the taint was removed."""
    if fault.is_open:
        await session.execute(
            update(Fault)
            .where(Fault.id == fault.id, Fault.deleted_at.is_(None))
            .values(deleted_at=now, updated_at=now)
        )
    await node_status.mark_available(
        session, node_id=fault.node_id, reason=UnavailableReason.FAULT, ref=fault.id
    )
    other = await open_fault(session, node_id=fault.node_id, monitor_id=fault.monitor_id)
    if other is not None and other.id != fault.id:
        return False
    return await node_status.clear_platform_taint(
        session, node_id=fault.node_id, key=rules.taint_key(fault.monitor_id), now=now
    )


async def remove(session: AsyncSession, *, fault_id: str) -> bool:
    """Delete a closed fault's record; False when it is gone or still open."""
    result = await session.execute(delete(Fault).where(Fault.id == fault_id, Fault.deleted_at.is_not(None)))
    return bool(result.rowcount)  # type: ignore[attr-defined]


async def _set_phase(session: AsyncSession, fault_id: str, phase: str, now: datetime) -> None:
    await session.execute(update(Fault).where(Fault.id == fault_id).values(phase=phase, updated_at=now))
