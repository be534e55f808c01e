"""Workspace activities: node bindings and phase (control queue), the namespace on the cluster
(io queue, through the cluster's execution driver).

Every change is idempotent: binding nodes already bound here, preparing a namespace that exists,
removing one that is gone all succeed. Status changes go through `db.workspace_status`, node
bindings through `db.node_status`; credentials (kubeconfig, image secrets) are read and
decrypted here, never passed through workflow inputs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import TypeVar

from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import AsyncSession
from temporalio import activity
from temporalio.exceptions import ApplicationError

from db import clusters as cluster_db
from db import node_status, workspace_status
from db import workspaces as db
from db.encryption import DecryptionError, SecretBox
from db.nodes import Node, list_nodes
from db.secrets import get_secret, load_image_credentials
from db.session import SessionFactory
from db.workspaces import Workspace
from domain import workspaces as rules
from domain.errors import NotFound, PrimusError
from domain.failures import Failure
from domain.secrets import RegistryCredential
from domain.timefmt import utcnow
from drivers.execution import WORKSPACE_ID_LABEL, DriverError, ExecutionDriver
from drivers.kubernetes import KubernetesDriver

T = TypeVar("T")
WRITE_ATTEMPTS = 6


def _fail(message: str, kind: Failure, *, retryable: bool = False) -> ApplicationError:
    return ApplicationError(message[:2000], type=kind, non_retryable=not retryable)


def pick_idle(nodes: Sequence[Node], busy: Mapping[str, Sequence[str]], count: int) -> list[str]:
    """`count` nodes without running pods to leave a workspace: unavailable ones first, then the
    newest (upstream's order)."""
    idle = [n for n in nodes if not busy.get(n.id)]
    idle.sort(key=lambda n: (n.availability()[0], -n.created_at.timestamp(), n.id))
    return [n.id for n in idle[:count]]


class WorkspaceActivities:
    """Holds the database and the secret box."""

    def __init__(self, sessions: SessionFactory, box: SecretBox, request_timeout: float = 30) -> None:
        self._sessions = sessions
        self._box = box
        self._timeout = request_timeout

    async def _write(self, write: Callable[[AsyncSession], Awaitable[T]]) -> T:
        """Run `write` in its own transaction, retrying while SQLite reports the database locked."""
        for attempt in range(WRITE_ATTEMPTS):
            try:
                async with self._sessions() as session, session.begin():
                    return await write(session)
            except OperationalError as exc:
                if "locked" not in str(exc) or attempt == WRITE_ATTEMPTS - 1:
                    raise
                await asyncio.sleep(0.1 * 2**attempt)
        raise AssertionError("unreachable")

    async def _workspace(self, session: AsyncSession, workspace_id: str) -> Workspace:
        workspace = await db.get_workspace(session, workspace_id=workspace_id)
        if workspace is None:
            raise _fail(f"workspace {workspace_id} not found", Failure.NOT_FOUND)
        return workspace

    # --- bindings (control queue) --------------------------------------------------------------

    @activity.defn(name="workspace.claim_nodes")
    async def claim_nodes(self, workspace_id: str) -> list[str]:
        """Bind `replica` free, available nodes of the workspace's flavor and cluster, all or none.
        When there are too few, the record is discarded and the creation refused (`Conflict`, with
        the counts). A retry finds its nodes bound already."""

        async def claim(session: AsyncSession) -> tuple[list[str], str]:
            workspace = await self._workspace(session, workspace_id)
            bound = await db.bound_nodes(session, workspace_id=workspace_id)
            missing = workspace.replica - len(bound)
            if missing <= 0:
                return [n.id for n in bound], ""
            free = [
                n
                for n in await db.free_nodes(
                    session, cluster_id=workspace.cluster_id, flavor_id=workspace.flavor_id
                )
                if n.availability()[0]
            ]
            if len(free) < missing:
                return [], await self._shortage(session, workspace, missing, len(free))
            chosen = [n.id for n in free[:missing]]
            refused = await node_status.bind_workspace(
                session,
                workspace_id=workspace_id,
                cluster_id=workspace.cluster_id,
                flavor_id=workspace.flavor_id,
                node_ids=chosen,
                now=utcnow(),
            )
            if refused:
                await session.rollback()
                return [], f"nodes {', '.join(refused)} were taken meanwhile; try again"
            return [n.id for n in bound] + chosen, ""

        nodes, refusal = await self._write(claim)
        if refusal:
            await self._write(partial(db.discard_workspace, workspace_id=workspace_id))
            raise _fail(refusal, Failure.CONFLICT)
        return nodes

    async def _shortage(self, session: AsyncSession, workspace: Workspace, wanted: int, free: int) -> str:
        of_flavor = [
            n
            for n in await list_nodes(session, cluster_id=workspace.cluster_id)
            if n.flavor_id == workspace.flavor_id
        ]
        elsewhere = sum(1 for n in of_flavor if n.workspace_id and n.workspace_id != workspace.id)
        return rules.shortage_message(
            flavor_id=workspace.flavor_id,
            cluster_id=workspace.cluster_id,
            wanted=wanted,
            free=free,
            of_flavor=len(of_flavor),
            in_other_workspaces=elsewhere,
        )

    @activity.defn(name="workspace.change_nodes")
    async def change_nodes(self, change: rules.NodesChange) -> rules.NodesChanged:
        """Bind or unbind nodes, all or none, and record the new target count with them.

        `add` by id: each node must be of the workspace's cluster and flavor and serve no
        workspace. `remove` by id: each must serve this workspace and, unless `force`, run no pod.
        By `count`: that many free available nodes (add) or idle nodes (remove) are picked.
        Refusals are `Conflict` with the reason; nothing changes then."""

        async def write(session: AsyncSession) -> tuple[list[str], str]:
            workspace = await self._workspace(session, change.workspace_id)
            if workspace.deleting_at is not None:
                return [], f"the workspace {workspace.id} is being deleted"
            bound = await db.bound_nodes(session, workspace_id=workspace.id)
            bound_ids = {n.id for n in bound}
            now = utcnow()
            if change.action == "add":
                ids = list(change.node_ids)
                if change.count:
                    free = [
                        n
                        for n in await db.free_nodes(
                            session, cluster_id=workspace.cluster_id, flavor_id=workspace.flavor_id
                        )
                        if n.availability()[0]
                    ]
                    if len(free) < change.count:
                        return [], await self._shortage(session, workspace, change.count, len(free))
                    ids = [n.id for n in free[: change.count]]
                todo = [n for n in ids if n not in bound_ids]
                refusal = await self._add_refusal(session, workspace, todo)
                if refusal:
                    return [], refusal
                refused = await node_status.bind_workspace(
                    session,
                    workspace_id=workspace.id,
                    cluster_id=workspace.cluster_id,
                    flavor_id=workspace.flavor_id,
                    node_ids=todo,
                    now=now,
                )
                if refused:
                    await session.rollback()
                    return [], f"nodes {', '.join(refused)} changed meanwhile; try again"
                target = change.replica if change.replica is not None else workspace.replica + len(todo)
            else:
                busy = {n.id: await db.pods_on_node(session, node_id=n.id) for n in bound}
                if change.count:
                    ids = pick_idle(bound, busy, change.count)
                    if len(ids) < change.count:
                        return [], (
                            f"only {len(ids)} of the workspace's nodes are idle; {change.count} "
                            "would have to leave"
                        )
                else:
                    ids = list(change.node_ids)
                todo = [n for n in ids if n in bound_ids]
                strangers = [n for n in ids if n not in bound_ids]
                for node_id in strangers:
                    node = await session.get(Node, node_id)
                    if node is not None and node.workspace_id:
                        return [], f"the node({node_id}) does not belong to workspace {workspace.id}"
                in_use = [n for n in todo if busy.get(n)] if not change.force else []
                if in_use:
                    first = in_use[0]
                    return [], (
                        f"the node({first}) is currently in use by the workload({busy[first][0]}) and "
                        "cannot be removed; pass force to remove it anyway"
                    )
                refused = await node_status.unbind_workspace(
                    session, workspace_id=workspace.id, node_ids=todo, now=now
                )
                if refused:
                    await session.rollback()
                    return [], f"nodes {', '.join(refused)} changed meanwhile; try again"
                target = change.replica if change.replica is not None else workspace.replica - len(todo)
            await workspace_status.record_target(session, workspace_id=workspace.id, replica=target, now=now)
            return todo, ""

        changed, refusal = await self._write(write)
        if refusal:
            raise _fail(refusal, Failure.CONFLICT)
        return rules.NodesChanged(node_ids=changed)

    async def _add_refusal(self, session: AsyncSession, workspace: Workspace, node_ids: list[str]) -> str:
        for node_id in node_ids:
            node = await session.get(Node, node_id, populate_existing=True)
            if node is None or node.deleting_at is not None:
                return f"the node({node_id}) no longer exists"
            if node.workspace_id:
                return f"the node({node_id}) is bound for {node.workspace_id}. it can't be added"
            if node.cluster_id != workspace.cluster_id:
                return f"the node({node_id}) is not in cluster {workspace.cluster_id}"
            if node.flavor_id != workspace.flavor_id:
                return (
                    f"the flavor({node.flavor_id}) of the node({node_id}) and the workspace's "
                    f"flavor({workspace.flavor_id}) do not match"
                )
        return ""

    # --- phase (control queue) -------------------------------------------------------------------

    @activity.defn(name="workspace.finish")
    async def finish(self, workspace_id: str) -> None:
        """Creating -> Running."""
        await self._write(
            partial(workspace_status.finish_creation, workspace_id=workspace_id, message="", now=utcnow())
        )

    @activity.defn(name="workspace.note")
    async def note(self, params: rules.WorkspaceNote) -> None:
        """Record why the last step failed ("" clears it)."""
        await self._write(
            partial(
                workspace_status.record_message,
                workspace_id=params.workspace_id,
                message=params.message,
                now=utcnow(),
            )
        )

    @activity.defn(name="workspace.begin_delete")
    async def begin_delete(self, workspace_id: str) -> None:
        """Mark the workspace Deleting."""
        await self._write(partial(workspace_status.begin_delete, workspace_id=workspace_id, now=utcnow()))

    @activity.defn(name="workspace.remove")
    async def remove(self, workspace_id: str) -> None:
        """Unbind every node and remove the record."""
        await self._write(partial(workspace_status.remove, workspace_id=workspace_id, now=utcnow()))

    # --- namespace (io queue) --------------------------------------------------------------------

    async def _driver(self, workspace_id: str) -> tuple[ExecutionDriver | None, Workspace | None, str]:
        """The cluster's execution driver, the workspace, and the cluster's provisioner. Clusters on
        plain hosts (HostDriver) need no namespace object: their pod folders are made per pod."""
        async with self._sessions() as session:
            workspace = await db.get_workspace(session, workspace_id=workspace_id)
            if workspace is None:
                return None, None, ""
            cluster = await cluster_db.get_cluster(session, cluster_id=workspace.cluster_id)
        if cluster is None or not cluster.kubeconfig_encrypted:
            return None, workspace, cluster.provisioner if cluster else ""
        try:
            kubeconfig = self._box.decrypt(cluster.kubeconfig_encrypted)
            driver = KubernetesDriver(kubeconfig, request_timeout=self._timeout)
        except (DecryptionError, DriverError) as exc:
            raise _fail(f"cluster {cluster.id}: {exc}", Failure.INVALID) from exc
        return driver, workspace, cluster.provisioner

    async def _pull_secrets(self, workspace: Workspace) -> dict[str, list[RegistryCredential]]:
        secrets: dict[str, list[RegistryCredential]] = {}
        async with self._sessions() as session:
            for secret_id in workspace.image_secret_ids:
                secret = await get_secret(session, secret_id=secret_id)
                if secret is None:
                    continue  # deleted meanwhile: nothing to copy
                try:
                    secrets[secret_id] = load_image_credentials(self._box, secret)
                except (PrimusError, DecryptionError) as exc:
                    raise _fail(f"image secret {secret_id}: {exc}", Failure.INVALID) from exc
        return secrets

    @activity.defn(name="workspace.prepare_namespace")
    async def prepare_namespace(self, workspace_id: str) -> str:
        """Create the namespace, a PVC per pfs volume and the pull secrets on a Kubernetes cluster;
        returns what was done. Existing objects are kept (a retry is safe)."""
        driver, workspace, provisioner = await self._driver(workspace_id)
        if workspace is None:
            raise _fail(f"workspace {workspace_id} not found", Failure.NOT_FOUND)
        if driver is None:
            return f"no namespace needed on a {provisioner or 'missing'} cluster"
        secrets = await self._pull_secrets(workspace)
        volumes = workspace.volume_list()
        async with self._sessions() as session:
            bound = [n.id for n in await db.bound_nodes(session, workspace_id=workspace_id)]
        try:
            await asyncio.to_thread(
                driver.ensure_namespace, workspace_id, volumes=volumes, pull_secrets=secrets
            )
            await self._label(driver, bound, workspace_id)
        except DriverError as exc:
            retry = exc.status is None or exc.status >= 500
            raise _fail(f"namespace {workspace_id}: {exc}", Failure.INVALID, retryable=retry) from exc
        finally:
            driver.close()
        pvcs = sum(1 for v in volumes if v.type == "pfs")
        return f"namespace {workspace_id} ready with {pvcs} PVCs and {len(secrets)} pull secrets"

    @activity.defn(name="workspace.remove_namespace")
    async def remove_namespace(self, workspace_id: str) -> None:
        """Delete the namespace and everything in it; a missing one is fine."""
        driver, _, _ = await self._driver(workspace_id)
        if driver is None:
            return
        async with self._sessions() as session:
            bound = [n.id for n in await db.bound_nodes(session, workspace_id=workspace_id)]
        try:
            await self._label(driver, bound, None)
            await asyncio.to_thread(driver.delete_namespace, workspace_id)
        except DriverError as exc:
            retry = exc.status is None or exc.status >= 500
            raise _fail(f"namespace {workspace_id}: {exc}", Failure.INVALID, retryable=retry) from exc
        finally:
            driver.close()

    @staticmethod
    async def _label(driver: ExecutionDriver, node_ids: Sequence[str], workspace_id: str | None) -> None:
        """Set (or, with None, remove) the workspace label the pods' node affinity requires."""
        for node_id in node_ids:
            try:
                await asyncio.to_thread(driver.sync_node, node_id, labels={WORKSPACE_ID_LABEL: workspace_id})
            except NotFound:
                continue  # not (yet) a node of the cluster: it is labelled when it joins

    @activity.defn(name="workspace.label_nodes")
    async def label_nodes(self, change: rules.NodeLabels) -> None:
        """After nodes joined or left: set or remove their workspace label on the cluster."""
        driver, _, _ = await self._driver(change.workspace_id)
        if driver is None:
            return
        try:
            await self._label(driver, change.node_ids, change.workspace_id if change.bound else None)
        except DriverError as exc:
            retry = exc.status is None or exc.status >= 500
            raise _fail(f"labelling nodes: {exc}", Failure.INVALID, retryable=retry) from exc
        finally:
            driver.close()
