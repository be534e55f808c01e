"""Users: registration, login/logout, visibility, self-service, admin-only fields, frozen users."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy.ext.asyncio import AsyncSession

from tests.conftest import ADMIN_PASSWORD, Platform, login, register
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.workspaces import add_workspace
from workflows.user_cleanup import UserCleanupWorkflow


async def test_register_login_and_self(api: httpx.AsyncClient) -> None:
    user_id = await register(api, "zhangsan", email="zs@example.com")
    assert user_id.startswith("user-zhangsan-")
    resp = await api.post("/api/v1/login", json={"name": "zhangsan", "password": "plum-kettle9"})
    assert resp.status_code == 200
    body = resp.json()
    assert body["id"] == user_id and body["roles"] == ["default"] and body["restrictedType"] == 0
    assert body["expire"] > 0 and body["token"]
    assert "Token" in resp.cookies
    # the cookie alone authenticates
    me = await api.get("/api/v1/users/self")
    assert me.status_code == 200 and me.json()["name"] == "zhangsan"
    assert "password" not in me.text.lower()
    api.cookies.clear()
    me = await api.get("/api/v1/users/self", headers={"Authorization": f"Bearer {body['token']}"})
    assert me.json()["email"] == "zs@example.com"


async def test_logout_revokes_token(api: httpx.AsyncClient, alice: dict[str, str]) -> None:
    assert (await api.get("/api/v1/users/self", headers=alice)).status_code == 200
    assert (await api.post("/api/v1/logout", headers=alice)).status_code == 200
    resp = await api.get("/api/v1/users/self", headers=alice)
    assert resp.status_code == 401
    assert resp.json()["errorCode"] == "Primus.00009"


async def test_bad_credentials_and_missing_token(api: httpx.AsyncClient) -> None:
    await register(api, "carol")
    resp = await api.post("/api/v1/login", json={"name": "carol", "password": "wrong-password"})
    assert resp.status_code == 401 and resp.json()["errorCode"] == "Primus.00009"
    resp = await api.get("/api/v1/users")
    assert resp.status_code == 401 and resp.json()["errorMessage"] == "token not present"
    resp = await api.get("/api/v1/users", headers={"Authorization": "Bearer nonsense"})
    assert resp.status_code == 401


async def test_registration_bad_input(api: httpx.AsyncClient) -> None:
    cases = [
        {"name": "Bad_Name", "password": "plum-kettle9"},
        {"name": "x" * 64, "password": "plum-kettle9"},
        {"name": "ok-name", "password": "short"},
        {"name": "ok-name", "password": "plum-kettle9", "unknown": 1},
        {"name": "ok-name", "password": 12345678},
        {"name": "self", "password": "plum-kettle9"},
        {"name": "ok-name", "password": "plum-kettle9", "email": "not-an-email"},
    ]
    for body in cases:
        resp = await api.post("/api/v1/users", json=body)
        assert resp.status_code == 400, (body, resp.text)
        assert resp.json()["errorCode"] == "Primus.00002"
    resp = await api.post("/api/v1/users", content=b"{not json", headers={"Content-Type": "application/json"})
    assert resp.status_code == 400
    resp = await api.post("/api/v1/users", json={"name": "ok-name", "password": "plum-kettle9", "unknown": 1})
    assert "unknown" in resp.json()["errorMessage"]
    # nothing was half-written
    resp = await api.post("/api/v1/login", json={"name": "ok-name", "password": "plum-kettle9"})
    assert resp.status_code == 401


async def test_duplicate_name_conflicts(api: httpx.AsyncClient) -> None:
    await register(api, "dup")
    resp = await api.post("/api/v1/users", json={"name": "dup", "password": "plum-kettle9"})
    assert resp.status_code == 409 and resp.json()["errorCode"] == "Primus.00004"


async def test_admin_only_fields_on_registration(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str], platform: Platform
) -> None:
    await add_workspace(platform.state.sessions, "ws-a")
    body = {"name": "dave", "password": "plum-kettle9", "workspaces": ["ws-a"]}
    resp = await api.post("/api/v1/users", json=body)
    assert resp.status_code == 403
    resp = await api.post("/api/v1/users", json=body, headers=alice)
    assert resp.status_code == 403
    resp = await api.post("/api/v1/users", json=body, headers=admin)
    assert resp.status_code == 200
    got = await api.get(f"/api/v1/users/{resp.json()['id']}", headers=admin)
    assert got.json()["workspaces"] == [{"id": "ws-a", "name": "ws-a"}]


async def test_visibility_and_404_for_others(
    api: httpx.AsyncClient,
    admin: dict[str, str],
    alice: dict[str, str],
    bob: dict[str, str],
    platform: Platform,
) -> None:
    await add_workspace(platform.state.sessions, "team")
    bob_id = (await api.get("/api/v1/users/self", headers=bob)).json()["id"]
    resp = await api.get(f"/api/v1/users/{bob_id}", headers=alice)
    assert resp.status_code == 404
    listed = (await api.get("/api/v1/users", headers=alice)).json()
    assert [u["name"] for u in listed["items"]] == ["alice"] and listed["totalCount"] == 1
    everyone = (await api.get("/api/v1/users", headers=admin)).json()
    assert {u["name"] for u in everyone["items"]} == {"root", "alice", "bob"}
    page = (await api.get("/api/v1/users?limit=1&offset=1", headers=admin)).json()
    assert page["totalCount"] == 3 and len(page["items"]) == 1
    only = (await api.get("/api/v1/users?name=bob", headers=admin)).json()
    assert [u["id"] for u in only["items"]] == [bob_id]
    # sharing a workspace makes users visible to each other
    alice_id = (await api.get("/api/v1/users/self", headers=alice)).json()["id"]
    for uid in (alice_id, bob_id):
        assert (
            await api.patch(f"/api/v1/users/{uid}", json={"workspaces": ["team"]}, headers=admin)
        ).status_code == 200
    assert (await api.get(f"/api/v1/users/{bob_id}", headers=alice)).status_code == 200
    assert (await api.get("/api/v1/users?workspaceId=team", headers=alice)).json()["totalCount"] == 2
    # ...but still not editable by each other
    resp = await api.patch(f"/api/v1/users/{bob_id}", json={"email": "x@example.com"}, headers=alice)
    assert resp.status_code == 403


async def test_self_service_and_admin_only_patch(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    alice_id = (await api.get("/api/v1/users/self", headers=alice)).json()["id"]
    resp = await api.patch(
        f"/api/v1/users/{alice_id}",
        json={"email": "a@example.com", "avatarUrl": "https://example.com/a.png"},
        headers=alice,
    )
    assert resp.status_code == 200
    me = (await api.get("/api/v1/users/self", headers=alice)).json()
    assert me["email"] == "a@example.com" and me["avatarUrl"] == "https://example.com/a.png"
    for body in ({"roles": ["system-admin"]}, {"workspaces": ["w"]}, {"restrictedType": 1}):
        resp = await api.patch(f"/api/v1/users/{alice_id}", json=body, headers=alice)
        assert resp.status_code == 403, body
    # a password change revokes existing tokens
    resp = await api.patch(
        f"/api/v1/users/{alice_id}",
        json={"password": "new-password-1", "currentPassword": "plum-kettle9"},
        headers=alice,
    )
    assert resp.status_code == 200
    assert (await api.get("/api/v1/users/self", headers=alice)).status_code == 401
    await login(api, "alice", "new-password-1")
    # admin grants admin
    resp = await api.patch(f"/api/v1/users/{alice_id}", json={"roles": ["system-admin"]}, headers=admin)
    assert resp.status_code == 200
    again = await login(api, "alice", "new-password-1")
    assert (await api.get("/api/v1/users/self", headers=again)).json()["roles"] == ["system-admin"]


async def test_frozen_user_refused_everywhere(
    api: httpx.AsyncClient, admin: dict[str, str], alice: dict[str, str]
) -> None:
    alice_id = (await api.get("/api/v1/users/self", headers=alice)).json()["id"]
    resp = await api.patch(f"/api/v1/users/{alice_id}", json={"restrictedType": 1}, headers=admin)
    assert resp.status_code == 200
    resp = await api.get("/api/v1/users/self", headers=alice)
    assert resp.status_code in (401, 403)
    resp = await api.post("/api/v1/login", json={"name": "alice", "password": "plum-kettle9"})
    assert resp.status_code == 403 and "restricted" in resp.json()["errorMessage"]


async def test_last_admin_is_protected(api: httpx.AsyncClient, admin: dict[str, str]) -> None:
    resp = await api.patch("/api/v1/users/user-root", json={"roles": ["default"]}, headers=admin)
    assert resp.status_code == 409
    resp = await api.delete("/api/v1/users/user-root", headers=admin)
    assert resp.status_code == 409


async def test_delete_runs_cleanup_workflow(
    api: httpx.AsyncClient, platform: Platform, admin: dict[str, str], alice: dict[str, str]
) -> None:
    alice_id = (await api.get("/api/v1/users/self", headers=alice)).json()["id"]
    resp = await api.delete(f"/api/v1/users/{alice_id}", headers=alice)
    assert resp.status_code == 403
    resp = await api.delete(f"/api/v1/users/{alice_id}", headers=admin)
    assert resp.status_code == 200
    # tokens stop working at once, the record disappears
    assert (await api.get("/api/v1/users/self", headers=alice)).status_code == 401
    assert (await api.get(f"/api/v1/users/{alice_id}", headers=admin)).status_code == 404
    handle = platform.state.temporal.get_workflow_handle(f"user-cleanup/{alice_id}")
    result = await asyncio.wait_for(handle.result(), timeout=30)
    assert result["user_deleted"] is True if isinstance(result, dict) else result.user_deleted
    await replay_and_keep(handle, [UserCleanupWorkflow], "user-cleanup")
    # a repeated delete of a gone user is a 404; the name is free again
    assert (await api.delete(f"/api/v1/users/{alice_id}", headers=admin)).status_code == 404
    await register(api, "alice")
    assert ADMIN_PASSWORD


def _users_table_lockable(url: str) -> bool:
    """Whether another connection can take `users` exclusively now (as a migration would)."""
    with psycopg.connect(url) as conn:
        try:
            conn.execute("LOCK TABLE users IN ACCESS EXCLUSIVE MODE NOWAIT")
            return True
        except psycopg.errors.LockNotAvailable:
            return False
        finally:
            conn.rollback()


class _ProbingTemporal:
    """Stands in for the Temporal client: at each start_workflow, looks at the request's transaction."""

    def __init__(self, sessions: list[AsyncSession], postgres_url: str | None) -> None:
        self._sessions = sessions
        self.postgres_url = postgres_url
        self.started: list[str] = []
        self.open_transactions: list[int] = []
        self.users_lockable: list[bool] = []

    async def start_workflow(self, *args: Any, id: str, **kwargs: Any) -> None:
        self.started.append(id)
        self.open_transactions.append(sum(s.in_transaction() for s in self._sessions))
        if self.postgres_url is not None:
            # a lock held by someone else for a moment may pass; one the request keeps does not
            for _ in range(5):
                if await asyncio.to_thread(_users_table_lockable, self.postgres_url):
                    self.users_lockable.append(True)
                    break
                await asyncio.sleep(0.1)
            else:
                self.users_lockable.append(False)


async def test_delete_retry_holds_no_transaction_across_temporal(
    api: httpx.AsyncClient,
    platform: Platform,
    admin: dict[str, str],
    alice: dict[str, str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A retried delete (the user already marked deleting) ends its read transaction first."""
    alice_id = (await api.get("/api/v1/users/self", headers=alice)).json()["id"]
    real_sessions = platform.state.sessions
    sessions: list[AsyncSession] = []

    def recording_sessions() -> AsyncSession:
        session = real_sessions()
        sessions.append(session)
        return session

    url = platform.settings.database_url or ""
    temporal = _ProbingTemporal(sessions, url if url.startswith("postgresql") else None)
    monkeypatch.setattr(platform.state, "sessions", recording_sessions)
    monkeypatch.setattr(platform.state, "temporal", temporal)

    for _ in range(2):  # the first marks the user deleting, the second is the retry path
        resp = await api.delete(f"/api/v1/users/{alice_id}", headers=admin)
        assert resp.status_code == 200, resp.text
    assert temporal.started == [f"user-cleanup/{alice_id}"] * 2
    assert temporal.open_transactions == [0, 0]
    if temporal.postgres_url is not None:
        assert temporal.users_lockable == [True, True]
