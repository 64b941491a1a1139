"""a partial index on the private hub repositories

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05 18:00:00

Every anonymous page and search first reads which registry repos are hidden (the private hub repositories). Without an
index that read scans every hub repository (about 8 ms at 100,000); a partial index holds only the private ones, so
the read costs a few lookups. SQLite and PostgreSQL both support partial indexes; the WHERE text matches what
SQLAlchemy renders for `private.is_(True)` on each, so each planner can prove the index applies.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(
        "ix_hub_repos_private",
        "hub_repos",
        ["namespace", "name"],
        sqlite_where=sa.text("private IS 1"),
        postgresql_where=sa.text("private IS true"),
    )


def downgrade() -> None:
    op.drop_index("ix_hub_repos_private", table_name="hub_repos")
