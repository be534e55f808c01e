"""The web shell's client frames and shell fallback (pure rules of `domain.webshell`)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from domain.webshell import Resize, client_frame, shell_command


def test_resize_messages_in_both_forms() -> None:
    assert client_frame(b'{"type": "resize", "rows": 40, "cols": 120}') == Resize(rows=40, cols=120)
    assert client_frame('{"type":"resize","rows":40,"cols":120}\n') == Resize(rows=40, cols=120)
    assert client_frame("RESIZE 132 43") == Resize(rows=43, cols=132)  # upstream: cols first
    assert client_frame(b"RESIZE 80 24") == Resize(rows=24, cols=80)


def test_unusable_resizes_are_dropped_and_other_frames_are_input() -> None:
    assert client_frame(b'{"type": "resize", "rows": 0, "cols": 120}') is None
    assert client_frame(b'{"type": "resize", "rows": "40", "cols": 120}') is None
    assert client_frame(b'{"type": "resize", "rows": true, "cols": 120}') is None
    assert client_frame("RESIZE 100000 40") is None
    # as upstream, a malformed RESIZE is typed into the shell
    assert client_frame("RESIZE 80") == b"RESIZE 80"
    assert client_frame("RESIZE a b") == b"RESIZE a b"
    assert client_frame(b'{"type": "other"}') == b'{"type": "other"}'
    assert client_frame(b"ls -l\r") == b"ls -l\r"
    assert client_frame("ü") == "ü".encode()


def test_the_fallback_starts_the_first_shell_that_exists(tmp_path: Path) -> None:
    """In a PATH with the given fake shells (each prints its name) and the real sh."""
    assert shell_command("sh") == ["sh"]

    def started(cmd: str, *present: str) -> str:
        bin_dir = tmp_path / "-".join((cmd, *present))
        bin_dir.mkdir()
        (bin_dir / "sh").symlink_to(shutil.which("sh") or "/bin/sh")
        for name in present:
            (bin_dir / name).write_text(f"#!/bin/sh\necho {name}\n")
            (bin_dir / name).chmod(0o755)
        argv = shell_command(cmd)
        run = subprocess.run(
            [str(bin_dir / argv[0]), *argv[1:]],
            env={"PATH": str(bin_dir)},
            input="echo sh\n",  # what the real sh, reading its input, runs
            capture_output=True,
            text=True,
            check=True,
        )
        return run.stdout.strip()

    assert started("bash", "bash", "zsh") == "bash"
    assert started("bash") == "sh"
    assert started("zsh", "zsh", "bash") == "zsh"
    assert started("zsh", "bash") == "bash"
    assert started("zsh") == "sh"
