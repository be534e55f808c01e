"""Pure node rules: fact parsing for each GPU tool, the flavor comparison, input checks, commands."""

from __future__ import annotations

import json

import pytest

from domain import nodes as rules

LSBLK = json.dumps(
    {
        "blockdevices": [
            {"name": "zram0", "size": 0, "type": "disk", "mountpoint": None},
            {
                "name": "nvme0n1",
                "size": 960 * 2**30,
                "type": "disk",
                "mountpoint": None,
                "children": [{"name": "nvme0n1p2", "size": 950 * 2**30, "type": "part", "mountpoint": "/"}],
            },
            *[
                {"name": f"nvme{i}n1", "size": 3840 * 2**30, "type": "disk", "mountpoint": None}
                for i in (1, 2)
            ],
        ]
    }
)


def output(gpu_section: str, tool: str) -> str:
    sections = {
        "nproc": "256",
        "meminfo": "MemTotal:       2113536000 kB",
        "uptime": "3600.25 7000.00",
        "lsblk": LSBLK,
        "amd-smi": "",
        "rocm-smi": "",
        "nvidia-smi": "",
        "hostname": "gpu-node-1",
    }
    sections[tool] = gpu_section
    return "".join(f"@@{name}\n{body}\n" for name, body in sections.items())


@pytest.mark.parametrize(
    ("tool", "section", "products"),
    [
        ("amd-smi", json.dumps([{"gpu": i, "market_name": "MI300X"} for i in range(8)]), ["MI300X"] * 8),
        ("rocm-smi", json.dumps({f"card{i}": {"Card Series": "MI325X"} for i in range(8)}), ["MI325X"] * 8),
        ("nvidia-smi", "\n".join(["NVIDIA H100 80GB HBM3"] * 8), ["NVIDIA H100 80GB HBM3"] * 8),
    ],
)
def test_facts_from_each_gpu_tool(tool: str, section: str, products: list[str]) -> None:
    facts = rules.parse_facts(output(section, tool))
    assert facts.gpu_tool == tool and facts.gpu_count == 8 and facts.gpu_products == products
    assert facts.cpu_cores == 256 and facts.memory_bytes == 2113536000 * 1024
    assert [d.name for d in facts.disks] == ["nvme0n1", "nvme1n1", "nvme2n1"]
    assert [d.root for d in facts.disks] == [True, False, False]
    assert facts.hostname == "gpu-node-1" and facts.uptime_seconds == 3600.25


def test_missing_or_garbled_sections_give_zeros_not_errors() -> None:
    facts = rules.parse_facts("@@nproc\n\n@@lsblk\nnot json\n@@amd-smi\n{broken")
    assert facts.cpu_cores == 0 and facts.disks == [] and facts.gpu_count == 0


FLAVOR = {
    "cpu": {"quantity": "256"},
    "memory": "2048Gi",
    "gpu": {"resourceName": "amd.com/gpu", "quantity": "8"},
    "rootDisk": {"quantity": "894Gi", "count": 1},
    "dataDisk": {"quantity": "3576Gi", "count": 2},
}


def test_matching_flavor_has_no_mismatch() -> None:
    facts = rules.parse_facts(output(json.dumps([{"gpu": i} for i in range(8)]), "amd-smi"))
    assert rules.flavor_mismatches(facts, FLAVOR) == []


def test_each_shortfall_is_named() -> None:
    facts = rules.parse_facts(output("", "amd-smi"))
    bigger = FLAVOR | {
        "cpu": {"quantity": "512"},
        "memory": "4096Gi",
        "dataDisk": {"quantity": "8Ti", "count": 4},
    }
    problems = rules.flavor_mismatches(facts, bigger)
    assert len(problems) == 4
    assert problems[0] == "the flavor has 512 CPU cores but the node has 256"
    assert "4096Gi memory" in problems[1]
    assert "8 GPUs but the node has none (no amd-smi, rocm-smi or nvidia-smi)" in problems[2]
    assert "4 data disks of 8Ti but the node has 0" in problems[3]


@pytest.mark.parametrize(
    "value", ["node;reboot", "$(id)", "a b", "-leading", "x" * 64, "a..b", "`id`", "ok\nnewline", ""]
)
def test_hostnames_with_shell_or_dns_problems_are_refused(value: str) -> None:
    assert rules.hostname_error(value)


def test_valid_inputs_pass() -> None:
    assert rules.hostname_error("gpu-node-001.dc1.example.com") is None
    assert rules.ip_error("10.0.0.1") is None and rules.ip_error("fe80::1") is None
    assert rules.ip_error("10.0.0.1/24") and rules.ip_error("10.0.0.256")
    assert rules.label_key_error("example.com/gpu-type") is None
    assert rules.label_key_error("primus-safe.amd.com/x") and rules.label_key_error("primus-safe.node.id")
    assert rules.label_value_error("v;rm") and rules.label_value_error("") is None
    assert rules.addon_name_error("../etc/passwd") and rules.addon_name_error("sysctl-inotify") is None


def test_commands_keep_values_as_single_arguments() -> None:
    argv = rules.render_command(
        ["sudo", "-n", "hostnamectl", "set-hostname", "{hostname}"], hostname="a; reboot"
    )
    assert argv == ["sudo", "-n", "hostnamectl", "set-hostname", "a; reboot"]
    with pytest.raises(ValueError, match="hostname"):
        rules.render_command(["x", "{hostname}"])


def test_node_ids() -> None:
    assert rules.new_node_id("GPU_Node.Example", "10.0.0.1").startswith("gpu-node-example-")
    assert rules.new_node_id(None, "10.0.0.1").startswith("10-0-0-1-")
    assert len(rules.new_node_id("a" * 80, "10.0.0.1")) <= 63


def test_availability_reasons_in_order() -> None:
    ok = {"phase": "Ready", "step": "", "facts_problem": "", "addons_installed": True, "taints": []}
    assert rules.availability(**ok) == (True, "")  # type: ignore[arg-type]
    assert "onboarded" in rules.availability(**ok | {"step": "addons"})[1]  # type: ignore[arg-type]
    assert rules.availability(**ok | {"phase": "SSHFailed"})[1] == "node's status is not ready"  # type: ignore[arg-type]
    taints = [{"key": "primus-safe.m", "value": "1", "effect": "NoSchedule"}]
    assert rules.availability(**ok | {"taints": taints})[1] == 'node has taints: ["primus-safe.m=1"]'  # type: ignore[arg-type]
