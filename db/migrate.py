"""Run Alembic migrations programmatically: the only way the schema is created or changed."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from db.urls import sync_url

_INI = Path(__file__).with_name("alembic.ini")


def alembic_config(url: str) -> Config:
    """An Alembic config for `url` (async or sync form): the only source of migrations' URL."""
    cfg = Config(str(_INI))
    cfg.set_main_option("script_location", str(_INI.parent / "migrations"))
    cfg.set_main_option("sqlalchemy.url", sync_url(url).replace("%", "%%"))
    return cfg


def upgrade(url: str, revision: str = "head") -> None:
    """Upgrade the database at `url` to `revision`."""
    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str = "base") -> None:
    """Downgrade the database at `url` to `revision`."""
    command.downgrade(alembic_config(url), revision)
