"""Password rules: the current password for a self-change, and strength on every way a password is set."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
from cryptography.fernet import Fernet

from db.migrate import upgrade
from db.session import create_engine, session_factory
from db.users import get_user_by_name
from primus_safe.bootstrap import ensure_admin
from primus_safe.settings import Settings, SettingsError
from tests.conftest import login, register

PASSWORD = "plum-kettle9"
NEW_PASSWORD = "fresh-lantern-58"


async def _user_id(api: httpx.AsyncClient, headers: dict[str, str]) -> str:
    return str((await api.get("/api/v1/users/self", headers=headers)).json()["id"])


async def test_self_change_needs_the_current_password(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    alice_id = await _user_id(api, alice)
    resp = await api.patch(f"/api/v1/users/{alice_id}", json={"password": NEW_PASSWORD}, headers=alice)
    assert resp.status_code == 400, resp.text
    assert "currentPassword" in resp.json()["errorMessage"]
    resp = await api.patch(
        "/api/v1/users/self",
        json={"password": NEW_PASSWORD, "currentPassword": "not-my-password-1"},
        headers=alice,
    )
    assert resp.status_code == 403, resp.text
    assert "current password is incorrect" in resp.json()["errorMessage"]
    # nothing changed: the token still works and the old password still logs in
    assert (await api.get("/api/v1/users/self", headers=alice)).status_code == 200
    await login(api, "alice", PASSWORD)
    resp = await api.patch(
        "/api/v1/users/self", json={"password": NEW_PASSWORD, "currentPassword": PASSWORD}, headers=alice
    )
    assert resp.status_code == 200, resp.text
    await login(api, "alice", NEW_PASSWORD)


async def test_admins_reset_others_but_prove_their_own(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    alice_id = await _user_id(api, alice)
    resp = await api.patch(f"/api/v1/users/{alice_id}", json={"password": NEW_PASSWORD}, headers=admin)
    assert resp.status_code == 200, resp.text
    headers = await login(api, "alice", NEW_PASSWORD)
    # alice becomes an administrator: her own password still needs the current one
    resp = await api.patch(f"/api/v1/users/{alice_id}", json={"roles": ["system-admin"]}, headers=admin)
    assert resp.status_code == 200
    resp = await api.patch("/api/v1/users/self", json={"password": "third-lantern-77"}, headers=headers)
    assert resp.status_code == 400 and "currentPassword" in resp.json()["errorMessage"]
    resp = await api.patch(
        "/api/v1/users/self",
        json={"password": "third-lantern-77", "currentPassword": NEW_PASSWORD},
        headers=headers,
    )
    assert resp.status_code == 200, resp.text
    await login(api, "alice", "third-lantern-77")


WEAK = [
    ("        ", "blank"),
    ("\t \t \t \t ", "blank"),
    ("Strong-User-Name", "user name"),
    ("aaaaaaaaaaaa", "Repeats"),
    ("password1", "common"),
    ("qwertyuiop", "common"),
]


async def test_weak_passwords_are_refused_with_the_reason(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    for password, reason in WEAK:
        resp = await api.post("/api/v1/users", json={"name": "strong-user-name", "password": password})
        assert resp.status_code == 400, (password, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
        assert reason in resp.json()["errorMessage"], (password, resp.json())
    resp = await api.post("/api/v1/login", json={"name": "strong-user-name", "password": "password1"})
    assert resp.status_code == 401  # nothing was created
    alice_id = await _user_id(api, alice)
    for password in ("alice123", "aaaaaaaaaaaa"):
        resp = await api.patch(
            "/api/v1/users/self", json={"password": password, "currentPassword": PASSWORD}, headers=alice
        )
        assert resp.status_code == 400, (password, resp.text)
        resp = await api.patch(f"/api/v1/users/{alice_id}", json={"password": password}, headers=admin)
        assert resp.status_code == 400, (password, resp.text)
        assert "too weak" in resp.json()["errorMessage"]
    assert (await api.get("/api/v1/users/self", headers=alice)).status_code == 200  # no change happened
    await register(api, "strong-user-name", password=NEW_PASSWORD)
    # zxcvbn reads at most 72 characters: a longer password is judged by those, not a 500
    await register(
        api,
        "long-passphrase",
        password="copper-harbor-violet-engine-mosaic-falcon-ribbon-tundra-pepper-glacier-orbit-saddle",
    )
    resp = await api.post("/api/v1/users", json={"name": "long-weak", "password": "a" * 128})
    assert resp.status_code == 400 and "Repeats" in resp.json()["errorMessage"]


async def test_weak_bootstrap_admin_password_is_refused(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    upgrade(url)
    engine = create_engine(url)
    try:
        sessions = session_factory(engine)
        settings = Settings(
            data_dir=tmp_path,
            database_url=url,
            secret_key=Fernet.generate_key().decode(),
            admin_password="rootroot",
        )
        with pytest.raises(SettingsError, match="PRIMUS_ADMIN_PASSWORD is too weak"):
            await ensure_admin(sessions, settings)
        async with sessions() as session:
            assert await get_user_by_name(session, name="root") is None
        settings.admin_password = "a-long-deployment-passphrase"
        assert (await ensure_admin(sessions, settings)).created
    finally:
        await engine.dispose()
