"""Image registries: CRUD, URL rules, one default, encrypted never-returned passwords, permissions."""

from __future__ import annotations

import httpx
from sqlalchemy import select

from db.image_registries import ImageRegistry, default_registry, registry_credentials
from tests.conftest import Platform

BASE = "/api/v1/image-registries"
HUB = {
    "name": "docker-hub",
    "url": "https://registry-1.docker.io/",
    "username": "myuser",
    "password": "s3cret-Passw0rd",
    "default": False,
}


async def create(api: httpx.AsyncClient, headers: dict[str, str], **changes: object) -> httpx.Response:
    return await api.post(BASE, json={**HUB, **changes}, headers=headers)


async def test_create_and_list(api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]) -> None:
    resp = await create(api, admin)
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert set(body) == {"id", "name", "url", "username", "default", "insecure", "created_at", "updated_at"}
    assert body["url"] == "https://registry-1.docker.io" and body["username"] == "myuser"
    assert body["default"] is False and body["insecure"] is False
    assert isinstance(body["created_at"], int) and body["created_at"] > 1_700_000_000
    local = await create(api, admin, name="local", url="127.0.0.1:5000", password=None, insecure=True)
    assert local.status_code == 200 and local.json()["insecure"] is True
    listed = await api.get(BASE, headers=alice)
    assert listed.status_code == 200
    assert [r["name"] for r in listed.json()] == ["local", "docker-hub"]  # newest first, bare array
    page = await api.get(f"{BASE}?pageNum=2&pageSize=1", headers=alice)
    assert [r["name"] for r in page.json()] == ["docker-hub"]
    assert (await api.get(f"{BASE}?pageNum=3&pageSize=1", headers=alice)).json() == []
    for query in ("pageNum=0", "pageSize=0", "pageSize=1001", "pageNum=x"):
        assert (await api.get(f"{BASE}?{query}", headers=alice)).status_code == 400, query


async def test_password_is_encrypted_and_never_returned(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform
) -> None:
    created = await create(api, admin)
    put = await api.put(
        f"{BASE}/{created.json()['id']}", json={**HUB, "password": "n3w-Passw0rd"}, headers=admin
    )
    listed = await api.get(BASE, headers=admin)
    for resp in (created, put, listed):
        assert "Passw0rd" not in resp.text and "password" not in resp.text
    async with platform.state.sessions() as session:
        row = (await session.execute(select(ImageRegistry))).scalar_one()
        assert "Passw0rd" not in row.password_encrypted and row.password_encrypted
        assert registry_credentials(platform.state.box, row) == ("myuser", "n3w-Passw0rd")


async def test_put_replaces_but_keeps_an_omitted_password(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform
) -> None:
    registry_id = (await create(api, admin)).json()["id"]
    body = {"name": "hub", "url": "registry-1.docker.io", "username": "other"}
    resp = await api.put(f"{BASE}/{registry_id}", json=body, headers=admin)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "hub" and resp.json()["url"] == "registry-1.docker.io"
    assert resp.json()["id"] == registry_id and resp.json()["updated_at"] >= resp.json()["created_at"]
    async with platform.state.sessions() as session:
        row = await session.get(ImageRegistry, registry_id)
        assert row is not None
        assert registry_credentials(platform.state.box, row) == ("other", "s3cret-Passw0rd")
    assert (await api.put(f"{BASE}/999999", json=body, headers=admin)).status_code == 404
    assert (await api.put(f"{BASE}/abc", json=body, headers=admin)).status_code == 400


async def test_at_most_one_default(api: httpx.AsyncClient, admin: dict[str, str], platform: Platform) -> None:
    first = (await create(api, admin, default=True)).json()
    second = (await create(api, admin, name="harbor", url="harbor.example.com", default=True)).json()
    listed = {r["name"]: r["default"] for r in (await api.get(BASE, headers=admin)).json()}
    assert listed == {"harbor": True, "docker-hub": False}
    async with platform.state.sessions() as session:
        found = await default_registry(session)
        assert found is not None and found.id == second["id"]
    body = {**HUB, "default": True}
    assert (await api.put(f"{BASE}/{first['id']}", json=body, headers=admin)).status_code == 200
    listed = {r["name"]: r["default"] for r in (await api.get(BASE, headers=admin)).json()}
    assert listed == {"harbor": False, "docker-hub": True}


