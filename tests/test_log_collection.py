"""Pod output collected into the log store while workloads run, on both drivers.

HostDriver pods run as real processes on sshd test hosts (and locally); Kubernetes pods on the
fake API server. The worker-kill test runs its worker in a separate process and SIGKILLs it
while a pod prints, then counts the stored lines.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import select
from temporalio.testing import WorkflowEnvironment

from api.app import create_app
from api.state import AppState
from db.log_lines import LogLine, NewLine, add_lines
from db.log_resume import resume_positions
from db.session import SessionFactory
from domain.pod_output import OutputPosition
from domain.pods import PodStatus
from drivers.execution import WORKLOAD_ID_LABEL
from drivers.host import HostDriver, HostNode
from drivers.host.supervisor import LINE_LIMIT, STAMP_AWK, STAMP_PERL
from drivers.kubernetes import KubernetesDriver
from primus_safe.bootstrap import ensure_admin
from tests.conftest import ADMIN_PASSWORD, Platform, login, make_settings
from tests.execution_contract import make_dispatch, wait_for
from tests.fixtures.fake_kube import FakeKube
from tests.fixtures.polling import until
from tests.fixtures.sshd import SSHFarm, SSHHost, farm_fixtures
from tests.fixtures.worker_processes import WorkerProcesses, worker_env
from tests.fixtures.workloads import (
    HostCluster,
    add_host_cluster,
    add_kube_cluster,
    add_workspace,
    cluster_fixture,
    submit,
    wait_phase,
    workload_body,
)

SSH_PORT = 16530
KUBE_PORT = 16533


farm, hosts = farm_fixtures(SSH_PORT, 2)
cluster = cluster_fixture()


@pytest.fixture(scope="module")
def kube() -> Iterator[FakeKube]:
    with FakeKube(port=KUBE_PORT, controller=True) as fake:
        yield fake


@pytest.fixture
def local_driver() -> Iterator[HostDriver]:
    root = tempfile.mkdtemp(prefix="primus-collect-")
    driver = HostDriver([HostNode(name="local", address="127.0.0.1")], root=root, grace_seconds=2)
    try:
        yield driver
    finally:
        driver.close()


async def stored(sessions: SessionFactory, workload_id: str) -> list[LogLine]:
    """The workload's stored lines, in stream order."""
    async with sessions() as session:
        rows = await session.scalars(
            select(LogLine)
            .where(LogLine.workload_id == workload_id)
            .order_by(LogLine.dispatch_count, LogLine.pod, LogLine.container, LogLine.stream, LogLine.seq)
        )
        return list(rows)


def texts(rows: list[LogLine], **where: object) -> list[str]:
    return [r.line for r in rows if all(getattr(r, k) == v for k, v in where.items())]


# --- the drivers ---------------------------------------------------------------------------------


def test_host_pods_keep_stdout_and_stderr_apart_with_times_and_honour_since_seconds(
    local_driver: HostDriver,
) -> None:
    # stdout and stderr are stamped by two processes: lines printed apart keep their order
    script = (
        'echo early; sleep 0.2; echo "oops" >&2; sleep 2.5; echo late; sleep 0.2; echo "ünïcode" >&2; '
        'sleep 0.2; printf "no newline"'
    )
    dispatch = make_dispatch("ws-out", kind="PyTorchJob", replica=1, script=script)
    started = datetime.now(UTC) - timedelta(seconds=1)
    local_driver.apply(dispatch)

    def ended() -> list[PodStatus] | None:
        pods = local_driver.list_pods("ws-out", dispatch.workload_id)
        return pods if pods and pods[0].ended else None

    pods = wait_for(ended, what="the pod to end")
    (pod,) = pods
    assert local_driver.read_log("ws-out", pod.name).splitlines() == [
        "early",
        "oops",
        "late",
        "ünïcode",
        "no newline",
    ]
    assert local_driver.read_log("ws-out", pod.name, since_seconds=2).splitlines() == [
        "late",
        "ünïcode",
        "no newline",
    ]
    assert local_driver.read_log("ws-out", pod.name, tail_lines=1, since_seconds=60) == "no newline\n"

    batches = {
        b.stream: b for b in local_driver.read_output("ws-out", dispatch.workload_id, pods, {}, max_bytes=1)
    }
    out, err = batches["stdout"], batches["stderr"]
    assert [line.text for line in out.lines] == ["early", "late", "no newline"]
    assert [line.text for line in err.lines] == ["oops", "ünïcode"]
    assert (out.pod, out.node, out.container, out.after.seq, out.more) == (
        pod.name,
        "local",
        "pytorch",
        3,
        False,
    )
    assert all(started <= line.at <= datetime.now(UTC) for line in out.lines + err.lines)
    assert out.lines[1].at - out.lines[0].at >= timedelta(seconds=2)

    # after the last line nothing; from a seq alone (a resumed collection) the same place
    again = local_driver.read_output("ws-out", dispatch.workload_id, pods, {out.key: out.after}, max_bytes=1)
    assert [b.lines for b in again if b.stream == "stdout"] == [[]]
    resumed = local_driver.read_output(
        "ws-out", dispatch.workload_id, pods, {out.key: OutputPosition(seq=1)}, max_bytes=1
    )
    assert [[line.text for line in b.lines] for b in resumed if b.stream == "stdout"] == [
        ["late", "no newline"]
    ]
    local_driver.delete("ws-out", dispatch.workload_id, "PyTorchJob")


