"""Secrets API: admin-only, validation of ssh/image params, encryption at rest, no secret in responses."""

from __future__ import annotations

import io
import logging
import re
from pathlib import Path
from typing import Any

import httpx
import paramiko
import pytest
from sqlalchemy import select, text, update

from db.secrets import (
    Secret,
    decrypt_params,
    get_secret,
    image_credentials,
    load_image_credentials,
    load_ssh_credentials,
    ssh_credentials,
)
from db.users import User
from domain.errors import Invalid, NotFound
from tests.conftest import Platform, login, register
from tests.fixtures.ssh_keygen import KeyPair, b64, keygen

URL = "/api/v1/secrets"
SSH_PASSWORD = "Sup3r-Secret-ssh-Passw0rd"
REGISTRY_PASSWORD = "Harbor-Passw0rd-12345"
TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")


@pytest.fixture(scope="module")
def keys(tmp_path_factory: pytest.TempPathFactory) -> dict[str, KeyPair]:
    d: Path = tmp_path_factory.mktemp("secret-keys")
    return {
        "rsa": keygen(d, "rsa", "-t", "rsa", "-b", "2048"),
        "rsa-pem": keygen(d, "rsa-pem", "-t", "rsa", "-b", "2048", "-m", "PEM"),
        "ecdsa": keygen(d, "ecdsa", "-t", "ecdsa", "-b", "256"),
        "ed25519": keygen(d, "ed25519", "-t", "ed25519"),
        "other": keygen(d, "other", "-t", "ed25519"),
        "locked": keygen(d, "locked", "-t", "ed25519", passphrase="correct horse"),
    }


def ssh_body(name: str, **param: str) -> dict[str, Any]:
    return {"name": name, "type": "ssh", "params": [{"username": "root", **param}]}


def keypair_body(name: str, pair: KeyPair) -> dict[str, Any]:
    return ssh_body(name, privateKey=pair.private_b64, publicKey=pair.public_b64)


def image_body(name: str, *servers: str, bind: bool | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "name": name,
        "type": "image",
        "params": [{"server": s, "username": "puller", "password": b64(REGISTRY_PASSWORD)} for s in servers],
    }
    if bind is not None:
        body["bindAllWorkspaces"] = bind
    return body


async def create(api: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]) -> str:
    resp = await api.post(URL, json=body, headers=headers)
    assert resp.status_code == 200, resp.text
    return str(resp.json()["secretId"])


async def stored(platform: Platform, secret_id: str) -> Secret:
    async with platform.state.sessions() as session:
        secret = await session.get(Secret, secret_id)
        assert secret is not None
        return secret