async def test_uniqueness(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    assert (await create(api, admin)).status_code == 200
    other = await create(api, admin, name="other", url="quay.io")
    assert other.status_code == 200
    # same name, same URL, or the same address with another scheme
    for changes in ({"name": "other"}, {"url": "https://registry-1.docker.io"}, {"url": "https://quay.io/"}):
        resp = await create(api, admin, **{"name": "third", "url": "ghcr.io", **changes})
        assert resp.status_code == 409, (changes, resp.text)
    clash = await api.put(f"{BASE}/{other.json()['id']}", json={**HUB, "name": "other"}, headers=admin)
    assert clash.status_code == 409 and clash.json()["errorCode"] == "Primus.00004"


async def test_validation(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    cases = {
        "name": {"name": "Bad_Name"},
        "url": {"url": "ftp://example.com"},
        "url ": {"url": "https://example.com/?q=1"},
        "url  ": {"url": ""},
        "default": {"default": "yes"},
        "username": {"username": "a\u0000b"},
        "unknown field": {"token": "x"},
    }
    for expected, changes in cases.items():
        resp = await create(api, admin, **changes)
        assert resp.status_code == 400, (changes, resp.text)
        assert expected.strip() in resp.json()["errorMessage"], resp.text
    resp = await api.post(BASE, json={"url": "quay.io"}, headers=admin)
    assert resp.status_code == 400 and "name" in resp.json()["errorMessage"]
    assert (await api.get(BASE, headers=admin)).json() == []


async def test_delete(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    registry_id = (await create(api, admin)).json()["id"]
    assert (await api.delete(f"{BASE}/{registry_id}", headers=admin)).status_code == 200
    assert (await api.delete(f"{BASE}/{registry_id}", headers=admin)).status_code == 404
    assert (await api.delete(f"{BASE}/not-a-number", headers=admin)).status_code == 400
    assert (await api.delete(f"{BASE}/{2**70}", headers=admin)).status_code == 400
    assert (await api.get(BASE, headers=admin)).json() == []


async def test_only_admins_write(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    resp = await create(api, alice)
    assert resp.status_code == 403 and resp.json()["errorCode"] == "Primus.00003"
    registry_id = (await create(api, admin)).json()["id"]
    assert (await api.put(f"{BASE}/{registry_id}", json=HUB, headers=alice)).status_code == 403
    assert (await api.delete(f"{BASE}/{registry_id}", headers=alice)).status_code == 403
    assert len((await api.get(BASE, headers=alice)).json()) == 1
    assert (await api.get(BASE)).status_code == 401


async def test_link_local_and_metadata_urls_are_refused_at_creation(
    api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Refused when written, not only when an import uses them (no DNS: literal addresses and the
    metadata host names; every spelling of an IPv4 literal counts)."""
    urls = [
        "http://169.254.169.254",
        "169.254.169.254:5000",
        "http://[fe80::1]:5000",
        "http://[::ffff:169.254.169.254]",
        "http://0251.0376.0251.0376",
        "http://0xa9fea9fe",
        "http://2852039166",
        "http://[fd00:ec2::254]",
        "http://100.100.100.200",
        "https://metadata.google.internal",
        "instance-data:80",
    ]
    for url in urls:
        resp = await create(api, admin, name="meta", url=url)
        assert resp.status_code == 400, (url, resp.text)
        assert "metadata" in resp.json()["errorMessage"] or "link-local" in resp.json()["errorMessage"], url
    ok = await create(api, admin)
    assert ok.status_code == 200
    put = await api.put(f"{BASE}/{ok.json()['id']}", json={**HUB, "url": "http://169.254.1.1"}, headers=admin)
    assert put.status_code == 400, put.text
    assert [r["url"] for r in (await api.get(BASE, headers=admin)).json()] == ["https://registry-1.docker.io"]


async def test_usernames_are_shown_to_admins_only(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    assert (await create(api, admin)).status_code == 200
    assert [r["username"] for r in (await api.get(BASE, headers=admin)).json()] == ["myuser"]
    listed = (await api.get(BASE, headers=alice)).json()
    assert [r["username"] for r in listed] == [""] and "myuser" not in str(listed)
