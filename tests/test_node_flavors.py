"""Node flavors: create/list/get/patch/delete, validation, ephemeral-storage fill, avail, permissions."""

from __future__ import annotations

import math

import httpx

BASE = "/api/v1/nodeflavors"

FLAVOR = {
    "name": "GPU_Large",
    "cpu": {"product": " AMD_EPYC_9575F", "quantity": "256"},
    "memory": "1024Gi",
    "gpu": {"product": " AMD_Instinct_MI325X", "resourceName": "amd.com/gpu", "quantity": "8"},
    "rootDisk": {"type": "ssd", "quantity": "838Gi", "count": 1},
    "dataDisk": {"type": "nvme", "quantity": "3573Gi", "count": 8},
    "extendedResources": {"rdma/hca": "1k"},
}


def flavor(**changes: object) -> dict[str, object]:
    body = dict(FLAVOR)
    body.update(changes)
    return {k: v for k, v in body.items() if v is not None}


async def create(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, object]) -> httpx.Response:
    return await api.post(BASE, json=body, headers=headers)


async def test_create_get_list(api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]) -> None:
    resp = await create(api, admin, FLAVOR)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"flavorId": "gpu-large"}
    got = await api.get(f"{BASE}/gpu-large", headers=alice)
    assert got.status_code == 200
    assert got.json() == {
        "flavorId": "gpu-large",
        "cpu": {"product": "AMD_EPYC_9575F", "quantity": "256"},
        "memory": "1024Gi",
        "gpu": {"product": "AMD_Instinct_MI325X", "resourceName": "amd.com/gpu", "quantity": "8"},
        "rootDisk": {"type": "ssd", "quantity": "838Gi", "count": 1},
        "dataDisk": {"type": "nvme", "quantity": "3573Gi", "count": 8},
        "extendedResources": {"rdma/hca": "1k", "ephemeral-storage": "838Gi"},
    }
    assert (await create(api, admin, flavor(name="a-cpu-only", gpu=None))).status_code == 200
    listed = (await api.get(BASE, headers=alice)).json()
    assert listed["totalCount"] == 2
    assert [f["flavorId"] for f in listed["items"]] == ["a-cpu-only", "gpu-large"]
    assert listed["items"][0]["gpu"] is None
    page = (await api.get(f"{BASE}?limit=1&offset=1", headers=alice)).json()
    assert page["totalCount"] == 2 and [f["flavorId"] for f in page["items"]] == ["gpu-large"]
    missing = await api.get(f"{BASE}/nope", headers=alice)
    assert missing.status_code == 404 and missing.json()["errorCode"] == "Primus.00005"


