"""task names are unique within a project, not across the server

Revision ID: 0004
Revises: 0003
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('uq_tasks_live_name', sqlite_where=sa.text('deleted_at IS NULL'),
                            postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.create_index('uq_tasks_live_name', ['project_id', 'name'], unique=True,
                              sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))


def downgrade() -> None:
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('uq_tasks_live_name', sqlite_where=sa.text('deleted_at IS NULL'),
                            postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.create_index('uq_tasks_live_name', ['name'], unique=True,
                              sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))
