"""Log search on both backends: a workload with two pods and two dispatches, searched by pod,
node, keyword and dispatch (totals and pages), the context of a line, bad input, and who sees
what. Lines are stored with `add_lines`, as the collection stores them."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, text, update
from temporalio.testing import ActivityEnvironment

from activities.maintenance import MaintenanceActivities
from db import log_search
from db.log_lines import LogLine, NewLine, add_lines
from db.users import User
from db.workloads import Workload
from domain.timefmt import utcnow
from tests.conftest import Platform
from tests.fixtures.workspaces import add_workspace
from workflows.maintenance import LogRetentionWorkflow

WL = "/api/v1/workloads"


@dataclass
class Stored:
    workload_id: str
    start: datetime
    ids: dict[tuple[int, str, int], int]
    """(dispatch, pod, seq) -> row id"""


def text_of(dispatch: int, pod: str, seq: int) -> str:
    special = {
        (1, "p0", 3): "[rank0] ERROR: NCCL timeout (watchdog) after 1800000 ms",
        (1, "p1", 5): "WARNING: grad_norm is NaN, skipping step",
        (1, "p1", 6): "checkpoint 100% done",
        (2, "p0", 2): "[rank0] ERROR: CUDA out of memory",
    }
    return special.get((dispatch, pod, seq), f"iteration {seq:3d} / 100 | lm loss: {seq * 0.1:.4E} | {pod}")


async def store(platform: Platform, workspace_id: str) -> Stored:
    """Workload `w-…` in `workspace_id`: dispatch 1 with pods p0 (node n0) and p1 (node n1), 10
    lines each, then dispatch 2 with p0 on n1, 5 lines; one line per second in that order."""
    workload_id = f"w-{uuid.uuid4().hex[:8]}"
    start = utcnow() - timedelta(hours=1)
    async with platform.state.sessions() as session, session.begin():
        session.add(
            Workload(
                id=workload_id,
                display_name="job",
                workspace_id=workspace_id,
                cluster_id="c",
                user_id="",
                kind="PyTorchJob",
                spec={},
                phase="Running",
                dispatch_count=2,
                created_at=start,
                updated_at=start,
            )
        )
    lines = []
    at = start
    for dispatch, pods in ((1, (("p0", "n0"), ("p1", "n1"))), (2, (("p0", "n1"),))):
        for seq in range(1, (11 if dispatch == 1 else 6)):
            for pod, node in pods:
                at += timedelta(seconds=1)
                lines.append(
                    NewLine(
                        at=at,
                        line=text_of(dispatch, pod, seq),
                        workload_id=workload_id,
                        dispatch_count=dispatch,
                        pod=pod,
                        node=node,
                        container="pytorch",
                        stream="stderr" if "ERROR" in text_of(dispatch, pod, seq) else "stdout",
                        seq=seq,
                    )
                )
    async with platform.state.sessions() as session, session.begin():
        await add_lines(session, lines)
    async with platform.state.sessions() as session:
        rows = await session.execute(
            select(LogLine.dispatch_count, LogLine.pod, LogLine.seq, LogLine.id).where(
                LogLine.workload_id == workload_id
            )
        )
        ids = {(d, p, s): i for d, p, s, i in rows}
    return Stored(workload_id=workload_id, start=start, ids=ids)


@pytest.fixture
async def team(platform: Platform, api: httpx.AsyncClient, alice: dict[str, str]) -> str:
    """A workspace alice may use (bob may not)."""
    workspace_id = f"team-{uuid.uuid4().hex[:5]}"
    await add_workspace(platform.state.sessions, workspace_id)
    async with platform.state.sessions() as session, session.begin():
        await session.execute(update(User).where(User.name == "alice").values(workspaces=[workspace_id]))
    return workspace_id


Search = Callable[..., Any]


def searcher(api: httpx.AsyncClient, headers: dict[str, str], workload_id: str) -> Search:
    async def search(**body: Any) -> dict[str, Any]:
        resp = await api.post(f"{WL}/{workload_id}/logs", json=body, headers=headers)
        assert resp.status_code == 200, (body, resp.text)
        result: dict[str, Any] = resp.json()
        return result

    return search


def messages(result: dict[str, Any]) -> list[str]:
    return [h["_source"]["message"] for h in result["hits"]["hits"]]


async def check_keywords(search: Search) -> None:
    async def total(*keywords: str, **body: Any) -> int:
        return int((await search(keywords=list(keywords), **body))["hits"]["total"]["value"])

    assert await total("ERROR") == 2
    assert await total("error") == 0  # case-sensitive
    assert await total("ERROR", dispatchCount=1) == 1
    assert messages(await search(keywords=["NCCL timeout (watchdog)"])) == [text_of(1, "p0", 3)]
    assert await total("grad_norm is NaN,") == 1  # punctuation is part of the keyword
    assert await total("grad%norm") == 0 and await total("grad_nor_") == 0  # no LIKE wildcards
    assert await total("100% done") == 1 and await total("%") == 1
    assert await total("iteration", "| p1") == 8  # AND: p1's iteration lines of dispatch 1
    assert await total("iteration", "NaN") == 0
    assert await total("p1") == 8 and await total("|") == 21  # shorter than a trigram: filter only
    assert await total("lm loss", podNames="p0", dispatchCount=2) == 4


async def test_search_filters_by_pod_node_keyword_and_dispatch(
    platform: Platform,
    api: httpx.AsyncClient,
    alice: dict[str, str],
    team: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stored = await store(platform, team)
    await store(platform, team)  # another workload's lines never show
    search = searcher(api, alice, stored.workload_id)
    async with platform.state.sessions() as session:
        if session.get_bind().dialect.name == "sqlite":  # the insert trigger keeps the FTS5 index
            match = text('SELECT count(*) FROM log_lines_fts WHERE log_lines_fts MATCH \'"ERR" AND "ROR"\'')
            assert await session.scalar(match) == 4

    everything = await search()
    assert everything["hits"]["total"] == {"value": 25, "relation": "eq"}
    assert len(everything["hits"]["hits"]) == 25
    first = everything["hits"]["hits"][0]
    assert first["_id"] == str(stored.ids[(1, "p0", 1)])
    assert first["_source"] == {
        "@timestamp": (stored.start + timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{stored.start.microsecond // 1000:03d}Z",
        "stream": "stdout",
        "message": text_of(1, "p0", 1),
        "kubernetes": {
            "pod_name": "p0",
            "host": "n0",
            "container_name": "pytorch",
            "labels": {
                "primus_safe.workload.id": stored.workload_id,
                "primus_safe.workload.dispatch.count": "1",
            },
        },
    }
    assert isinstance(everything["took"], int)

    def total(result: dict[str, Any]) -> int:
        return int(result["hits"]["total"]["value"])

    assert total(await search(podNames="p0")) == 15
    assert total(await search(podNames="p1, p0")) == 25
    assert total(await search(nodeNames="n1")) == 15  # p1 of dispatch 1, p0 of dispatch 2
    assert total(await search(podNames="p1", nodeNames="n0")) == 10  # nodeNames ignored
    assert total(await search(dispatchCount=2)) == 5
    assert total(await search(dispatchCount=1, nodeNames="n1")) == 10
    assert total(await search(podNames="nope")) == 0

    # time order, paging and the window
    desc = await search(order="desc", limit=3)
    assert [h["_id"] for h in desc["hits"]["hits"]] == [str(stored.ids[(2, "p0", s)]) for s in (5, 4, 3)]
    assert total(desc) == 25
    page = await search(podNames="p0", dispatchCount=1, offset=2, limit=3)
    assert [h["_id"] for h in page["hits"]["hits"]] == [str(stored.ids[(1, "p0", s)]) for s in (3, 4, 5)]
    until = (stored.start + timedelta(seconds=4)).isoformat().replace("+00:00", "Z")
    assert total(await search(until=until)) == 4
    since = (stored.start + timedelta(seconds=21)).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
    assert total(await search(since=since)) == 5  # the second dispatch
    assert total(await search(since="2000-01-01T00:00:00Z")) == 25  # clamped to the creation

    await check_keywords(search)
    # SQLite: the same answers when the FTS5 probe finds many candidates (ordered scan instead)
    monkeypatch.setattr(log_search, "PROBE", 1)
    await check_keywords(search)


async def test_context_returns_the_neighbouring_lines_of_the_same_pod_in_order(
    platform: Platform, api: httpx.AsyncClient, alice: dict[str, str], team: str
) -> None:
    stored = await store(platform, team)
    other = await store(platform, team)
    url = f"{WL}/{stored.workload_id}/logs"

    def ids(result: dict[str, Any]) -> list[tuple[str, int]]:
        return [(h["_id"], h["line"]) for h in result["hits"]["hits"]]

    anchor = stored.ids[(1, "p0", 5)]
    resp = await api.post(f"{url}/{anchor}/context", json={"limit": 3}, headers=alice)
    assert resp.status_code == 200, resp.text
    assert ids(resp.json()) == [(str(stored.ids[(1, "p0", s)]), s - 5) for s in range(2, 9)]
    assert resp.json()["hits"]["total"]["value"] == 7
    # at the start of the pod's output there is less before; dispatch 2's p0 is not the same run
    first = stored.ids[(1, "p0", 2)]
    resp = await api.post(f"{url}/{first}/context", headers=alice)  # default: 10 each side
    assert ids(resp.json()) == [(str(stored.ids[(1, "p0", s)]), s - 2) for s in range(1, 11)]
    last = stored.ids[(2, "p0", 5)]
    resp = await api.post(f"{url}/{last}/context", json={"limit": 2}, headers=alice)
    assert ids(resp.json()) == [(str(stored.ids[(2, "p0", s)]), s - 5) for s in (3, 4, 5)]
    # a line of another workload, or no line at all
    foreign = other.ids[(1, "p0", 5)]
    assert (await api.post(f"{url}/{foreign}/context", headers=alice)).status_code == 404
    assert (await api.post(f"{url}/abc/context", headers=alice)).status_code == 404
    assert (await api.post(f"{url}/999999999/context", headers=alice)).status_code == 404
    bad = await api.post(f"{url}/{anchor}/context", json={"limit": 5000}, headers=alice)
    assert bad.status_code == 400 and "limit" in bad.json()["errorMessage"]


async def test_bad_input_is_400(
    platform: Platform, api: httpx.AsyncClient, alice: dict[str, str], team: str
) -> None:
    stored = await store(platform, team)
    url = f"{WL}/{stored.workload_id}/logs"
    cases: list[tuple[dict[str, Any], str]] = [
        ({"offset": 9950, "limit": 51}, "cannot exceed 10000"),
        ({"offset": 10000}, "cannot exceed 10000"),
        ({"offset": -1}, "invalid query offset or limit"),
        ({"limit": -5}, "invalid query offset or limit"),
        ({"order": "up"}, "only supports asc and desc"),
        ({"since": "yesterday"}, "since"),
        ({"until": "2026-13-01T00:00:00Z"}, "until"),
        (
            {"since": (stored.start + timedelta(minutes=10)).isoformat(), "until": stored.start.isoformat()},
            "later",
        ),
        ({"keywords": "ERROR"}, "keywords"),
        ({"limit": "10"}, "limit"),
        ({"sorting": "x"}, "unknown field"),
    ]
    for body, expected in cases:
        resp = await api.post(url, json=body, headers=alice)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
        assert expected in resp.json()["errorMessage"], (body, resp.text)
    assert (await api.post(url, json={"offset": 9900, "limit": 100}, headers=alice)).status_code == 200
    assert (await api.post(f"{WL}/nowhere/logs", json={}, headers=alice)).status_code == 404


async def test_who_may_search(
    platform: Platform,
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    team: str,
) -> None:
    stored = await store(platform, team)
    url = f"{WL}/{stored.workload_id}/logs"
    line = stored.ids[(1, "p0", 5)]
    for headers, status in ((alice, 200), (admin, 200), (bob, 404)):
        assert (await api.post(url, json={}, headers=headers)).status_code == status
        assert (await api.post(f"{url}/{line}/context", json={}, headers=headers)).status_code == status
    assert (await api.post(url, json={})).status_code == 401
    service = "/api/v1/service/primus-safe-apiserver/logs"
    assert (await api.post(service, json={}, headers=alice)).status_code == 403
    assert (await api.post(service, json={}, headers=admin)).status_code == 200
    assert (await api.post("/api/v1/service/nginx/logs", json={}, headers=admin)).status_code == 404


async def test_retention_deletes_old_log_lines_in_batches(
    platform: Platform, api: httpx.AsyncClient, alice: dict[str, str], team: str
) -> None:
    stored = await store(platform, team)  # 25 lines of the last hour
    now = utcnow()
    old = [
        NewLine(
            at=now - timedelta(days=40 - i),
            line=f"old ERROR {i}",
            workload_id=stored.workload_id,
            seq=100 + i,
        )
        for i in range(7)  # 40 .. 34 days old
    ]
    old.append(NewLine(at=now - timedelta(days=31), line="old service record", service="api", seq=1))
    async with platform.state.sessions() as session, session.begin():
        await add_lines(session, old)
    search = searcher(api, alice, stored.workload_id)
    assert (await search(keywords=["old ERROR"], since="2000-01-01T00:00:00Z"))["hits"]["total"]["value"] == 0
    async with platform.state.sessions() as session, session.begin():  # visible once the workload is older
        await session.execute(
            update(Workload)
            .where(Workload.id == stored.workload_id)
            .values(created_at=now - timedelta(days=60))
        )
    assert (await search(keywords=["old ERROR"]))["hits"]["total"]["value"] == 7

    beats: list[int] = []
    env = ActivityEnvironment()
    env.on_heartbeat = lambda *details: beats.append(int(details[0]))
    activities = MaintenanceActivities(platform.state.sessions, platform.settings.data_dir, line_batch=3)
    assert await env.run(activities.purge_logs, 30) == 8
    assert beats == [3, 6, 8]  # one transaction per batch of 3
    assert (await search(keywords=["old ERROR"]))["hits"]["total"]["value"] == 0  # the index forgot them too
    assert (await search())["hits"]["total"]["value"] == 25
    async with platform.state.sessions() as session:
        count = select(func.count()).select_from(LogLine).where(LogLine.workload_id == stored.workload_id)
        assert await session.scalar(count) == 25

    # the schedule's workflow runs the same purge
    async with platform.state.sessions() as session, session.begin():
        await add_lines(session, old[:2])
    deleted = await platform.state.temporal.execute_workflow(
        LogRetentionWorkflow.run,
        30,
        id=f"test-line-retention-{uuid.uuid4().hex[:6]}",
        task_queue=platform.settings.queues.control,
    )
    assert deleted == 2