async def test_ephemeral_storage_fill(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = flavor(name="two-disks", rootDisk={"quantity": "1.5Ti", "count": 2}, extendedResources=None)
    assert (await create(api, admin, body)).status_code == 200
    got = (await api.get(f"{BASE}/two-disks", headers=admin)).json()
    assert got["extendedResources"] == {"ephemeral-storage": "3Ti"}
    explicit = flavor(name="explicit", extendedResources={"ephemeral-storage": "100Gi"})
    assert (await create(api, admin, explicit)).status_code == 200
    got = (await api.get(f"{BASE}/explicit", headers=admin)).json()
    assert got["extendedResources"] == {"ephemeral-storage": "100Gi"}
    no_disk = flavor(name="no-disk", rootDisk=None, extendedResources=None)
    assert (await create(api, admin, no_disk)).status_code == 200
    assert (await api.get(f"{BASE}/no-disk", headers=admin)).json()["extendedResources"] == {}


async def test_zero_gpu_is_dropped_on_create(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = flavor(name="cpu-box", gpu={"resourceName": "amd.com/gpu", "quantity": "0"})
    assert (await create(api, admin, body)).status_code == 200
    assert (await api.get(f"{BASE}/cpu-box", headers=admin)).json()["gpu"] is None


async def test_validation(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    cases = {
        "cpu.quantity": flavor(cpu={"quantity": "0"}),
        "cpu.product": flavor(cpu={"product": "a\u0000b", "quantity": "1"}),
        "memory": flavor(memory="lots"),
        "gpu.resourceName": flavor(gpu={"resourceName": "intel.com/gpu", "quantity": "8"}),
        "gpu.quantity": flavor(gpu={"resourceName": "amd.com/gpu", "quantity": "-1"}),
        "rootDisk.count": flavor(rootDisk={"quantity": "1Ti", "count": 0}),
        "dataDisk.quantity": flavor(dataDisk={"quantity": "0", "count": 1}),
        "dataDisk.type": flavor(dataDisk={"type": "tape", "quantity": "1Ti", "count": 1}),
        "extendedResources": flavor(extendedResources={"Not A Name": "1"}),
        "extendedResources.rdma/hca": flavor(extendedResources={"rdma/hca": "0"}),
        "name": flavor(name="bad name!"),
        "cpu": flavor(cpu=None),
        "surprise": flavor(surprise=1),
        "count": flavor(rootDisk={"quantity": "1Ti", "count": "1"}),
    }
    for field, body in cases.items():
        resp = await create(api, admin, body)
        assert resp.status_code == 400, (field, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
        assert field in resp.json()["errorMessage"], (field, resp.text)
    assert (await api.get(BASE, headers=admin)).json()["totalCount"] == 0


async def test_duplicate_conflicts(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await create(api, admin, FLAVOR)).status_code == 200
    resp = await create(api, admin, flavor(name="gpu-large"))
    assert resp.status_code == 409 and resp.json()["errorCode"] == "Primus.00004"


async def test_patch_is_partial_and_revalidated(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await create(api, admin, FLAVOR)).status_code == 200
    url = f"{BASE}/gpu-large"
    resp = await api.patch(url, json={"memory": "2048Gi"}, headers=admin)
    assert resp.status_code == 200, resp.text
    got = (await api.get(url, headers=admin)).json()
    assert got["memory"] == "2048Gi" and got["cpu"]["quantity"] == "256" and got["gpu"]["quantity"] == "8"
    resp = await api.patch(url, json={"extendedResources": {"rdma/hca": "2k"}}, headers=admin)
    assert resp.status_code == 200
    got = (await api.get(url, headers=admin)).json()
    # replaced whole; ephemeral-storage is filled again from the root disk
    assert got["extendedResources"] == {"rdma/hca": "2k", "ephemeral-storage": "838Gi"}
    assert (await api.patch(url, json={"gpu": None}, headers=admin)).status_code == 200
    assert (await api.get(url, headers=admin)).json()["gpu"] is None
    for body in (
        {"cpu": {"quantity": "0"}},
        {"memory": None},
        {"gpu": {"resourceName": "x", "quantity": "1"}},
    ):
        resp = await api.patch(url, json=body, headers=admin)
        assert resp.status_code == 400, (body, resp.text)
    assert (await api.get(url, headers=admin)).json()["memory"] == "2048Gi"
    assert (await api.patch(f"{BASE}/nope", json={"memory": "1Gi"}, headers=admin)).status_code == 404


async def test_avail_subtracts_the_reserve(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await create(api, admin, FLAVOR)).status_code == 200
    resp = await api.get(f"{BASE}/gpu-large/avail", headers=admin)
    assert resp.status_code == 200
    memory = 1024 * 1024**3
    storage = 838 * 1024**3
    assert resp.json() == {
        "cpu": 230,
        "memory": memory - math.ceil(memory * 0.05),
        "amd.com/gpu": 8,
        "ephemeral-storage": storage - math.ceil(storage * 0.05),
        "rdma/hca": 1000,
    }
    assert (await api.get(f"{BASE}/nope/avail", headers=admin)).status_code == 404


async def test_delete(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await create(api, admin, FLAVOR)).status_code == 200
    assert (await api.delete(f"{BASE}/gpu-large", headers=admin)).status_code == 200
    assert (await api.get(f"{BASE}/gpu-large", headers=admin)).status_code == 404
    assert (await api.delete(f"{BASE}/gpu-large", headers=admin)).status_code == 404


async def test_only_admins_write(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    resp = await create(api, alice, FLAVOR)
    assert resp.status_code == 403 and resp.json()["errorCode"] == "Primus.00003"
    assert (await create(api, admin, FLAVOR)).status_code == 200
    url = f"{BASE}/gpu-large"
    assert (await api.patch(url, json={"memory": "1Gi"}, headers=alice)).status_code == 403
    assert (await api.delete(url, headers=alice)).status_code == 403
    assert (await api.get(BASE, headers=alice)).json()["totalCount"] == 1
    assert (await api.get(f"{url}/avail", headers=alice)).status_code == 200
    assert (await api.get(BASE)).status_code == 401
