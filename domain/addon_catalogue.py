"""The addon catalogue: the bash scripts shipped in `domain/addons/<name>.sh`.

Each script starts with `# description: <one line>` and may say `# gpu-chip: amd` (or `nvidia`)
when it only applies to nodes with that GPU. Node templates name addons from this catalogue.
Helpers shared by the scripts live in `_lib.sh`; a script's `# @include _lib.sh` line is replaced
by that file, so the text sent to a node is self-contained. Run with the argument `check`, a
script built on the helpers changes nothing and exits 3 when the node has drifted from what it
applies (the node probe's `addon-check` fault).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from importlib import resources

PACKAGE = "domain.addons"
LIBRARY = "_lib.sh"
INCLUDE_LINE = f"# @include {LIBRARY}"
_HEADER_LINES = 10


@dataclass(frozen=True)
class Addon:
    """One addon: what it does, which GPU it needs ("" = any node) and the script to run as root."""

    name: str
    description: str
    gpu_chip: str
    script: str


def _header(script: str, key: str) -> str:
    prefix = f"# {key}:"
    for line in script.splitlines()[:_HEADER_LINES]:
        if line.startswith(prefix):
            return line.removeprefix(prefix).strip()
    return ""


@cache
def _library() -> str:
    return resources.files(PACKAGE).joinpath(LIBRARY).read_text(encoding="utf-8")


def assemble(script: str) -> str:
    """The script with its `# @include _lib.sh` line replaced by the shared helpers."""
    if INCLUDE_LINE not in script:
        return script
    return script.replace(INCLUDE_LINE + "\n", _library(), 1)


def parse_addon(name: str, script: str) -> Addon:
    """An addon from its name and script text (the header supplies description and GPU chip)."""
    return Addon(
        name=name,
        description=_header(script, "description"),
        gpu_chip=_header(script, "gpu-chip"),
        script=script,
    )


@cache
def catalogue() -> dict[str, Addon]:
    """Every shipped addon by name, sorted by name."""
    found = {}
    for entry in resources.files(PACKAGE).iterdir():
        if entry.is_file() and entry.name.endswith(".sh") and not entry.name.startswith("_"):
            name = entry.name.removesuffix(".sh")
            found[name] = parse_addon(name, assemble(entry.read_text(encoding="utf-8")))
    return dict(sorted(found.items()))


CHECK_MARKER = "trap _check_exit EXIT"
"""Present in every script built on `_lib.sh`: such a script understands the `check` argument."""


def supports_check(script: str) -> bool:
    """Whether the (assembled) script can be run with `check` without changing anything; an
    addon written without the shared helpers would simply run again, so it is never checked."""
    return CHECK_MARKER in script


def get_addon(name: str) -> Addon | None:
    """The addon called `name`, or None."""
    return catalogue().get(name)


def unknown_addons(names: Iterable[str]) -> list[str]:
    """The names that are not in the catalogue, in the given order."""
    known = catalogue()
    return [name for name in names if name not in known]
