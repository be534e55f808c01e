"""One router per resource; `ROUTERS` are mounted under /api/v1, `custom_router` under /api/custom."""

from __future__ import annotations

from fastapi import APIRouter

from api.routes.aliases import custom_router
from api.routes.public_keys import router as public_keys_router
from api.routes.secrets import router as secrets_router
from api.routes.users import router as users_router

ROUTERS: list[APIRouter] = [
    users_router,
    secrets_router,
    public_keys_router,
]

__all__ = ["ROUTERS", "custom_router"]
