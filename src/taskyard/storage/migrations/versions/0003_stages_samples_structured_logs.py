"""stages, samples, structured logs

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 02:41:20.068860
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import taskyard.storage.types

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('run_samples',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('value', sa.Float(), nullable=False),
    sa.Column('unit', sa.String(length=32), nullable=True),
    sa.Column('source', sa.String(length=16), nullable=False),
    sa.Column('timestamp', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_samples'))
    )
    with op.batch_alter_table('run_samples', schema=None) as batch_op:
        batch_op.create_index('ix_run_samples_run_id', ['run_id', 'name', 'id'], unique=False)

    op.create_table('run_stages',
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('stage_order', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('progress', sa.Float(), nullable=True),
    sa.Column('records_processed', sa.BigInteger(), nullable=True),
    sa.Column('total_records', sa.BigInteger(), nullable=True),
    sa.Column('started_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('ended_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('updated_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('metrics', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.PrimaryKeyConstraint('run_id', 'name', name=op.f('pk_run_stages'))
    )
    with op.batch_alter_table('run_logs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('component', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('stage', sa.String(length=255), nullable=True))
        batch_op.add_column(sa.Column('details', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('progress', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('current_activity', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('submitted_by', sa.String(length=255), nullable=True))



def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('submitted_by')
        batch_op.drop_column('current_activity')
        batch_op.drop_column('progress')

    with op.batch_alter_table('run_logs', schema=None) as batch_op:
        batch_op.drop_column('details')
        batch_op.drop_column('stage')
        batch_op.drop_column('component')

    op.drop_table('run_stages')
    with op.batch_alter_table('run_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_run_samples_run_id')

    op.drop_table('run_samples')
