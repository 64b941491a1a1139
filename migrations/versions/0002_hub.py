"""hub tables: repos served over the Hugging Face HTTP API, commits, per-commit files, branch refs

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-29 06:45:00
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "hub_repos",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("namespace", sa.String(length=96), nullable=False),
        sa.Column("name", sa.String(length=96), nullable=False),
        sa.Column("repo_type", sa.String(length=16), nullable=False),
        sa.Column("private", sa.Boolean(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_modified", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("namespace", "name", name="uq_hub_repos_namespace_name"),
    )
    op.create_table(
        "hub_commits",
        sa.Column("id", sa.String(length=40), nullable=False),
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("parent_id", sa.String(length=40), nullable=True),
        sa.Column("summary", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=False),
        sa.Column("adapter_ref", sa.String(length=256), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(["repo_id"], ["hub_repos.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    with op.batch_alter_table("hub_commits", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hub_commits_repo_id"), ["repo_id"], unique=False)

    op.create_table(
        "hub_commit_files",
        sa.Column("commit_id", sa.String(length=40), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("git_sha1", sa.String(length=40), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("lfs", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["commit_id"], ["hub_commits.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("commit_id", "path"),
    )
    with op.batch_alter_table("hub_commit_files", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_hub_commit_files_sha256"), ["sha256"], unique=False)

    op.create_table(
        "hub_refs",
        sa.Column("repo_id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("commit_id", sa.String(length=40), nullable=False),
        sa.ForeignKeyConstraint(["commit_id"], ["hub_commits.id"]),
        sa.ForeignKeyConstraint(["repo_id"], ["hub_repos.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("repo_id", "name"),
    )


def downgrade() -> None:
    op.drop_table("hub_refs")
    with op.batch_alter_table("hub_commit_files", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hub_commit_files_sha256"))
    op.drop_table("hub_commit_files")
    with op.batch_alter_table("hub_commits", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_hub_commits_repo_id"))
    op.drop_table("hub_commits")
    op.drop_table("hub_repos")
