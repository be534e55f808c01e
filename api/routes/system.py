"""Process health: /healthz (the process is up) and /readyz (database and Temporal reachable)."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import text

from api.deps import State

router = APIRouter(tags=["system"])


class Health(BaseModel):
    """Component states; `status` is `ok` only when every component is."""

    status: str
    database: str = "ok"
    temporal: str = "ok"


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:
    """The process is up."""
    return Health(status="ok")


@router.get("/readyz", response_model=Health, responses={503: {"model": Health}})
async def readyz(state: State) -> JSONResponse:
    """Ready when the database answers and the Temporal frontend reports healthy."""
    result = Health(status="ok")
    try:
        async with state.engine.connect() as conn:
            await asyncio.wait_for(conn.execute(text("SELECT 1")), timeout=5)
    except Exception as exc:
        result.database = f"error: {type(exc).__name__}"
    try:
        healthy = await asyncio.wait_for(state.temporal.service_client.check_health(), timeout=5)
        if not healthy:
            result.temporal = "error: not serving"
    except Exception as exc:
        result.temporal = f"error: {type(exc).__name__}"
    ok = result.database == "ok" and result.temporal == "ok"
    result.status = "ok" if ok else "unavailable"
    return JSONResponse(result.model_dump(), status_code=200 if ok else 503)
