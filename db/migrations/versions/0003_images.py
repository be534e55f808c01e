"""images, image import jobs and per-blob import progress

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

import db.base

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "images",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("tag", sa.String(length=512), nullable=False),
        sa.Column("registry_host", sa.String(length=255), nullable=False),
        sa.Column("repository", sa.String(length=255), nullable=False),
        sa.Column("image_tag", sa.String(length=128), nullable=False),
        sa.Column("source", sa.String(length=1024), nullable=False),
        sa.Column("description", sa.String(length=1024), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("arch", sa.String(length=32), nullable=False),
        sa.Column("os", sa.String(length=32), nullable=False),
        sa.Column("platforms", sa.JSON(), nullable=False),
        sa.Column("include_type", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=80), nullable=False),
        sa.Column("created_by_name", sa.String(length=63), nullable=False),
        sa.Column("created_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_images")),
        sa.UniqueConstraint("tag", name=op.f("uq_images_tag")),
    )
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_images_status"), ["status"], unique=False)
        batch_op.create_index(batch_op.f("ix_images_created_by_name"), ["created_by_name"], unique=False)

    op.create_table(
        "image_import_jobs",
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("workflow_id", sa.String(length=255), nullable=False),
        sa.Column("source_ref", sa.String(length=1024), nullable=False),
        sa.Column("target_ref", sa.String(length=1024), nullable=False),
        sa.Column("source_registry_id", sa.Integer(), nullable=True),
        sa.Column("started_at", db.base.UTCDateTime(), nullable=False),
        sa.Column("finished_at", db.base.UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_image_import_jobs_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("image_id", name=op.f("pk_image_import_jobs")),
    )

    op.create_table(
        "image_layers",
        sa.Column("id", sa.Integer(), autoincrement=True, nullable=False),
        sa.Column("image_id", sa.Integer(), nullable=False),
        sa.Column("digest", sa.String(length=80), nullable=False),
        sa.Column("media_type", sa.String(length=255), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("bytes_done", sa.BigInteger(), nullable=False),
        sa.Column("progress", sa.Integer(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("upload_url", sa.Text(), nullable=False),
        sa.Column("updated_at", db.base.UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(
            ["image_id"], ["images.id"], name=op.f("fk_image_layers_image_id_images"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_image_layers")),
        sa.UniqueConstraint("image_id", "digest", name="uq_image_layers_image_digest"),
    )
    with op.batch_alter_table("image_layers", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_image_layers_image_id"), ["image_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_image_layers_digest"), ["digest"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("image_layers", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_image_layers_digest"))
        batch_op.drop_index(batch_op.f("ix_image_layers_image_id"))
    op.drop_table("image_layers")
    op.drop_table("image_import_jobs")
    with op.batch_alter_table("images", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_images_created_by_name"))
        batch_op.drop_index(batch_op.f("ix_images_status"))
    op.drop_table("images")
