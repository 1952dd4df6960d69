"""indexes for every run list sort and filter; tallies of finished runs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-23 07:10:00

With a million runs stored, a run list sorted by a column without an index sorted every run for each
page, and the statistics of a task or of the system counted every run. Each sort and filter of the run
list now has an index whose order is the page's order ((status, created_at) replaces (status,
completed_at), whose one reader, the recent throughput, is served by completed_at alone; a worker's runs
newest first come from (worker_id, created_at), which SQLite would otherwise sort), and finished
runs are counted once into run_tallies (storage/tallies.py). The tallies start empty with their mark at
0; the leader fills them in chunks, and until then statistics count the runs past the mark themselves.
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), 'sqlite')


def upgrade() -> None:
    op.drop_index("ix_runs_status_completed_at", table_name="runs")
    op.create_index("ix_runs_status_created_at", "runs", ["status", "created_at"])
    op.create_index("ix_runs_worker_id_created_at", "runs", ["worker_id", "created_at"])
    op.create_index("ix_runs_priority_rank_created_at", "runs", ["priority_rank", "created_at"])
    op.create_index("ix_runs_started_at", "runs", ["started_at"])
    op.create_index("ix_runs_completed_at", "runs", ["completed_at"])
    op.create_index("ix_runs_execution_time", "runs", ["execution_time"])
    op.create_table(
        "run_tallies",
        sa.Column("task_id", Id, nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("project_id", Id, nullable=False),
        sa.Column("runs", sa.BigInteger(), nullable=False),
        sa.Column("seconds", sa.Float(), nullable=False),
        sa.Column("timed", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("task_id", "status", name=op.f("pk_run_tallies")),
    )
    marks = op.create_table(
        "run_tally_marks",
        sa.Column("id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("through_id", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_tally_marks")),
    )
    op.create_table(
        "run_tally_open",
        sa.Column("run_id", Id, autoincrement=False, nullable=False),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_run_tally_open")),
    )
    op.bulk_insert(marks, [{"id": 1, "through_id": 0, "updated_at": None}])


def downgrade() -> None:
    op.drop_table("run_tally_open")
    op.drop_table("run_tally_marks")
    op.drop_table("run_tallies")
    op.drop_index("ix_runs_execution_time", table_name="runs")
    op.drop_index("ix_runs_completed_at", table_name="runs")
    op.drop_index("ix_runs_started_at", table_name="runs")
    op.drop_index("ix_runs_priority_rank_created_at", table_name="runs")
    op.drop_index("ix_runs_worker_id_created_at", table_name="runs")
    op.drop_index("ix_runs_status_created_at", table_name="runs")
    op.create_index("ix_runs_status_completed_at", "runs", ["status", "completed_at"])
