"""One router per resource; `ROUTERS` are mounted under /api/v1, `custom_router` under /api/custom."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.aliases import custom_router
from api.routes.clusters import router as clusters_router
from api.routes.envs import router as envs_router
from api.routes.faults import router as faults_router
from api.routes.image_import import router as image_import_router
from api.routes.image_registries import router as image_registries_router
from api.routes.images import router as images_router
from api.routes.logs import router as logs_router
from api.routes.node_flavors import router as node_flavors_router
from api.routes.node_templates import router as node_templates_router
from api.routes.nodes import router as nodes_router
from api.routes.ops_jobs import router as ops_jobs_router
from api.routes.public_keys import router as public_keys_router
from api.routes.registry_stats import router as registry_stats_router
from api.routes.secrets import router as secrets_router
from api.routes.users import router as users_router
from api.routes.webshell import router as webshell_router
from api.routes.workloads import router as workloads_router
from api.routes.workspaces import router as workspaces_router

ROUTERS: list[APIRouter] = [
    users_router,
    secrets_router,
    public_keys_router,
    node_flavors_router,
    node_templates_router,
    image_registries_router,
    nodes_router,
    images_router,
    image_import_router,
    registry_stats_router,
    clusters_router,
    workspaces_router,
    workloads_router,
    logs_router,
    faults_router,
    ops_jobs_router,
    envs_router,
    webshell_router,
]

__all__ = ["ROUTERS", "custom_router"]
