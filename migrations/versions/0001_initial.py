"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-29 06:35:49.840105
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('base_models',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('arch_hash', sa.String(length=64), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('parameter_count', sa.BigInteger(), nullable=False),
    sa.Column('dtype', sa.String(length=16), nullable=False),
    sa.Column('model_type', sa.String(length=64), nullable=True),
    sa.Column('lineage', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('content_hash')
    )
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_base_models_arch_hash'), ['arch_hash'], unique=False)
        batch_op.create_index(batch_op.f('ix_base_models_name'), ['name'], unique=False)

    op.create_table('repos',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('namespace', sa.String(length=96), nullable=False),
    sa.Column('name', sa.String(length=96), nullable=False),
    sa.Column('last_version', sa.Integer(), nullable=False),
    sa.Column('private', sa.Boolean(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('namespace', 'name', name='uq_repos_namespace_name')
    )
    op.create_table('adapters',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('is_latest', sa.Boolean(), nullable=False),
    sa.Column('task', sa.String(length=128), nullable=False),
    sa.Column('method', sa.String(length=16), nullable=False),
    sa.Column('rank', sa.Integer(), nullable=False),
    sa.Column('rank_pattern', sa.JSON(), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('use_rslora', sa.Boolean(), nullable=False),
    sa.Column('target_modules', sa.JSON(), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('search_text', sa.Text(), nullable=False),
    sa.Column('license', sa.String(length=64), nullable=True),
    sa.Column('base_model_id', sa.Integer(), nullable=True),
    sa.Column('base_model_name_or_path', sa.String(length=512), nullable=True),
    sa.Column('peft_task_type', sa.String(length=64), nullable=True),
    sa.Column('lineage', sa.JSON(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['base_model_id'], ['base_models.id'], ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['repo_id'], ['repos.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('repo_id', 'version', name='uq_adapters_repo_version')
    )
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.create_index('ix_adapters_base_latest_created', ['base_model_id', 'is_latest', 'created_at'], unique=False)
        batch_op.create_index('ix_adapters_latest_created', ['is_latest', 'created_at'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapters_repo_id'), ['repo_id'], unique=False)
        batch_op.create_index('ix_adapters_latest_task_created', ['is_latest', 'task', 'created_at'], unique=False)

    op.create_table('adapter_files',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('path', sa.String(length=512), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('size', sa.BigInteger(), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('adapter_id', 'path', name='uq_adapter_files_adapter_path')
    )
    with op.batch_alter_table('adapter_files', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapter_files_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapter_files_sha256'), ['sha256'], unique=False)

    op.create_table('adapter_tags',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('tag', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('adapter_id', 'tag', name='uq_adapter_tags_adapter_tag')
    )
    with op.batch_alter_table('adapter_tags', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_adapter_tags_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_adapter_tags_tag'), ['tag'], unique=False)

    op.create_table('aliases',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('repo_id', sa.Integer(), nullable=False),
    sa.Column('alias', sa.String(length=64), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['repo_id'], ['repos.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('repo_id', 'alias', name='uq_aliases_repo_alias')
    )
    with op.batch_alter_table('aliases', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_aliases_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_aliases_repo_id'), ['repo_id'], unique=False)

    op.create_table('eval_scores',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('adapter_id', sa.Integer(), nullable=False),
    sa.Column('dataset', sa.String(length=128), nullable=False),
    sa.Column('metric', sa.String(length=64), nullable=False),
    sa.Column('split', sa.String(length=32), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('higher_is_better', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['adapter_id'], ['adapters.id'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('eval_scores', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_eval_scores_adapter_id'), ['adapter_id'], unique=False)
        batch_op.create_index('ix_eval_scores_key_value', ['dataset', 'metric', 'value'], unique=False)
        batch_op.create_index('ix_eval_scores_adapter_key', ['adapter_id', 'dataset', 'metric', 'value', 'higher_is_better'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('eval_scores', schema=None) as batch_op:
        batch_op.drop_index('ix_eval_scores_adapter_key')
        batch_op.drop_index('ix_eval_scores_key_value')
        batch_op.drop_index(batch_op.f('ix_eval_scores_adapter_id'))

    op.drop_table('eval_scores')
    with op.batch_alter_table('aliases', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_aliases_repo_id'))
        batch_op.drop_index(batch_op.f('ix_aliases_adapter_id'))

    op.drop_table('aliases')
    with op.batch_alter_table('adapter_tags', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapter_tags_tag'))
        batch_op.drop_index(batch_op.f('ix_adapter_tags_adapter_id'))

    op.drop_table('adapter_tags')
    with op.batch_alter_table('adapter_files', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_adapter_files_sha256'))
        batch_op.drop_index(batch_op.f('ix_adapter_files_adapter_id'))

    op.drop_table('adapter_files')
    with op.batch_alter_table('adapters', schema=None) as batch_op:
        batch_op.drop_index('ix_adapters_latest_task_created')
        batch_op.drop_index(batch_op.f('ix_adapters_repo_id'))
        batch_op.drop_index('ix_adapters_latest_created')
        batch_op.drop_index('ix_adapters_base_latest_created')

    op.drop_table('adapters')
    op.drop_table('repos')
    with op.batch_alter_table('base_models', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_base_models_name'))
        batch_op.drop_index(batch_op.f('ix_base_models_arch_hash'))

    op.drop_table('base_models')