@pytest.mark.parametrize("stamper", [STAMP_PERL, STAMP_AWK], ids=["perl", "awk"])
def test_both_stampers_write_the_time_then_the_line_cut_at_the_limit(stamper: str) -> None:
    """A node without perl's Time::HiRes stamps with awk (whole seconds): same format."""
    long = "x" * (LINE_LIMIT + 10)
    before = time.time()
    out = subprocess.run(
        ["sh", "-c", f"printf 'one\\n\\ntwo %s\\nlast' {long} | {stamper}"],
        capture_output=True,
        check=True,
    ).stdout.decode()
    lines = out.split("\n")
    assert lines[-1] == ""  # the unterminated last line is ended
    stamps, texts_ = zip(*(line.split(" ", 1) for line in lines[:-1]), strict=True)
    assert texts_ == ("one", "", "two " + "x" * (LINE_LIMIT - 4), "last")
    assert all(re.fullmatch(r"\d+\.\d{6}", stamp) for stamp in stamps)
    # awk's srand() reads time(), which glibc takes from the coarse clock: up to a tick behind
    # time.time(), so a whole-second stamp may be the second before `before`'s
    assert all(int(before) - 1 <= float(stamp) <= time.time() for stamp in stamps)


def test_kubernetes_output_resumes_inside_one_second_without_repeating(kube: FakeKube) -> None:
    namespace = f"ns-{uuid.uuid4().hex[:6]}"
    pod_name = "p-master-0"
    kube.put(
        "v1/namespaces",
        None,
        namespace,
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}},
    )
    kube.put(
        "v1/pods",
        namespace,
        pod_name,
        {
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {"name": pod_name, "namespace": namespace, "labels": {WORKLOAD_ID_LABEL: "wk"}},
            "spec": {"nodeName": "gpu-1", "containers": [{"name": "pytorch", "image": "x"}]},
        },
    )
    kube.run_pod(namespace, pod_name)
    second = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    kube.logs[(namespace, pod_name)] = "a\nb\nc\n"
    kube.log_times[(namespace, pod_name)] = [
        second,
        second + timedelta(microseconds=5),
        second + timedelta(seconds=1),
    ]
    driver = KubernetesDriver(kube.kubeconfig())
    try:
        (pod,) = driver.list_pods(namespace, "wk")
        (first,) = driver.read_output(namespace, "wk", [pod], {}, max_bytes=40)
        assert [line.text for line in first.lines] == ["a", "b"]  # stops at its byte budget
        assert first.more and first.lines[0].at == second
        assert (first.after.seq, first.after.since, first.after.same) == (2, "2026-01-02T03:04:05Z", 2)
        kube.logs[(namespace, pod_name)] += "d\n"
        kube.log_times[(namespace, pod_name)].append(second + timedelta(seconds=1))
        (rest,) = driver.read_output(namespace, "wk", [pod], {first.key: first.after}, max_bytes=1000)
        assert [line.text for line in rest.lines] == ["c", "d"]
        assert (rest.node, rest.container, rest.stream) == ("gpu-1", "pytorch", "stdout")
        assert (rest.after.seq, rest.after.since, rest.after.same) == (4, "2026-01-02T03:04:06Z", 2)
        (nothing,) = driver.read_output(namespace, "wk", [pod], {rest.key: rest.after}, max_bytes=1000)
        assert nothing.lines == [] and nothing.after == rest.after
    finally:
        driver.close()


