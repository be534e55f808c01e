"""Imports every model so `Base.metadata` is complete (Alembic and tests use it)."""

from db.base import Base
from db.clusters import Cluster, ClusterLog
from db.image_registries import ImageRegistry
from db.images import Image, ImageImportJob, ImageLayer, RegistryStats
from db.node_flavors import NodeFlavor
from db.node_templates import NodeTemplate
from db.nodes import Node, NodeLog
from db.public_keys import PublicKey
from db.secrets import Secret
from db.users import User, UserToken

__all__ = [
    "Base",
    "Cluster",
    "ClusterLog",
    "Image",
    "ImageImportJob",
    "ImageLayer",
    "ImageRegistry",
    "Node",
    "NodeFlavor",
    "NodeLog",
    "NodeTemplate",
    "PublicKey",
    "RegistryStats",
    "Secret",
    "User",
    "UserToken",
]
