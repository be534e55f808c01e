"""nodes and their log lines

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("hostname", sa.String(length=253), nullable=False),
        sa.Column("node_name", sa.String(length=253), nullable=False),
        sa.Column("private_ip", sa.String(length=45), nullable=False),
        sa.Column("public_ip", sa.String(length=45), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("labels", sa.JSON(), nullable=False),
        sa.Column("taints", sa.JSON(), nullable=False),
        sa.Column("flavor_id", sa.String(length=63), nullable=False),
        sa.Column("template_id", sa.String(length=63), nullable=False),
        sa.Column("ssh_secret_id", sa.String(length=63), nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("is_control_plane", sa.Boolean(), nullable=False),
        sa.Column("phase", sa.String(length=32), nullable=False),
        sa.Column("step", sa.String(length=32), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("phase_changed_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("last_probe_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("host_key_fingerprint", sa.String(length=128), nullable=False),
        sa.Column("facts", sa.JSON(), nullable=True),
        sa.Column("facts_problem", sa.String(length=1024), nullable=False),
        sa.Column("boot_time", db.base.UTCDateTime(), nullable=True),
        sa.Column("addons_template_id", sa.String(length=63), nullable=False),
        sa.Column("addons_done", sa.JSON(), nullable=False),
        sa.Column("addons_installed", sa.Boolean(), nullable=False),
        sa.Column("onboarded", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("deleting_at", db.base.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_nodes")),
        sa.UniqueConstraint("private_ip", name=op.f("uq_nodes_private_ip")),
    )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_nodes_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_flavor_id"), ["flavor_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_ssh_secret_id"), ["ssh_secret_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_template_id"), ["template_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_nodes_workspace_id"), ["workspace_id"], unique=False)

    op.create_table(
        "node_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("node_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_node_logs_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_node_logs")),
    )
    with op.batch_alter_table("node_logs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_node_logs_node_id"), ["node_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("node_logs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_node_logs_node_id"))

    op.drop_table("node_logs")
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_nodes_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_nodes_template_id"))
        batch_op.drop_index(batch_op.f("ix_nodes_ssh_secret_id"))
        batch_op.drop_index(batch_op.f("ix_nodes_flavor_id"))
        batch_op.drop_index(batch_op.f("ix_nodes_cluster_id"))

    op.drop_table("nodes")
