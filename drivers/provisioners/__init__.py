"""Cluster provisioners: plain clients that turn a set of nodes into a usable cluster (no Temporal code)."""

from drivers.provisioners.base import NodeAccess, Provisioned, Provisioner, ProvisionFailed
from drivers.provisioners.hosts import HostsProvisioner
from drivers.provisioners.kubespray import KubesprayProvisioner

__all__ = [
    "HostsProvisioner",
    "KubesprayProvisioner",
    "NodeAccess",
    "ProvisionFailed",
    "Provisioned",
    "Provisioner",
]
