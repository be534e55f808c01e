"""The shared contract test suite for execution drivers.

A driver's test module subclasses `ExecutionDriverContract` and provides a `harness` fixture: a
driver, a namespace that exists, and a `PodController` that plays the part of the cluster's
controllers (Kubernetes without a controller manager: the controller creates the pods and patches
their status; hosts: processes really run, so the controller only waits and signals them).

Every pod in the suite runs `CONTRACT_SCRIPT`: it prints `started <pod>`, waits until its exit
file appears in its working directory, prints `exiting <code>` and exits with that code. A
controller's `finish` makes that happen (or simulates it).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar

import pytest

from domain.errors import NotFound
from domain.pods import PodStatus
from domain.workloads import (
    GroupVersionKind,
    WorkloadDispatch,
    WorkloadResource,
    WorkloadSpec,
    encode_entry_point,
    with_defaults,
)
from drivers.execution import ExecutionDriver

T = TypeVar("T")

EXIT_FILE = ".primus-exit"
CONTRACT_SCRIPT = (
    'echo "started $PRIMUS_POD_ID"; '
    f"while [ ! -f {EXIT_FILE} ]; do sleep 0.1; done; "
    f'code=$(cat {EXIT_FILE}); echo "exiting $code"; exit "$code"'
)


class PodController(Protocol):
    """Plays the cluster's part for a driver under test."""

    def start(self, dispatch: WorkloadDispatch) -> list[str]:
        """Bring every pod of an applied dispatch to Running; return their names (sorted)."""

    def finish(self, namespace: str, pod: str, exit_code: int) -> None:
        """Make a running pod's main process exit with `exit_code`."""


@dataclass
class Harness:
    """What the contract suite needs from a driver's test module."""

    driver: ExecutionDriver
    controller: PodController
    namespace: str


def make_dispatch(
    namespace: str,
    *,
    kind: str = "PyTorchJob",
    replica: int = 2,
    script: str = CONTRACT_SCRIPT,
    workload_id: str | None = None,
    **spec_fields: object,
) -> WorkloadDispatch:
    """A dispatch of a small workload running `script`."""
    workload_id = workload_id or f"wl-{uuid.uuid4().hex[:8]}"
    spec = WorkloadSpec(
        display_name=workload_id,
        workspace_id=namespace,
        group_version_kind=GroupVersionKind(kind=kind),  # type: ignore[arg-type]
        image="busybox:1.36",
        entry_point=encode_entry_point(script),
        resource=WorkloadResource(cpu="1", memory="1Gi", replica=replica),
        **spec_fields,  # type: ignore[arg-type]
    )
    return WorkloadDispatch(workload_id=workload_id, namespace=namespace, spec=with_defaults(spec))


def wait_for(probe: Callable[[], T | None], *, timeout: float = 20, what: str = "condition") -> T:
    """Poll `probe` until it returns something truthy."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def pods_by_name(driver: ExecutionDriver, dispatch: WorkloadDispatch) -> dict[str, PodStatus]:
    """The dispatch's pods keyed by name."""
    return {p.name: p for p in driver.list_pods(dispatch.namespace, dispatch.workload_id)}


