"""Fault bodies: the injection (an addition to the contract) and the list items."""

from __future__ import annotations

from pydantic import Field

from api.schemas.common import RequestModel, ResponseModel
from domain import faults as rules


class CreateFaultRequest(RequestModel):
    """`POST /faults`: taint a node as a monitor would (admin)."""

    node_id: str = Field(min_length=1, max_length=63)
    monitor_id: str = Field(min_length=1, max_length=63)
    message: str = Field(default="", max_length=rules.MAX_MESSAGE)
    action: str = Field(default=rules.TAINT, max_length=16)
    effect: rules.Effect = "NoSchedule"


class CreateFaultResponse(ResponseModel):
    id: str


class FaultItem(ResponseModel):
    """A fault as `GET /faults` lists it; `effect` and `source` are additions."""

    id: str
    node_id: str
    monitor_id: str
    message: str
    action: str
    effect: str
    phase: str
    cluster_id: str
    source: str
    creation_time: str
    deletion_time: str
