"""Ops jobs through the API on SQLite and PostgreSQL: bad input refused with nothing started,
node selection, list filters and the 30-day window, visibility, get, stop and delete.

Nodes are database rows here (no machine behind them): jobs that reach them fail, which is
what the list and get tests need; the SSH paths are in `test_ops_jobs_e2e.py`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy import update

from db.ops_jobs import OpsJob
from db.session import SessionFactory
from domain.timefmt import format_time, utcnow
from tests.conftest import Platform
from tests.fixtures.nodes import add_db_nodes
from tests.fixtures.polling import poll_json
from workflows.common import KIND, RESOURCE_TYPE

JOBS = "/api/v1/opsjobs"


async def add_nodes(
    sessions: SessionFactory, count: int, *, cluster: str, local: bool = False
) -> tuple[str, list[str]]:
    """A workspace over `count` machine-less nodes of `cluster`."""
    return await add_db_nodes(sessions, count, cluster=cluster, local=local)


def addon(*inputs: tuple[str, str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "upgrade",
        "type": "addon",
        "inputs": [{"name": "addon.template", "value": "disable-os-upgrade"}]
        + [{"name": n, "value": v} for n, v in inputs],
        **extra,
    }


async def test_bad_jobs_are_refused_and_nothing_is_recorded(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    quiet_probe: None,
) -> None:
    _, nodes = await add_nodes(platform.state.sessions, 2, cluster="c1")
    _, local = await add_nodes(platform.state.sessions, 1, cluster="c2", local=True)
    cases: list[tuple[dict[str, Any], dict[str, str], int, str]] = [
        (
            {"type": "addon", "inputs": [{"name": "node", "value": nodes[0]}]},
            admin,
            400,
            "the job name is empty",
        ),
        ({"name": "x", "inputs": [{"name": "node", "value": nodes[0]}]}, admin, 400, "the job type is empty"),
        (
            {"name": "x", "type": "upgrade", "inputs": [{"name": "node", "value": "n"}]},
            admin,
            400,
            "unsupported",
        ),
        (
            {"name": "x", "type": "preflight", "inputs": [{"name": "node", "value": "n"}]},
            admin,
            400,
            "resource, image and entryPoint",
        ),
        (
            {
                "name": "x",
                "type": "preflight",
                "inputs": [{"name": "node", "value": "n"}],
                "resource": {"cpu": "lots", "memory": "1Gi"},
                "image": "i",
                "entryPoint": "ZWNobw==",
            },
            admin,
            400,
            "resource.cpu",
        ),
        (
            {
                "name": "x",
                "type": "preflight",
                "inputs": [{"name": "node", "value": "n"}],
                "resource": {"cpu": "1", "memory": "1Gi"},
                "image": "i",
                "entryPoint": "not base64!",
            },
            admin,
            400,
            "base64",
        ),
        ({"name": "x", "type": "reboot", "inputs": []}, admin, 400, "the job inputs is empty"),
        (
            {"name": "x", "type": "reboot", "inputs": [{"name": "host", "value": "n"}]},
            admin,
            400,
            "input 'host'",
        ),
        ({"name": "x", "type": "reboot", "inputs": [{"name": "node", "value": "nope"}]}, admin, 404, "nope"),
        (addon(("workspace", "no-such-ws")), admin, 404, "no-such-ws"),
        (addon(("workload", "no-such-wl")), admin, 404, "no-such-wl"),
        (addon(("node", nodes[0])), alice, 403, "administrator"),
        (addon(("node", nodes[0]), batchCount=0), admin, 400, "batchCount"),
        (addon(("node", nodes[0]), availableRatio=1.5), admin, 400, "availableRatio"),
        (
            addon(("node", nodes[0]), excludedNodes=[nodes[0]]),
            admin,
            400,
            "the nodes of ops-job is not specified",
        ),
        (addon(("node", nodes[0]), ("node", local[0])), admin, 400, "same cluster"),
        (
            {"name": "x", "type": "addon", "inputs": [{"name": "node", "value": nodes[0]}]},
            admin,
            400,
            "either addon.template or node.template",
        ),
        (
            {
                "name": "x",
                "type": "addon",
                "inputs": [{"name": "addon.template", "value": "nope"}, {"name": "node", "value": nodes[0]}],
            },
            admin,
            404,
            "nope",
        ),
        (
            {"name": "x", "type": "dumplog", "inputs": [{"name": "node", "value": nodes[0]}]},
            admin,
            400,
            "workload must be",
        ),
        (
            {"name": "x", "type": "reboot", "inputs": [{"name": "node", "value": local[0]}]},
            admin,
            403,
            "force",
        ),
        (
            {"name": "Bad Name!", "type": "reboot", "inputs": [{"name": "node", "value": nodes[0]}]},
            admin,
            400,
            "DNS",
        ),
    ]
    for body, headers, status, words in cases:
        resp = await api.post(JOBS, json=body, headers=headers)
        assert resp.status_code == status, (body, resp.text)
        assert words in resp.json()["errorMessage"], (body, resp.text)
    assert (await api.get(JOBS, headers=admin)).json()["totalCount"] == 0


async def test_jobs_select_nodes_list_filter_and_stay_with_their_owner(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    quiet_probe: None,
) -> None:
    workspace_id, nodes = await add_nodes(platform.state.sessions, 3, cluster="c1")
    resp = await api.post(
        JOBS, json=addon(("workspace", workspace_id), excludedNodes=[nodes[2]], batchCount=5), headers=admin
    )
    assert resp.status_code == 200, resp.text
    job_id = resp.json()["jobId"]
    assert job_id.startswith("upgrade-") and len(job_id) == len("upgrade-") + 5
    # a second addon job over one of its nodes is refused while it runs
    busy = await api.post(JOBS, json=addon(("node", nodes[0])), headers=admin)
    assert busy.status_code == 409 and busy.json()["errorCode"] == "Primus.00010" and job_id in busy.text, (
        busy.text
    )

    # nodes without machines: the job fails on the first node (availableRatio 1.0)
    job = await poll_json(api, admin, f"{JOBS}/{job_id}", lambda b: b["phase"] == "Failed", within=90)
    assert [n["nodeId"] for n in job["nodes"]] == nodes[:2]
    assert {n["phase"] for n in job["nodes"]} == {"Failed"}  # one batch of both (batchCount clamped)
    assert job["workspaceId"] == workspace_id and job["clusterId"] == "c1" and job["userName"] == "root"
    assert job["inputs"][0] == {"name": "addon.template", "value": "disable-os-upgrade"}
    assert (
        job["batchCount"] == 5
        and job["excludedNodes"] == [nodes[2]]
        and job["ttlSecondsAfterFinished"] == 300
    )
    kinds = [c["type"] for c in job["conditions"]]
    assert kinds[0] == "Running" and kinds[-1] == "Failed"
    described = await platform.state.temporal.get_workflow_handle(f"opsjob/{job_id}").describe()
    assert described.typed_search_attributes.get(RESOURCE_TYPE) == "opsjob"
    assert described.typed_search_attributes.get(KIND) == "addon"

    # list filters and the window
    reboot = await api.post(
        JOBS,
        json={"name": "rb", "type": "reboot", "inputs": [{"name": "node", "value": nodes[2]}]},
        headers=admin,
    )
    assert reboot.status_code == 200, reboot.text
    reboot_id = reboot.json()["jobId"]
    listed = (await api.get(JOBS, headers=admin)).json()
    assert listed["totalCount"] == 2 and [i["jobId"] for i in listed["items"]] == [reboot_id, job_id]
    assert set(listed["items"][0]) == {
        "jobId", "jobName", "clusterId", "workspaceId", "userId", "userName", "type", "phase",
        "creationTime", "startTime", "endTime", "deletionTime", "timeoutSecond",
    }  # fmt: skip
    assert [
        i["jobId"] for i in (await api.get(JOBS, params={"type": "addon"}, headers=admin)).json()["items"]
    ] == [job_id]
    assert (await api.get(JOBS, params={"phase": "Failed", "type": "addon"}, headers=admin)).json()[
        "totalCount"
    ] == 1
    assert (await api.get(JOBS, params={"userName": "roo"}, headers=admin)).json()["totalCount"] == 2
    assert (await api.get(JOBS, params={"clusterId": "other"}, headers=admin)).json()["totalCount"] == 0
    async with platform.state.sessions() as session, session.begin():  # an old job leaves the default window
        await session.execute(
            update(OpsJob).where(OpsJob.id == job_id).values(created_at=utcnow() - timedelta(days=40))
        )
    assert [i["jobId"] for i in (await api.get(JOBS, headers=admin)).json()["items"]] == [reboot_id]
    since = format_time(utcnow() - timedelta(days=41)) + ".000Z"
    assert (await api.get(JOBS, params={"since": since}, headers=admin)).json()["totalCount"] == 2
    bad = await api.get(JOBS, params={"since": format_time(utcnow()), "until": since}, headers=admin)
    assert bad.status_code == 400 and "since time is greater" in bad.text
    assert (await api.get(JOBS, params={"phase": "Done"}, headers=admin)).status_code == 400
    assert (await api.get(JOBS, params={"since": "yesterday"}, headers=admin)).status_code == 400

    # regular users see only their own jobs
    assert (await api.get(JOBS, headers=alice)).json()["totalCount"] == 0
    assert (await api.get(f"{JOBS}/{job_id}", headers=alice)).status_code == 404
    assert (await api.post(f"{JOBS}/{job_id}/stop", headers=alice)).status_code == 404

    # stop a running reboot job (its node has no machine), then delete it: hidden from lists
    assert (await api.post(f"{JOBS}/{reboot_id}/stop", headers=admin)).status_code == 200
    stopped = await poll_json(api, admin, f"{JOBS}/{reboot_id}", lambda b: b["phase"] == "Failed", within=60)
    assert stopped["message"] in ("The job is stopped",) or "reboot failed" in stopped["message"]
    assert (await api.delete(f"{JOBS}/{reboot_id}", headers=admin)).status_code == 200
    await poll_json(api, admin, JOBS, lambda b: b["totalCount"] == 0)
    assert (await api.get(f"{JOBS}/{reboot_id}", headers=admin)).status_code == 404
    assert (await api.delete(f"{JOBS}/nope", headers=admin)).status_code == 404
