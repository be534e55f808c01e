"""The pure fault rules: monitor ids, taint keys, failover, and the probe's hysteresis."""

from __future__ import annotations

import pytest

from domain import faults as rules


@pytest.mark.parametrize("monitor", ["001", "notready", "net.monitor-1", "ssh-unreachable"])
def test_valid_monitor_ids(monitor: str) -> None:
    assert rules.monitor_id_problem(monitor) is None
    assert rules.taint_key(monitor) == f"primus-safe.{monitor}"


@pytest.mark.parametrize("monitor", ["", "a", "Bad", "-x1", "x1-", "a_b", "x" * 64, "y" * 60])
def test_invalid_monitor_ids(monitor: str) -> None:
    assert rules.monitor_id_problem(monitor)


def test_failover_for_no_execute_or_a_failover_monitor() -> None:
    assert rules.fails_over("NoExecute", "001", [])
    assert rules.fails_over("NoSchedule", "notready", ["notready"])
    assert not rules.fails_over("NoSchedule", "001", ["notready"])


def hysteresis(checks: str, *, raise_after: int = 3, clear_after: int = 2) -> list[str]:
    """Feed a run of probe results ('x' missed, '.' reached); return the actions taken."""
    failures = successes = 0
    fault_open = False
    actions = []
    for check in checks:
        failures, successes = (failures + 1, 0) if check == "x" else (0, successes + 1)
        action = rules.probe_fault_action(
            failures=failures,
            successes=successes,
            fault_open=fault_open,
            raise_after=raise_after,
            clear_after=clear_after,
        )
        if action:
            actions.append(action)
            fault_open = action == "raise"
    return actions


def test_the_probe_raises_after_n_misses_in_a_row_and_clears_after_m_answers() -> None:
    assert hysteresis("x.x.x.xx.") == []  # flapping never reaches three in a row
    assert hysteresis("xxx") == ["raise"]
    assert hysteresis("xxxxxx") == ["raise"]  # raised once, not again while open
    assert hysteresis("xxx.x.x") == ["raise"]  # one answer in between is not enough to clear
    assert hysteresis("xxx..") == ["raise", "clear"]
    assert hysteresis("xxx..xxx") == ["raise", "clear", "raise"]
    assert hysteresis("x", raise_after=1, clear_after=1) == ["raise"]


def test_health_findings_from_the_health_script_output() -> None:
    output = "@@nproc\n8\n@@nvidia-smi\nGPU A\nGPU B\n@@df\n/dev/sda1 100 97 3 97% /\n"
    assert rules.health_findings(output, flavor_gpus=2, disk_full_percent=95) == {
        rules.GPU_COUNT: "",
        rules.DISK_FULL: "the root file system is 97% full (threshold 95%)",
    }
    found = rules.health_findings(output, flavor_gpus=8, disk_full_percent=99)
    assert found == {
        rules.GPU_COUNT: "the flavor has 8 GPUs but the node shows 2 (nvidia-smi)",
        rules.DISK_FULL: "",
    }
    assert rules.health_findings("@@nproc\n8\n", flavor_gpus=0, disk_full_percent=95) == {rules.GPU_COUNT: ""}
    assert rules.flavor_gpu_count({"gpu": {"resourceName": "amd.com/gpu", "quantity": "8"}}) == 8
    assert rules.flavor_gpu_count({"cpu": {"quantity": "4"}}) == 0


def test_the_addon_check_finding_names_the_first_drifted_addon() -> None:
    assert rules.addon_check_problem([]) == ""
    assert rules.addon_check_problem([("a", 0, "unchanged: x"), ("b", 0, "")]) == ""
    found = rules.addon_check_problem(
        [
            ("a", 0, ""),
            ("b", 3, "unchanged: y\ndrift: kernel.x is 1, not 0\ncheck failed: 1 setting(s)"),
            ("c", 3, ""),
        ]
    )
    assert found == "addon b check failed (exit 3): drift: kernel.x is 1, not 0"
