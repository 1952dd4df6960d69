"""time indexes for retention

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 03:09:22.430755
"""
from __future__ import annotations

from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.create_index('ix_run_events_timestamp', ['timestamp'], unique=False)

    with op.batch_alter_table('run_logs', schema=None) as batch_op:
        batch_op.create_index('ix_run_logs_timestamp', ['timestamp'], unique=False)

    with op.batch_alter_table('run_samples', schema=None) as batch_op:
        batch_op.create_index('ix_run_samples_timestamp', ['timestamp'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('run_samples', schema=None) as batch_op:
        batch_op.drop_index('ix_run_samples_timestamp')

    with op.batch_alter_table('run_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_run_logs_timestamp')

    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.drop_index('ix_run_events_timestamp')

