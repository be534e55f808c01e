"""The cluster workflow survives a killed worker: a worker process is SIGKILLed while kubespray's
cluster.yml streams its output, a second worker resumes the provisioning step (running the
idempotent playbook again, and saying so in the cluster's log) and the cluster ends Ready. While it
runs, the search attributes and heartbeat details show the step; the orphaned playbook of the
killed attempt is stopped before the step runs again. The history then replays."""

from __future__ import annotations

import json
import os
import signal
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import select
from temporalio.client import Client
from temporalio.common import SearchAttributePair, TypedSearchAttributes

from db.clusters import Cluster
from db.encryption import SecretBox
from db.logs import OperationLog
from db.migrate import upgrade
from db.nodes import Node
from db.session import SessionFactory, create_engine, session_factory
from domain import clusters as rules
from domain.timefmt import utcnow
from tests.fixtures.clusters import install_kubespray_standin, standin_calls, standin_running
from tests.fixtures.histories import replay_and_keep
from tests.fixtures.nodes import add_ssh_secret
from tests.fixtures.polling import until
from tests.fixtures.sshd import SSHFarm, SSHHost, sshd_farm
from tests.fixtures.worker_processes import WorkerProcesses
from workflows.cluster import ClusterWorkflow
from workflows.common import CLUSTER, PHASE, RESOURCE_ID, RESOURCE_TYPE

KUBECONFIG = {
    "apiVersion": "v1",
    "kind": "Config",
    "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:16461"}}],
    "users": [{"name": "u", "user": {"token": "t"}}],
    "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
    "current-context": "c",
}


@pytest.fixture(scope="module")
def host() -> Iterator[tuple[SSHFarm, SSHHost]]:
    with sshd_farm() as farm:
        yield farm, farm.add_hosts(1, addresses=["127.0.0.158"])[0]


@pytest.fixture
async def setup(
    temporal_client: Client, host: tuple[SSHFarm, SSHHost], tmp_path: Path
) -> AsyncIterator[tuple[SessionFactory, WorkerProcesses, dict[str, str]]]:
    farm, _ = host
    url = f"sqlite+aiosqlite:///{tmp_path / 'primus.db'}"
    upgrade(url)
    key = Fernet.generate_key().decode()
    run = uuid.uuid4().hex[:8]
    env = {
        **os.environ,
        "PRIMUS_DATABASE_URL": url,
        "PRIMUS_TEMPORAL_ADDRESS": temporal_client.service_client.config.target_host,
        "PRIMUS_SECRET_KEY": key,
        "PRIMUS_QUEUE_CONTROL": f"control-{run}",
        "PRIMUS_QUEUE_SSH": f"ssh-{run}",
        "PRIMUS_QUEUE_IMAGES": f"images-{run}",
        "PRIMUS_NODE_COMMANDS": json.dumps({"container_run": install_kubespray_standin(farm, KUBECONFIG)}),
    }
    engine = create_engine(url)
    sessions = session_factory(engine)
    await add_ssh_secret(sessions, SecretBox(key.encode()), "ssh-key", farm, key=True)
    workers = WorkerProcesses(env, tmp_path)
    try:
        yield sessions, workers, env
    finally:
        workers.close()
        await engine.dispose()


async def add_cluster(sessions: SessionFactory, cluster_id: str, host: SSHHost) -> None:
    """A Ready node and a kubespray cluster on it with the slow stand-in image, as the API records them."""
    now = utcnow()
    node_id = f"{cluster_id}-node"
    async with sessions() as session, session.begin():
        session.add(
            Node(
                id=node_id,
                hostname="",
                node_name=host.address,
                private_ip=host.address,
                port=host.port,
                labels={},
                taints=[],
                flavor_id="f",
                template_id="t",
                ssh_secret_id="ssh-key",
                cluster_id=cluster_id,
                phase="Ready",
                addons_done=[],
                created_at=now,
                updated_at=now,
            )
        )
        session.add(
            Cluster(
                id=cluster_id,
                provisioner="kubespray",
                control_plane_nodes=[node_id],
                ssh_secret_id="ssh-key",
                kube_spray_image="example.com/slow:1",
                kube_pods_subnet="10.0.0.0/16",
                kube_service_address="10.96.0.0/16",
                kube_network_plugin="flannel",
                kube_version="1.32.5",
                phase=rules.CREATING,
                created_at=now,
                updated_at=now,
            )
        )