async def test_resume_positions_come_from_the_stored_lines(
    api: httpx.AsyncClient, platform: Platform
) -> None:
    second = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    lines = [
        NewLine(
            at=second + timedelta(microseconds=i),
            line=f"l{i}",
            workload_id="w1",
            dispatch_count=1,
            pod="p",
            node="n",
            container="main",
            stream="stdout",
            seq=i,
        )
        for i in range(1, 4)
    ] + [
        NewLine(
            at=second - timedelta(seconds=3),
            line="e",
            workload_id="w1",
            dispatch_count=1,
            pod="p",
            node="n",
            container="main",
            stream="stderr",
            seq=1,
        ),
        NewLine(
            at=second,
            line="other run",
            workload_id="w1",
            dispatch_count=2,
            pod="p",
            node="n",
            container="main",
            stream="stdout",
            seq=9,
        ),
    ]
    async with platform.state.sessions() as session, session.begin():
        await add_lines(session, lines)
    async with platform.state.sessions() as session:
        positions = await resume_positions(session, workload_id="w1", dispatch_count=1)
    assert positions == {
        ("p", "main", "stdout"): OutputPosition(seq=3, since="2026-01-02T03:04:05Z", same=3),
        ("p", "main", "stderr"): OutputPosition(seq=1, since="2026-01-02T03:04:02Z", same=1),
    }


# --- workloads end to end ------------------------------------------------------------------------


async def test_two_pod_workload_lines_carry_pod_node_container_stream_and_dispatch(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "collect")
    script = 'echo "out $RANK"; echo "err $RANK" >&2; sleep 0.5; echo "bye $RANK"'
    before = datetime.now(UTC) - timedelta(seconds=1)
    body = workload_body(workspace_id, script, resource={"replica": 2, "gpu": "8"})  # a node each
    workload_id = await submit(api, admin, body)
    detail = await wait_phase(api, admin, workload_id, "Succeeded", "Failed")
    assert detail["phase"] == "Succeeded", detail
    nodes = {p["podId"]: p["nodeName"] for p in detail["pods"]}
    rows = await stored(platform.state.sessions, workload_id)
    master, worker = f"{workload_id}-master-0", f"{workload_id}-worker-0"
    assert {(r.pod, r.node) for r in rows} == {(master, nodes[master]), (worker, nodes[worker])}
    assert nodes[master] != nodes[worker]
    for pod, rank in ((master, 0), (worker, 1)):
        assert texts(rows, pod=pod, stream="stdout") == [f"out {rank}", f"bye {rank}"]
        assert texts(rows, pod=pod, stream="stderr") == [f"err {rank}"]
    assert {(r.container, r.dispatch_count, r.service) for r in rows} == {("pytorch", 1, "")}
    assert [r.seq for r in rows if r.pod == master and r.stream == "stdout"] == [1, 2]
    assert all(before <= r.at <= datetime.now(UTC) for r in rows)


async def test_a_failover_keeps_the_first_runs_lines_apart(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, cluster: HostCluster
) -> None:
    workspace_id = await add_workspace(api, admin, cluster, "collect-again")
    script = 'echo "run $DISPATCH_COUNT"; if [ "$DISPATCH_COUNT" = 1 ]; then echo "failing" >&2; exit 3; fi'
    workload_id = await submit(api, admin, workload_body(workspace_id, script, maxRetry=1))
    detail = await wait_phase(api, admin, workload_id, "Succeeded", "Failed", within=90)
    assert detail["phase"] == "Succeeded", detail
    assert detail["dispatchCount"] == 2
    rows = await stored(platform.state.sessions, workload_id)
    pod = f"{workload_id}-master-0"
    assert [(r.dispatch_count, r.stream, r.seq, r.line) for r in rows] == [
        (1, "stderr", 1, "failing"),
        (1, "stdout", 1, "run 1"),
        (2, "stdout", 1, "run 2"),
    ]
    assert {r.pod for r in rows} == {pod}


