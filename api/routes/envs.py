"""`GET /envs`: what this platform offers, as upstream's web console asks at start (public)."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import Field

from api.deps import State
from api.schemas.common import ERROR_RESPONSES, ResponseModel

router = APIRouter(tags=["system"], responses=ERROR_RESPONSES)


class EnvsView(ResponseModel):
    """Feature switches and defaults the console shapes its pages by."""

    enable_log_download: bool = Field(description="Log archives to download (no S3 here: false)")
    enable_log: bool = Field(description="Workload log search is served")
    enable_ssh: bool = Field(description="The web shell into pods is served by this API process")
    authoring_image: str = Field(description="Default image of Authoring workloads")
    sso_enable: bool = Field(description="Single sign-on configured (never, here)")
    sso_auth_url: str = ""
    cd_require_approval: bool = False


@router.get("/envs", response_model=EnvsView, summary="Platform features and defaults (public)")
async def envs(state: State) -> EnvsView:
    """Anyone may ask, logged in or not (the console asks on its login page). Log search is
    always served (the log store is the application database); the web shell when this API
    process can open terminals (`primus-safe up` and `api` give it an opener)."""
    return EnvsView(
        enable_log_download=False,
        enable_log=True,
        enable_ssh=state.terminals is not None,
        authoring_image=state.settings.authoring_image,
        sso_enable=False,
    )
