"""Cluster rules without I/O: CIDRs, versions, apiserver flags, the kubespray inventory and
playbook command, and reading the endpoint from a kubeconfig."""

from __future__ import annotations

import json

import pytest
import yaml

from domain import clusters as rules
from drivers.provisioners import ProvisionFailed
from drivers.provisioners.kubespray import endpoint_of


@pytest.mark.parametrize("value", ["10.0.0.0/16", "fd00::/64", "192.168.1.0/24"])
def test_valid_cidrs(value: str) -> None:
    assert rules.cidr_error(value) is None


@pytest.mark.parametrize("value", ["10.0.0.1/16", "10.0.0.0", "10.0.0.0/33", "ten/8", ""])
def test_malformed_cidrs(value: str) -> None:
    assert rules.cidr_error(value)


def test_overlap() -> None:
    assert rules.overlap_error("10.0.0.0/8", "10.96.0.0/12")
    assert rules.overlap_error("10.96.0.0/16", "10.96.0.0/16")
    assert rules.overlap_error("10.0.0.0/16", "10.96.0.0/16") is None
    assert rules.overlap_error("10.0.0.0/16", "fd00::/108") is None


def test_versions_flags_and_counts() -> None:
    assert rules.kube_version_error("1.32.5") is None and rules.kube_version_error("v1.31.0") is None
    assert rules.kube_version_error("1.32") and rules.kube_version_error("latest")
    assert rules.api_server_args_error({"max-requests-inflight": "400"}) is None
    assert rules.api_server_args_error({"--flag": "x"}) and rules.api_server_args_error({"a": "x\ny"})
    assert rules.odd_count_warning(3) is None and rules.odd_count_warning(2)


def test_inventory_groups_control_plane_and_workers() -> None:
    nodes = [
        rules.ClusterNode(node_id="a", hostname="cp-1", private_ip="10.1.0.1", is_control_plane=True),
        rules.ClusterNode(node_id="b", hostname="w-1", private_ip="10.1.0.2", public_ip="1.2.3.4", port=2222),
    ]
    data = yaml.safe_load(rules.inventory(nodes, "ops"))["all"]
    assert data["hosts"]["w-1"] == {
        "ansible_host": "1.2.3.4",
        "ansible_port": 2222,
        "ansible_user": "ops",
        "ip": "10.1.0.2",
        "access_ip": "10.1.0.2",
    }
    children = data["children"]
    assert list(children["kube_control_plane"]["hosts"]) == ["cp-1"] == list(children["etcd"]["hosts"])
    assert list(children["kube_node"]["hosts"]) == ["cp-1", "w-1"]


def test_playbook_args_keep_every_variable_in_one_json_argument() -> None:
    options = rules.KubesprayOptions(
        image="quay.io/kubespray/kubespray:v2.24.0",
        pods_subnet="10.0.0.0/16",
        service_range="10.96.0.0/16",
        network_plugin="cilium",
        kube_version="1.32.5",
        api_server_args={"max-requests-inflight": "400; rm -rf /"},
    )
    argv = rules.playbook_args("remove-node.yml", options, extra_vars={"node": "w-1"})
    assert (
        argv[:3] == ["ansible-playbook", "-i", "/primus/inventory/hosts.yaml"]
        and argv[-1] == "remove-node.yml"
    )
    variables = json.loads(argv[argv.index("-e") + 1])
    assert variables["kube_version"] == "v1.32.5" and variables["kube_network_plugin"] == "cilium"
    assert variables["kube_kubeadm_apiserver_extra_args"] == {"max-requests-inflight": "400; rm -rf /"}
    assert variables["node"] == "w-1" and variables["kubeconfig_localhost"] is True


def test_endpoint_from_kubeconfig() -> None:
    config = {
        "clusters": [
            {"name": "other", "cluster": {"server": "https://10.0.0.9:6443"}},
            {"name": "main", "cluster": {"server": "https://10.0.0.100:6443"}},
        ],
        "contexts": [{"name": "admin", "context": {"cluster": "main", "user": "admin"}}],
        "current-context": "admin",
    }
    assert endpoint_of(yaml.safe_dump(config)) == "10.0.0.100:6443"
    assert endpoint_of(
        yaml.safe_dump({"clusters": [{"name": "x", "cluster": {"server": "https://[fd00::1]"}}]})
    ) == ("[fd00::1]:443")
    with pytest.raises(ProvisionFailed):
        endpoint_of("clusters: nope")
