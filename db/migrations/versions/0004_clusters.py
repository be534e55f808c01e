"""clusters and their log lines

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "clusters",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("is_protected", sa.Boolean(), nullable=False),
        sa.Column("provisioner", sa.String(length=16), nullable=False),
        sa.Column("control_plane_nodes", sa.JSON(), nullable=False),
        sa.Column("ssh_secret_id", sa.String(length=63), nullable=False),
        sa.Column("image_secret_id", sa.String(length=63), nullable=False),
        sa.Column("kube_spray_image", sa.String(length=512), nullable=False),
        sa.Column("kube_pods_subnet", sa.String(length=64), nullable=False),
        sa.Column("kube_service_address", sa.String(length=64), nullable=False),
        sa.Column("kube_network_plugin", sa.String(length=16), nullable=False),
        sa.Column("kube_version", sa.String(length=32), nullable=False),
        sa.Column("kube_api_server_args", sa.JSON(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("endpoint", sa.String(length=256), nullable=False),
        sa.Column("kubeconfig_encrypted", sa.Text(), nullable=False),
        sa.Column("work_dir", sa.String(length=512), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("deleting_at", db.base.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_clusters")),
    )
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_clusters_image_secret_id"), ["image_secret_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_clusters_ssh_secret_id"), ["ssh_secret_id"], unique=False)

    op.create_table(
        "cluster_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["cluster_id"],
            ["clusters.id"],
            name=op.f("fk_cluster_logs_cluster_id_clusters"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_cluster_logs")),
    )
    with op.batch_alter_table("cluster_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_cluster_logs_cluster_id"), ["cluster_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("cluster_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_cluster_logs_cluster_id"))

    op.drop_table("cluster_logs")
    with op.batch_alter_table("clusters", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_clusters_ssh_secret_id"))
        batch_op.drop_index(batch_op.f("ix_clusters_image_secret_id"))

    op.drop_table("clusters")
