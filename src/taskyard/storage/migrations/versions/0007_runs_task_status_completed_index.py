"""runs by task, status and completion time

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-23 05:40:00

A trigger answers with an estimated completion from the task's recent completed runs. Without this
index that lookup scanned every run of the task (queued ones included), so triggering slowed down as
a task's runs piled up; with it, it reads the newest few entries of one range.
"""
from __future__ import annotations

from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_runs_task_status_completed_at", "runs", ["task_id", "status", "completed_at"])


def downgrade() -> None:
    op.drop_index("ix_runs_task_status_completed_at", table_name="runs")
