"""Ops job bodies: create, list items and the detail."""

from __future__ import annotations

from typing import Any

from pydantic import Field

from api.schemas.common import RequestModel, ResponseModel


class JobInputBody(RequestModel):
    name: str = Field(max_length=32)
    value: str = Field(max_length=253)


class CreateOpsJobRequest(RequestModel):
    """`POST /opsjobs`; `force` (an addition) allows a reboot of this platform's own node."""

    name: str = Field(default="", max_length=63)
    type: str = Field(default="", max_length=16)
    inputs: list[JobInputBody] = Field(default_factory=list, max_length=1000)
    timeout_second: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    ttl_seconds_after_finished: int = Field(default=0, ge=-(2**31), le=2**31 - 1)
    excluded_nodes: list[str] = Field(default_factory=list, max_length=10000)
    is_tolerate_all: bool = False
    resource: dict[str, Any] | None = None
    image: str = Field(default="", max_length=512)
    entry_point: str = Field(default="", max_length=1_000_000)
    env: dict[str, str] = Field(default_factory=dict)
    hostpath: list[str] = Field(default_factory=list, max_length=100)
    batch_count: int | None = Field(default=None, ge=-(2**31), le=2**31 - 1)
    available_ratio: float | None = Field(default=None, ge=0.0, le=1.0)
    security_upgrade: bool = False
    force: bool = False


class CreateOpsJobResponse(ResponseModel):
    job_id: str


class JobInputView(ResponseModel):
    name: str
    value: str


class OpsJobItem(ResponseModel):
    job_id: str
    job_name: str
    cluster_id: str
    workspace_id: str
    user_id: str
    user_name: str
    type: str
    phase: str
    creation_time: str
    start_time: str
    end_time: str
    deletion_time: str
    timeout_second: int


class JobCondition(ResponseModel):
    type: str
    status: str
    reason: str
    message: str
    last_transition_time: str


class JobNodeView(ResponseModel):
    """An addition: what the job did on each of its nodes (`Pending` until it did)."""

    node_id: str
    phase: str
    message: str
    time: str


class OpsJobDetail(OpsJobItem):
    conditions: list[JobCondition]
    inputs: list[JobInputView]
    outputs: list[JobInputView]
    env: dict[str, str]
    resource: dict[str, Any] | None
    image: str
    entry_point: str
    is_tolerate_all: bool
    hostpath: list[str]
    message: str
    nodes: list[JobNodeView]
    excluded_nodes: list[str]
    batch_count: int
    available_ratio: float
    security_upgrade: bool
    ttl_seconds_after_finished: int
