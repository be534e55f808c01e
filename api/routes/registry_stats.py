"""Statistics of the internal registry, answered from the database alone (no registry I/O)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter

from api.deps import CurrentUser, Session, State
from api.schemas.common import ERROR_RESPONSES
from api.schemas.images import HarborComponent, HarborStats
from db import images as db
from domain.images import registry_location
from domain.timefmt import utcnow

router = APIRouter(tags=["images"], responses=ERROR_RESPONSES)

STALE_INTERVALS = 3
"""A check older than this many schedule intervals says nothing any more: health is `unknown`."""


@router.get("/harbor/stats", response_model=HarborStats, summary="Statistics of the internal registry")
async def harbor_stats(_: CurrentUser, session: Session, state: State) -> HarborStats:
    """What was imported into the internal registry (repositories and storage of Ready images) and
    its health as the `system/registry-stats` schedule last saw it (`unknown` before the first
    check); Harbor's project counts are 0."""
    settings = state.settings
    if not settings.images_internal_registry:
        return HarborStats(
            status="unhealthy",
            components=[HarborComponent(name="registry", status="not configured")],
            private_project_count=0,
            public_project_count=0,
            private_repo_count=0,
            public_repo_count=0,
            total_storage=0,
        )
    host = registry_location(settings.images_internal_registry)[0]
    usage = await db.imported_usage(session, registry_host=host)
    check = await db.last_registry_check(session, registry_host=host)
    await session.commit()
    fresh_after = utcnow() - timedelta(
        seconds=STALE_INTERVALS * max(1, settings.images_stats_interval_seconds)
    )
    health = check.status if check is not None and check.checked_at >= fresh_after else "unknown"
    private = bool(settings.images_internal_username)
    return HarborStats(
        status=health,
        components=[
            HarborComponent(name="registry", status=health),
            HarborComponent(name="database", status="healthy"),
        ],
        private_project_count=0,
        public_project_count=0,
        private_repo_count=usage.repositories if private else 0,
        public_repo_count=0 if private else usage.repositories,
        total_storage=usage.storage,
    )
