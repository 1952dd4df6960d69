"""initial schema

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 01:30:20.753634
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

import taskyard.storage.types

revision = '0001'
down_revision = None
branch_labels = None
depends_on = None

def upgrade() -> None:

    op.create_table('api_keys',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('prefix', sa.String(length=32), nullable=False),
    sa.Column('key_hash', sa.String(length=128), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_used_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_keys')),
    sa.UniqueConstraint('prefix', name=op.f('uq_api_keys_prefix'))
    )
    op.create_table('idempotency_keys',
    sa.Column('scope', sa.String(length=255), nullable=False),
    sa.Column('key', sa.String(length=255), nullable=False),
    sa.Column('fingerprint', sa.String(length=128), nullable=False),
    sa.Column('status_code', sa.Integer(), nullable=True),
    sa.Column('body', sa.Text(), nullable=True),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('scope', 'key', name=op.f('pk_idempotency_keys'))
    )
    op.create_table('run_history',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('worker_id', sa.String(length=255), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_history'))
    )
    with op.batch_alter_table('run_history', schema=None) as batch_op:
        batch_op.create_index('ix_run_history_run_id', ['run_id', 'id'], unique=False)

    op.create_table('run_logs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('attempt', sa.Integer(), nullable=False),
    sa.Column('timestamp', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('stream', sa.String(length=16), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_run_logs'))
    )
    with op.batch_alter_table('run_logs', schema=None) as batch_op:
        batch_op.create_index('ix_run_logs_run_id', ['run_id', 'id'], unique=False)

    op.create_table('run_waits',
    sa.Column('run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('dependency_run_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'dependency_run_id', name=op.f('pk_run_waits'))
    )
    with op.batch_alter_table('run_waits', schema=None) as batch_op:
        batch_op.create_index('ix_run_waits_dependency_run_id', ['dependency_run_id'], unique=False)

    op.create_table('runs',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('task_name', sa.String(length=255), nullable=False),
    sa.Column('task_type', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('priority_rank', sa.Integer(), nullable=False),
    sa.Column('parameters', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('timeout_seconds', sa.Integer(), nullable=False),
    sa.Column('max_retries', sa.Integer(), nullable=False),
    sa.Column('retry_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('attempt', sa.Integer(), server_default='0', nullable=False),
    sa.Column('trigger', sa.String(length=16), nullable=False),
    sa.Column('worker_id', sa.String(length=255), nullable=True),
    sa.Column('worker_hostname', sa.String(length=255), nullable=True),
    sa.Column('lease_expires_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('available_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('scheduled_for', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('restarted_from', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=True),
    sa.Column('idempotency_key', sa.String(length=255), nullable=True),
    sa.Column('result', sa.Text(), nullable=True),
    sa.Column('error_message', sa.Text(), nullable=True),
    sa.Column('exit_code', sa.Integer(), nullable=True),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('queued_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('started_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('completed_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('execution_time', sa.Float(), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_runs')),
    sa.UniqueConstraint('task_id', 'scheduled_for', name='uq_runs_cron_slot'),
    sa.UniqueConstraint('uuid', name=op.f('uq_runs_uuid'))
    )
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.create_index('ix_runs_claim', ['status', sa.literal_column('priority_rank DESC'), 'id'], unique=False)
        batch_op.create_index('ix_runs_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_runs_lease', ['lease_expires_at'], unique=False, sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
        batch_op.create_index('ix_runs_status_completed_at', ['status', 'completed_at'], unique=False)
        batch_op.create_index('ix_runs_task_id_created_at', ['task_id', 'created_at'], unique=False)
        batch_op.create_index('ix_runs_worker_id_status', ['worker_id', 'status'], unique=False)

    op.create_table('task_dependencies',
    sa.Column('task_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.Column('depends_on_id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), nullable=False),
    sa.PrimaryKeyConstraint('task_id', 'depends_on_id', name=op.f('pk_task_dependencies'))
    )
    with op.batch_alter_table('task_dependencies', schema=None) as batch_op:
        batch_op.create_index('ix_task_dependencies_depends_on_id', ['depends_on_id'], unique=False)

    op.create_table('tasks',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), autoincrement=True, nullable=False),
    sa.Column('uuid', sa.String(length=36), nullable=False),
    sa.Column('name', sa.String(length=255), nullable=False),
    sa.Column('description', sa.Text(), nullable=True),
    sa.Column('task_type', sa.String(length=64), nullable=False),
    sa.Column('executor', sa.String(length=64), nullable=False),
    sa.Column('command', sa.Text(), nullable=False),
    sa.Column('arguments', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('schedule', sa.String(length=255), nullable=True),
    sa.Column('timezone', sa.String(length=64), server_default='UTC', nullable=False),
    sa.Column('catchup', sa.String(length=16), server_default='latest', nullable=False),
    sa.Column('priority', sa.String(length=16), nullable=False),
    sa.Column('retry_count', sa.Integer(), nullable=False),
    sa.Column('timeout_seconds', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('tags', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_run_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('next_run_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_success_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.Column('last_run_status', sa.String(length=16), nullable=True),
    sa.Column('deleted_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_tasks')),
    sa.UniqueConstraint('uuid', name=op.f('uq_tasks_uuid'))
    )
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.create_index('ix_tasks_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_tasks_due', ['next_run_at'], unique=False, sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.create_index('uq_tasks_live_name', ['name'], unique=True, sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))

    op.create_table('workers',
    sa.Column('id', sa.String(length=255), nullable=False),
    sa.Column('hostname', sa.String(length=255), nullable=False),
    sa.Column('ip_address', sa.String(length=64), nullable=False),
    sa.Column('port', sa.Integer(), nullable=False),
    sa.Column('task_types', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('max_concurrent_tasks', sa.Integer(), nullable=False),
    sa.Column('current_task_count', sa.Integer(), server_default='0', nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('last_heartbeat', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('registered_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', taskyard.storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('metadata', sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), 'postgresql'), nullable=False),
    sa.Column('load_average', sa.Float(), nullable=True),
    sa.Column('memory_usage', sa.BigInteger(), nullable=True),
    sa.Column('cpu_usage', sa.Float(), nullable=True),
    sa.Column('deleted', sa.Boolean(), server_default=sa.text('(false)'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workers'))
    )
    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.create_index('ix_workers_status', ['status'], unique=False)

def downgrade() -> None:

    with op.batch_alter_table('workers', schema=None) as batch_op:
        batch_op.drop_index('ix_workers_status')

    op.drop_table('workers')
    with op.batch_alter_table('tasks', schema=None) as batch_op:
        batch_op.drop_index('uq_tasks_live_name', sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.drop_index('ix_tasks_due', sqlite_where=sa.text('deleted_at IS NULL'), postgresql_where=sa.text('deleted_at IS NULL'))
        batch_op.drop_index('ix_tasks_created_at')

    op.drop_table('tasks')
    with op.batch_alter_table('task_dependencies', schema=None) as batch_op:
        batch_op.drop_index('ix_task_dependencies_depends_on_id')

    op.drop_table('task_dependencies')
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_index('ix_runs_worker_id_status')
        batch_op.drop_index('ix_runs_task_id_created_at')
        batch_op.drop_index('ix_runs_status_completed_at')
        batch_op.drop_index('ix_runs_lease', sqlite_where=sa.text("status = 'running'"), postgresql_where=sa.text("status = 'running'"))
        batch_op.drop_index('ix_runs_created_at')
        batch_op.drop_index('ix_runs_claim')

    op.drop_table('runs')
    with op.batch_alter_table('run_waits', schema=None) as batch_op:
        batch_op.drop_index('ix_run_waits_dependency_run_id')

    op.drop_table('run_waits')
    with op.batch_alter_table('run_logs', schema=None) as batch_op:
        batch_op.drop_index('ix_run_logs_run_id')

    op.drop_table('run_logs')
    with op.batch_alter_table('run_history', schema=None) as batch_op:
        batch_op.drop_index('ix_run_history_run_id')

    op.drop_table('run_history')
    op.drop_table('idempotency_keys')
    op.drop_table('api_keys')

