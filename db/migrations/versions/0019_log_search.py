"""log search: a trigram index over log_lines.line (SQLite FTS5, PostgreSQL pg_trgm)

Keywords are case-sensitive substrings, so both backends index trigrams: SQLite an external
content FTS5 table (`trigram case_sensitive 1`, rowids only: `detail=none`) kept by triggers,
PostgreSQL a GIN `gin_trgm_ops` index (pg_trgm ships with PostgreSQL and is a trusted extension
since 13: the database owner may create it).

Revision ID: 0019
Revises: 0018
Create Date: 2026-12-04
"""

from __future__ import annotations

from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

SQLITE_UP = [
    "CREATE VIRTUAL TABLE log_lines_fts USING fts5(line, content='log_lines', content_rowid='id', "
    "tokenize='trigram case_sensitive 1', detail=none, columnsize=0)",
    "CREATE TRIGGER log_lines_fts_insert AFTER INSERT ON log_lines BEGIN "
    "INSERT INTO log_lines_fts(rowid, line) VALUES (new.id, new.line); END",
    "CREATE TRIGGER log_lines_fts_delete AFTER DELETE ON log_lines BEGIN "
    "INSERT INTO log_lines_fts(log_lines_fts, rowid, line) VALUES ('delete', old.id, old.line); END",
    "CREATE TRIGGER log_lines_fts_update AFTER UPDATE OF line ON log_lines BEGIN "
    "INSERT INTO log_lines_fts(log_lines_fts, rowid, line) VALUES ('delete', old.id, old.line); "
    "INSERT INTO log_lines_fts(rowid, line) VALUES (new.id, new.line); END",
    "INSERT INTO log_lines_fts(log_lines_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS log_lines_fts_update",
    "DROP TRIGGER IF EXISTS log_lines_fts_delete",
    "DROP TRIGGER IF EXISTS log_lines_fts_insert",
    "DROP TABLE IF EXISTS log_lines_fts",
]
POSTGRES_UP = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_log_lines_line_trgm ON log_lines USING gin (line gin_trgm_ops)",
]
POSTGRES_DOWN = ["DROP INDEX IF EXISTS ix_log_lines_line_trgm"]


def _run(sqlite: list[str], postgres: list[str]) -> None:
    for statement in sqlite if op.get_bind().dialect.name == "sqlite" else postgres:
        op.execute(statement)


def upgrade() -> None:
    _run(SQLITE_UP, POSTGRES_UP)


def downgrade() -> None:
    _run(SQLITE_DOWN, POSTGRES_DOWN)
