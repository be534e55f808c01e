"""nodes.local: a node that is this machine, reached through the local transport instead of SSH

`primus-safe up` registers the machine it runs on as the node `local`; its onboarding, probes and
cluster provisioning run as the current user without SSH. Existing nodes are remote (false).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.add_column(sa.Column("local", sa.Boolean(), nullable=False, server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table("nodes") as batch:
        batch.drop_column("local")
