"""Alembic environment: runs migrations with a synchronous engine on the URL `db.migrate` sets."""

from __future__ import annotations

from alembic import context
from alembic.util import CommandError
from sqlalchemy import create_engine, pool

from db.log_search import is_search_index
from db.models import Base

config = context.config


def _url() -> str:
    """The URL set in the Alembic config by `db.migrate` (the database layer reads no settings)."""
    url = config.get_main_option("sqlalchemy.url")
    if not url:
        raise CommandError(
            "no database URL: run migrations with `primus-safe db upgrade` (it reads "
            "PRIMUS_DATABASE_URL); plain `alembic` needs sqlalchemy.url in its config"
        )
    return url


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    """Autogenerate leaves the log search index alone (FTS5 tables, the trigram index: 0019)."""
    return not is_search_index(name)


def run_migrations_offline() -> None:
    context.configure(
        url=_url(),
        target_metadata=Base.metadata,
        include_name=include_name,
        literal_binds=True,
        render_as_batch=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connectable = config.attributes.get("connection")
    if connectable is not None:
        context.configure(
            connection=connectable,
            target_metadata=Base.metadata,
            include_name=include_name,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = create_engine(_url(), poolclass=pool.NullPool)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=Base.metadata,
            include_name=include_name,
            render_as_batch=True,
        )
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
