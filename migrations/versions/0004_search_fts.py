"""full-text (trigram) index over adapters.search_text on SQLite, kept in sync by triggers

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-29 08:45:00

Free-text search was a LIKE scan of every row (60 ms at 100,000 adapters). An FTS5 trigram index answers the same
substring question from an index. PostgreSQL keeps the plain LIKE (a sequential scan there is fast enough, and
pg_trgm needs an extension a hosted database may not allow). The index lives outside the ORM: `db.include_name`
keeps Alembic's comparisons from treating its tables as strays.
"""

from __future__ import annotations

from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

STATEMENTS = [
    "CREATE VIRTUAL TABLE adapters_fts USING fts5(search_text, content='adapters', content_rowid='id', tokenize='trigram')",
    "INSERT INTO adapters_fts(adapters_fts) VALUES ('rebuild')",
    "CREATE TRIGGER adapters_fts_ai AFTER INSERT ON adapters BEGIN "
    "INSERT INTO adapters_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
    "CREATE TRIGGER adapters_fts_ad AFTER DELETE ON adapters BEGIN "
    "INSERT INTO adapters_fts(adapters_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text); END",
    "CREATE TRIGGER adapters_fts_au AFTER UPDATE OF search_text ON adapters BEGIN "
    "INSERT INTO adapters_fts(adapters_fts, rowid, search_text) VALUES ('delete', old.id, old.search_text); "
    "INSERT INTO adapters_fts(rowid, search_text) VALUES (new.id, new.search_text); END",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for sql in STATEMENTS:
        op.execute(sql)


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    for name in ("adapters_fts_ai", "adapters_fts_ad", "adapters_fts_au"):
        op.execute(f"DROP TRIGGER IF EXISTS {name}")
    op.execute("DROP TABLE IF EXISTS adapters_fts")
