"""The shipped addon scripts: catalogue metadata, bash syntax, graceful absence and idempotence."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from domain.addon_catalogue import (
    INCLUDE_LINE,
    assemble,
    catalogue,
    get_addon,
    parse_addon,
    supports_check,
    unknown_addons,
)

REQUIRED = {
    "disable-os-upgrade",
    "disable-numa-balancing",
    "enable-cpu-performance",
    "enable-huge-pages",
    "load-amdgpu-module",
    "load-rdma-module",
    "set-max-sclk",
    "sysctl-ulimit",
    "sysctl-inotify",
}
BASH = shutil.which("bash") or "/bin/bash"


def run(name: str, root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run an addon with every path under `root`, so this machine is left alone."""
    addon = get_addon(name)
    assert addon is not None
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "PRIMUS_ADDON_ROOT": str(root)}
    return subprocess.run(
        [BASH, "-s", *args],
        input=addon.script,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def snapshot(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text() for p in sorted(root.rglob("*")) if p.is_file()}


def test_catalogue_lists_every_required_addon_with_metadata() -> None:
    addons = catalogue()
    assert set(addons) >= REQUIRED
    assert list(addons) == sorted(addons)
    for addon in addons.values():
        assert addon.description, addon.name
        assert addon.gpu_chip in ("", "amd", "nvidia"), addon.name
        assert addon.script.startswith("#!/usr/bin/env bash\n")
        assert "set -euo pipefail" in addon.script
    assert addons["load-amdgpu-module"].gpu_chip == "amd"
    assert addons["sysctl-inotify"].gpu_chip == ""
    assert catalogue() is catalogue()  # cached


def test_unknown_addons_and_header_parsing() -> None:
    assert unknown_addons(["sysctl-inotify", "nope", "set-max-sclk", "also-nope"]) == ["nope", "also-nope"]
    addon = parse_addon("x", "#!/bin/bash\n# description:  Does X \n# gpu-chip: nvidia\necho\n")
    assert (addon.description, addon.gpu_chip) == ("Does X", "nvidia")
    assert parse_addon("y", "echo hi\n").description == ""


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_script_syntax(name: str) -> None:
    addon = get_addon(name)
    assert addon is not None
    result = subprocess.run([BASH, "-n"], input=addon.script, capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_absent_hardware_is_not_an_error(name: str, tmp_path: Path) -> None:
    for _ in range(2):
        result = run(name, tmp_path)
        assert result.returncode == 0, result.stdout + result.stderr
        assert result.stdout.strip(), "every addon says what it did"


def fake_node(root: Path) -> None:
    """A node tree: NUMA balancing on, THP on madvise, two CPUs on powersave, amdgpu loaded, apt."""
    (root / "proc/sys/kernel").mkdir(parents=True)
    (root / "proc/sys/kernel/numa_balancing").write_text("1\n")
    (root / "proc/sys/fs/inotify").mkdir(parents=True)
    (root / "proc/sys/fs/inotify/max_user_watches").write_text("8192\n")
    thp = root / "sys/kernel/mm/transparent_hugepage"
    thp.mkdir(parents=True)
    (thp / "enabled").write_text("always [madvise] never\n")
    for cpu in ("cpu0", "cpu1"):
        freq = root / f"sys/devices/system/cpu/{cpu}/cpufreq"
        freq.mkdir(parents=True)
        (freq / "scaling_governor").write_text("powersave\n")
        (freq / "scaling_available_governors").write_text("performance powersave\n")
    (root / "sys/module/amdgpu").mkdir(parents=True)
    (root / "etc/apt/apt.conf.d").mkdir(parents=True)


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_second_run_changes_nothing(name: str, tmp_path: Path) -> None:
    fake_node(tmp_path)
    before = snapshot(tmp_path)
    first = run(name, tmp_path)
    assert first.returncode == 0, first.stdout + first.stderr
    after_first = snapshot(tmp_path)
    second = run(name, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert snapshot(tmp_path) == after_first
    assert "wrote:" not in second.stdout and "set:" not in second.stdout
    if name not in ("load-rdma-module",):
        assert after_first != before, f"{name} did nothing on a node that needs it:\n{first.stdout}"


def test_effects_on_the_fake_node(tmp_path: Path) -> None:
    fake_node(tmp_path)
    for name in ("disable-numa-balancing", "enable-huge-pages", "enable-cpu-performance", "sysctl-inotify"):
        assert run(name, tmp_path).returncode == 0
    assert (tmp_path / "proc/sys/kernel/numa_balancing").read_text().strip() == "0"
    assert (tmp_path / "sys/kernel/mm/transparent_hugepage/enabled").read_text().strip() == "always"
    assert (
        tmp_path / "sys/devices/system/cpu/cpu1/cpufreq/scaling_governor"
    ).read_text().strip() == "performance"
    assert (tmp_path / "proc/sys/fs/inotify/max_user_watches").read_text().strip() == "1048576"
    conf = (tmp_path / "etc/sysctl.d/90-primus-inotify.conf").read_text()
    assert "fs.inotify.max_user_watches = 1048576" in conf
    unit = (tmp_path / "etc/systemd/system/primus-huge-pages.service").read_text()
    assert "ExecStart=/bin/sh /usr/local/lib/primus-safe/huge-pages.sh" in unit


def test_scripts_ship_as_package_data() -> None:
    pyproject = (Path(__file__).parent.parent / "pyproject.toml").read_text()
    assert '"domain.addons" = ["*.sh"]' in pyproject
    assert (Path(__file__).parent.parent / "domain/addons/__init__.py").exists()


def test_shared_helpers_are_pasted_into_every_script() -> None:
    assert "_lib" not in catalogue()
    for addon in catalogue().values():
        assert INCLUDE_LINE not in addon.script, addon.name
        assert "ensure_file() {" in addon.script, addon.name
    assert assemble("echo plain\n") == "echo plain\n"


@pytest.mark.parametrize("name", sorted(REQUIRED))
def test_check_mode_reports_drift_and_changes_nothing(name: str, tmp_path: Path) -> None:
    """`check` (the probe's addon health check): exit 3 with `drift:` lines while the node
    differs from what the addon applies, 0 once applied; it never writes."""
    fake_node(tmp_path)
    before = snapshot(tmp_path)
    check = run(name, tmp_path, "check")
    assert snapshot(tmp_path) == before, "check mode wrote something"
    if name not in ("load-rdma-module", "set-max-sclk", "load-amdgpu-module"):
        assert check.returncode == 3 and "drift:" in check.stdout, check.stdout + check.stderr
    assert run(name, tmp_path).returncode == 0
    applied = run(name, tmp_path, "check")
    assert applied.returncode == 0, applied.stdout + applied.stderr
    assert "drift:" not in applied.stdout


def test_every_catalogue_addon_supports_the_check() -> None:
    assert all(supports_check(get_addon(name).script) for name in REQUIRED)  # type: ignore[union-attr]
    assert not supports_check('echo "a custom addon without the shared helpers"')
