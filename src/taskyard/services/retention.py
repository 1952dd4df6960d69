"""Retention: the append-heavy tables keep `retention_days` of data (leader only)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from taskyard.storage import retention as rows

if TYPE_CHECKING:
    from taskyard.services.core import Core

CHUNK = 5000


class RetentionService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def purge(self, *, max_chunks: int = 1000) -> dict[str, int]:
        """Delete rows older than the retention window, chunk by chunk; returns the count per table."""
        days = self.core.config.retention_days
        removed: dict[str, int] = {}
        if days <= 0:
            return removed
        cutoff = self.core.clock() - timedelta(days=days)
        for table, column in rows.APPEND_HEAVY:
            total = 0
            for _ in range(max_chunks):
                async with self.core.db.write() as conn:
                    gone = await rows.purge_chunk(conn, table, column, cutoff, CHUNK)
                total += gone
                if gone < CHUNK:
                    break
            removed[table.name] = total
        return removed
