"""The web shell's pure parts: what a session opens, the shell fallback, the client's frames,
and the interfaces between the API (the WebSocket side) and the composition root (the driver side).

The API authorises and records a session and relays frames; it never imports a driver, so the
terminal comes from a `TerminalOpener` the composition root injects (`primus_safe.webshell`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Protocol, TypeGuard

SHELLS = ("bash", "sh", "zsh")
"""The shells a client may ask for (the contract's `cmd` enum)."""
FALLBACK = {"zsh": ("zsh", "bash", "sh"), "bash": ("bash", "sh"), "sh": ("sh",)}
"""What runs when the requested shell is missing in the pod: the next one that exists."""
MAX_ROWS = 500
MAX_COLS = 1000

HEARTBEAT_SECONDS = 60
"""How often an open session marks its record alive."""
STALE_AFTER_SECONDS = 3 * HEARTBEAT_SECONDS
"""A record not marked alive for this long belongs to a process that died: it no longer counts
towards the user's limit and is listed as `Lost`."""


@dataclass(frozen=True)
class ShellTarget:
    """Where a terminal opens: a pod of a workload on its cluster."""

    cluster_id: str
    namespace: str
    pod: str
    node: str
    """The node the pod runs on (a hosts cluster then talks to that node only)."""
    container: str
    cmd: str
    rows: int
    cols: int


@dataclass(frozen=True)
class Resize:
    """A client's request to change the terminal size."""

    rows: int
    cols: int


class Terminal(Protocol):
    """An open TTY in a pod, asynchronous (the implementation runs blocking calls in threads)."""

    async def read(self) -> bytes:
        """The next output; b"" once the shell has ended."""
        ...

    async def write(self, data: bytes) -> None:
        """Keystrokes."""
        ...

    async def resize(self, rows: int, cols: int) -> None:
        """Change the terminal size."""
        ...

    @property
    def exit_code(self) -> int | None:
        """The shell's exit code once it has ended."""
        ...

    async def close(self) -> None:
        """End the shell and release its connection (idempotent)."""
        ...


class TerminalOpener(Protocol):
    """Opens terminals; raises `domain.errors.NotFound` for a missing pod and `Conflict` when the
    cluster cannot open one."""

    async def open(self, target: ShellTarget) -> Terminal:
        """A terminal running the target's shell (with the fallback) in its pod."""
        ...


def shell_command(cmd: str) -> list[str]:
    """The argv that starts `cmd`, or the next shell of its fallback that exists in the pod."""
    chain = FALLBACK[cmd]
    if len(chain) == 1:
        return [chain[0]]
    tries = " ".join(chain[:-1])
    script = f'for s in {tries}; do command -v "$s" >/dev/null 2>&1 && exec "$s"; done; exec {chain[-1]}'
    return ["sh", "-c", script]


def valid_size(rows: object, cols: object) -> bool:
    """True for a terminal size this service accepts."""
    return (
        isinstance(rows, int)
        and isinstance(cols, int)
        and not isinstance(rows, bool)
        and not isinstance(cols, bool)
        and 1 <= rows <= MAX_ROWS
        and 1 <= cols <= MAX_COLS
    )


def _valid(size: tuple[object, object]) -> TypeGuard[tuple[int, int]]:
    return valid_size(*size)


def client_frame(data: bytes | str) -> Resize | bytes | None:
    """What a client frame (text or binary) means: a resize, keystrokes, or nothing (a resize
    message with an unusable size is dropped, not typed into the shell).

    Resizes are the contract's JSON `{"type": "resize", "rows": R, "cols": C}` and upstream's
    text `RESIZE <cols> <rows>` (exactly three tokens of which the last two are integers; any
    other `RESIZE ...` is input, as upstream)."""
    raw = data.encode() if isinstance(data, str) else data
    stripped = raw.strip()
    if stripped.startswith(b"{") and stripped.endswith(b"}"):
        try:
            message = json.loads(stripped)
        except (ValueError, UnicodeDecodeError):
            message = None
        if isinstance(message, dict) and message.get("type") == "resize":
            size = (message.get("rows"), message.get("cols"))
            return Resize(rows=size[0], cols=size[1]) if _valid(size) else None
    if raw.startswith(b"RESIZE"):
        parts = raw.split()
        if len(parts) == 3 and parts[0] == b"RESIZE" and parts[1].isdigit() and parts[2].isdigit():
            cols, rows = int(parts[1]), int(parts[2])
            return Resize(rows=rows, cols=cols) if valid_size(rows, cols) else None
    return raw
