"""Clusters and the queries about what uses them.

Status fields are changed only through `db.cluster_status` (guarded transitions called from
activities); the API writes the spec, `is_protected` and the deletion request (`deleting_at`).
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import JSON, Boolean, String, Text, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db import logs
from db.base import Base, UTCDateTime
from db.workloads import active_in_cluster
from domain.logs import LogResource


class Cluster(Base):
    """A set of control-plane nodes provisioned as one cluster. Status fields are written by activities."""

    __tablename__ = "clusters"

    id: Mapped[str] = mapped_column(String(63), primary_key=True)
    description: Mapped[str] = mapped_column(String(4096), default="")
    labels: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)
    is_protected: Mapped[bool] = mapped_column(Boolean, default=False)
    provisioner: Mapped[str] = mapped_column(String(16))
    control_plane_nodes: Mapped[list[str]] = mapped_column(JSON, default=list)
    ssh_secret_id: Mapped[str] = mapped_column(String(63), index=True)
    image_secret_id: Mapped[str] = mapped_column(String(63), default="", index=True)
    kube_spray_image: Mapped[str] = mapped_column(String(512))
    kube_pods_subnet: Mapped[str] = mapped_column(String(64))
    kube_service_address: Mapped[str] = mapped_column(String(64))
    kube_network_plugin: Mapped[str] = mapped_column(String(16))
    kube_version: Mapped[str] = mapped_column(String(32))
    kube_api_server_args: Mapped[dict[str, str]] = mapped_column(JSON, default=dict)

    phase: Mapped[str] = mapped_column(String(16))
    step: Mapped[str] = mapped_column(String(32), default="")
    """The provisioning step in progress; "" when none runs."""
    message: Mapped[str] = mapped_column(String(1024), default="")
    """Why the cluster is `Failed`."""
    endpoint: Mapped[str] = mapped_column(String(256), default="")
    kubeconfig_encrypted: Mapped[str] = mapped_column(Text, default="")
    """The admin kubeconfig (Fernet-encrypted); "" for clusters without Kubernetes."""
    work_dir: Mapped[str] = mapped_column(String(512), default="")
    """Absolute path of the cluster's working directory on its nodes (pods live below it)."""

    created_by: Mapped[str] = mapped_column(String(80), default="")
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime)
    deleting_at: Mapped[datetime | None] = mapped_column(UTCDateTime, nullable=True, default=None)


async def get_cluster(session: AsyncSession, *, cluster_id: str) -> Cluster | None:
    """The cluster with `cluster_id` (also while it is being deleted), or None."""
    return await session.get(Cluster, cluster_id)


async def list_clusters(session: AsyncSession, *, limit: int, offset: int) -> tuple[int, list[Cluster]]:
    """(total, one page) of every cluster, sorted by id."""
    total = (await session.execute(select(func.count()).select_from(Cluster))).scalar_one()
    page = await session.execute(select(Cluster).order_by(Cluster.id).limit(limit).offset(offset))
    return int(total), list(page.scalars())


async def cluster_ids_using_secret(session: AsyncSession, *, secret_id: str) -> list[str]:
    """Ids of the clusters whose ssh or image secret is `secret_id`."""
    query = (
        select(Cluster.id)
        .where(or_(Cluster.ssh_secret_id == secret_id, Cluster.image_secret_id == secret_id))
        .order_by(Cluster.id)
    )
    return list((await session.execute(query)).scalars())


async def running_workloads(session: AsyncSession, *, cluster_id: str) -> list[str]:
    """Ids of the cluster's workloads that have not ended (a cluster with any cannot be deleted)."""
    return await active_in_cluster(session, cluster_id=cluster_id)


async def delete_cluster(session: AsyncSession, *, cluster_id: str) -> bool:
    """Remove a cluster marked for deletion and its log lines; returns whether a row went."""
    result = await session.execute(
        delete(Cluster).where(Cluster.id == cluster_id, Cluster.deleting_at.is_not(None))
    )
    if result.rowcount:  # type: ignore[attr-defined]
        await logs.delete_lines(session, resource=LogResource.CLUSTER, resource_id=cluster_id)
        return True
    return False


async def discard_cluster(session: AsyncSession, *, cluster_id: str) -> bool:
    """Remove a cluster whose creation was refused (never provisioned) and its log lines."""
    result = await session.execute(delete(Cluster).where(Cluster.id == cluster_id))
    await logs.delete_lines(session, resource=LogResource.CLUSTER, resource_id=cluster_id)
    return bool(result.rowcount)  # type: ignore[attr-defined]
