"""Chunked deletes of old rows from the append-heavy tables."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Table, delete, select
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.storage.tables import run_events, run_logs, run_samples

# (table, its time column): the tables that grow with every run's output and reports.
APPEND_HEAVY: tuple[tuple[Table, str], ...] = (
    (run_events, "timestamp"),
    (run_logs, "timestamp"),
    (run_samples, "timestamp"),
)


async def purge_chunk(conn: AsyncConnection, table: Table, column: str, cutoff: datetime, chunk: int) -> int:
    """Delete at most `chunk` rows older than `cutoff`; returns how many went. Small chunks keep each
    transaction short, so writers (and SQLite's single write lock) are never held up for long."""
    oldest = select(table.c.id).where(table.c[column] < cutoff).order_by(table.c.id).limit(chunk)
    result = await conn.execute(delete(table).where(table.c.id.in_(oldest.scalar_subquery())))
    return int(result.rowcount or 0)