class ExecutionDriverContract:
    """The behaviour every `ExecutionDriver` must show. Subclass and provide `harness`."""

    def test_apply_runs_every_replica_once(self, harness: Harness) -> None:
        dispatch = make_dispatch(harness.namespace, replica=2)
        harness.driver.apply(dispatch)
        harness.driver.apply(dispatch)  # idempotent: no duplicates, no error
        names = harness.controller.start(dispatch)
        assert len(names) == 2
        pods = harness.driver.list_pods(harness.namespace, dispatch.workload_id)
        assert [p.name for p in pods] == names
        assert {p.phase for p in pods} == {"Running"}
        assert all(p.node for p in pods)
        assert sorted(p.rank for p in pods) == ["0", "1"]
        assert all(p.start_time is not None for p in pods)
        harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)

    def test_list_pods_sees_only_its_workload(self, harness: Harness) -> None:
        first = make_dispatch(harness.namespace, replica=1)
        second = make_dispatch(harness.namespace, replica=1)
        for dispatch in (first, second):
            harness.driver.apply(dispatch)
            harness.controller.start(dispatch)
        first_pods = harness.driver.list_pods(harness.namespace, first.workload_id)
        assert len(first_pods) == 1
        assert first_pods[0].labels["primus-safe.workload.id"] == first.workload_id
        assert harness.driver.list_pods(harness.namespace, "no-such-workload") == []
        for dispatch in (first, second):
            harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)

    def test_exit_codes_become_phases(self, harness: Harness) -> None:
        dispatch = make_dispatch(harness.namespace, replica=2)
        harness.driver.apply(dispatch)
        master, worker = harness.controller.start(dispatch)
        harness.controller.finish(harness.namespace, master, 0)
        harness.controller.finish(harness.namespace, worker, 3)

        def ended() -> dict[str, PodStatus] | None:
            pods = pods_by_name(harness.driver, dispatch)
            return pods if all(p.ended for p in pods.values()) else None

        pods = wait_for(ended, what="pods to end")
        assert pods[master].phase == "Succeeded"
        assert list(pods[master].exit_codes.values()) == [0]
        assert pods[worker].phase == "Failed"
        assert list(pods[worker].exit_codes.values()) == [3]
        assert pods[worker].end_time is not None
        harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)

    def test_logs_tail(self, harness: Harness) -> None:
        dispatch = make_dispatch(harness.namespace, replica=1)
        harness.driver.apply(dispatch)
        (pod,) = harness.controller.start(dispatch)
        wait_for(
            lambda: f"started {pod}" in harness.driver.read_log(harness.namespace, pod),
            what="the first log line",
        )
        harness.controller.finish(harness.namespace, pod, 0)
        log = wait_for(
            lambda: (
                (text := harness.driver.read_log(harness.namespace, pod)) and "exiting 0" in text and text
            ),
            what="the last log line",
        )
        assert log.splitlines() == [f"started {pod}", "exiting 0"]
        assert harness.driver.read_log(harness.namespace, pod, tail_lines=1).splitlines() == ["exiting 0"]
        harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)

    def test_read_log_of_missing_pod_is_not_found(self, harness: Harness) -> None:
        with pytest.raises(NotFound):
            harness.driver.read_log(harness.namespace, "no-such-pod")

    def test_delete_stops_and_removes_pods(self, harness: Harness) -> None:
        dispatch = make_dispatch(harness.namespace, replica=2)
        harness.driver.apply(dispatch)
        harness.controller.start(dispatch)
        harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)
        wait_for(
            lambda: not harness.driver.list_pods(harness.namespace, dispatch.workload_id) or None,
            what="pods to be removed",
        )
        # Deleting again is fine, and so is deleting something that never existed.
        harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)
        harness.driver.delete(harness.namespace, "never-applied", "Deployment")

    def test_shell_is_an_interactive_tty(self, harness: Harness) -> None:
        dispatch = make_dispatch(harness.namespace, replica=1)
        harness.driver.apply(dispatch)
        (pod,) = harness.controller.start(dispatch)
        with harness.driver.exec_shell(harness.namespace, pod, command=["sh"], rows=30, cols=100) as shell:
            shell.write(b"echo tty=$(tty | cut -c1-8) product=$((6*7))\n")
            output = b""
            deadline = time.monotonic() + 10
            while b"product=42" not in output and time.monotonic() < deadline:
                output += shell.read(0.5)
            assert b"product=42" in output
            assert b"tty=/dev/pts" in output
            shell.resize(33, 101)
            shell.write(b"stty size; exit 5\n")
            while shell.is_open and time.monotonic() < deadline:
                output += shell.read(0.5)
            output += shell.read(0.1)
            assert b"33 101" in output
            assert not shell.is_open
            assert shell.exit_code == 5
        harness.driver.delete(harness.namespace, dispatch.workload_id, dispatch.kind)

    def test_shell_in_missing_pod_is_not_found(self, harness: Harness) -> None:
        with pytest.raises(NotFound):
            harness.driver.exec_shell(harness.namespace, "no-such-pod")

    def test_workload_without_service_has_none(self, harness: Harness) -> None:
        with pytest.raises(NotFound):
            harness.driver.describe_service(harness.namespace, "no-such-workload")

    def test_ensure_namespace_is_idempotent(self, harness: Harness) -> None:
        harness.driver.ensure_namespace(harness.namespace)
        harness.driver.ensure_namespace(harness.namespace)
