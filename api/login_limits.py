"""Failed-login limits per (user name, client address) and per client address, in growing tiers.

Counted per pair and per address, never per user name alone: a limit on the name would let
anyone lock any user out by failing on purpose; per pair, a guesser only locks itself out, and
the per-address limit bounds how many names one address may try. Each tier allows twice the
failures of the one before over four times the time, up to the maximum delay (10 in 60 s, 20 in
240 s, 40 in 900 s by default), so a persistent guesser waits longer and longer. Unknown and
known names are counted alike, so the limit tells nothing about which names exist.

The counters are `limits` moving windows (in memory by default, or any `limits` async storage).
The pair's count is taken before the password is checked, so parallel guesses at one user are
bounded exactly; the address's only after a failure (a success must not use it up), so parallel
requests from one address may overshoot it by the number in flight.
"""

from __future__ import annotations

import ipaddress
import math
import time

from limits import RateLimitItem, RateLimitItemPerSecond
from limits.aio.storage import MemoryStorage, Storage
from limits.aio.strategies import MovingWindowRateLimiter
from limits.storage import storage_from_string

from domain.errors import TooManyRequests
from primus_safe.settings import Settings


def tiers(allowed: int, window_seconds: int, max_delay_seconds: int) -> list[RateLimitItem]:
    """`allowed` per window, then twice as many per four times as long, up to the maximum delay."""
    items: list[RateLimitItem] = []
    amount, seconds = allowed, window_seconds
    while seconds < max_delay_seconds:
        items.append(RateLimitItemPerSecond(amount, seconds))
        amount, seconds = amount * 2, seconds * 4
    items.append(RateLimitItemPerSecond(amount, max(max_delay_seconds, window_seconds)))
    return items


def address_key(address: str | None) -> str:
    """What one client is counted as: its IPv4 address, or its IPv6 /64 (one site's prefix)."""
    try:
        ip = ipaddress.ip_address(address or "")
    except ValueError:
        return (address or "unknown")[:64]
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.IPv6Network((ip, 64), strict=False))
    return str(ip)


class LoginLimits:
    """Admits or refuses (429 with the wait) password attempts and counts their failures."""

    def __init__(
        self,
        *,
        per_user: int,
        per_address: int,
        window_seconds: int,
        max_delay_seconds: int,
        storage: Storage | None = None,
    ) -> None:
        self._storage = storage or MemoryStorage()
        self._limiter = MovingWindowRateLimiter(self._storage)
        self._pair = tiers(per_user, window_seconds, max_delay_seconds)
        self._address = tiers(per_address, window_seconds, max_delay_seconds)

    @classmethod
    def from_settings(cls, settings: Settings) -> LoginLimits:
        """The limits the settings ask for, on the storage they name."""
        storage = storage_from_string(settings.login_limit_storage)
        if not isinstance(storage, Storage):
            raise ValueError("PRIMUS_LOGIN_LIMIT_STORAGE must be an async storage URI (async+...)")
        return cls(
            per_user=settings.login_failures_per_user,
            per_address=settings.login_failures_per_address,
            window_seconds=settings.login_failure_window_seconds,
            max_delay_seconds=settings.login_max_delay_seconds,
            storage=storage,
        )

    async def admit(self, address: str | None, name: str | None = None) -> None:
        """Refuse when the address, or the (name, address) pair, used up a tier. An admitted
        attempt on a name already counts as a failure of the pair (forgotten on success), so
        parallel guesses cannot all pass before the first one is known to fail."""
        client = address_key(address)
        waits = [await self._wait(item, "address", client) for item in self._address]
        if name is not None:
            waits += [await self._wait(item, "pair", client, name) for item in self._pair]
        wait = max(waits, default=0)
        if wait == 0 and name is not None:
            for item in self._pair:
                if not await self._limiter.hit(item, "pair", client, name):
                    wait = max(wait, await self._wait(item, "pair", client, name), 1)
        if wait:
            raise TooManyRequests(f"too many failed logins: try again in {wait} seconds", retry_after=wait)

    async def failed(self, address: str | None) -> None:
        """Count a failure against the address (the pair's was counted when it was admitted)."""
        client = address_key(address)
        for item in self._address:
            await self._limiter.hit(item, "address", client)

    async def succeeded(self, address: str | None, name: str) -> None:
        """Forget the pair's failures: its owner knows the password."""
        client = address_key(address)
        for item in self._pair:
            await self._limiter.clear(item, "pair", client, name)

    async def reset(self) -> None:
        """Forget every counter."""
        await self._storage.reset()

    async def _wait(self, item: RateLimitItem, *identifiers: str) -> int:
        """0 while `item` has room, else the seconds until its oldest failure leaves the window."""
        if await self._limiter.test(item, *identifiers):
            return 0
        stats = await self._limiter.get_window_stats(item, *identifiers)
        return max(1, math.ceil(stats.reset_time - time.time()))
