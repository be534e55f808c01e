"""faults: monitor findings on nodes, and the probe's consecutive counts for its hysteresis

Revision ID: 0013
Revises: 0012
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "faults",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("node_id", sa.String(length=63), nullable=False),
        sa.Column("monitor_id", sa.String(length=63), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("effect", sa.String(length=16), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("deleted_at", db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_faults_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_faults")),
    )
    with op.batch_alter_table("faults", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_faults_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_faults_created_at"), ["created_at"], unique=False)
        batch_op.create_index(
            "ix_faults_node_monitor_open", ["node_id", "monitor_id", "deleted_at"], unique=False
        )
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.add_column(sa.Column("probe_failures", sa.Integer(), nullable=False, server_default="0"))
        batch_op.add_column(sa.Column("probe_successes", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    with op.batch_alter_table("nodes", schema=None) as batch_op:
        batch_op.drop_column("probe_successes")
        batch_op.drop_column("probe_failures")
    with op.batch_alter_table("faults", schema=None) as batch_op:
        batch_op.drop_index("ix_faults_node_monitor_open")
        batch_op.drop_index(batch_op.f("ix_faults_created_at"))
        batch_op.drop_index(batch_op.f("ix_faults_cluster_id"))
    op.drop_table("faults")
