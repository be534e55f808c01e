"""Password hashing (argon2) and opaque login tokens stored as SHA-256 hashes."""

from __future__ import annotations

import asyncio
import hashlib
import secrets
from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


def hash_password(password: str) -> str:
    """An argon2id hash of `password`."""
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    """True when `password` matches `password_hash`."""
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


@cache
def _dummy_hash() -> str:
    """A hash of a random password, verified when there is no user, so that costs the same."""
    return _hasher.hash(secrets.token_urlsafe(16))


async def password_matches(password_hash: str | None, password: str) -> bool:
    """`verify_password` in a worker thread (argon2 takes about half a second of CPU and must not
    stall the event loop); with no hash (no such user) it verifies against a dummy hash and is
    False, so an unknown user name costs as much as a wrong password."""
    if password_hash is None:
        await asyncio.to_thread(lambda: verify_password(_dummy_hash(), password))
        return False
    return await asyncio.to_thread(verify_password, password_hash, password)


async def hash_password_async(password: str) -> str:
    """`hash_password` in a worker thread."""
    return await asyncio.to_thread(hash_password, password)


def new_token() -> str:
    """A fresh random login token (what the client keeps)."""
    return secrets.token_urlsafe(32)


def token_hash(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()
