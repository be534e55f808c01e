"""Database URLs: the async driver this project uses and the synchronous twin Alembic needs."""

from __future__ import annotations


def async_url(url: str) -> str:
    """Give a plain database URL the async driver this project uses."""
    if url.startswith("sqlite:"):
        return "sqlite+aiosqlite:" + url.removeprefix("sqlite:")
    for prefix in ("postgresql:", "postgres:", "postgresql+psycopg2:"):
        if url.startswith(prefix):
            return "postgresql+psycopg:" + url.removeprefix(prefix)
    return url


def sync_url(url: str) -> str:
    """The synchronous twin of an async URL (used by Alembic)."""
    return url.replace("sqlite+aiosqlite:", "sqlite:")
