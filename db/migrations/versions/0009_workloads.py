"""workloads: the submitted spec and lifecycle status, and who waits for whom

Status columns are written by `db/workload_status.py` (the workload workflow's activities);
the API inserts rows and lists them (`db/workloads.py`).

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workload_dependencies",
        sa.Column("workload_id", sa.String(length=63), nullable=False),
        sa.Column("depends_on", sa.String(length=63), nullable=False),
        sa.PrimaryKeyConstraint("workload_id", "depends_on", name=op.f("pk_workload_dependencies")),
    )
    with op.batch_alter_table("workload_dependencies", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workload_dependencies_depends_on"), ["depends_on"], unique=False)

    op.create_table(
        "workloads",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("display_name", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("user_name", sa.String(length=80), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("spec", sa.JSON(), nullable=False),
        sa.Column("gpu_resource_name", sa.String(length=63), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("dispatch_count", sa.Integer(), nullable=False),
        sa.Column("conditions", sa.JSON(), nullable=False),
        sa.Column("pods", sa.JSON(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("ranks", sa.JSON(), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("start_time", db.base.UTCDateTime(), nullable=True),
        sa.Column("end_time", db.base.UTCDateTime(), nullable=True),
        sa.Column("deletion_time", db.base.UTCDateTime(), nullable=True),
        sa.Column("is_deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workloads")),
    )
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workloads_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_workloads_created_at"), ["created_at"], unique=False)
        batch_op.create_index(batch_op.f("ix_workloads_is_deleted"), ["is_deleted"], unique=False)
        batch_op.create_index(batch_op.f("ix_workloads_kind"), ["kind"], unique=False)
        batch_op.create_index(batch_op.f("ix_workloads_phase"), ["phase"], unique=False)
        batch_op.create_index(batch_op.f("ix_workloads_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_workloads_workspace_id"), ["workspace_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workloads_workspace_id"))
        batch_op.drop_index(batch_op.f("ix_workloads_user_id"))
        batch_op.drop_index(batch_op.f("ix_workloads_phase"))
        batch_op.drop_index(batch_op.f("ix_workloads_kind"))
        batch_op.drop_index(batch_op.f("ix_workloads_is_deleted"))
        batch_op.drop_index(batch_op.f("ix_workloads_created_at"))
        batch_op.drop_index(batch_op.f("ix_workloads_cluster_id"))

    op.drop_table("workloads")
    with op.batch_alter_table("workload_dependencies", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workload_dependencies_depends_on"))

    op.drop_table("workload_dependencies")
