"""What an execution driver reports about one pod of a workload."""

from __future__ import annotations

from datetime import datetime
from typing import Literal, get_args

from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel

PodPhase = Literal["Pending", "Running", "Succeeded", "Failed", "Unknown"]
POD_PHASES: tuple[str, ...] = get_args(PodPhase)
ENDED_PHASES = ("Succeeded", "Failed")


class _Camel(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, validate_by_name=True, serialize_by_alias=True)


class ContainerStatus(_Camel):
    """One container: its state and, once it has terminated, the exit code and reason."""

    name: str
    state: Literal["waiting", "running", "terminated", "unknown"] = "unknown"
    reason: str = ""
    message: str = ""
    exit_code: int | None = None
    """Set once the container has terminated (the last termination when it restarted)."""
    restart_count: int = 0


class PodStatus(_Camel):
    """A pod as the platform tracks it (upstream's `status.pods[]` entries plus labels)."""

    name: str
    phase: PodPhase = "Pending"
    node: str = ""
    """The node the pod runs on (Kubernetes node name, or the host for the host driver)."""
    host_ip: str = ""
    pod_ip: str = ""
    rank: str = ""
    """`RANK` of the main container for PyTorchJob pods, else ""."""
    start_time: datetime | None = None
    end_time: datetime | None = None
    """The latest container finish time once every container has terminated."""
    containers: list[ContainerStatus] = Field(default_factory=list)
    labels: dict[str, str] = Field(default_factory=dict)
    message: str = ""

    @property
    def ended(self) -> bool:
        """True when the pod has finished for good."""
        return self.phase in ENDED_PHASES

    @property
    def exit_codes(self) -> dict[str, int]:
        """Exit code per terminated container."""
        return {c.name: c.exit_code for c in self.containers if c.exit_code is not None}
