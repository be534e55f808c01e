"""The router for the paths the module docs place under /api/custom (aliases of /api/v1 routes)."""

from __future__ import annotations

from fastapi import APIRouter

custom_router = APIRouter(tags=["custom aliases"])
