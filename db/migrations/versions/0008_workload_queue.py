"""the workspace queues: one row per workload queued for admission or admitted

Written by the scheduler's cycle activity and the workloads' enqueue and withdraw activities
(`db/queue_status.py`); positions and reasons of queued rows are what `GET
/workspaces/{id}/queue` and the workload views show.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workload_queue",
        sa.Column("workload_id", sa.String(length=63), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("submitted_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("request", sa.JSON(), nullable=False),
        sa.Column("replicas", sa.Integer(), nullable=False),
        sa.Column("specified_nodes", sa.JSON(), nullable=False),
        sa.Column("required_labels", sa.JSON(), nullable=False),
        sa.Column("tolerate_all", sa.Boolean(), nullable=False),
        sa.Column("failed_over", sa.Boolean(), nullable=False),
        sa.Column("waiting", sa.String(length=1024), nullable=False),
        sa.Column("placement", sa.JSON(), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("reason", sa.String(length=1024), nullable=False),
        sa.Column("admitted_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("notified", sa.Boolean(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("workload_id", name=op.f("pk_workload_queue")),
    )
    with op.batch_alter_table("workload_queue", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workload_queue_workspace_id"), ["workspace_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workload_queue", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workload_queue_workspace_id"))
    op.drop_table("workload_queue")
