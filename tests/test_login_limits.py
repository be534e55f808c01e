"""Login hardening: equal work for unknown users, failed-login limits, registration conflicts."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import httpx
import pytest
from argon2 import PasswordHasher

from api.login_limits import LoginLimits
from domain.errors import TooManyRequests
from tests.conftest import Platform, login, register

PASSWORD = "plum-kettle9"
Client = Callable[[str], AbstractAsyncContextManager[httpx.AsyncClient]]


@pytest.fixture
def verifications(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every argon2 verification the server runs (the real one, counted)."""
    calls: list[str] = []
    real = PasswordHasher.verify

    def counting(self: PasswordHasher, hash: str | bytes, password: str | bytes) -> bool:
        calls.append(str(hash)[:16])
        return real(self, hash, password)

    monkeypatch.setattr(PasswordHasher, "verify", counting)
    return calls


@pytest.fixture
def client_from(platform: Platform) -> Client:
    """A client of the same app whose requests come from another client address."""

    @asynccontextmanager
    async def make(address: str) -> AsyncIterator[httpx.AsyncClient]:
        assert platform.app is not None
        transport = httpx.ASGITransport(app=platform.app, client=(address, 40000))
        async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
            yield http

    return make


async def _login(http: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    resp = await http.post("/api/v1/login", json={"name": name, "password": password})
    http.cookies.clear()
    return resp


async def test_unknown_user_and_wrong_password_do_the_same_work(
    api: httpx.AsyncClient, verifications: list[str]
) -> None:
    await register(api, "known-user")
    wrong = await _login(api, "known-user", "not-the-password-1")
    assert len(verifications) == 1
    unknown = await _login(api, "nobody-by-this-name", "not-the-password-1")
    assert len(verifications) == 2, "an unknown user must cost one argon2 verification too"
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_eleventh_quick_failure_is_refused_with_retry_after(
    api: httpx.AsyncClient, platform: Platform, verifications: list[str], client_from: Client
) -> None:
    allowed = platform.settings.login_failures_per_user
    assert allowed == 10
    await register(api, "guessed")
    await register(api, "neighbour")
    for i in range(allowed):
        resp = await _login(api, "guessed", f"guess-number-{i}")
        assert resp.status_code == 401, resp.text
    verifications.clear()
    resp = await _login(api, "guessed", PASSWORD)  # even the right password: no more guesses now
    assert resp.status_code == 429, resp.text
    assert resp.json()["errorCode"] == "Primus.00012"
    assert "too many failed logins" in resp.json()["errorMessage"]
    assert 1 <= int(resp.headers["Retry-After"]) <= platform.settings.login_failure_window_seconds
    assert verifications == [], "a refused attempt must not cost an argon2 verification"
    # the owner, from another address, is not locked out by someone else's guesses
    async with client_from("127.0.0.2") as other:
        assert (await _login(other, "guessed", PASSWORD)).status_code == 200
    # and the guessing address may still log in as another user (its own limit is not used up)
    assert (await _login(api, "neighbour", PASSWORD)).status_code == 200
    # names that do not exist are limited the same way: the limit tells nothing about existence
    for i in range(allowed):
        assert (await _login(api, "no-such-user", f"guess-number-{i}")).status_code == 401
    resp = await _login(api, "no-such-user", "guess-number-x")
    assert resp.status_code == 429 and "Retry-After" in resp.headers


async def test_success_forgets_the_pairs_failures(api: httpx.AsyncClient, platform: Platform) -> None:
    await register(api, "forgetful")
    for _ in range(2):
        for i in range(platform.settings.login_failures_per_user - 1):
            assert (await _login(api, "forgetful", f"typo-number-{i}")).status_code == 401
        await login(api, "forgetful", PASSWORD)


async def test_delays_grow_and_addresses_are_limited_too() -> None:
    """The limiter on its real (in-memory) storage, with a 1 s window so the test is quick."""
    limits = LoginLimits(per_user=2, per_address=3, window_seconds=1, max_delay_seconds=4)
    for _ in range(2):
        await limits.admit("10.0.0.1", "alice")
        await limits.failed("10.0.0.1")
    with pytest.raises(TooManyRequests) as first:
        await limits.admit("10.0.0.1", "alice")
    assert first.value.retry_after == 1
    await asyncio.sleep(1.1)
    for _ in range(2):
        await limits.admit("10.0.0.1", "alice")
        await limits.failed("10.0.0.1")
    with pytest.raises(TooManyRequests) as second:
        await limits.admit("10.0.0.1", "alice")
    assert second.value.retry_after >= 2, "the second lockout must be longer than the first"
    # per address: three failures on three names use up 10.0.0.2, not 10.0.0.3
    for name in ("a", "b", "c"):
        await limits.admit("10.0.0.2", name)
        await limits.failed("10.0.0.2")
    with pytest.raises(TooManyRequests):
        await limits.admit("10.0.0.2", "d")
    await limits.admit("10.0.0.3", "d")
    # IPv6 clients are counted per /64: changing the interface id does not give fresh attempts
    for suffix in ("1", "2", "3"):
        await limits.admit(f"2001:db8::{suffix}")
        await limits.failed(f"2001:db8::{suffix}")
    with pytest.raises(TooManyRequests):
        await limits.admit("2001:db8::ffff")


async def test_anonymous_registration_does_not_confirm_a_name(
    api: httpx.AsyncClient, platform: Platform, admin: dict[str, str]
) -> None:
    await register(api, "taken-name")
    body = {"name": "taken-name", "password": "another-lantern-58"}
    resp = await api.post("/api/v1/users", json=body)
    assert resp.status_code == 409 and resp.json()["errorCode"] == "Primus.00004"
    message = resp.json()["errorMessage"]
    assert "exist" not in message and "taken-name" not in message, message
    # an administrator is told plainly
    resp = await api.post("/api/v1/users", json=body, headers=admin)
    assert resp.status_code == 409 and resp.json()["errorMessage"] == "user taken-name already exists"
    # anonymous refusals count as failures of the address, so names cannot be probed in bulk
    for _ in range(platform.settings.login_failures_per_address - 1):
        assert (await api.post("/api/v1/users", json=body)).status_code == 409
    resp = await api.post("/api/v1/users", json={"name": "free-name", "password": "another-lantern-58"})
    assert resp.status_code == 429 and "Retry-After" in resp.headers
