"""Kept workflow histories replay on the current workflow code (determinism guard).

A change to a workflow that would break running workflows of that type fails here. After an
intentional, versioned change, re-record with `PRIMUS_RECORD_HISTORIES=1 make test`.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from primus_safe.worker import CONTROL_WORKFLOWS
from tests.fixtures.histories import HISTORY_DIR

KEPT = sorted(HISTORY_DIR.glob("*.json"))
HISTORIES = {p.stem: p.read_text(encoding="utf-8") for p in KEPT}
EXPECTED = {
    "UserCleanup",
    "Node",
    "Cluster",
    "NodeManage",
    "ImageImport",
    "WorkspaceScheduler",
    "Workload",
    "Fault",
}


def workflow_type(path: Path) -> str:
    """The workflow type named in a history's first event."""
    first = json.loads(path.read_text(encoding="utf-8"))["events"][0]
    return str(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])


def test_every_long_running_workflow_type_has_a_kept_history() -> None:
    assert {workflow_type(p) for p in KEPT} >= EXPECTED


@pytest.mark.parametrize("name", sorted(HISTORIES))
async def test_kept_history_replays(name: str) -> None:
    history = WorkflowHistory.from_json(name, HISTORIES[name])
    replayer = Replayer(workflows=CONTROL_WORKFLOWS, data_converter=pydantic_data_converter)
    await replayer.replay_workflow(history)
