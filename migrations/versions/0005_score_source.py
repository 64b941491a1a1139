"""score source (measured / reported) and provenance; the base models' own measured scores

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-05 15:30:00

`adapterhub eval` measures scores; everything typed in or read from a pushed card stays `reported`. A measured
score carries its provenance (dataset sha256 and size, decoding settings, base fingerprint, version, date) as JSON.
`eval --base-only` records the base's own score in base_eval_scores, so every adapter's gain can be shown.
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("eval_scores") as batch:
        batch.add_column(sa.Column("source", sa.String(length=16), nullable=False, server_default="reported"))
        batch.add_column(sa.Column("provenance", sa.JSON(), nullable=True))
    op.create_table(
        "base_eval_scores",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("base_model_id", sa.Integer(), nullable=False),
        sa.Column("dataset", sa.String(length=128), nullable=False),
        sa.Column("metric", sa.String(length=64), nullable=False),
        sa.Column("split", sa.String(length=32), nullable=False),
        sa.Column("value", sa.Float(), nullable=False),
        sa.Column("higher_is_better", sa.Boolean(), nullable=False),
        sa.Column("source", sa.String(length=16), nullable=False, server_default="measured"),
        sa.Column("provenance", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(["base_model_id"], ["base_models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_base_eval_scores_base_model_id", "base_eval_scores", ["base_model_id"])


def downgrade() -> None:
    op.drop_index("ix_base_eval_scores_base_model_id", table_name="base_eval_scores")
    op.drop_table("base_eval_scores")
    with op.batch_alter_table("eval_scores") as batch:
        batch.drop_column("provenance")
        batch.drop_column("source")
