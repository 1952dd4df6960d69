"""tenants, projects, tracking events

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 02:38:26.877767
"""
from __future__ import annotations

import uuid
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import taskyard.storage.types

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('projects',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('tenant_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_projects')),
    sa.UniqueConstraint('tenant_id', 'name', name='uq_projects_tenant_name'),
    sa.UniqueConstraint('uuid', name=op.f('uq_projects_uuid'))
    )
    op.create_table('run_events',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('data', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=True),
    sa.Column('timestamp', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_events'))
    )
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.create_index('ix_run_events_run_id', ['run_id', 'id'], unique=False)

    op.create_table('tenants',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tenants')),
    sa.UniqueConstraint('name', name=op.f('uq_tenants_name')),
    sa.UniqueConstraint('uuid', name=op.f('uq_tenants_uuid'))
    )
    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), server_default='1', nullable=False))
        batch_op.add_column(sa.Column('external_id', sa.String(length=255), nullable=True))
        batch_op.create_index('uq_runs_external_id', ['project_id', 'external_id'], unique=True, sqlite_where=sa.text('external_id IS NOT NULL'), postgresql_where=sa.text('external_id IS NOT NULL'))

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), server_default='1', nullable=False))

    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.add_column(sa.Column('project_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), server_default='1', nullable=False))

    # The default namespace: first rows, so both get id 1 (DEFAULT_PROJECT_ID), which existing rows use.
    now = datetime.now(UTC)
    tenants = sa.table('tenants', sa.column('uuid'), sa.column('name'), sa.column('created_at', taskyard.storage.types.UTCDateTime()))
    projects = sa.table('projects', sa.column('uuid'), sa.column('tenant_id'), sa.column('name'),
                        sa.column('created_at', taskyard.storage.types.UTCDateTime()))
    op.bulk_insert(tenants, [{'uuid': str(uuid.uuid4()), 'name': 'default', 'created_at': now}])
    op.bulk_insert(projects, [{'uuid': str(uuid.uuid4()), 'tenant_id': 1, 'name': 'default', 'created_at': now}])



def downgrade() -> None:
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_column('project_id')

    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_column('project_id')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('uq_runs_external_id', sqlite_where=sa.text('external_id IS NOT NULL'), postgresql_where=sa.text('external_id IS NOT NULL'))
        batch_op.drop_column('external_id')
        batch_op.drop_column('project_id')

    with op.batch_alter_table('api_keys', schema=None) as batch_op:
        batch_op.drop_column('project_id')

    op.drop_table('tenants')
    with op.batch_alter_table('run_events', schema=None) as batch_op:
        batch_op.drop_index('ix_run_events_run_id')

    op.drop_table('run_events')
    op.drop_table('projects')
