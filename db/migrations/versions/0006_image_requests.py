"""image deletion requests and the recorded checks of the internal registry

`images.deleting_at` marks an image whose deletion was requested (its workflow removes the row);
`registry_stats` keeps the last health check of each registry, so `GET /harbor/stats` reads the
database instead of the registry.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.add_column(sa.Column("deleting_at", db.base.UTCDateTime(), nullable=True))

    op.create_table(
        "registry_stats",
        sa.Column("registry_host", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("repositories", sa.Integer(), nullable=True),
        sa.Column("checked_at", db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("registry_host", name=op.f("pk_registry_stats")),
    )


def downgrade() -> None:
    op.drop_table("registry_stats")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_column("deleting_at")
