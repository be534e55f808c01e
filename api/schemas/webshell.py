"""Web shell bodies: the session records admins list (an addition to the contract)."""

from __future__ import annotations

from api.schemas.common import ResponseModel


class WebShellSessionItem(ResponseModel):
    """One web shell session as `GET /webshell/sessions` lists it."""

    id: int
    user_id: str
    user_name: str
    workload_id: str
    workspace_id: str
    cluster_id: str
    pod_id: str
    node_name: str
    container: str
    cmd: str
    client_address: str
    state: str
    """`Open`, `Ended`, or `Lost` (its API process stopped without recording the end)."""
    start_time: str
    end_time: str
    duration_seconds: int
    """Until the end, or until now while open (until the last sign of life when lost)."""
    end_reason: str
    exit_code: int | None
    input_bytes: int
    output_bytes: int
