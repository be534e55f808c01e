"""log_lines: the log store of workload pods and of our own services

Revision ID: 0017
Revises: 0016
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0017"
down_revision = "0016"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "log_lines",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("workload_id", sa.String(length=63), nullable=False),
        sa.Column("service", sa.String(length=32), nullable=False),
        sa.Column("dispatch_count", sa.Integer(), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("container", sa.String(length=63), nullable=False),
        sa.Column("stream", sa.String(length=8), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("at", db.base.UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint(
            "workload_id", "dispatch_count", "pod", "container", "stream", "seq", name="uq_log_lines_position"
        ),
    )
    op.create_index("ix_log_lines_workload", "log_lines", ["workload_id", "at", "id"])
    op.create_index("ix_log_lines_pod", "log_lines", ["workload_id", "pod", "at", "id"])
    op.create_index("ix_log_lines_service", "log_lines", ["service", "at", "id"])
    op.create_index("ix_log_lines_at", "log_lines", ["at"])


def downgrade() -> None:
    op.drop_table("log_lines")
