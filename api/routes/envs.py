"""`GET /envs`: what this platform offers, as upstream's web console asks at start (public)."""

from __future__ import annotations

from fastapi import APIRouter, Request
from pydantic import Field
from starlette.routing import Route

from api.deps import State
from api.schemas.common import ERROR_RESPONSES, ResponseModel

router = APIRouter(tags=["system"], responses=ERROR_RESPONSES)

LOG_SEARCH_PATH = "/api/v1/workloads/{WorkloadId}/logs"
WEBSHELL_SUFFIX = "/webshell"


class EnvsView(ResponseModel):
    """Feature switches and defaults the console shapes its pages by."""

    enable_log_download: bool = Field(description="Log archives to download (no S3 here: false)")
    enable_log: bool = Field(description="Workload log search is served")
    enable_ssh: bool = Field(description="The web shell into pods is served")
    authoring_image: str = Field(description="Default image of Authoring workloads")
    sso_enable: bool = Field(description="Single sign-on configured (never, here)")
    sso_auth_url: str = ""
    cd_require_approval: bool = False


def _serves(request: Request, match: str, *, suffix: bool = False) -> bool:
    """Whether the app has a route at `match` (or ending with it): capabilities follow the code."""
    for route in request.app.routes:
        path = route.path if isinstance(route, Route) else getattr(route, "path", "")
        if (path.endswith(match) if suffix else path == match) and path.startswith("/api/v1/"):
            return True
    return False


@router.get("/envs", response_model=EnvsView, summary="Platform features and defaults (public)")
async def envs(request: Request, state: State) -> EnvsView:
    """Anyone may ask, logged in or not (the console asks on its login page)."""
    return EnvsView(
        enable_log_download=False,
        enable_log=_serves(request, LOG_SEARCH_PATH),
        enable_ssh=_serves(request, WEBSHELL_SUFFIX, suffix=True),
        authoring_image=state.settings.authoring_image,
        sso_enable=False,
    )
