"""Images API end to end: import through the workflow into a real internal registry, list, details,
progress, delete, statistics; on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import base64
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from temporalio.client import WorkflowExecutionStatus, WorkflowFailureError

from domain.images import DeleteImageResult
from drivers.oci_registry import RegistryClient
from tests.conftest import Platform
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.registry import (
    Registry,
    Throttle,
    internal_registry_at,
    multi_arch_image,
    random_image,
    refresh_registry_stats,
    restart_empty,
    running_registries,
    skopeo_digest,
    skopeo_push,
    small_image,
)
from workflows.image_delete import ImageDeleteWorkflow
from workflows.image_import import ImageImportWorkflow

PORTS = {
    "source": (15007, "", ""),
    "locked": (15008, "puller", "right-password"),
    "internal": (15009, "", ""),
}


@pytest.fixture(scope="module")
def regs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Registry]]:
    root = tmp_path_factory.mktemp("images-api")
    with running_registries(root, PORTS) as started:
        skopeo_push(small_image(root / "small"), started["source"], "team/app:1")
        skopeo_push(small_image(root / "small2", salt="b"), started["source"], "team/app:2")
        skopeo_push(multi_arch_image(root / "multi"), started["source"], "team/multi:1", all_platforms=True)
        skopeo_push(small_image(root / "small"), started["locked"], "private/app:1")
        yield started


@pytest.fixture(autouse=True)
def internal_registry(platform: Platform, regs: dict[str, Registry]) -> Iterator[Registry]:
    """Point the running app and worker at the test's internal registry."""
    regs["internal"] = restart_empty(regs["internal"])
    with internal_registry_at(platform.settings, regs["internal"].host):
        yield regs["internal"]


def synced(source: Registry | Throttle, path: str) -> str:
    """Where `path` of `source` lands in the internal registry: under the source's host."""
    return f"sync/127.0.0.1_{source.port}/{path}"


