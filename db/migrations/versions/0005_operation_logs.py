"""one operation-log table for nodes and clusters; node availability holds

`node_logs` and `cluster_logs` are merged into `operation_logs` (keyed by resource type and id),
every line kept in its order; the downgrade splits them again. `node_holds` records the reasons
(fault, reboot, ops job) that keep a node unavailable.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

# (old table, its owner column, the owner table, resource type in operation_logs)
OLD_TABLES = (
    ("node_logs", "node_id", "nodes", "node"),
    ("cluster_logs", "cluster_id", "clusters", "cluster"),
)


def upgrade() -> None:
    op.create_table(
        "operation_logs",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("resource_type", sa.String(length=16), nullable=False),
        sa.Column("resource_id", sa.String(length=63), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("level", sa.String(length=8), nullable=False),
        sa.Column("line", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_operation_logs")),
    )
    op.create_index("ix_operation_logs_resource", "operation_logs", ["resource_type", "resource_id", "id"])
    for table, owner, _, resource in OLD_TABLES:
        # one statement per table, in the old id order: each resource's lines keep their order
        op.execute(
            f"INSERT INTO operation_logs (resource_type, resource_id, created_at, level, line) "
            f"SELECT '{resource}', {owner}, created_at, level, line FROM {table} ORDER BY id"
        )
    for table, owner, _, _ in OLD_TABLES:
        op.drop_index(f"ix_{table}_{owner}", table_name=table)
        op.drop_table(table)

    op.create_table(
        "node_holds",
        sa.Column("node_id", sa.String(length=63), nullable=False),
        sa.Column("reason", sa.String(length=16), nullable=False),
        sa.Column("ref", sa.String(length=63), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["node_id"], ["nodes.id"], name=op.f("fk_node_holds_node_id_nodes"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("node_id", "reason", "ref", name=op.f("pk_node_holds")),
    )


def downgrade() -> None:
    op.drop_table("node_holds")
    for table, owner, owners, resource in OLD_TABLES:
        op.create_table(
            table,
            sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
            sa.Column(owner, sa.String(length=63), nullable=False),
            sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
            sa.Column("level", sa.String(length=8), nullable=False),
            sa.Column("line", sa.Text(), nullable=False),
            sa.ForeignKeyConstraint(
                [owner], [f"{owners}.id"], name=op.f(f"fk_{table}_{owner}_{owners}"), ondelete="CASCADE"
            ),
            sa.PrimaryKeyConstraint("id", name=op.f(f"pk_{table}")),
        )
        op.create_index(f"ix_{table}_{owner}", table, [owner])
        # lines of resources that no longer exist cannot satisfy the old foreign key: they go
        op.execute(
            f"INSERT INTO {table} ({owner}, created_at, level, line) "
            f"SELECT resource_id, created_at, level, line FROM operation_logs "
            f"WHERE resource_type = '{resource}' AND resource_id IN (SELECT id FROM {owners}) ORDER BY id"
        )
    op.drop_index("ix_operation_logs_resource", table_name="operation_logs")
    op.drop_table("operation_logs")
