"""ops jobs: addon, dumplog, reboot (and preflight) jobs with their nodes, progress and outputs

Revision ID: 0014
Revises: 0013
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ops_jobs",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("type", sa.String(length=16), nullable=False),
        sa.Column("inputs", sa.JSON(), nullable=False),
        sa.Column("node_ids", sa.JSON(), nullable=False),
        sa.Column("excluded_nodes", sa.JSON(), nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("user_name", sa.String(length=80), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("message", sa.String(length=2048), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("outputs", sa.JSON(), nullable=False),
        sa.Column("node_results", sa.JSON(), nullable=False),
        sa.Column("timeout_second", sa.Integer(), nullable=False),
        sa.Column("ttl_seconds_after_finished", sa.Integer(), nullable=False),
        sa.Column("batch_count", sa.Integer(), nullable=False),
        sa.Column("available_ratio", sa.Float(), nullable=False),
        sa.Column("security_upgrade", sa.Boolean(), nullable=False),
        sa.Column("is_tolerate_all", sa.Boolean(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("started_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("ended_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("deleted_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_ops_jobs")),
    )
    with op.batch_alter_table("ops_jobs", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_ops_jobs_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_ops_jobs_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_ops_jobs_type"), ["type"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("ops_jobs", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_ops_jobs_type"))
        batch_op.drop_index(batch_op.f("ix_ops_jobs_created_at"))
        batch_op.drop_index(batch_op.f("ix_ops_jobs_cluster_id"))
    op.drop_table("ops_jobs")