async def add_registry(api: httpx.AsyncClient, admin: dict[str, str], reg: Registry, **extra: Any) -> int:
    body = {"name": reg.name, "url": f"http://{reg.host}", "insecure": True, **extra}
    resp = await api.post("/api/v1/image-registries", json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    return int(resp.json()["id"])


async def wait_done(api: httpx.AsyncClient, headers: dict[str, str], image_id: int) -> dict[str, Any]:
    for _ in range(600):
        resp = await api.get(f"/api/v1/images/{image_id}/importing-details", headers=headers)
        assert resp.status_code == 200, resp.text
        body: dict[str, Any] = resp.json()
        if body["status"] != "importing":
            return body
        await asyncio.sleep(0.05)
    raise AssertionError("import did not finish")


async def start_import(
    api: httpx.AsyncClient, headers: dict[str, str], source: str, **extra: Any
) -> dict[str, Any]:
    resp = await api.post("/api/v1/images:import", json={"source": source, **extra}, headers=headers)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


async def test_import_single_arch_lands_identical(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    await add_registry(api, admin, regs["source"])
    answer = await start_import(api, alice, f"{regs['source'].host}/team/app:1")
    assert (
        answer["state"] == 1 and answer["message"] == "Image import started" and answer["alreadyImageId"] == 0
    )
    details = await wait_done(api, alice, answer["imageId"])
    assert details["status"] == "ready", details
    assert len(details["layersDetail"]) == 3  # two layers and the config
    assert all(v == {"status": "completed", "progress": 100} for v in details["layersDetail"].values())
    internal = regs["internal"]
    assert skopeo_digest(internal, synced(regs["source"], "team/app:1")) == skopeo_digest(
        regs["source"], "team/app:1"
    )

    grouped = (await api.get("/api/v1/images", headers=alice)).json()
    assert grouped["totalCount"] == 1
    group = grouped["images"][0]
    assert group["registryHost"] == internal.host and group["repo"] == synced(regs["source"], "team/app")
    art = group["artifacts"][0]
    assert art["imageTag"] == "1" and art["status"] == "ready" and art["userName"] == "alice"
    assert art["arch"] == "amd64" and art["os"] == "linux" and art["size"] > 0
    assert (
        art["digest"] == skopeo_digest(internal, synced(regs["source"], "team/app:1"))
        and art["includeType"] == "import"
    )
    flat = (await api.get("/api/v1/images", params={"flat": "true"}, headers=alice)).json()
    assert flat == [
        {
            "id": answer["imageId"],
            "tag": f"{internal.host}/{synced(regs['source'], 'team/app:1')}",
            "description": f"Import from {regs['source'].host}/team/app:1",
            "created_at": flat[0]["created_at"],
            "created_by": "alice",
        }
    ]
    # the same target again: state 2 with the existing id, nothing new started
    again = await start_import(api, alice, f"{regs['source'].host}/team/app:1")
    assert again["state"] == 2 and again["alreadyImageId"] == answer["imageId"]
    # a second tag shares blobs with the first: they are skipped, not re-sent
    uploads_before = sum(1 for r in internal.access_log() if r[0] == "POST" and "/blobs/uploads/" in r[1])
    second = await start_import(api, alice, f"{regs['source'].host}/team/app:2")
    details = await wait_done(api, alice, second["imageId"])
    statuses = sorted(v["status"] for v in details["layersDetail"].values())
    assert statuses.count("skipped") == 1 and statuses.count("completed") == 2, statuses
    uploads = sum(1 for r in internal.access_log() if r[0] == "POST" and "/blobs/uploads/" in r[1])
    assert uploads - uploads_before == 2


async def test_import_multi_arch_with_default_registry(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    await add_registry(api, admin, regs["source"], default=True)
    answer = await start_import(api, alice, "team/multi:1")  # no host: the default registry
    assert answer["state"] == 1, answer
    details = await wait_done(api, alice, answer["imageId"])
    assert details["status"] == "ready", details
    internal = regs["internal"]
    assert skopeo_digest(internal, synced(regs["source"], "team/multi:1")) == skopeo_digest(
        regs["source"], "team/multi:1"
    )
    async with (
        RegistryClient(internal.host, insecure=True) as client,
        RegistryClient(regs["source"].host, insecure=True) as source,
    ):
        index = await client.get_manifest(synced(regs["source"], "team/multi"), "1")
        source_index = await source.get_manifest("team/multi", "1")
        assert index.body == source_index.body
    items = (await api.get("/api/v1/images", params={"tag": "multi"}, headers=alice)).json()["images"]
    assert items[0]["artifacts"][0]["arch"] == "amd64"


async def test_missing_tag_and_wrong_credentials_fail_cleanly(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    await add_registry(api, admin, regs["source"])
    missing = await start_import(api, alice, f"{regs['source'].host}/team/app:nope")
    assert missing["state"] == 0 and "not found" in missing["message"], missing
    locked = regs["locked"]
    await add_registry(api, admin, locked, username=locked.username, password="wrong-password")
    before = len(locked.access_log())
    denied = await start_import(api, alice, f"{locked.host}/private/app:1")
    assert denied["state"] == 0 and "authentication" in denied["message"], denied
    assert "wrong-password" not in str(denied)
    assert len(locked.access_log()) - before <= 3  # one challenge and one refused try: no storm
    assert (await api.get("/api/v1/images", headers=alice)).json()["totalCount"] == 0


async def test_credentials_from_registry_are_used(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    locked = regs["locked"]
    await add_registry(api, admin, locked, username=locked.username, password=locked.password)
    answer = await start_import(api, alice, "private/app:1", sourceRegistry=locked.name)
    assert answer["state"] == 1, answer
    assert (await wait_done(api, alice, answer["imageId"]))["status"] == "ready"
    assert skopeo_digest(regs["internal"], synced(locked, "private/app:1")) == skopeo_digest(
        locked, "private/app:1"
    )


async def test_bad_input_is_400_and_auth_required(
    api: httpx.AsyncClient, alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    host = regs["source"].host
    bad_bodies: list[dict[str, Any]] = [
        {},
        {"source": ""},
        {"source": f"{host}/team/app:1", "extra": 1},
        {"source": 12},
        {"source": "Upper/Case:1"},
        {"source": "http://x.io/a:1"},
        {"source": "169.254.169.254/latest/meta:1"},
        {"source": "metadata.google.internal/a/b:1"},
        {"source": f"{host}/team/app:1", "sourceRegistry": "other.io"},
    ]
    for body in bad_bodies:
        resp = await api.post("/api/v1/images:import", json=body, headers=alice)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
    resp = await api.post("/api/v1/images:import", json={"source": "169.254.169.254/a:1"}, headers=alice)
    assert "link-local" in resp.json()["errorMessage"]
    assert (await api.get("/api/v1/images", params={"orderBy": "nope"}, headers=alice)).status_code == 400
    assert (await api.get("/api/v1/images", params={"ready": "maybe"}, headers=alice)).status_code == 400
    assert (await api.get("/api/v1/images/abc/importing-details", headers=alice)).status_code == 400
    for method, path in [
        ("GET", "/api/v1/images"),
        ("POST", "/api/v1/images:import"),
        ("DELETE", "/api/v1/images/1"),
        ("GET", "/api/v1/images/1/importing-details"),
        ("PUT", "/api/v1/images:import/eA/progress"),
        ("GET", "/api/v1/harbor/stats"),
    ]:
        assert (await api.request(method, path)).status_code == 401, path
    assert (await api.get("/api/v1/images", headers=alice)).json()["totalCount"] == 0


LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "localhost",
    "[::1]",
    "[::ffff:127.0.0.1]",
    "0x7f000001",
    "2130706433",
    "127.1",
]


async def test_free_form_loopback_and_private_sources_are_refused(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    """No image registry names the host: every spelling of loopback, and private ranges, are a 400
    before any request reaches them (the fixture runs the platform as `up` does)."""
    source = regs["source"]
    served = len(source.access_log())
    for spelling in LOOPBACK_SPELLINGS:
        for caller in (alice, admin):
            body = {"source": f"{spelling}:{source.port}/team/app:1"}
            resp = await api.post("/api/v1/images:import", json=body, headers=caller)
            assert resp.status_code == 400, (spelling, resp.text)
            assert "loopback" in resp.json()["errorMessage"], resp.text
    for private in ("10.0.0.1:5000", "192.168.1.1", "172.16.0.1:5000", "[fd00::1]:5000", "100.64.0.1"):
        resp = await api.post("/api/v1/images:import", json={"source": f"{private}/a/b:1"}, headers=alice)
        assert resp.status_code == 400, (private, resp.text)
        assert "private" in resp.json()["errorMessage"], resp.text
    resp = await api.post(
        "/api/v1/images:import", json={"source": "a/b:1", "sourceRegistry": "127.1:5"}, headers=alice
    )
    assert resp.status_code == 400 and "loopback" in resp.json()["errorMessage"], resp.text
    assert len(source.access_log()) == served  # nothing reached the registry
    assert (await api.get("/api/v1/images", headers=alice)).json()["totalCount"] == 0
    # once an admin registers it, the same loopback registry is a source for everyone
    await add_registry(api, admin, source)
    answer = await start_import(api, alice, f"{source.host}/team/app:1")
    assert answer["state"] == 1, answer
    assert (await wait_done(api, alice, answer["imageId"]))["status"] == "ready"


async def test_the_internal_registry_is_a_source(
    api: httpx.AsyncClient, alice: dict[str, str], regs: dict[str, Registry], tmp_path: Path
) -> None:
    """The platform's own registry (loopback in `up`) needs no registration."""
    internal = regs["internal"]
    skopeo_push(small_image(tmp_path / "own"), internal, "own/app:1")
    answer = await start_import(api, alice, f"{internal.host}/own/app:1")
    assert answer["state"] == 1, answer
    assert (await wait_done(api, alice, answer["imageId"]))["status"] == "ready"


async def test_unparseable_source_hosts_are_400(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    """Octal spellings of the metadata address, over-long labels: a clear 400, never a 500."""
    for source, problem in [
        ("0251.0376.0251.0376:80/x:y", "link-local"),
        ("0251.0376.0251.0376/x/y:1", "link-local"),
        ("0xa9.0xfe.0xa9.0xfe:80/x:y", "link-local"),
        ("999.1.1.1:80/x:y", "not a valid"),
        ("a" * 70 + ".io/x:y", "invalid"),
    ]:
        resp = await api.post("/api/v1/images:import", json={"source": source}, headers=alice)
        assert resp.status_code == 400, (source, resp.text)
        assert problem in resp.json()["errorMessage"], (source, resp.text)


async def test_the_same_name_from_another_registry_is_another_image(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    regs: dict[str, Registry],
    tmp_path: Path,
) -> None:
    """Whoever imports `team/app:1` from their own registry first does not own it for everyone."""
    source, other, internal = regs["source"], regs["locked"], regs["internal"]
    skopeo_push(small_image(tmp_path / "squat", salt="squat"), other, "team/app:1")
    await add_registry(api, admin, source)
    await add_registry(api, admin, other, username=other.username, password=other.password)
    squat = await start_import(api, bob, f"{other.host}/team/app:1")
    assert squat["state"] == 1, squat
    assert (await wait_done(api, bob, squat["imageId"]))["status"] == "ready"
    real = await start_import(api, alice, f"{source.host}/team/app:1")
    assert real["state"] == 1 and real["imageId"] != squat["imageId"], real
    assert (await wait_done(api, alice, real["imageId"]))["status"] == "ready"
    real_digest = skopeo_digest(source, "team/app:1")
    assert skopeo_digest(internal, f"sync/127.0.0.1_{source.port}/team/app:1") == real_digest
    assert skopeo_digest(internal, f"sync/127.0.0.1_{other.port}/team/app:1") == skopeo_digest(
        other, "team/app:1"
    )
    assert skopeo_digest(other, "team/app:1") != real_digest
    flat = (await api.get("/api/v1/images", params={"flat": "true"}, headers=alice)).json()
    assert sorted(i["tag"] for i in flat) == sorted(
        f"{internal.host}/sync/127.0.0.1_{reg.port}/team/app:1" for reg in (source, other)
    )
    again = await start_import(api, alice, f"{source.host}/team/app:1")
    assert again["state"] == 2 and again["alreadyImageId"] == real["imageId"], again


async def test_a_moved_source_tag_is_not_already_imported(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    regs: dict[str, Registry],
    tmp_path: Path,
) -> None:
    """`state 2` only for the same source at the same digest."""
    source = regs["source"]
    skopeo_push(small_image(tmp_path / "v1", salt="moving-1"), source, "team/moving:1")
    await add_registry(api, admin, source)
    first = await start_import(api, alice, f"{source.host}/team/moving:1")
    assert (await wait_done(api, alice, first["imageId"]))["status"] == "ready"
    skopeo_push(small_image(tmp_path / "v2", salt="moving-2"), source, "team/moving:1")
    again = await start_import(api, alice, f"{source.host}/team/moving:1")
    assert again["state"] == 0 and again["alreadyImageId"] == 0, again
    assert f"image {first['imageId']}" in again["message"] and "digest" in again["message"], again


async def test_progress_details_and_delete(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    platform: Platform,
    regs: dict[str, Registry],
) -> None:
    await add_registry(api, admin, regs["source"])
    answer = await start_import(api, alice, f"{regs['source'].host}/team/app:1")
    image_id = answer["imageId"]
    await wait_done(api, alice, image_id)
    tag = f"{regs['internal'].host}/{synced(regs['source'], 'team/app:1')}"
    name = base64.urlsafe_b64encode(tag.encode()).decode().rstrip("=")
    details = (await api.get(f"/api/v1/images/{image_id}/importing-details", headers=bob)).json()
    blob = next(iter(details["layersDetail"]))
    progress = {"layersDetail": {blob: {"status": "downloading", "progress": 45}}}
    assert (
        await api.put(f"/api/v1/images:import/{name}/progress", json=progress, headers=bob)
    ).status_code == 403
    # The import has ended: its progress is final (reports are taken while it runs, see below).
    resp = await api.put(f"/api/v1/images:import/{name}/progress", json=progress, headers=alice)
    assert resp.status_code == 409 and "has ended" in resp.json()["errorMessage"], resp.text
    details = (await api.get(f"/api/v1/images/{image_id}/importing-details", headers=bob)).json()
    assert details["layersDetail"][blob] == {"status": "completed", "progress": 100}
    foreign = {"layersDetail": {"sha256:" + "a" * 64: {"status": "downloading", "progress": 45}}}
    resp = await api.put(f"/api/v1/images:import/{name}/progress", json=foreign, headers=alice)
    assert resp.status_code == 400 and "not a blob of" in resp.json()["errorMessage"], resp.text
    bad = {"layersDetail": {"x": {"status": "downloading", "progress": 101}}}
    assert (
        await api.put(f"/api/v1/images:import/{name}/progress", json=bad, headers=alice)
    ).status_code == 400
    assert (
        await api.put("/api/v1/images:import/!!!/progress", json=progress, headers=alice)
    ).status_code == 400
    unknown = base64.urlsafe_b64encode(b"nowhere/x:1").decode()
    assert (
        await api.put(f"/api/v1/images:import/{unknown}/progress", json=progress, headers=alice)
    ).status_code == 404

    await refresh_registry_stats(platform.state.temporal, platform.settings)  # as the schedule does
    stats = (await api.get("/api/v1/harbor/stats", headers=bob)).json()
    assert stats["status"] == "healthy" and stats["public_repo_count"] >= 1 and stats["total_storage"] > 0
    assert (
        stats["private_project_count"] == 0
        and {"name": "registry", "status": "healthy"} in stats["components"]
    )

    assert (await api.delete(f"/api/v1/images/{image_id}", headers=bob)).status_code == 403
    assert (await api.delete(f"/api/v1/images/{image_id}", headers=alice)).status_code == 200
    # gone for the API at once; the manifest goes in the image-delete workflow
    assert (await api.get(f"/api/v1/images/{image_id}/importing-details", headers=alice)).status_code == 404
    assert (await api.get("/api/v1/images", headers=alice)).json()["totalCount"] == 0
    assert (await api.delete(f"/api/v1/images/{image_id}", headers=alice)).status_code == 404
    deletion = platform.state.temporal.get_workflow_handle(
        f"image-delete/{image_id}", result_type=DeleteImageResult
    )
    result = await asyncio.wait_for(deletion.result(), 30)
    assert result.manifest == "deleted" and result.removed, result
    async with RegistryClient(regs["internal"].host, insecure=True) as client:
        assert await client.manifest_digest(synced(regs["source"], "team/app"), "1") is None
    assert (await api.delete(f"/api/v1/images/{image_id}", headers=alice)).status_code == 404


async def test_concurrent_duplicate_import_starts_one(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    await add_registry(api, admin, regs["source"])
    source = f"{regs['source'].host}/team/app:2"
    answers = await asyncio.gather(start_import(api, alice, source), start_import(api, alice, source))
    states = sorted(a["state"] for a in answers)
    assert states == [1, 2], answers
    started = next(a for a in answers if a["state"] == 1)
    assert next(a for a in answers if a["state"] == 2)["alreadyImageId"] == started["imageId"]
    assert (await wait_done(api, alice, started["imageId"]))["status"] == "ready"


async def test_list_paging_order_and_filters(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    regs: dict[str, Registry],
) -> None:
    await add_registry(api, admin, regs["source"])
    first = await start_import(api, alice, f"{regs['source'].host}/team/app:1")
    await wait_done(api, alice, first["imageId"])
    second = await start_import(api, bob, f"{regs['source'].host}/team/app:2")
    await wait_done(api, bob, second["imageId"])
    missing = await start_import(api, bob, f"{regs['source'].host}/team/multi:1")
    await wait_done(api, bob, missing["imageId"])

    def ids(body: dict[str, Any]) -> list[int]:
        return [a["id"] for g in body["images"] for a in g["artifacts"]]

    newest_first = (await api.get("/api/v1/images", headers=alice)).json()
    assert newest_first["totalCount"] == 3
    assert ids(newest_first) == [missing["imageId"], second["imageId"], first["imageId"]]
    page = await api.get(
        "/api/v1/images", params={"page_num": 2, "page_size": 2, "order": "asc"}, headers=alice
    )
    assert page.json()["totalCount"] == 3 and ids(page.json()) == [missing["imageId"]]
    page_one = await api.get(
        "/api/v1/images", params={"page_num": 1, "page_size": 2, "order": "asc"}, headers=alice
    )
    page_zero = await api.get(
        "/api/v1/images", params={"page_num": 0, "page_size": 2, "order": "asc"}, headers=alice
    )
    assert ids(page_one.json()) == ids(page_zero.json()) == [first["imageId"], second["imageId"]]
    by_tag = await api.get("/api/v1/images", params={"orderBy": "tag", "order": "asc"}, headers=alice)
    assert ids(by_tag.json()) == [first["imageId"], second["imageId"], missing["imageId"]]
    mine = (await api.get("/api/v1/images", params={"userName": "bob"}, headers=alice)).json()
    assert mine["totalCount"] == 2 and set(ids(mine)) == {second["imageId"], missing["imageId"]}
    tagged = (await api.get("/api/v1/images", params={"tag": "app:"}, headers=alice)).json()
    assert tagged["totalCount"] == 2
    assert (await api.get("/api/v1/images", params={"tag": "%"}, headers=alice)).json()["totalCount"] == 0
    assert (await api.get("/api/v1/images", params={"ready": "true"}, headers=alice)).json()[
        "totalCount"
    ] == 3
    assert (await api.get("/api/v1/images", params={"ready": "false"}, headers=alice)).json()[
        "totalCount"
    ] == 0
    flat = (await api.get("/api/v1/images", params={"flat": "true", "page_size": 2}, headers=alice)).json()
    assert (
        isinstance(flat, list)
        and len(flat) == 2
        and set(flat[0])
        == {
            "id",
            "tag",
            "description",
            "created_at",
            "created_by",
        }
    )
    assert (await api.get("/api/v1/images", params={"page_size": 0}, headers=alice)).status_code == 400


async def test_credentials_from_an_image_secret(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], regs: dict[str, Registry]
) -> None:
    """The registry entry says how to reach the host (plain HTTP); an image secret has the login."""
    locked = regs["locked"]
    await add_registry(api, admin, locked)
    param = {
        "server": f"http://{locked.host}",
        "username": locked.username,
        "password": base64.b64encode(locked.password.encode()).decode(),
    }
    resp = await api.post(
        "/api/v1/secrets", json={"name": "pull-creds", "type": "image", "params": [param]}, headers=admin
    )
    assert resp.status_code == 200, resp.text
    answer = await start_import(api, alice, f"{locked.host}/private/app:1")
    assert answer["state"] == 1, answer
    assert (await wait_done(api, alice, answer["imageId"]))["status"] == "ready"
    assert skopeo_digest(regs["internal"], synced(locked, "private/app:1")) == skopeo_digest(
        locked, "private/app:1"
    )


async def test_delete_while_importing_cancels_the_workflow(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    regs: dict[str, Registry],
    tmp_path: Path,
) -> None:
    source = regs["source"]
    skopeo_push(random_image(tmp_path / "slow", layers=2, layer_bytes=4 * 1024 * 1024), source, "slow/data:1")
    throttle = Throttle(upstream_port=source.port, port=15006, bytes_per_second=1024 * 1024)
    await throttle.start()
    try:
        resp = await api.post(
            "/api/v1/image-registries",
            json={"name": "slow", "url": f"http://{throttle.host}", "insecure": True},
            headers=admin,
        )
        assert resp.status_code == 200, resp.text
        answer = await start_import(api, alice, f"{throttle.host}/slow/data:1")
        image_id = answer["imageId"]
        for _ in range(200):
            details = (await api.get(f"/api/v1/images/{image_id}/importing-details", headers=alice)).json()
            statuses = {v["status"] for v in details["layersDetail"].values()}
            if "downloading" in statuses and "completed" in statuses:  # the config is small
                break
            await asyncio.sleep(0.05)
        assert details["status"] == "importing"
        # An external copier's report is recorded by the running import workflow.
        tag = f"{regs['internal'].host}/{synced(throttle, 'slow/data:1')}"
        name = base64.urlsafe_b64encode(tag.encode()).decode().rstrip("=")
        foreign = {"layersDetail": {"sha256:" + "b" * 64: {"status": "downloading", "progress": 45}}}
        resp = await api.put(f"/api/v1/images:import/{name}/progress", json=foreign, headers=alice)
        assert resp.status_code == 400 and "not a blob of" in resp.json()["errorMessage"], resp.text
        # a blob of the image (one already copied, so the copy does not overwrite the report)
        done = next(d for d, v in details["layersDetail"].items() if v["status"] == "completed")
        progress = {"layersDetail": {done: {"status": "downloading", "progress": 45}}}
        resp = await api.put(f"/api/v1/images:import/{name}/progress", json=progress, headers=alice)
        assert resp.status_code == 200, resp.text
        details = (await api.get(f"/api/v1/images/{image_id}/importing-details", headers=alice)).json()
        assert details["layersDetail"][done] == {"status": "downloading", "progress": 45}
        assert "sha256:" + "b" * 64 not in details["layersDetail"]
        assert (await api.delete(f"/api/v1/images/{image_id}", headers=alice)).status_code == 200
        handle = platform.state.temporal.get_workflow_handle(f"image-import/{image_id}")
        with pytest.raises(WorkflowFailureError):
            await asyncio.wait_for(handle.result(), 30)
        assert (await handle.describe()).status == WorkflowExecutionStatus.CANCELED
        await replay_and_keep(handle, [ImageImportWorkflow], "image-import-progress-then-cancelled")
        assert (
            await api.get(f"/api/v1/images/{image_id}/importing-details", headers=alice)
        ).status_code == 404
        deletion = platform.state.temporal.get_workflow_handle(
            f"image-delete/{image_id}", result_type=DeleteImageResult
        )
        result = await asyncio.wait_for(deletion.result(), 30)
        assert result.import_cancelled and result.manifest == "absent" and result.removed, result
        async with RegistryClient(regs["internal"].host, insecure=True) as client:
            assert await client.manifest_digest(synced(throttle, "slow/data"), "1") is None
        await replay_and_keep(deletion, [ImageDeleteWorkflow], "image-delete-while-importing")
    finally:
        await throttle.stop()


async def test_blobs_of_an_imported_image_are_mounted_not_resent(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    regs: dict[str, Registry],
    tmp_path: Path,
) -> None:
    source = regs["source"]
    skopeo_push(small_image(tmp_path / "copy"), source, "other/app:1")  # same blobs as team/app:1
    await add_registry(api, admin, source)
    first = await start_import(api, alice, f"{source.host}/team/app:1")
    assert (await wait_done(api, alice, first["imageId"]))["status"] == "ready"
    internal = regs["internal"]
    before = len(internal.access_log())
    second = await start_import(api, alice, f"{source.host}/other/app:1")
    details = await wait_done(api, alice, second["imageId"])
    assert details["status"] == "ready"
    assert {v["status"] for v in details["layersDetail"].values()} == {"mounted"}
    new = internal.access_log()[before:]
    assert [r for r in new if r[0] == "POST"] and all(
        "mount=" in r[1] and r[2] == 201 for r in new if r[0] == "POST"
    )
    assert not [r for r in new if r[0] in ("PATCH",) or (r[0] == "PUT" and "/blobs/" in r[1])]
    assert skopeo_digest(internal, synced(source, "other/app:1")) == skopeo_digest(source, "other/app:1")


async def cli_import(source: str, server: str, token: str, *, within: float) -> tuple[int, str]:
    """Run `primus-safe image import` as a subprocess; its exit code and output."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "primus_safe.cli",
        "image",
        "import",
        source,
        "--server",
        server,
        "--token",
        token,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        env={**os.environ, "COLUMNS": "120"},
    )
    out, _ = await asyncio.wait_for(proc.communicate(), within)
    return int(proc.returncode or 0), out.decode()


async def test_cli_import_shows_a_bar_per_layer(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, regs: dict[str, Registry]
) -> None:
    """`primus-safe image import` against the API served on a loopback port."""

    import uvicorn

    await add_registry(api, admin, regs["source"])
    app = platform.http._transport.app  # type: ignore[attr-defined]
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=15005, lifespan="off", log_config=None)
    )
    serving = asyncio.create_task(server.serve())
    try:
        for _ in range(500):
            if server.started:
                break
            await asyncio.sleep(0.02)
        token = admin["Authorization"].removeprefix("Bearer ")
        source = f"{regs['source'].host}/team/multi:1"
        code, text = await cli_import(source, "http://127.0.0.1:15005", token, within=120)
        assert code == 0, text
        assert "Importing" in text and "Imported image" in text
        assert text.count("100% completed") == 5, text  # 2 platform layers + shared layer + 2 configs
        code, text = await cli_import(source, "http://127.0.0.1:15005", token, within=60)
        assert code == 0 and "Already imported" in text
    finally:
        server.should_exit = True
        await asyncio.wait_for(serving, 10)


async def test_a_failed_import_can_be_started_again(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    platform: Platform,
    regs: dict[str, Registry],
) -> None:
    from sqlalchemy import update

    from db.images import Image

    await add_registry(api, admin, regs["source"])
    first = await start_import(api, alice, f"{regs['source'].host}/team/app:1")
    await wait_done(api, alice, first["imageId"])
    async with platform.state.sessions() as session, session.begin():  # as a failed workflow leaves it
        await session.execute(update(Image).where(Image.id == first["imageId"]).values(status="Failed"))
    again = await start_import(api, alice, f"{regs['source'].host}/team/app:1")
    assert again["state"] == 1 and again["imageId"] == first["imageId"], again
    # reset by the workflow (the restart update) before the answer: it reads importing at once
    first_look = await api.get(f"/api/v1/images/{again['imageId']}/importing-details", headers=alice)
    assert first_look.json()["status"] in ("importing", "ready"), first_look.text
    details = await wait_done(api, alice, again["imageId"])
    assert details["status"] == "ready" and details["message"] == ""
    assert {v["status"] for v in details["layersDetail"].values()} == {"skipped"}  # blobs were already there
    assert (await api.get("/api/v1/images", headers=alice)).json()["totalCount"] == 1
    handle = platform.state.temporal.get_workflow_handle(f"image-import/{again['imageId']}")
    await handle.result()
    await replay_and_keep(handle, [ImageImportWorkflow], "image-import-failed-again")


async def test_only_the_workflow_resets_a_failed_image(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    platform: Platform,
    regs: dict[str, Registry],
) -> None:
    """Two requests importing a failed image again: one restarts it, the other finds it importing."""
    from sqlalchemy import update

    from db.images import Image

    await add_registry(api, admin, regs["source"])
    first = await start_import(api, alice, f"{regs['source'].host}/team/app:2")
    await wait_done(api, alice, first["imageId"])
    async with platform.state.sessions() as session, session.begin():
        await session.execute(update(Image).where(Image.id == first["imageId"]).values(status="Failed"))
    source = f"{regs['source'].host}/team/app:2"
    answers = await asyncio.gather(start_import(api, alice, source), start_import(api, bob, source))
    assert sorted(a["state"] for a in answers) == [1, 2], answers
    assert {a["imageId"] or a["alreadyImageId"] for a in answers} == {first["imageId"]}
    assert (await wait_done(api, alice, first["imageId"]))["status"] == "ready"