async def log_text(sessions: SessionFactory, cluster_id: str) -> str:
    async with sessions() as session:
        rows = await session.execute(
            select(OperationLog.line)
            .where(OperationLog.resource_type == "cluster", OperationLog.resource_id == cluster_id)
            .order_by(OperationLog.id)
        )
        return "\n".join(rows.scalars())


async def test_killed_worker_resumes_provisioning(
    temporal_client: Client,
    host: tuple[SSHFarm, SSHHost],
    setup: tuple[SessionFactory, WorkerProcesses, dict[str, str]],
) -> None:
    farm, ssh_host = host
    sessions, workers, env = setup
    cluster_id = f"kill-{uuid.uuid4().hex[:6]}"
    await add_cluster(sessions, cluster_id, ssh_host)
    first = workers.start()
    handle = await temporal_client.start_workflow(
        ClusterWorkflow.run,
        rules.ClusterWorkflowInput(
            cluster_id=cluster_id,
            provisioner="kubespray",
            ssh_queue=env["PRIMUS_QUEUE_SSH"],
            timings=rules.ClusterTimings(
                connect_timeout=3, provision_timeout=120, heartbeat_timeout=2, attempts=3, retry_interval=0.5
            ),
        ),
        id=rules.cluster_workflow_id(cluster_id),
        task_queue=env["PRIMUS_QUEUE_CONTROL"],
        search_attributes=TypedSearchAttributes(
            [
                SearchAttributePair(RESOURCE_TYPE, "cluster"),
                SearchAttributePair(RESOURCE_ID, cluster_id),
                SearchAttributePair(CLUSTER, cluster_id),
            ]
        ),
    )

    async def streaming() -> bool:
        described = await handle.describe()
        details: list[dict[str, Any]] = [
            json.loads(p.heartbeat_details.payloads[0].data)
            for p in described.raw_description.pending_activities
            if p.heartbeat_details.payloads
        ]
        return (
            "TASK [slow step 3]" in await log_text(sessions, cluster_id)
            and described.typed_search_attributes.get(PHASE) == "Provisioning"
            and any(d["step"] == "Provisioning" and d["lines"] > 0 for d in details)
        )

    await until(streaming)
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    workers.start()

    async def ready() -> bool:
        async with sessions() as session:
            cluster = await session.get(Cluster, cluster_id)
            return cluster is not None and cluster.phase in (rules.READY, rules.FAILED)

    await until(ready, within=90)
    async with sessions() as session:
        cluster = await session.get(Cluster, cluster_id)
        node = await session.get(Node, f"{cluster_id}-node")
    assert cluster is not None and cluster.phase == rules.READY, cluster.message if cluster else None
    assert cluster.endpoint == "127.0.0.1:16461" and cluster.kubeconfig_encrypted
    assert node is not None and node.is_control_plane
    text = await log_text(sessions, cluster_id)
    assert "resuming Provisioning after an interrupted attempt" in text and text.endswith("phase Ready")
    assert sum("cluster.yml" in call for call in standin_calls(farm)) == 2
    # the first attempt's playbook lost its session, not its life: the retry stopped it first
    assert "stopping the playbook still running from an earlier attempt" in text
    assert not standin_running()

    async with sessions() as session, session.begin():
        doomed = await session.get(Cluster, cluster_id)
        assert doomed is not None
        doomed.deleting_at = utcnow()  # as DELETE /clusters/{id} records it
    await handle.signal(ClusterWorkflow.delete)
    assert await handle.result() == "deleted"
    async with sessions() as session:
        assert await session.get(Cluster, cluster_id) is None
    await replay_and_keep(handle, [ClusterWorkflow], "cluster-worker-killed-claim-update")
