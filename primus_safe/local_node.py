"""Laptop mode: `primus-safe up` registers the machine it runs on as a node and gives it a cluster and
a default workspace, so a fresh installation can run a workload with no other machine.

Everything goes through the API (in-process, as the `root` administrator), so the resources are
made by the same routes and workflows as any other: the node `local` is onboarded by `node/local`
(through the local transport instead of SSH), the `hosts` cluster `local` by `cluster/local`, the
workspace `local-default` by `workspace/local-default`; all of them show in the API and the
Temporal UI. Each step first looks the resource up, so running `up` again creates nothing twice.

The flavor `local` is derived from this machine's facts (the same facts script the node's facts
step runs): its GPUs, and CPU cores and memory capped by `PRIMUS_LOCAL_NODE_CPU` /
`PRIMUS_LOCAL_NODE_MEMORY` (default half of each), so the scheduler never admits more than that
and the machine stays usable. The host driver does not confine processes (no cgroups): the cap is
what workloads may *request*, not a hard limit on what they use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import httpx

from api.security import new_token, token_hash
from db.session import SessionFactory
from db.users import UserToken, get_user_by_name
from domain import nodes as node_rules
from domain import quantity as q
from domain import workspaces as workspace_rules
from domain.nodes import NodeFacts
from domain.timefmt import utcnow
from drivers.local import LocalConnection
from primus_safe.bootstrap import ADMIN_NAME
from primus_safe.settings import Settings

log = logging.getLogger(__name__)

NODE_ID = node_rules.LOCAL_NODE_ID
NODE_ADDRESS = "127.0.0.1"
FLAVOR_ID = "local"
TEMPLATE_ID = "local"
CLUSTER_ID = "local"
WORKSPACE_NAME = "default"
WORKSPACE_ID = workspace_rules.workspace_id(CLUSTER_ID, WORKSPACE_NAME)  # local-default
TIMEOUT_SECONDS = 600.0
TOKEN_LIFETIME = timedelta(minutes=30)
MI = 1024 * 1024

# Required by the cluster request; the hosts provisioner ignores them (no Kubernetes).
_CLUSTER_FIELDS = {
    "kubeSprayImage": "quay.io/kubespray/kubespray:v2.27.0",
    "kubePodsSubnet": "10.233.64.0/18",
    "kubeServiceAddress": "10.233.0.0/18",
    "kubeVersion": "1.32.5",
}
_GPU_RESOURCES = {"amd-smi": "amd.com/gpu", "rocm-smi": "amd.com/gpu", "nvidia-smi": "nvidia.com/gpu"}


class LocalNodeError(RuntimeError):
    """A step of the local set-up failed; the message says which and why."""


@dataclass
class LocalNodeSetup:
    """What `ensure_local_node` found or made; `created` lists what this run created."""

    flavor: dict[str, Any]
    node_id: str = NODE_ID
    cluster_id: str = CLUSTER_ID
    workspace_id: str = WORKSPACE_ID
    created: list[str] = field(default_factory=list)


# --- the flavor ----------------------------------------------------------------------------------


def discover_facts(timeout: float = 60) -> NodeFacts:
    """This machine's facts, read by the node facts step's own script through the local transport."""
    with LocalConnection() as conn:
        return node_rules.parse_facts(conn.run(["sh", "-c", node_rules.FACTS_SCRIPT], timeout=timeout).output)


def local_flavor(facts: NodeFacts, *, cpu: int | None, memory: str | None) -> dict[str, Any]:
    """The flavor request for this machine: every GPU it has; CPU and memory capped by the settings
    (default: every core, since the CPU reserve already keeps at least one from workloads, and half
    the memory), never more than the machine has."""
    if facts.cpu_cores < 1 or facts.memory_bytes < MI:
        raise LocalNodeError(f"cannot read this machine's CPU count and memory (facts: {facts})")
    cores = min(cpu or facts.cpu_cores, facts.cpu_cores)
    wanted = int(q.parse(memory)) if memory else facts.memory_bytes // 2
    mebibytes = max(1, min(wanted, facts.memory_bytes) // MI)
    spec: dict[str, Any] = {"cpu": {"quantity": str(cores)}, "memory": f"{mebibytes}Mi"}
    if facts.gpu_count and facts.gpu_tool in _GPU_RESOURCES:
        spec["gpu"] = {
            "product": (facts.gpu_products or [""])[0][:100],
            "resourceName": _GPU_RESOURCES[facts.gpu_tool],
            "quantity": str(facts.gpu_count),
        }
    return spec


def _same_flavor(view: dict[str, Any], spec: dict[str, Any]) -> bool:
    gpu = view.get("gpu") or {}
    wanted_gpu = spec.get("gpu") or {}
    return (
        str(view["cpu"]["quantity"]) == spec["cpu"]["quantity"]
        and view["memory"] == spec["memory"]
        and gpu.get("resourceName") == wanted_gpu.get("resourceName")
        and str(gpu.get("quantity", "")) == wanted_gpu.get("quantity", "")
    )


# --- calling the API -----------------------------------------------------------------------------


class _Api:
    def __init__(self, http: httpx.AsyncClient, headers: dict[str, str]) -> None:
        self._http = http
        self._headers = headers

    async def get(self, path: str) -> dict[str, Any] | None:
        """The resource, or None when the API says 404."""
        resp = await self._http.get(f"/api/v1{path}", headers=self._headers)
        if resp.status_code == 404:
            return None
        self._check(resp, f"GET {path}")
        body: dict[str, Any] = resp.json()
        return body

    async def send(self, method: str, path: str, body: dict[str, Any]) -> None:
        resp = await self._http.request(method, f"/api/v1{path}", json=body, headers=self._headers)
        self._check(resp, f"{method} {path}")

    @staticmethod
    def _check(resp: httpx.Response, what: str) -> None:
        if resp.status_code >= 400:
            try:
                reason = resp.json().get("errorMessage") or resp.text
            except ValueError:
                reason = resp.text
            raise LocalNodeError(f"{what} answered {resp.status_code}: {reason}")


async def _wait(
    api: _Api,
    path: str,
    done: Callable[[dict[str, Any]], bool],
    failed: Callable[[dict[str, Any]], str],
    *,
    what: str,
    deadline: float,
    poll: float,
) -> dict[str, Any]:
    """Poll `path` until `done`; a non-empty `failed` reason or the deadline ends the wait."""
    last: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        last = await api.get(path)
        if last is None:
            raise LocalNodeError(f"{what} disappeared")
        if done(last):
            return last
        reason = failed(last)
        if reason:
            raise LocalNodeError(f"{what}: {reason}")
        await asyncio.sleep(poll)
    last = last or {}
    raise LocalNodeError(
        f"{what} is still {last.get('phase', '?')} after the set-up timeout: {last.get('message', '')}"
    )


def _node_failure(node: dict[str, Any]) -> str:
    phase = node.get("phase", "")
    if phase in ("", node_rules.READY) or phase in node_rules.CLUSTER_BUSY_PHASES:
        return ""
    return f"onboarding ended in phase {phase}: {node.get('message', '')}"


# --- the set-up ----------------------------------------------------------------------------------


async def ensure_local_node(
    http: httpx.AsyncClient,
    settings: Settings,
    *,
    headers: dict[str, str],
    say: Callable[[str], None] = log.info,
    facts: NodeFacts | None = None,
    within: float = TIMEOUT_SECONDS,
    poll: float = 0.5,
) -> LocalNodeSetup:
    """Make (or find) the flavor, template, node, cluster and default workspace of this machine and
    wait until the node and the cluster are Ready and the workspace Running.

    `http` reaches the API (its base URL without `/api/v1`), `headers` authenticate an administrator.
    """
    deadline = time.monotonic() + within
    api = _Api(http, headers)
    if facts is None:
        facts = await asyncio.to_thread(discover_facts)
    spec = local_flavor(facts, cpu=settings.local_node_cpu, memory=settings.local_node_memory)
    setup = LocalNodeSetup(flavor=spec)

    flavor = await api.get(f"/nodeflavors/{FLAVOR_ID}")
    if flavor is None:
        await api.send("POST", "/nodeflavors", {"name": FLAVOR_ID, **spec})
        setup.created.append(f"flavor {FLAVOR_ID}")
    elif not _same_flavor(flavor, spec):
        await api.send("PATCH", f"/nodeflavors/{FLAVOR_ID}", {"gpu": None, **spec})
        say(f"local node: flavor {FLAVOR_ID} updated to {_describe(spec)}")

    if await api.get(f"/nodetemplates/{TEMPLATE_ID}") is None:
        await api.send("POST", "/nodetemplates", {"templateId": TEMPLATE_ID, "addOnTemplates": []})
        setup.created.append(f"node template {TEMPLATE_ID}")

    if await api.get(f"/nodes/{NODE_ID}") is None:
        await api.send(
            "POST",
            "/nodes",
            {"privateIP": NODE_ADDRESS, "local": True, "flavorId": FLAVOR_ID, "templateId": TEMPLATE_ID},
        )
        setup.created.append(f"node {NODE_ID}")
        say(f"local node: registering this machine as node {NODE_ID} ({_describe(spec)})")
    node = await _wait(
        api,
        f"/nodes/{NODE_ID}",
        lambda n: n["phase"] == node_rules.READY,
        _node_failure,
        what=f"node {NODE_ID}",
        deadline=deadline,
        poll=poll,
    )

    if await api.get(f"/clusters/{CLUSTER_ID}") is None:
        if node["clusterId"]:
            raise LocalNodeError(f"node {NODE_ID} is in cluster {node['clusterId']}, not {CLUSTER_ID}")
        await api.send(
            "POST",
            "/clusters",
            {"name": CLUSTER_ID, "nodes": [NODE_ID], "provisioner": "hosts", **_CLUSTER_FIELDS},
        )
        setup.created.append(f"cluster {CLUSTER_ID}")
        say(f"local node: creating the hosts cluster {CLUSTER_ID}")
    await _wait(
        api,
        f"/clusters/{CLUSTER_ID}",
        lambda c: c["phase"] == "Ready",
        lambda c: f"{c['phase']}: {c.get('message', '')}" if c["phase"] in ("Failed", "Deleting") else "",
        what=f"cluster {CLUSTER_ID}",
        deadline=deadline,
        poll=poll,
    )

    if await api.get(f"/workspaces/{WORKSPACE_ID}") is None:
        await api.send(
            "POST",
            "/workspaces",
            {
                "name": WORKSPACE_NAME,
                "clusterId": CLUSTER_ID,
                "flavorId": FLAVOR_ID,
                "replica": 1,
                "isDefault": True,
                "description": "this machine (primus-safe up)",
            },
        )
        setup.created.append(f"workspace {WORKSPACE_ID}")
        say(f"local node: creating the default workspace {WORKSPACE_ID}")
    await _wait(
        api,
        f"/workspaces/{WORKSPACE_ID}",
        lambda w: w["phase"] == workspace_rules.RUNNING,
        lambda w: f"phase {w['phase']}" if w["phase"] == workspace_rules.DELETING else "",
        what=f"workspace {WORKSPACE_ID}",
        deadline=deadline,
        poll=poll,
    )
    return setup


def _describe(spec: dict[str, Any]) -> str:
    gpu = spec.get("gpu")
    gpus = f", {gpu['quantity']} {gpu['resourceName']}" if gpu else ""
    return f"{spec['cpu']['quantity']} CPU cores, {spec['memory']} memory{gpus}"


# --- under `up` ----------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def admin_headers(sessions: SessionFactory) -> AsyncIterator[dict[str, str]]:
    """A short-lived login token of `root` (like a password login makes), revoked afterwards."""
    token = new_token()
    now = utcnow()
    async with sessions() as session:
        admin = await get_user_by_name(session, name=ADMIN_NAME)
        if admin is None:
            raise LocalNodeError(f"the administrator {ADMIN_NAME} does not exist")
        session.add(
            UserToken(
                token_hash=token_hash(token),
                user_id=admin.id,
                created_at=now,
                expires_at=now + TOKEN_LIFETIME,
            )
        )
        await session.commit()
    try:
        yield {"Authorization": f"Bearer {token}"}
    finally:
        async with sessions() as session:
            row = await session.get(UserToken, token_hash(token))
            if row is not None:
                await session.delete(row)
                await session.commit()


async def run_local_node(
    app: Any, sessions: SessionFactory, settings: Settings, say: Callable[[str], None]
) -> LocalNodeSetup | None:
    """`up`'s background task: the set-up against the served app (in-process ASGI), reported
    through `say`; a failure is reported, never raised (the platform keeps running)."""
    transport = httpx.ASGITransport(app=app)
    try:
        async with (
            admin_headers(sessions) as headers,
            httpx.AsyncClient(transport=transport, base_url="http://local", timeout=60) as http,
        ):
            setup = await ensure_local_node(http, settings, headers=headers, say=say)
    except Exception as exc:
        say(f"local node: set-up failed: {exc}")
        log.warning("local node set-up failed", exc_info=True)
        return None
    say(
        f"local node: ready: node {setup.node_id} ({_describe(setup.flavor)}), cluster {setup.cluster_id}, "
        f"default workspace {setup.workspace_id}"
    )
    return setup