async def test_kubernetes_workload_lines_are_collected_through_the_api_server(
    api: httpx.AsyncClient, admin: dict[str, str], platform: Platform, kube: FakeKube
) -> None:
    cluster = await add_kube_cluster(platform, kube, 1)
    workspace_id = await add_workspace(api, admin, cluster, "k8s-collect")
    workload_id = await submit(api, admin, workload_body(workspace_id, "echo hi"))
    pod = f"{workload_id}-master-0"

    async def created() -> bool:
        return kube.get("v1/pods", workspace_id, pod) is not None

    await until(created, within=30)
    kube.logs[(workspace_id, pod)] = "first\nsecond\n"
    kube.run_pod(workspace_id, pod)
    await wait_phase(api, admin, workload_id, "Running", within=30)

    async def two_stored() -> bool:
        return len(await stored(platform.state.sessions, workload_id)) == 2

    await until(two_stored, within=30)
    kube.logs[(workspace_id, pod)] += "last words\n"
    kube.end_pod(workspace_id, pod, 0)
    detail = await wait_phase(api, admin, workload_id, "Succeeded", "Failed", within=30)
    assert detail["phase"] == "Succeeded", detail
    rows = await stored(platform.state.sessions, workload_id)
    times = kube.log_times[(workspace_id, pod)]
    assert [(r.seq, r.line, r.at) for r in rows] == [
        (1, "first", times[0]),
        (2, "second", times[1]),
        (3, "last words", times[2]),
    ]
    assert {(r.pod, r.node, r.container, r.stream, r.dispatch_count) for r in rows} == {
        (pod, cluster.node_ids[0], "pytorch", "stdout", 1)
    }


# --- a worker killed while a pod prints --------------------------------------------------------


@pytest.fixture
async def killable(
    database_url: str, temporal_env: WorkflowEnvironment, tmp_path: Path, api: httpx.AsyncClient
) -> AsyncIterator[tuple[Platform, WorkerProcesses]]:
    """The API in-process and its worker in a separate process (to be SIGKILLed), on the shared
    Temporal server and the module's database (emptied afterwards by `api`)."""
    settings = make_settings(tmp_path, database_url, temporal_env.client.service_client.config.target_host)
    env = worker_env(
        settings,
        workload_poll_seconds="0.5",
        log_collect_interval_seconds="0.5",
        scheduler_period_seconds="5",
    )
    workers = WorkerProcesses(env, tmp_path)
    app = create_app(settings)
    try:
        async with app.router.lifespan_context(app):
            state: AppState = app.state.primus
            await ensure_admin(state.sessions, settings)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
                yield Platform(settings=settings, state=state, http=http), workers
    finally:
        workers.close()


LINES = 2000
PRINT_NUMBERED = (
    f'i=1; while [ $i -le {LINES} ]; do echo "n=$i"; [ $((i % 50)) -ne 0 ] || sleep 0.9; i=$((i + 1)); done'
)
"""2000 numbered lines over about 36 s: the new worker's watch (retried after the 30 s heartbeat
timeout) starts while the pod still prints."""


async def test_a_killed_worker_loses_and_repeats_no_line(
    killable: tuple[Platform, WorkerProcesses], farm: SSHFarm, hosts: list[SSHHost]
) -> None:
    platform, workers = killable
    http = platform.http
    admin = await login(http, "root", ADMIN_PASSWORD)
    first = workers.start()
    cluster = await add_host_cluster(platform, farm, hosts[:1])
    workspace_id = await add_workspace(http, admin, cluster, "killed")
    workload_id = await submit(http, admin, workload_body(workspace_id, PRINT_NUMBERED))
    await wait_phase(http, admin, workload_id, "Running", within=60)

    async def some_stored() -> bool:
        return len(await stored(platform.state.sessions, workload_id)) >= 100

    await until(some_stored, within=30)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    at_kill = len(await stored(platform.state.sessions, workload_id))
    assert 100 <= at_kill < LINES // 2, at_kill
    workers.start()

    detail = await wait_phase(http, admin, workload_id, "Succeeded", "Failed", within=120)
    assert detail["phase"] == "Succeeded", detail
    rows = await stored(platform.state.sessions, workload_id)
    assert [r.line for r in rows] == [f"n={i}" for i in range(1, LINES + 1)]
    assert [r.seq for r in rows] == list(range(1, LINES + 1))
    assert {(r.stream, r.dispatch_count) for r in rows} == {("stdout", 1)}
    assert [r.at for r in rows] == sorted(r.at for r in rows)
