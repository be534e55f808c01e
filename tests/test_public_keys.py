"""Public keys API: each user manages only their own keys; OpenSSH validation; duplicates; paging."""

from __future__ import annotations

import re
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa
from sqlalchemy import func, select, update

from db.public_keys import PublicKey, enabled_keys
from db.users import User
from tests.conftest import Platform
from tests.fixtures.ssh_keygen import KeyPair, b64, keygen

URL = "/api/v1/publickeys"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")
KEY_SPECS = {
    "rsa": ("-t", "rsa", "-b", "3072"),
    "ecdsa256": ("-t", "ecdsa", "-b", "256"),
    "ecdsa384": ("-t", "ecdsa", "-b", "384"),
    "ecdsa521": ("-t", "ecdsa", "-b", "521"),
    "ed25519": ("-t", "ed25519"),
}


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d: Path = tmp_path_factory.mktemp("public-keys")
    return {name: keygen(d, name, *spec) for name, spec in KEY_SPECS.items()}


def fresh_key(comment: str = "") -> str:
    """A new ed25519 public key line (cheaper than ssh-keygen when many are needed)."""
    line = (
        ed25519.Ed25519PrivateKey.generate()
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    return f"{line} {comment}".strip()


async def add_key(api: httpx.AsyncClient, headers: dict[str, str], public_key: str, **extra: str) -> int:
    resp = await api.post(URL, json={"publicKey": public_key, **extra}, headers=headers)
    assert resp.status_code == 200, resp.text
    key_id = resp.json()["id"]
    assert isinstance(key_id, int)
    return key_id


async def my_id(api: httpx.AsyncClient, headers: dict[str, str]) -> str:
    return str((await api.get("/api/v1/users/self", headers=headers)).json()["id"])


async def test_create_and_list_every_key_type(
    api: httpx.AsyncClient, platform: Platform, alice: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    alice_id = await my_id(api, alice)
    ids = {}
    for name, pair in keys.items():
        ids[name] = await add_key(api, alice, pair.public, name=f"{name}-key", description=f"{name} laptop")
    listed = (await api.get(URL, headers=alice)).json()
    assert listed["totalCount"] == len(keys)
    by_id = {item["id"]: item for item in listed["items"]}
    for name, pair in keys.items():
        item = by_id[ids[name]]
        assert set(item) == {"id", "userId", "description", "publicKey", "status", "createTime", "updateTime"}
        assert item["userId"] == alice_id and item["description"] == f"{name} laptop"
        assert item["publicKey"] == pair.public.strip() and item["status"] is True
        assert TIME.match(item["createTime"]) and TIME.match(item["updateTime"])
    # type and fingerprint are stored as ssh-keygen computes them
    async with platform.state.sessions() as session:
        for name, pair in keys.items():
            row = await session.get(PublicKey, ids[name])
            assert row is not None and row.fingerprint == pair.fingerprint() and row.name == f"{name}-key"
            assert row.key_type == pair.public.split()[0]


async def test_bad_keys_are_400_and_write_nothing(
    api: httpx.AsyncClient, alice: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    ed = keys["ed25519"].public
    body = ed.split()[1]
    short_rsa = (
        rsa.RSAPublicNumbers(65537, (1 << 767) | 1)
        .public_key()
        .public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH)
        .decode()
    )
    cases: list[tuple[dict[str, object], str]] = [
        ({}, "publicKey"),
        ({"publicKey": ""}, "publicKey"),
        ({"publicKey": "   "}, "publicKey: the public key is empty"),
        ({"publicKey": "not a key"}, "unsupported public key type"),
        ({"publicKey": f"ssh-dss {body}"}, "unsupported public key type"),
        ({"publicKey": f"ssh-ed25519 {body[:-3]}###"}, "not valid base64"),
        ({"publicKey": f"ssh-rsa {body}"}, "not a valid ssh-rsa key"),
        ({"publicKey": f"ssh-ed25519 {b64('nonsense')}"}, "not a valid ssh-ed25519 key"),
        ({"publicKey": ed + keys["rsa"].public}, "single line"),
        ({"publicKey": short_rsa}, "at least 1024 bits"),
        ({"publicKey": b64(ed)}, "must look like"),
        ({"publicKey": 12345}, "publicKey"),
        ({"publicKey": ed, "description": "d" * 1025}, "description"),
        ({"publicKey": ed, "name": "n" * 129}, "name"),
        ({"publicKey": ed, "status": False}, "status: unknown field"),
    ]
    for payload, problem in cases:
        resp = await api.post(URL, json=payload, headers=alice)
        assert resp.status_code == 400, (payload, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
        assert problem in resp.json()["errorMessage"], (problem, resp.text)
    assert (await api.get(URL, headers=alice)).json() == {"totalCount": 0, "items": []}


async def test_duplicate_key_conflicts_per_user(
    api: httpx.AsyncClient, alice: dict[str, str], bob: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    line = keys["ecdsa256"].public
    await add_key(api, alice, line)
    kind, body, _ = line.split(None, 2)
    for again in (line, f"{kind} {body}", f"{kind} {body} a different comment"):
        resp = await api.post(URL, json={"publicKey": again}, headers=alice)
        assert resp.status_code == 409 and resp.json()["errorCode"] == "Primus.00004", resp.text
    assert (await api.get(URL, headers=alice)).json()["totalCount"] == 1
    # another user may register the same key
    await add_key(api, bob, line)


async def test_paging_and_sorting(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    ids = [await add_key(api, alice, fresh_key(f"k{i}"), description=f"key {i}") for i in range(12)]
    default = (await api.get(URL, headers=alice)).json()
    assert default["totalCount"] == 12 and len(default["items"]) == 10
    assert [k["id"] for k in default["items"]] == ids[::-1][:10]
    oldest_first = (await api.get(URL, params={"order": "asc", "limit": 100}, headers=alice)).json()
    assert [k["id"] for k in oldest_first["items"]] == ids
    page = (await api.get(URL, params={"order": "asc", "limit": 3, "offset": 10}, headers=alice)).json()
    assert page["totalCount"] == 12 and [k["id"] for k in page["items"]] == ids[10:]
    # touching the oldest key puts it first by updateTime desc, and only there
    resp = await api.patch(f"{URL}/{ids[0]}/description", json={"description": "touched"}, headers=alice)
    assert resp.status_code == 200
    by_update = (await api.get(URL, params={"sortBy": "updateTime"}, headers=alice)).json()
    assert by_update["items"][0]["id"] == ids[0] and by_update["items"][0]["description"] == "touched"
    by_update_asc = (
        await api.get(URL, params={"sortBy": "updateTime", "order": "asc"}, headers=alice)
    ).json()
    assert by_update_asc["items"][0]["id"] == ids[1]
    by_create = (await api.get(URL, params={"sortBy": "createTime"}, headers=alice)).json()
    assert by_create["items"][0]["id"] == ids[-1]
    for bad in (
        {"sortBy": "name"},
        {"sortBy": "create_time"},
        {"order": "up"},
        {"limit": 0},
        {"limit": "ten"},
        {"offset": -1},
    ):
        resp = await api.get(URL, params=bad, headers=alice)
        assert resp.status_code == 400, (bad, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"


async def test_status_description_and_delete(
    api: httpx.AsyncClient, platform: Platform, alice: dict[str, str]
) -> None:
    alice_id = await my_id(api, alice)
    first = await add_key(api, alice, fresh_key(), description="first")
    second = await add_key(api, alice, fresh_key(), description="second")
    async with platform.state.sessions() as session:
        assert [k.id for k in await enabled_keys(session, user_id=alice_id)] == [first, second]
    assert (
        await api.patch(f"{URL}/{first}/status", json={"status": False}, headers=alice)
    ).status_code == 200
    resp = await api.patch(f"{URL}/{second}/description", json={"description": "renamed"}, headers=alice)
    assert resp.status_code == 200
    items = {k["id"]: k for k in (await api.get(URL, headers=alice)).json()["items"]}
    assert items[first]["status"] is False and items[first]["description"] == "first"
    assert items[second]["status"] is True and items[second]["description"] == "renamed"
    assert items[first]["updateTime"] >= items[first]["createTime"]
    async with platform.state.sessions() as session:
        assert [k.id for k in await enabled_keys(session, user_id=alice_id)] == [second]
    assert (await api.patch(f"{URL}/{first}/status", json={"status": True}, headers=alice)).status_code == 200
    bad_bodies = [
        ("status", {"status": "false"}),
        ("status", {"status": None}),
        ("status", {}),
        ("status", {"status": True, "description": "x"}),
        ("description", {"description": "x" * 1025}),
        ("description", {"description": 5}),
        ("description", {}),
    ]
    for field, payload in bad_bodies:
        resp = await api.patch(f"{URL}/{first}/{field}", json=payload, headers=alice)
        assert resp.status_code == 400, (field, payload, resp.text)
    assert (await api.delete(f"{URL}/{first}", headers=alice)).status_code == 200
    assert [k["id"] for k in (await api.get(URL, headers=alice)).json()["items"]] == [second]
    assert (await api.delete(f"{URL}/{first}", headers=alice)).status_code == 404


async def test_other_users_keys_look_missing(
    api: httpx.AsyncClient,
    platform: Platform,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
) -> None:
    key_id = await add_key(api, alice, fresh_key(), description="alice's")
    await add_key(api, bob, fresh_key(), description="bob's")
    calls: list[tuple[str, str, dict[str, object] | None]] = [
        ("DELETE", f"{URL}/{key_id}", None),
        ("PATCH", f"{URL}/{key_id}/status", {"status": False}),
        ("PATCH", f"{URL}/{key_id}/description", {"description": "hijacked"}),
    ]
    for who in (bob, admin):
        listed = (await api.get(URL, headers=who)).json()
        assert key_id not in [k["id"] for k in listed["items"]]
        for method, url, body in calls:
            resp = await api.request(method, url, json=body, headers=who)
            assert resp.status_code == 404, (method, url, resp.text)
            assert resp.json()["errorCode"] == "Primus.00005"
    mine = (await api.get(URL, headers=alice)).json()["items"]
    assert [(k["id"], k["description"], k["status"]) for k in mine] == [(key_id, "alice's", True)]
    async with platform.state.sessions() as session:
        assert (await session.execute(select(func.count()).select_from(PublicKey))).scalar_one() == 2


async def test_bad_ids(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    for bad in ("abc", "1.5", "0", "-3", str(2**31), "99999999999999999999"):
        for method, url, body in (
            ("DELETE", f"{URL}/{bad}", None),
            ("PATCH", f"{URL}/{bad}/status", {"status": True}),
            ("PATCH", f"{URL}/{bad}/description", {"description": "x"}),
        ):
            resp = await api.request(method, url, json=body, headers=alice)
            assert resp.status_code == 400, (method, url, resp.text)
            assert resp.json()["errorCode"] == "Primus.00002"
    resp = await api.delete(f"{URL}/424242", headers=alice)
    assert resp.status_code == 404 and resp.json()["errorMessage"] == "PublicKey 424242 not found."


async def test_authentication_required_and_frozen_users_refused(
    api: httpx.AsyncClient, platform: Platform, alice: dict[str, str]
) -> None:
    key_id = await add_key(api, alice, fresh_key())
    for method, url, body in (
        ("GET", URL, None),
        ("POST", URL, {"publicKey": fresh_key()}),
        ("DELETE", f"{URL}/{key_id}", None),
    ):
        assert (await api.request(method, url, json=body)).status_code == 401
    alice_id = await my_id(api, alice)
    async with platform.state.sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == alice_id).values(restricted_type=1))
    for method, url, body in (
        ("GET", URL, None),
        ("POST", URL, {"publicKey": fresh_key()}),
        ("PATCH", f"{URL}/{key_id}/status", {"status": False}),
        ("DELETE", f"{URL}/{key_id}", None),
    ):
        resp = await api.request(method, url, json=body, headers=alice)
        assert resp.status_code == 403 and "restricted" in resp.json()["errorMessage"], resp.text
    async with platform.state.sessions() as session:
        row = await session.get(PublicKey, key_id)
        assert row is not None and row.status is True
        assert (await session.execute(select(func.count()).select_from(PublicKey))).scalar_one() == 1
