"""streamed uploads staged in the database, so any replica can take the commit

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05 19:00:00

`adapterhub push` streams each file with a raw PUT, then commits by sha256. The uploaded bytes go into the blob
store at once (a shared bucket with several replicas); this table records which caller staged which blob for which
repository, the only blobs besides a repository's own that its commits may name. Rows older than a day are pruned;
their blobs are then orphans for gc.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_staged_uploads",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("repo_key", sa.String(length=200), nullable=False),
        sa.Column("caller_key", sa.String(length=64), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("git_sha1", sa.String(length=40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("repo_key", "caller_key", "sha256", name="uq_hub_staged_uploads_key"),
    )
    op.create_index("ix_hub_staged_uploads_created_at", "hub_staged_uploads", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_hub_staged_uploads_created_at", table_name="hub_staged_uploads")
    op.drop_table("hub_staged_uploads")
