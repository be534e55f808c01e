"""Our services' log records: stored by the running app's handler, searched by admins per
service; a full queue drops and counts; the writer never stores its own database logging."""

from __future__ import annotations

import json
import logging
import uuid
from typing import Any

import httpx
from sqlalchemy import select

from db.log_lines import LogLine
from primus_safe.service_logs import ServiceLogHandler, flush, service_of
from tests.conftest import Platform
from tests.fixtures.polling import until

SERVICE = "/api/v1/service"


async def hits(
    api: httpx.AsyncClient, headers: dict[str, str], name: str, **body: Any
) -> list[dict[str, Any]]:
    resp = await api.post(f"{SERVICE}/{name}/logs", json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["hits"]["hits"]
    return found


async def test_the_apps_records_are_searchable_per_service(
    platform: Platform, api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    marker = uuid.uuid4().hex
    logging.getLogger("api.routes.test").warning("request for %s refused", marker)
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger("activities.test").exception("activity for %s failed", marker)

    async def stored() -> bool:
        return len(await hits(api, admin, "primus-safe-apiserver", keywords=[marker])) == 1

    await until(stored, within=15)
    [api_hit] = await hits(api, admin, "primus-safe-apiserver", keywords=[marker])
    record = json.loads(api_hit["_source"]["message"])
    assert record["level"] == "WARNING" and record["logger"] == "api.routes.test"
    assert record["message"] == f"request for {marker} refused"
    assert api_hit["_source"]["level"] == "WARNING"
    assert api_hit["_source"]["kubernetes"]["labels"] == {"app": "primus-safe-apiserver"}

    async def in_worker_logs() -> bool:
        return len(await hits(api, admin, "worker", keywords=[marker])) == 1

    await until(in_worker_logs, within=15)
    [worker_hit] = await hits(api, admin, "primus-safe-job-manager", keywords=[marker, "ValueError: boom"])
    assert json.loads(worker_hit["_source"]["message"])["level"] == "ERROR"
    assert await hits(api, admin, "primus-safe-apiserver", keywords=[marker, "boom"]) == []


async def test_a_full_queue_drops_and_counts_and_the_writer_skips_its_own_logging(platform: Platform) -> None:
    handler = ServiceLogHandler("api", capacity=2)
    marker = uuid.uuid4().hex
    logger = logging.getLogger(f"api.queue.{marker}")
    logger.propagate = False
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        for i in range(5):
            logger.info("record %d of %s", i, marker)
        own = {
            "name": "sqlalchemy.engine",
            "msg": f"never stored {marker}",
            "levelno": 30,
            "levelname": "WARNING",
        }
        handler.handle(logging.makeLogRecord(own))
        assert await flush(handler, platform.state.sessions) == 3  # 2 records and the drop count
    finally:
        logger.removeHandler(handler)
    async with platform.state.sessions() as session:
        lines = (await session.scalars(select(LogLine.line).where(LogLine.pod == handler.pod))).all()
    messages = [json.loads(line)["message"] for line in lines]
    assert messages == [
        f"record 0 of {marker}",
        f"record 1 of {marker}",
        "3 log records dropped: the service log queue was full or unwritable",
    ]
    assert service_of("uvicorn.access", "worker") == "api"
    assert service_of("temporalio.worker", "api") == "worker"
    assert service_of("db.session", "worker") == "worker"