async def test_ssh_password_secret_round_trip(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    body = ssh_body("node-login", password=SSH_PASSWORD, privateKey="", publicKey="")
    body["bindAllWorkspaces"] = False
    assert await create(api, admin, body) == "node-login"
    resp = await api.get(f"{URL}/node-login", headers=admin)
    assert resp.status_code == 200
    got = resp.json()
    assert got["secretId"] == got["secretName"] == "node-login"
    assert got["type"] == "ssh" and got["bindAllWorkspaces"] is False
    assert got["params"] == [{"username": "root", "password": "", "privateKey": "", "publicKey": ""}]
    assert TIME.match(got["creationTime"])
    assert SSH_PASSWORD not in resp.text


@pytest.mark.parametrize("kind", ["rsa", "rsa-pem", "ecdsa", "ed25519"])
async def test_ssh_keypair_secret_hides_the_private_key(
    api: httpx.AsyncClient, admin: dict[str, str], keys: dict[str, KeyPair], kind: str
) -> None:
    pair = keys[kind]
    await create(api, admin, keypair_body(f"key-{kind}", pair))
    listed = await api.get(URL, headers=admin)
    got = (await api.get(f"{URL}/key-{kind}", headers=admin)).json()
    assert got["params"] == [
        {"username": "root", "password": "", "privateKey": "", "publicKey": pair.public_b64}
    ]
    for resp_text in (listed.text, str(got)):
        assert pair.private_b64 not in resp_text
        assert pair.private_b64[40:80] not in resp_text
        assert b"PRIVATE KEY" not in resp_text.encode()


async def test_secrets_are_encrypted_at_rest_and_decrypt_for_activities(
    api: httpx.AsyncClient,
    platform: Platform,
    admin: dict[str, str],
    keys: dict[str, KeyPair],
    caplog: pytest.LogCaptureFixture,
) -> None:
    pair = keys["rsa-pem"]
    caplog.set_level(logging.DEBUG)
    body = keypair_body("both", pair)
    body["params"][0]["password"] = SSH_PASSWORD
    await create(api, admin, body)
    await create(api, admin, image_body("pull", "harbor.example.com", "docker.io"))
    async with platform.state.sessions() as session:
        rows = (await session.execute(text("SELECT * FROM secrets ORDER BY id"))).all()
    raw = " ".join(str(value) for row in rows for value in row)
    assert len(rows) == 2
    private_line = pair.private.decode().splitlines()[1]
    for needle in (
        SSH_PASSWORD,
        REGISTRY_PASSWORD,
        b64(REGISTRY_PASSWORD),
        pair.private_b64[:60],
        private_line,
    ):
        assert needle not in raw
        assert needle not in caplog.text
    # activities get the plain credentials back, the key re-encoded for paramiko
    creds = load_ssh_credentials(platform.state.box, await stored(platform, "both"))
    assert creds.username == "root" and creds.password == SSH_PASSWORD
    assert creds.public_key == pair.public.strip()
    key = paramiko.RSAKey.from_private_key(io.StringIO(creds.private_key_pem))
    assert creds.public_key.startswith(f"ssh-rsa {key.get_base64()}")
    registries = load_image_credentials(platform.state.box, await stored(platform, "pull"))
    assert [(r.server, r.username, r.password) for r in registries] == [
        ("harbor.example.com", "puller", REGISTRY_PASSWORD),
        ("docker.io", "puller", REGISTRY_PASSWORD),
    ]
    async with platform.state.sessions() as session:
        assert (await ssh_credentials(session, platform.state.box, secret_id="both")).password == SSH_PASSWORD
        assert len(await image_credentials(session, platform.state.box, secret_id="pull")) == 2
        with pytest.raises(Invalid):
            await ssh_credentials(session, platform.state.box, secret_id="pull")
        with pytest.raises(NotFound):
            await image_credentials(session, platform.state.box, secret_id="missing")


async def test_image_secret_with_several_servers(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(
        api, admin, image_body("harbor", "harbor.example.com", "https://registry-1.docker.io", bind=True)
    )
    got = (await api.get(f"{URL}/harbor", headers=admin)).json()
    assert got["type"] == "image" and got["bindAllWorkspaces"] is True
    assert got["params"] == [
        {"server": "harbor.example.com", "username": "puller", "password": ""},
        {"server": "https://registry-1.docker.io", "username": "puller", "password": ""},
    ]
    assert b64(REGISTRY_PASSWORD) not in str(got)


async def test_bad_create_requests_are_400_and_write_nothing(
    api: httpx.AsyncClient, admin: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    rsa, ed = keys["rsa"], keys["ed25519"]
    good_image = {"server": "docker.io", "username": "u", "password": b64("pw")}
    cases: list[tuple[dict[str, Any], str]] = [
        ({"type": "ssh", "params": [{"username": "root", "password": "x"}]}, "name"),
        (ssh_body("Bad_Name", password="x"), "name"),
        (ssh_body("x" * 64, password="x"), "name"),
        ({**ssh_body("ok", password="x"), "type": "ftp"}, "type"),
        ({**ssh_body("ok", password="x"), "color": "red"}, "color: unknown field"),
        ({"name": "ok", "type": "ssh", "params": []}, "params"),
        ({"name": "ok", "type": "ssh", "params": "root"}, "params"),
        ({"name": "ok", "type": "ssh", "params": ["root"]}, "params"),
        (
            {"name": "ok", "type": "ssh", "params": [{"username": "a", "password": "x"}] * 2},
            "exactly one entry",
        ),
        ({"name": "ok", "type": "ssh", "params": [{"password": "x"}]}, "params.0.username"),
        (ssh_body("ok"), "either password or both privateKey and publicKey"),
        (ssh_body("ok", password="", privateKey="", publicKey=""), "either password"),
        (ssh_body("ok", privateKey=rsa.private_b64), "publicKey: privateKey and publicKey must be given"),
        (ssh_body("ok", publicKey=rsa.public_b64), "privateKey: privateKey and publicKey must be given"),
        (ssh_body("ok", privateKey="%%%", publicKey=rsa.public_b64), "privateKey is not valid base64"),
        (ssh_body("ok", privateKey=rsa.private_b64, publicKey="!!"), "publicKey is not valid base64"),
        (ssh_body("ok", privateKey=b64("garbage"), publicKey=rsa.public_b64), "not a valid OpenSSH or PEM"),
        (ssh_body("ok", privateKey=rsa.private_b64, publicKey=b64("ssh-rsa AAAA")), "not a valid ssh-rsa"),
        (ssh_body("ok", privateKey=rsa.private_b64, publicKey=b64(b"\xff\xfe")), "publicKey"),
        (ssh_body("ok", privateKey=rsa.private_b64, publicKey=ed.public_b64), "does not match"),
        (keypair_body("ok", keys["locked"]), "passphrase"),
        (ssh_body("ok", password="x", server="docker.io"), "server: unknown field"),
        ({**ssh_body("ok", password="x"), "bindAllWorkspaces": True}, "bindAllWorkspaces"),
        ({**ssh_body("ok", password="x"), "bindAllWorkspaces": "yes"}, "bindAllWorkspaces"),
        ({"name": "ok", "type": "ssh", "params": [{"username": "ro ot", "password": "x"}]}, "username"),
        ({"name": "ok", "type": "ssh", "params": [{"username": "root", "password": 5}]}, "password"),
        ({"name": "ok", "type": "image", "params": [{"server": "docker.io", "username": "u"}]}, "password"),
        (
            {"name": "ok", "type": "image", "params": [{**good_image, "password": "%%%"}]},
            "params.0: password: not valid base64",
        ),
        ({"name": "ok", "type": "image", "params": [{**good_image, "password": ""}]}, "password"),
        ({"name": "ok", "type": "image", "params": [{**good_image, "server": ""}]}, "server"),
        (
            {
                "name": "ok",
                "type": "image",
                "params": [good_image, {**good_image, "server": "https://docker.io/"}],
            },
            "params.1.server: server https://docker.io/ appears more than once",
        ),
        ({"name": "ok", "type": "image", "params": [{**good_image, "privateKey": "x"}]}, "privateKey"),
        ({"name": "ok", "type": "image", "params": []}, "params"),
    ]
    for body, problem in cases:
        resp = await api.post(URL, json=body, headers=admin)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
        assert problem in resp.json()["errorMessage"], (problem, resp.json()["errorMessage"])
        assert "Internal" not in resp.text
    listed = (await api.get(URL, headers=admin)).json()
    assert listed == {"totalCount": 0, "items": []}


async def test_duplicate_name_conflicts(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(api, admin, ssh_body("dup", password="x"))
    resp = await api.post(URL, json=image_body("dup", "docker.io"), headers=admin)
    assert resp.status_code == 409 and resp.json()["errorCode"] == "Primus.00004"
    assert (await api.get(f"{URL}/dup", headers=admin)).json()["type"] == "ssh"


async def test_list_sorted_filtered_and_paged(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    for name in ("c-ssh", "a-ssh"):
        await create(api, admin, ssh_body(name, password="x"))
    for name in ("d-img", "b-img"):
        await create(api, admin, image_body(name, "docker.io"))
    everything = (await api.get(URL, headers=admin)).json()
    assert everything["totalCount"] == 4
    assert [s["secretId"] for s in everything["items"]] == ["a-ssh", "b-img", "c-ssh", "d-img"]
    ssh = (await api.get(URL, params={"type": "ssh"}, headers=admin)).json()
    assert [s["secretId"] for s in ssh["items"]] == ["a-ssh", "c-ssh"] and ssh["totalCount"] == 2
    both = (await api.get(URL, params={"type": "image, ssh"}, headers=admin)).json()
    assert both["totalCount"] == 4
    page = (await api.get(URL, params={"limit": 2, "offset": 1}, headers=admin)).json()
    assert page["totalCount"] == 4 and [s["secretId"] for s in page["items"]] == ["b-img", "c-ssh"]
    for bad in ({"type": "ftp"}, {"type": "ssh,bogus"}, {"limit": 0}, {"offset": -1}, {"limit": "x"}):
        resp = await api.get(URL, params=bad, headers=admin)
        assert resp.status_code == 400, (bad, resp.text)
    resp = await api.get(URL, params={"type": "ssh,bogus"}, headers=admin)
    assert "bogus" in resp.json()["errorMessage"]


async def test_patch_revalidates_with_the_stored_type(
    api: httpx.AsyncClient, platform: Platform, admin: dict[str, str], keys: dict[str, KeyPair]
) -> None:
    pair = keys["ed25519"]
    await create(api, admin, ssh_body("login", password=SSH_PASSWORD))
    before = await stored(platform, "login")
    assert before.resource_version == 1
    bad_patches: list[tuple[dict[str, Any], str]] = [
        ({"name": "renamed"}, "name: unknown field"),
        ({"type": "image"}, "type: unknown field"),
        (
            {"params": [{"server": "docker.io", "username": "u", "password": b64("p")}]},
            "server: unknown field",
        ),
        ({"params": [{"username": "root", "privateKey": pair.private_b64}]}, "publicKey"),
        (
            {
                "params": [
                    {
                        "username": "root",
                        "privateKey": pair.private_b64,
                        "publicKey": keys["other"].public_b64,
                    }
                ]
            },
            "does not match",
        ),
        ({"bindAllWorkspaces": True}, "bindAllWorkspaces"),
        ({"params": []}, "params"),
    ]
    for body, problem in bad_patches:
        resp = await api.patch(f"{URL}/login", json=body, headers=admin)
        assert resp.status_code == 400, (body, resp.text)
        assert problem in resp.json()["errorMessage"], (problem, resp.text)
    after_bad = await stored(platform, "login")
    assert after_bad.resource_version == 1 and after_bad.params_encrypted == before.params_encrypted
    # a valid patch switches to a key pair and bumps the version
    patch = {"params": [{"username": "admin", "privateKey": pair.private_b64, "publicKey": pair.public_b64}]}
    assert (await api.patch(f"{URL}/login", json=patch, headers=admin)).status_code == 200
    got = (await api.get(f"{URL}/login", headers=admin)).json()
    assert got["params"] == [
        {"username": "admin", "password": "", "privateKey": "", "publicKey": pair.public_b64}
    ]
    after = await stored(platform, "login")
    assert after.resource_version == 2 and after.updated_at >= before.updated_at
    creds = load_ssh_credentials(platform.state.box, after)
    assert (
        creds.username == "admin" and creds.password == "" and "OPENSSH PRIVATE KEY" in creds.private_key_pem
    )
    # an empty patch changes nothing
    assert (await api.patch(f"{URL}/login", json={}, headers=admin)).status_code == 200
    assert (await stored(platform, "login")).resource_version == 2


async def test_patch_image_secret_and_bind_flag(
    api: httpx.AsyncClient, platform: Platform, admin: dict[str, str]
) -> None:
    await create(api, admin, image_body("regs", "docker.io"))
    resp = await api.patch(f"{URL}/regs", json={"bindAllWorkspaces": True}, headers=admin)
    assert resp.status_code == 200
    assert (await api.get(f"{URL}/regs", headers=admin)).json()["bindAllWorkspaces"] is True
    new = {"params": [{"server": "quay.io", "username": "newuser", "password": b64("NewPassword")}]}
    assert (await api.patch(f"{URL}/regs", json=new, headers=admin)).status_code == 200
    secret = await stored(platform, "regs")
    assert secret.resource_version == 3
    assert [(r.server, r.password) for r in load_image_credentials(platform.state.box, secret)] == [
        ("quay.io", "NewPassword")
    ]
    ssh_shaped = {"params": [{"username": "root", "password": "x"}]}
    resp = await api.patch(f"{URL}/regs", json=ssh_shaped, headers=admin)
    assert resp.status_code == 400 and "server" in resp.json()["errorMessage"]
    resp = await api.patch(f"{URL}/missing", json={"bindAllWorkspaces": True}, headers=admin)
    assert resp.status_code == 404 and resp.json()["errorCode"] == "Primus.00005"


async def test_delete(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    await create(api, admin, ssh_body("gone", password="x"))
    assert (await api.delete(f"{URL}/gone", headers=admin)).status_code == 200
    assert (await api.get(f"{URL}/gone", headers=admin)).status_code == 404
    resp = await api.delete(f"{URL}/gone", headers=admin)
    assert resp.status_code == 404 and resp.json()["errorMessage"] == "Secret gone not found."
    # the name can be reused
    await create(api, admin, image_body("gone", "docker.io"))


async def test_regular_users_get_403_everywhere(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    await create(api, admin, ssh_body("admins-only", password=SSH_PASSWORD))
    calls = [
        ("POST", URL, ssh_body("mine", password="x")),
        ("POST", URL, {"bogus": True}),
        ("GET", URL, None),
        ("GET", f"{URL}/admins-only", None),
        ("GET", f"{URL}/no-such-secret", None),
        ("PATCH", f"{URL}/admins-only", {"bindAllWorkspaces": False}),
        ("PATCH", f"{URL}/admins-only", {"name": "x"}),
        ("DELETE", f"{URL}/admins-only", None),
    ]
    for method, url, body in calls:
        resp = await api.request(method, url, json=body, headers=alice)
        assert resp.status_code == 403, (method, url, resp.text)
        assert resp.json()["errorCode"] == "Primus.00003"
        assert SSH_PASSWORD not in resp.text
        anonymous = await api.request(method, url, json=body)
        assert anonymous.status_code == 401, (method, url, anonymous.text)
    # nothing changed
    assert (await api.get(URL, headers=admin)).json()["totalCount"] == 1


async def test_frozen_admin_is_refused(
    api: httpx.AsyncClient, platform: Platform, admin: dict[str, str]
) -> None:
    ops_id = await register(api, "ops")
    resp = await api.patch(f"/api/v1/users/{ops_id}", json={"roles": ["system-admin"]}, headers=admin)
    assert resp.status_code == 200
    ops = await login(api, "ops", "plum-kettle9")
    assert (await api.get(URL, headers=ops)).status_code == 200
    async with platform.state.sessions() as session, session.begin():
        await session.execute(update(User).where(User.id == ops_id).values(restricted_type=1))
    resp = await api.get(URL, headers=ops)
    assert resp.status_code == 403 and "restricted" in resp.json()["errorMessage"]
    resp = await api.post(URL, json=ssh_body("frozen", password="x"), headers=ops)
    assert resp.status_code == 403
    async with platform.state.sessions() as session:
        assert (await session.execute(select(Secret))).first() is None


async def test_image_secret_servers_on_link_local_or_metadata_are_refused(
    api: httpx.AsyncClient, admin: dict[str, str]
) -> None:
    """Refused when written (create and patch), whatever the spelling of the literal address."""
    for server in (
        "169.254.169.254",
        "http://169.254.169.254:5000/v2",
        "[fe80::1]:5000",
        "https://[::ffff:169.254.169.254]",
        "0251.0376.0251.0376",
        "metadata.google.internal",
    ):
        resp = await api.post(URL, json=image_body("meta", server), headers=admin)
        assert resp.status_code == 400, (server, resp.text)
        assert "params.0.server" in resp.json()["errorMessage"], resp.text
    await create(api, admin, image_body("regs", "docker.io", "10.0.0.5:5000"))
    bad = {"params": [{"server": "169.254.1.1", "username": "u", "password": b64("pw")}]}
    resp = await api.patch(f"{URL}/regs", json=bad, headers=admin)
    assert resp.status_code == 400 and "link-local" in resp.json()["errorMessage"], resp.text
    assert [s["secretId"] for s in (await api.get(URL, headers=admin)).json()["items"]] == ["regs"]


async def test_general_secrets_keep_free_pairs_encrypted_and_never_show_values(
    api: httpx.AsyncClient, platform: Platform, admin: dict[str, str]
) -> None:
    body = {
        "name": "tokens",
        "type": "general",
        "params": [{"API_TOKEN": "tok-s3cret-value", "region": "eu-1"}, {"other.key": "v2-s3cret"}],
    }
    assert (await create(api, admin, body)) == "tokens"
    got = (await api.get("/api/v1/secrets/tokens", headers=admin)).json()
    assert got["type"] == "general"
    assert got["params"] == [{"API_TOKEN": "", "region": ""}, {"other.key": ""}]
    listed = (await api.get("/api/v1/secrets?type=ssh,general", headers=admin)).json()
    assert [s["secretId"] for s in listed["items"]] == ["tokens"]
    async with platform.state.sessions() as session:
        raw = " ".join(
            str(v) for row in (await session.execute(text("SELECT * FROM secrets"))).all() for v in row
        )
        stored = decrypt_params(platform.state.box, await get_secret(session, secret_id="tokens"))
    assert "s3cret" not in raw and "eu-1" not in raw
    assert stored == body["params"]
    patched = await api.patch("/api/v1/secrets/tokens", json={"params": [{"k": "new"}]}, headers=admin)
    assert patched.status_code == 200, patched.text
    assert (await api.get("/api/v1/secrets/tokens", headers=admin)).json()["params"] == [{"k": ""}]
    for params in ([{}], [{"k": 1}], [{"bad key": "v"}], [{"k": {"nested": "v"}}], ["k=v"]):
        resp = await api.post(
            "/api/v1/secrets", json={"name": "bad", "type": "general", "params": params}, headers=admin
        )
        assert resp.status_code == 400, (params, resp.text)
    async with platform.state.sessions() as session:
        with pytest.raises(Invalid, match="not ssh"):  # never usable as a node login
            await ssh_credentials(session, platform.state.box, secret_id="tokens")
