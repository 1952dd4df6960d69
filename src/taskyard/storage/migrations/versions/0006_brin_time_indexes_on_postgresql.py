"""BRIN time indexes on PostgreSQL for the append-heavy tables

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-23 04:50:00

The timestamp indexes of run_events, run_logs and run_samples serve only retention (delete what is
older than a cutoff). Rows arrive in about time order, so a BRIN index (one summary per range of
pages) finds the old ones as well as a B-tree while costing almost nothing per insert; the B-tree cost
about 3 us per appended row, a third of the database's work for a tracking event. SQLite has no BRIN
and keeps its B-trees.
"""
from __future__ import annotations

from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

_TABLES = ("run_events", "run_logs", "run_samples")


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.drop_index(f"ix_{table}_timestamp", table_name=table)
        op.create_index(f"ix_{table}_timestamp", table, ["timestamp"], postgresql_using="brin")


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for table in _TABLES:
        op.drop_index(f"ix_{table}_timestamp", table_name=table)
        op.create_index(f"ix_{table}_timestamp", table, ["timestamp"])
