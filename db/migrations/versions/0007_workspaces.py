"""workspaces, their managers and image secrets

`workspaces` holds each workspace's spec (cluster, one flavor, target node count, queue policy,
scopes, volumes, preemption, default access) and its status (`phase`, `message`);
`workspace_managers` and `workspace_image_secrets` list its managers and pull secrets. Which
nodes serve a workspace stays `nodes.workspace_id`.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "workspaces",
        sa.Column("id", sa.String(length=63), nullable=False),
        sa.Column("name", sa.String(length=63), nullable=False),
        sa.Column("cluster_id", sa.String(length=63), nullable=False),
        sa.Column("flavor_id", sa.String(length=63), nullable=False),
        sa.Column("description", sa.String(length=4096), nullable=False),
        sa.Column("replica", sa.Integer(), nullable=False),
        sa.Column("queue_policy", sa.String(length=16), nullable=False),
        sa.Column("scopes", sa.JSON(), nullable=False),
        sa.Column("volumes", sa.JSON(), nullable=False),
        sa.Column("enable_preempt", sa.Boolean(), nullable=False),
        sa.Column("is_default", sa.Boolean(), nullable=False),
        sa.Column("phase", sa.String(length=16), nullable=False),
        sa.Column("message", sa.String(length=1024), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("deleting_at", db.base.UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workspaces")),
    )
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workspaces_cluster_id"), ["cluster_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_workspaces_flavor_id"), ["flavor_id"], unique=False)

    op.create_table(
        "workspace_managers",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("user_id", sa.String(length=80), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_managers_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "user_id", name=op.f("pk_workspace_managers")),
    )
    with op.batch_alter_table("workspace_managers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workspace_managers_user_id"), ["user_id"], unique=False)

    op.create_table(
        "workspace_image_secrets",
        sa.Column("workspace_id", sa.String(length=63), nullable=False),
        sa.Column("secret_id", sa.String(length=63), nullable=False),
        sa.ForeignKeyConstraint(
            ["workspace_id"],
            ["workspaces.id"],
            name=op.f("fk_workspace_image_secrets_workspace_id_workspaces"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("workspace_id", "secret_id", name=op.f("pk_workspace_image_secrets")),
    )
    with op.batch_alter_table("workspace_image_secrets", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_workspace_image_secrets_secret_id"), ["secret_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("workspace_image_secrets", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_image_secrets_secret_id"))
    op.drop_table("workspace_image_secrets")
    with op.batch_alter_table("workspace_managers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspace_managers_user_id"))
    op.drop_table("workspace_managers")
    with op.batch_alter_table("workspaces", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_workspaces_flavor_id"))
        batch_op.drop_index(batch_op.f("ix_workspaces_cluster_id"))
    op.drop_table("workspaces")
