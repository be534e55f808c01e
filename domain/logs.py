"""Operation log lines: what the platform's own operations printed, per resource (pure helpers)."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

MAX_LINE = 8192
"""Longer lines are cut: one runaway command cannot fill the table with one row."""


class LogResource(StrEnum):
    """The kinds of resource that own operation log lines."""

    NODE = "node"
    CLUSTER = "cluster"


def format_line(at: datetime, level: str, line: str) -> str:
    """How a stored line is shown by the log endpoints: `2026-12-02 10:00:00 INFO text`."""
    return f"{at:%Y-%m-%d %H:%M:%S} {level} {line}"
