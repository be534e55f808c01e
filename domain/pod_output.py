"""Collecting pods' output: where a collection stands in each stream, and what one read returns.

A stream is one (pod, container, stream) of a dispatch; its lines are numbered from 1 (`seq`).
A collector keeps an `OutputPosition` per stream, asks the driver for what follows it, stores
the lines and moves the position on. A position can always be rebuilt from the stored lines alone
(the last `seq`, and for Kubernetes the time of the last line), so a collection resumed after a
worker restart neither skips nor repeats a line.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from pydantic import BaseModel

STDOUT = "stdout"
STDERR = "stderr"

OutputKey = tuple[str, str, str]
"""(pod, container, stream)."""


class OutputPosition(BaseModel):
    """How far a stream has been collected.

    `seq`: lines taken so far. `offset`: byte offset in the node's output file after them (host
    driver; -1 when unknown, then the node finds it by counting `seq` lines). `since` / `same`:
    the whole second of the last line taken, as RFC 3339, and how many taken lines have a time at
    or after it (Kubernetes reads from that second and skips those)."""

    seq: int = 0
    offset: int = -1
    since: str = ""
    same: int = 0


@dataclass(frozen=True)
class OutputLine:
    """One line of output and the time it was written."""

    at: datetime
    text: str


@dataclass
class OutputBatch:
    """What followed `position` in one stream: `lines` are numbered `position.seq + 1` onwards.

    `after` is the position after them; `more` says the read stopped at its byte budget and
    more output is waiting."""

    pod: str
    node: str
    container: str
    stream: str
    position: OutputPosition
    after: OutputPosition
    lines: list[OutputLine] = field(default_factory=list)
    more: bool = False

    @property
    def key(self) -> OutputKey:
        return (self.pod, self.container, self.stream)


def whole_second(at: datetime) -> str:
    """`at` cut to its second, as RFC 3339 in UTC (Kubernetes' `sinceTime` precision)."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def from_epoch(text: str) -> datetime | None:
    """A time written as Unix seconds (`1767225600.123456`); None for anything else."""
    try:
        return datetime.fromtimestamp(float(text), UTC)
    except (ValueError, OverflowError, OSError):
        return None
