"""webshell_sessions: the record of every web shell session

Revision ID: 0018
Revises: 0017
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0018"
down_revision = "0017"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "webshell_sessions",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.Column("user_name", sa.String(length=80), nullable=False),
        sa.Column("workload_id", sa.String(length=63), nullable=False),
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("pod", sa.String(length=253), nullable=False),
        sa.Column("node", sa.String(length=253), nullable=False),
        sa.Column("container", sa.String(length=63), nullable=False),
        sa.Column("cmd", sa.String(length=8), nullable=False),
        sa.Column("client", sa.String(length=64), nullable=False),
        sa.Column("started_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("alive_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("ended_at", db.base.UTCDateTime(), nullable=True),
        sa.Column("end_reason", sa.String(length=255), nullable=False),
        sa.Column("exit_code", sa.Integer(), nullable=True),
        sa.Column("input_bytes", sa.BigInteger(), nullable=False),
        sa.Column("output_bytes", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webshell_sessions")),
    )
    op.create_index("ix_webshell_sessions_user_open", "webshell_sessions", ["user_id", "ended_at"])
    op.create_index("ix_webshell_sessions_started", "webshell_sessions", ["started_at", "id"])
    op.create_index("ix_webshell_sessions_workload", "webshell_sessions", ["workload_id", "started_at"])


def downgrade() -> None:
    op.drop_table("webshell_sessions")
