"""Clusters, their creation/teardown log lines and the queries about what uses them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import JSON, Boolean, ForeignKey, Integer, String, Text, delete, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, mapped_column

from db.base import Base, UTCDateTime


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


class ClusterLog(Base):
    """One line printed while a cluster is created, changed or torn down."""

    __tablename__ = "cluster_logs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    cluster_id: Mapped[str] = mapped_column(ForeignKey("clusters.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime)
    level: Mapped[str] = mapped_column(String(8), default="INFO")
    line: Mapped[str] = mapped_column(Text)


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
    """Ids of workloads still dispatched to the cluster (a cluster with any cannot be deleted).

    Workloads do not exist yet: this returns [] until the workloads work fills it in.
    """
    return []


def add_log(
    session: AsyncSession, *, cluster_id: str, lines: Sequence[str], at: datetime, level: str = "INFO"
) -> None:
    """Queue log lines for insertion (the caller commits)."""
    session.add_all(
        [ClusterLog(cluster_id=cluster_id, created_at=at, level=level, line=line[:8192]) for line in lines]
    )


async def tail_logs(
    session: AsyncSession, *, cluster_id: str, tail: int, since: datetime | None = None
) -> list[ClusterLog]:
    """The last `tail` log lines (oldest first), only those at or after `since` when given."""
    query = select(ClusterLog).where(ClusterLog.cluster_id == cluster_id)
    if since is not None:
        query = query.where(ClusterLog.created_at >= since)
    rows = await session.execute(query.order_by(ClusterLog.id.desc()).limit(tail))
    return list(reversed(list(rows.scalars())))


async def delete_cluster(session: AsyncSession, *, cluster_id: str) -> bool:
    """Remove a cluster marked for deletion and its log lines; returns whether a row went."""
    doomed = select(Cluster.id).where(Cluster.id == cluster_id, Cluster.deleting_at.is_not(None))
    await session.execute(delete(ClusterLog).where(ClusterLog.cluster_id.in_(doomed)))
    result = await session.execute(
        delete(Cluster).where(Cluster.id == cluster_id, Cluster.deleting_at.is_not(None))
    )
    return bool(result.rowcount)  # type: ignore[attr-defined]
