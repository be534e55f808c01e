"""Migrations: a full round trip on both backends, and the migrated schema equals the models."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, create_engine, inspect

from db.log_search import is_search_index
from db.migrate import _INI, alembic_config, downgrade, upgrade
from db.models import Base
from db.urls import async_url, sync_url
from tests.fixtures import postgres


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """The URL of an empty database on each backend."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    with postgres.server_url() as server, postgres.scratch_database(server) as url:
        yield url


@contextlib.contextmanager
def sync_engine(url: str) -> Iterator[Engine]:
    engine = create_engine(sync_url(async_url(url)))
    try:
        yield engine
    finally:
        engine.dispose()


def table_names(url: str) -> set[str]:
    """Tables, without Alembic's and the log search index's (SQLite FTS5 tables)."""
    with sync_engine(url) as engine:
        names = set(inspect(engine).get_table_names()) - {"alembic_version"}
    return {n for n in names if not is_search_index(n)}


def current_revision(url: str) -> str | None:
    with sync_engine(url) as engine, engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def include_name(name: str | None, type_: str, _parents: object) -> bool:
    return not is_search_index(name)


def test_search_index_exists_after_upgrade_and_goes_with_downgrade(empty_database: str) -> None:
    """0019's FTS5 table (SQLite) or trigram index (PostgreSQL) is there, and gone one step down."""

    def search_objects() -> set[str]:
        with sync_engine(empty_database) as engine:
            found = inspect(engine)
            names = set(found.get_table_names()) | {i["name"] or "" for i in found.get_indexes("log_lines")}
        return {n for n in names if is_search_index(n)}

    upgrade(empty_database, "0019")
    assert search_objects() >= (
        {"log_lines_fts"} if empty_database.startswith("sqlite") else {"ix_log_lines_line_trgm"}
    )
    downgrade(empty_database, "0017")
    assert search_objects() == set()


def test_round_trip(empty_database: str) -> None:
    head = ScriptDirectory.from_config(alembic_config(empty_database)).get_current_head()
    model_tables = set(Base.metadata.tables)

    upgrade(empty_database)
    assert current_revision(empty_database) == head
    assert table_names(empty_database) == model_tables

    downgrade(empty_database, "base")
    assert current_revision(empty_database) is None
    assert table_names(empty_database) == set()

    upgrade(empty_database)
    assert current_revision(empty_database) == head
    assert table_names(empty_database) == model_tables


def test_every_step_downgrades(empty_database: str) -> None:
    """Each revision's downgrade undoes exactly its upgrade (walked one step at a time)."""
    script = ScriptDirectory.from_config(alembic_config(empty_database))
    revisions = [rev.revision for rev in reversed(list(script.walk_revisions()))]
    seen: list[set[str]] = []
    for revision in revisions:
        seen.append(table_names(empty_database))
        upgrade(empty_database, revision)
    for revision, tables_before in zip(reversed(revisions), reversed(seen), strict=True):
        downgrade(empty_database, "-1")
        assert table_names(empty_database) == tables_before, f"downgrade of {revision}"


def test_single_head() -> None:
    script = ScriptDirectory.from_config(alembic_config("sqlite://"))
    assert len(script.get_heads()) == 1, f"several migration heads: {script.get_heads()}"


def test_migrated_schema_matches_models(empty_database: str) -> None:
    """A model change without a migration (or the reverse) fails here."""
    upgrade(empty_database)
    with sync_engine(empty_database) as engine, engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True, "include_name": include_name})
        diff = compare_metadata(context, Base.metadata)
    assert diff == [], "schema differs from db.models; write a migration:\n" + "\n".join(map(str, diff))


def test_plain_alembic_without_url_points_to_the_cli(tmp_path: Path) -> None:
    """The migration environment reads no settings: without a URL in its config it stops, naming the CLI."""
    database = tmp_path / "from-settings.db"
    env = {**os.environ, "PRIMUS_DATABASE_URL": f"sqlite:///{database}"}
    proc = subprocess.run(
        [sys.executable, "-m", "alembic", "-c", str(_INI), "upgrade", "head"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode != 0
    assert "primus-safe db upgrade" in proc.stderr + proc.stdout
    assert not database.exists()  # PRIMUS_DATABASE_URL was not read behind the caller's back
