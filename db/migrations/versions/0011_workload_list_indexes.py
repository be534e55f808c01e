"""workload list indexes: a page of `GET /workloads` (by creation or start time) reads only its rows

Without them every list request read and sorted every live workload (10,000 rows: ~50 ms).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from __future__ import annotations

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.create_index("ix_workloads_live_created", ["is_deleted", "created_at", "id"], unique=False)
        batch_op.create_index("ix_workloads_live_started", ["is_deleted", "start_time", "id"], unique=False)
        batch_op.create_index(
            "ix_workloads_workspace_live_created",
            ["workspace_id", "is_deleted", "created_at", "id"],
            unique=False,
        )


def downgrade() -> None:
    with op.batch_alter_table("workloads", schema=None) as batch_op:
        batch_op.drop_index("ix_workloads_workspace_live_created")
        batch_op.drop_index("ix_workloads_live_started")
        batch_op.drop_index("ix_workloads_live_created")
