"""HostDriver: pods as real processes, on two sshd test hosts and on the local host.

The sshd hosts are loopback addresses of this machine sharing one login user, so the tests can
also look at the processes directly (e.g. that a stopped pod's processes are really gone).
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from domain.errors import NotFound
from domain.workloads import PodAssignment, WorkloadDispatch
from drivers.execution import DriverError
from drivers.host import HostDriver, HostNode
from drivers.ssh import SSHTarget
from tests.execution_contract import (
    EXIT_FILE,
    ExecutionDriverContract,
    Harness,
    make_dispatch,
    pods_by_name,
    wait_for,
)
from tests.fixtures.sshd import SSHFarm, sshd_farm

SSH_PORT = 16449  # inside this module's port range, so parallel sshd tests never collide
RENDEZVOUS_PORT = 16452


class ProcessController:
    """Real processes run by themselves: wait for them, and write their exit file to end them."""

    def __init__(self, driver: HostDriver) -> None:
        self.driver = driver

    def start(self, dispatch: WorkloadDispatch) -> list[str]:
        expected = len(self.driver.plan(dispatch))

        def running() -> list[str] | None:
            pods = self.driver.list_pods(dispatch.namespace, dispatch.workload_id)
            ok = len(pods) == expected and all(p.phase == "Running" for p in pods)
            return [p.name for p in pods] if ok else None

        return wait_for(running, what="pods to run")

    def finish(self, namespace: str, pod: str, exit_code: int) -> None:
        _, folder = self.driver.locate(namespace, pod)
        Path(folder, EXIT_FILE).write_text(str(exit_code))


@pytest.fixture(scope="module")
def farm() -> Iterator[SSHFarm]:
    with sshd_farm(port=SSH_PORT) as started:
        yield started


@pytest.fixture(scope="module")
def ssh_nodes(farm: SSHFarm) -> list[HostNode]:
    hosts = farm.add_hosts(2)
    return [
        HostNode(
            name=f"host-{i}",
            address=host.address,
            ssh=SSHTarget(
                host=host.address, port=host.port, username=farm.user, private_key_pem=farm.private_key_pem
            ),
        )
        for i, host in enumerate(hosts)
    ]


@pytest.fixture
def ssh_root(farm: SSHFarm) -> Iterator[str]:
    root = farm.home / f".primus-test-{uuid.uuid4().hex[:8]}"
    yield str(root)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture
def ssh_driver(ssh_nodes: list[HostNode], ssh_root: str) -> Iterator[HostDriver]:
    driver = HostDriver(ssh_nodes, root=ssh_root, grace_seconds=2)
    yield driver
    driver.close()


@pytest.fixture
def local_driver(tmp_path: Path) -> Iterator[HostDriver]:
    driver = HostDriver(
        [HostNode(name="control-plane", address="127.0.0.1")], root=str(tmp_path), grace_seconds=2
    )
    yield driver
    driver.close()


def _harness(driver: HostDriver) -> Iterator[Harness]:
    namespace = f"ws-{uuid.uuid4().hex[:8]}"
    driver.ensure_namespace(namespace)
    yield Harness(driver=driver, controller=ProcessController(driver), namespace=namespace)
    driver.delete_namespace(namespace)


class TestHostDriverOverSSHContract(ExecutionDriverContract):
    """The shared contract, pods on two sshd hosts."""

    @pytest.fixture
    def harness(self, ssh_driver: HostDriver) -> Iterator[Harness]:
        yield from _harness(ssh_driver)


class TestHostDriverLocalContract(ExecutionDriverContract):
    """The shared contract, pods on the control-plane host itself."""

    @pytest.fixture
    def harness(self, local_driver: HostDriver) -> Iterator[Harness]:
        yield from _harness(local_driver)


def _gone(pid: int) -> bool:
    """True when the process no longer exists (or is a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _log_value(log: str, key: str) -> str:
    for line in log.splitlines():
        for word in line.split():
            if word.startswith(f"{key}="):
                return word.split("=", 1)[1]
    raise AssertionError(f"{key} not in log {log!r}")


def test_pytorchjob_pods_get_rank_world_size_and_master(
    ssh_driver: HostDriver, ssh_nodes: list[HostNode]
) -> None:
    script = (
        'echo "RANK=$RANK WORLD_SIZE=$WORLD_SIZE MASTER_ADDR=$MASTER_ADDR MASTER_PORT=$MASTER_PORT '
        'LOCAL_RANK=$LOCAL_RANK POD=$PRIMUS_POD_ID WID=$PRIMUS_WORKLOAD_ID NCCL_DEBUG=$NCCL_DEBUG PWD=$(pwd)"'
    )
    dispatch = make_dispatch("ws-env", replica=2, script=script, env={"NCCL_DEBUG": "INFO"})
    dispatch = dispatch.model_copy(update={"job_port": 23456})
    ssh_driver.apply(dispatch)

    def done() -> bool:
        pods = ssh_driver.list_pods("ws-env", dispatch.workload_id)
        return len(pods) == 2 and all(p.phase == "Succeeded" for p in pods)

    wait_for(done, what="both pods to succeed")
    pods = pods_by_name(ssh_driver, dispatch)
    master, worker = f"{dispatch.workload_id}-master-0", f"{dispatch.workload_id}-worker-0"
    assert (pods[master].node, pods[worker].node) == ("host-0", "host-1")
    assert pods[master].host_ip == ssh_nodes[0].address
    for pod, rank in ((master, "0"), (worker, "1")):
        log = ssh_driver.read_log("ws-env", pod)
        assert _log_value(log, "RANK") == rank == pods[pod].rank
        assert _log_value(log, "WORLD_SIZE") == "2"
        assert _log_value(log, "MASTER_ADDR") == ssh_nodes[0].address
        assert _log_value(log, "MASTER_PORT") == "23456"
        assert _log_value(log, "LOCAL_RANK") == "0"
        assert _log_value(log, "POD") == pod
        assert _log_value(log, "WID") == dispatch.workload_id
        assert _log_value(log, "NCCL_DEBUG") == "INFO"
        assert _log_value(log, "PWD").endswith(f"/ws-env/{dispatch.workload_id}/{pod}")
        assert pods[pod].exit_codes == {"pytorch": 0}
    ssh_driver.delete("ws-env", dispatch.workload_id, "PyTorchJob")
    assert ssh_driver.list_pods("ws-env", dispatch.workload_id) == []


def _succeeded(driver: HostDriver, dispatch: WorkloadDispatch, count: int) -> bool:
    pods = driver.list_pods(dispatch.namespace, dispatch.workload_id)
    return len(pods) == count and all(p.phase == "Succeeded" for p in pods)


def test_assigned_pods_run_where_the_scheduler_put_them_with_their_gpus(
    ssh_driver: HostDriver, ssh_nodes: list[HostNode]
) -> None:
    script = (
        'echo "RANK=$RANK MASTER_ADDR=$MASTER_ADDR CUDA=$CUDA_VISIBLE_DEVICES HIP=$HIP_VISIBLE_DEVICES '
        'GPUS_PER_NODE=$GPUS_PER_NODE LOCAL_WORLD_SIZE=$LOCAL_WORLD_SIZE"'
    )
    dispatch = make_dispatch("ws-assign", replica=2, script=script, env={"LOCAL_WORLD_SIZE": "1"})
    dispatch.spec.resource.gpu = "2"
    # Reverse order: the master on host-1, the worker on host-0 (round-robin would do the opposite).
    assignments = [PodAssignment(node="host-1", gpus=[4, 5]), PodAssignment(node="host-0", gpus=[0, 1])]
    dispatch = dispatch.model_copy(update={"assignments": assignments})
    ssh_driver.apply(dispatch)
    wait_for(lambda: _succeeded(ssh_driver, dispatch, 2), what="both pods to succeed")
    pods = pods_by_name(ssh_driver, dispatch)
    master, worker = f"{dispatch.workload_id}-master-0", f"{dispatch.workload_id}-worker-0"
    assert (pods[master].node, pods[worker].node) == ("host-1", "host-0")
    assert (pods[master].host_ip, pods[worker].host_ip) == (ssh_nodes[1].address, ssh_nodes[0].address)
    for pod, rank, devices in ((master, "0", "4,5"), (worker, "1", "0,1")):
        log = ssh_driver.read_log("ws-assign", pod)
        assert _log_value(log, "RANK") == rank == pods[pod].rank
        assert _log_value(log, "MASTER_ADDR") == ssh_nodes[1].address
        assert _log_value(log, "CUDA") == devices
        assert _log_value(log, "HIP") == devices
        assert _log_value(log, "GPUS_PER_NODE") == "2"
        assert _log_value(log, "LOCAL_WORLD_SIZE") == "1"  # the workload's own env wins
    ssh_driver.delete("ws-assign", dispatch.workload_id, "PyTorchJob")


def test_a_bad_assignment_is_a_driver_error_and_starts_nothing(ssh_driver: HostDriver) -> None:
    dispatch = make_dispatch("ws-bad", replica=2, script="sleep 300")
    unknown = dispatch.model_copy(
        update={"assignments": [PodAssignment(node="host-0"), PodAssignment(node="nope")]}
    )
    with pytest.raises(DriverError, match="unknown nodes: nope"):
        ssh_driver.apply(unknown)
    assert ssh_driver.list_pods("ws-bad", dispatch.workload_id) == []
    short = dispatch.model_copy(update={"assignments": [PodAssignment(node="host-0")]})
    with pytest.raises(DriverError, match="1 pod assignments for the 2 pods"):
        ssh_driver.apply(short)
    assert ssh_driver.list_pods("ws-bad", dispatch.workload_id) == []


RENDEZVOUS = """\
echo "PWD=$(pwd)"
python3 - <<'PY'
import os, socket, time
addr, port, rank = os.environ["MASTER_ADDR"], int(os.environ["MASTER_PORT"]), os.environ["RANK"]
if rank == "0":
    with socket.create_server((addr, port)) as server:
        server.settimeout(20)
        conn, _ = server.accept()
        print("master got", conn.recv(64).decode(), flush=True)
else:
    deadline = time.monotonic() + 20
    while True:
        try:
            sock = socket.create_connection((addr, port), timeout=2)
            break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    sock.sendall(f"rank-{rank}".encode())
    print("worker sent", flush=True)
PY
"""


def test_two_cpu_pods_assigned_to_one_node_both_run_and_meet(
    ssh_driver: HostDriver, ssh_nodes: list[HostNode]
) -> None:
    dispatch = make_dispatch("ws-share", replica=2, script=RENDEZVOUS)
    assignments = [PodAssignment(node="host-1"), PodAssignment(node="host-1")]
    dispatch = dispatch.model_copy(update={"assignments": assignments, "job_port": RENDEZVOUS_PORT})
    ssh_driver.apply(dispatch)
    wait_for(lambda: _succeeded(ssh_driver, dispatch, 2), what="both pods to succeed")
    pods = pods_by_name(ssh_driver, dispatch)
    master, worker = f"{dispatch.workload_id}-master-0", f"{dispatch.workload_id}-worker-0"
    assert {p.node for p in pods.values()} == {"host-1"}
    logs = {pod: ssh_driver.read_log("ws-share", pod) for pod in (master, worker)}
    assert "master got rank-1" in logs[master]  # the worker reached MASTER_ADDR:MASTER_PORT
    assert "worker sent" in logs[worker]
    assert _log_value(logs[master], "PWD") != _log_value(logs[worker], "PWD")
    for pod in (master, worker):
        assert "CUDA_VISIBLE_DEVICES" not in Path(ssh_driver.locate("ws-share", pod)[1], "env").read_text()
    ssh_driver.delete("ws-share", dispatch.workload_id, "PyTorchJob")


def test_stop_sends_sigterm_then_sigkill_after_the_grace_period(ssh_driver: HostDriver) -> None:
    script = "trap '' TERM; sleep 300 & echo child=$! main=$$; wait"
    dispatch = make_dispatch("ws-stop", kind="Deployment", replica=1, script=script)
    ssh_driver.apply(dispatch)
    (pod,) = ProcessController(ssh_driver).start(dispatch)
    log = wait_for(lambda: (text := ssh_driver.read_log("ws-stop", pod)) and "child=" in text and text)
    pids = [int(_log_value(log, "child")), int(_log_value(log, "main"))]
    started = time.monotonic()
    ssh_driver.delete("ws-stop", dispatch.workload_id, "Deployment")
    took = time.monotonic() - started
    assert 1.5 <= took < 10, took  # TERM was ignored, so it waited the 2 s grace, then killed
    wait_for(lambda: all(_gone(pid) for pid in pids), timeout=5, what="the pod's processes to die")
    assert ssh_driver.list_pods("ws-stop", dispatch.workload_id) == []


def test_a_graceful_stop_does_not_wait_for_the_grace_period(local_driver: HostDriver) -> None:
    dispatch = make_dispatch("ws-quick", kind="StatefulSet", replica=2, script="sleep 300")
    local_driver.apply(dispatch)
    ProcessController(local_driver).start(dispatch)
    started = time.monotonic()
    local_driver.delete("ws-quick", dispatch.workload_id, "StatefulSet")
    assert time.monotonic() - started < 1.5
    assert local_driver.list_pods("ws-quick", dispatch.workload_id) == []


def test_a_restarted_worker_finds_running_pods_and_does_not_relaunch(
    ssh_driver: HostDriver, ssh_nodes: list[HostNode], ssh_root: str
) -> None:
    dispatch = make_dispatch("ws-restart", replica=2)
    ssh_driver.apply(dispatch)
    names = ProcessController(ssh_driver).start(dispatch)
    before = pods_by_name(ssh_driver, dispatch)
    pid_files = {name: Path(ssh_driver.locate("ws-restart", name)[1], "pid") for name in names}
    pids = {name: path.read_text() for name, path in pid_files.items()}
    ssh_driver.close()  # the old worker is gone

    fresh = HostDriver(ssh_nodes, root=ssh_root, grace_seconds=2)
    try:
        after = pods_by_name(fresh, dispatch)
        assert {n: p.phase for n, p in after.items()} == dict.fromkeys(names, "Running")
        assert {n: p.start_time for n, p in after.items()} == {n: p.start_time for n, p in before.items()}
        fresh.apply(dispatch)  # a retried activity
        assert {name: path.read_text() for name, path in pid_files.items()} == pids
        assert fresh.read_log("ws-restart", names[0]).count("started") == 1
        ProcessController(fresh).finish("ws-restart", names[0], 0)
        wait_for(lambda: pods_by_name(fresh, dispatch)[names[0]].phase == "Succeeded", what="exit seen")
        fresh.delete("ws-restart", dispatch.workload_id, "PyTorchJob")
    finally:
        fresh.close()


def test_a_killed_pod_is_failed(local_driver: HostDriver) -> None:
    dispatch = make_dispatch("ws-kill", kind="Deployment", replica=1, script="sleep 300")
    local_driver.apply(dispatch)
    (pod,) = ProcessController(local_driver).start(dispatch)
    pid = int(Path(local_driver.locate("ws-kill", pod)[1], "pid").read_text())
    os.killpg(pid, signal.SIGKILL)
    status = wait_for(lambda: (p := pods_by_name(local_driver, dispatch)[pod]).ended and p, what="failure")
    assert status.phase == "Failed"
    assert status.containers[0].exit_code == 137
    assert status.containers[0].reason == "Killed"
    local_driver.delete("ws-kill", dispatch.workload_id, "Deployment")


def test_specified_nodes_place_the_pods(ssh_driver: HostDriver) -> None:
    dispatch = make_dispatch(
        "ws-pin", kind="StatefulSet", replica=1, specified_nodes=["host-1"], script="true"
    )
    assert [(p.name, p.node.name) for p in ssh_driver.plan(dispatch)] == [
        (f"{dispatch.workload_id}-0", "host-1")
    ]
    with pytest.raises(DriverError, match="unknown nodes: nope"):
        ssh_driver.plan(make_dispatch("ws-pin", specified_nodes=["nope"]))


def test_deleting_the_namespace_kills_its_pods(local_driver: HostDriver) -> None:
    local_driver.ensure_namespace("ws-gone")
    dispatch = make_dispatch("ws-gone", kind="Deployment", replica=1, script="sleep 300")
    local_driver.apply(dispatch)
    (pod,) = ProcessController(local_driver).start(dispatch)
    pid = int(Path(local_driver.locate("ws-gone", pod)[1], "pid").read_text())
    local_driver.delete_namespace("ws-gone")
    wait_for(lambda: _gone(pid), timeout=5, what="the pod to be killed")
    assert local_driver.list_pods("ws-gone", dispatch.workload_id) == []


def test_what_hosts_do_not_have(local_driver: HostDriver) -> None:
    with pytest.raises(NotFound):
        local_driver.describe_service("ws", "w")
    with pytest.raises(NotFound):
        local_driver.sync_node("no-such-node", labels={"a": "b"})
    local_driver.sync_node("control-plane", labels={"a": "b"})
    with pytest.raises(DriverError, match="DNS-1123"):
        local_driver.list_pods("../etc", "w")
    with pytest.raises(DriverError, match="at least one node"):
        HostDriver([])
