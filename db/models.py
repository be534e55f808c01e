"""Imports every model so `Base.metadata` is complete (Alembic and tests use it)."""

from db.base import Base
from db.clusters import Cluster
from db.faults import Fault
from db.image_registries import ImageRegistry
from db.images import Image, ImageImportJob, ImageLayer, RegistryStats
from db.log_lines import LogLine
from db.logs import OperationLog
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node, NodeHold
from db.ops_jobs import OpsJob
from db.public_keys import PublicKey
from db.scheduling import QueueEntry
from db.secrets import Secret
from db.users import User, UserToken
from db.webshell_sessions import WebShellSession
from db.workloads import Workload, WorkloadDependency
from db.workspaces import Workspace, WorkspaceImageSecret, WorkspaceManager

__all__ = [
    "Base",
    "Cluster",
    "Fault",
    "Image",
    "ImageImportJob",
    "ImageLayer",
    "ImageRegistry",
    "LogLine",
    "Node",
    "NodeFlavor",
    "NodeHold",
    "NodeTemplate",
    "OperationLog",
    "OpsJob",
    "PublicKey",
    "QueueEntry",
    "RegistryStats",
    "Secret",
    "User",
    "UserToken",
    "WebShellSession",
    "Workload",
    "WorkloadDependency",
    "Workspace",
    "WorkspaceImageSecret",
    "WorkspaceManager",
]
