"""Time formats: responses use `2006-01-02T15:04:05` in UTC; inputs may carry millis and `Z`."""

from __future__ import annotations

from datetime import UTC, datetime

OUTPUT_FORMAT = "%Y-%m-%dT%H:%M:%S"


def format_time(value: datetime | None) -> str:
    """Format as upstream does: UTC, no zone, no fraction; `""` for unset."""
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.strftime(OUTPUT_FORMAT)


def parse_time(text: str) -> datetime:
    """Parse `2006-01-02T15:04:05`, optionally with `.000` and `Z` or an offset; returns aware UTC.

    Raises ValueError for anything else.
    """
    raw = text.strip()
    if not raw:
        raise ValueError("empty time")
    if raw.endswith(("Z", "z")):
        raw = raw[:-1] + "+00:00"
    value = datetime.fromisoformat(raw)
    if "T" not in text:
        raise ValueError(f"time {text!r} must look like 2006-01-02T15:04:05")
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def utcnow() -> datetime:
    """Now, as an aware UTC datetime."""
    return datetime.now(UTC)


def unix_seconds(value: datetime | None) -> int:
    """Unix seconds, 0 for unset."""
    return int(value.timestamp()) if value is not None else 0
