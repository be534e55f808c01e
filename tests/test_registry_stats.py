"""`GET /harbor/stats` answers from the database: what was imported (repositories and distinct blob
bytes of Ready images) and the registry's health as the last scheduled check recorded it. Against
a real internal registry holding many repositories, the stats call sends it no request."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from db.images import RegistryStats
from domain.timefmt import utcnow
from tests.conftest import Platform
from tests.fixtures.registry import (
    Registry,
    internal_registry_at,
    push_repositories,
    refresh_registry_stats,
    restart_empty,
    running_registries,
    start_registry,
)

PORTS = {"source": (15020, "", ""), "internal": (15021, "", "")}
UNCHECKED_PORT = 15022
IMPORTED = 40
"""Repositories imported through the API."""
FOREIGN = 25
"""Repositories pushed to the internal registry behind the platform's back."""


@pytest.fixture(scope="module")
def regs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Registry]]:
    with running_registries(tmp_path_factory.mktemp("registry-stats"), PORTS) as started:
        yield started


@pytest.fixture(autouse=True)
def internal(platform: Platform, regs: dict[str, Registry]) -> Iterator[Registry]:
    regs["internal"] = restart_empty(regs["internal"])
    with internal_registry_at(platform.settings, regs["internal"].host):
        yield regs["internal"]


async def stats(api: httpx.AsyncClient, headers: dict[str, str]) -> dict[str, Any]:
    resp = await api.get("/api/v1/harbor/stats", headers=headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def import_all(api: httpx.AsyncClient, headers: dict[str, str], sources: list[str]) -> list[int]:
    """Import every source through the API (a few at a time) and wait until all are ready."""
    gate = asyncio.Semaphore(8)

    async def one(source: str) -> int:
        async with gate:
            resp = await api.post("/api/v1/images:import", json={"source": source}, headers=headers)
            answer = resp.json()
            assert answer["state"] == 1, answer
            for _ in range(1200):
                details = (
                    await api.get(f"/api/v1/images/{answer['imageId']}/importing-details", headers=headers)
                ).json()
                if details["status"] != "importing":
                    assert details["status"] == "ready", details
                    return int(answer["imageId"])
                await asyncio.sleep(0.05)
            raise AssertionError(f"import of {source} did not finish")

    return list(await asyncio.gather(*(one(s) for s in sources)))


async def test_stats_come_from_the_database(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    regs: dict[str, Registry],
    internal: Registry,
) -> None:
    source = regs["source"]
    blobs = await push_repositories(source.host, IMPORTED, prefix="team")
    resp = await api.post(
        "/api/v1/image-registries",
        json={"name": "src", "url": f"http://{source.host}", "insecure": True},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text

    # a registry never checked yet (the check at worker start saw another): health unknown, not guessed
    with internal_registry_at(platform.settings, f"127.0.0.1:{UNCHECKED_PORT}"):
        before = await stats(api, alice)
    assert before["status"] == "unknown" and {"name": "registry", "status": "unknown"} in before["components"]
    assert before["public_repo_count"] == 0 and before["total_storage"] == 0

    ids = await import_all(api, alice, [f"{source.host}/team/app{i}:1" for i in range(IMPORTED)])
    await push_repositories(internal.host, FOREIGN, prefix="foreign")  # not imported: not counted
    check = await refresh_registry_stats(platform.state.temporal, platform.settings)
    assert check.status == "healthy" and check.repositories == IMPORTED + FOREIGN, check

    served = len(internal.access_log())
    answer = await stats(api, alice)
    assert len(internal.access_log()) == served  # the registry got no request for the stats
    assert answer == {
        "status": "healthy",
        "components": [{"name": "registry", "status": "healthy"}, {"name": "database", "status": "healthy"}],
        "private_project_count": 0,
        "public_project_count": 0,
        "private_repo_count": 0,
        "public_repo_count": IMPORTED,
        "total_storage": sum(blobs.values()),  # every imported layer and config, once each
    }

    # an image being deleted is gone from the stats at once
    deleted = await api.delete(f"/api/v1/images/{ids[0]}", headers=alice)
    assert deleted.status_code == 200, deleted.text
    assert (await stats(api, alice))["public_repo_count"] == IMPORTED - 1

    # the registry goes down: the stats still answer at once, from the last check
    internal.stop()
    try:
        assert (await stats(api, alice))["status"] == "healthy"
        down = await refresh_registry_stats(platform.state.temporal, platform.settings)
        assert down.status == "unhealthy" and down.repositories is None
        answer = await stats(api, alice)
        assert answer["status"] == "unhealthy" and answer["public_repo_count"] == IMPORTED - 1
    finally:
        regs["internal"] = start_registry(internal.root.parent, internal.name, internal.port)

    # a check older than three schedule intervals says nothing any more
    async with platform.state.sessions() as session, session.begin():
        await session.execute(update(RegistryStats).values(checked_at=utcnow() - timedelta(hours=1)))
    assert (await stats(api, alice))["status"] == "unknown"


async def test_stats_without_internal_registry(
    api: httpx.AsyncClient, alice: dict[str, str], platform: Platform
) -> None:
    with internal_registry_at(platform.settings, ""):
        platform.settings.images_internal_registry = None
        answer = await stats(api, alice)
    assert answer["status"] == "unhealthy"
    assert answer["components"] == [{"name": "registry", "status": "not configured"}]
    assert answer["public_repo_count"] == 0 and answer["total_storage"] == 0
