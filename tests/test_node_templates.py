"""Node templates (both create paths), the addon catalogue endpoint, validation and permissions."""

from __future__ import annotations

import httpx

BASE = "/api/v1/nodetemplates"
ADDONS = ["disable-os-upgrade", "enable-cpu-performance", "sysctl-inotify"]


async def test_create_list_get_delete(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    resp = await api.post(
        "/api/custom/nodetemplates",
        json={"templateId": "Node_Template-V1", "addOnTemplates": ADDONS},
        headers=admin,
    )
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"id": "node-template-v1"}
    resp = await api.post(BASE, json={"name": "a-first", "addOnTemplates": ["set-max-sclk"]}, headers=admin)
    assert resp.status_code == 200 and resp.json() == {"id": "a-first"}
    listed = (await api.get(BASE, headers=alice)).json()
    assert listed == {
        "totalCount": 2,
        "items": [
            {"templateId": "a-first", "addOnTemplates": ["set-max-sclk"]},
            {"templateId": "node-template-v1", "addOnTemplates": ADDONS},
        ],
    }
    got = await api.get(f"{BASE}/node-template-v1", headers=alice)
    assert got.status_code == 200 and got.json()["addOnTemplates"] == ADDONS
    assert (await api.delete(f"{BASE}/node-template-v1", headers=admin)).status_code == 200
    assert (await api.get(f"{BASE}/node-template-v1", headers=alice)).status_code == 404
    assert (await api.delete(f"{BASE}/node-template-v1", headers=admin)).status_code == 404


async def test_validation(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    cases = [
        ({"templateId": "t", "addOnTemplates": ["sysctl-inotify", "no-such-addon"]}, "no-such-addon"),
        ({"templateId": "t", "addOnTemplates": ["sysctl-inotify", "sysctl-inotify"]}, "more than once"),
        ({"addOnTemplates": ADDONS}, "exactly one of templateId or name"),
        ({"templateId": "t", "name": "t", "addOnTemplates": ADDONS}, "exactly one of templateId or name"),
        ({"templateId": "bad name!", "addOnTemplates": ADDONS}, "templateId"),
        ({"templateId": "t"}, "addOnTemplates"),
        ({"templateId": "t", "addOnTemplates": "sysctl-inotify"}, "addOnTemplates"),
        ({"templateId": "t", "addOnTemplates": ADDONS, "extra": 1}, "unknown field"),
    ]
    for body, expected in cases:
        resp = await api.post(BASE, json=body, headers=admin)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
        assert expected in resp.json()["errorMessage"], (body, resp.text)
    assert (await api.get(BASE, headers=admin)).json()["totalCount"] == 0


async def test_duplicate_conflicts(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = {"templateId": "dup", "addOnTemplates": ADDONS}
    assert (await api.post(BASE, json=body, headers=admin)).status_code == 200
    resp = await api.post(
        "/api/custom/nodetemplates", json={"name": "DUP", "addOnTemplates": []}, headers=admin
    )
    assert resp.status_code == 409 and resp.json()["errorCode"] == "Primus.00004"


async def test_only_admins_write(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    body = {"templateId": "t1", "addOnTemplates": ADDONS}
    for path in (BASE, "/api/custom/nodetemplates"):
        resp = await api.post(path, json=body, headers=alice)
        assert resp.status_code == 403 and resp.json()["errorCode"] == "Primus.00003"
    assert (await api.post(BASE, json=body, headers=admin)).status_code == 200
    assert (await api.delete(f"{BASE}/t1", headers=alice)).status_code == 403
    assert (await api.get(BASE, headers=alice)).json()["totalCount"] == 1
    assert (await api.get(BASE)).status_code == 401


async def test_addon_catalogue_endpoint(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    resp = await api.get("/api/v1/addontemplates", headers=alice)
    assert resp.status_code == 200
    body = resp.json()
    names = [a["name"] for a in body["items"]]
    assert body["totalCount"] == len(names) >= 9
    assert names == sorted(names) and set(ADDONS) <= set(names)
    amdgpu = next(a for a in body["items"] if a["name"] == "load-amdgpu-module")
    assert amdgpu["gpuChip"] == "amd" and amdgpu["description"]
    # the fields upstream's console reads (console-calls.md)
    assert amdgpu["addonTemplateId"] == "load-amdgpu-module" and amdgpu["type"] == "script"
    assert amdgpu["category"] == "gpu" and len(amdgpu["version"]) == 12 and amdgpu["creationTime"]
    assert next(a for a in body["items"] if not a["gpuChip"])["category"] == "system"
    helm = await api.get("/api/v1/addontemplates?type=helm", headers=alice)
    assert helm.json() == {"totalCount": 0, "items": []}
    scripts = await api.get("/api/v1/addontemplates?type=helm,script", headers=alice)
    assert scripts.json()["totalCount"] == len(names)
    assert (await api.get("/api/v1/addontemplates")).status_code == 401
