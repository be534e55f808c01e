"""retention: an index for log retention by time, and when an ops job's TTL passed

Revision ID: 0016
Revises: 0015
Create Date: 2026-12-03
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0016"
down_revision = "0015"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("operation_logs", schema=None) as batch_op:
        batch_op.create_index("ix_operation_logs_created_at", ["created_at"], unique=False)
    with op.batch_alter_table("ops_jobs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("expired_at", db.base.UTCDateTime(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("ops_jobs", schema=None) as batch_op:
        batch_op.drop_column("expired_at")
    with op.batch_alter_table("operation_logs", schema=None) as batch_op:
        batch_op.drop_index("ix_operation_logs_created_at")
