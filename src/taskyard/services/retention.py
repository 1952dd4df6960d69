"""Retention: the append-heavy tables keep `retention_days` of data (leader only)."""

from __future__ import annotations

from datetime import timedelta
from typing import TYPE_CHECKING

from taskyard.storage import access as access_rows
from taskyard.storage import retention as rows

if TYPE_CHECKING:
    from taskyard.services.core import Core

CHUNK = 5000
IDEMPOTENCY_WINDOW = timedelta(hours=24)


class RetentionService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def purge(self, *, max_chunks: int = 1000) -> dict[str, int]:
        """Delete rows older than the retention window, chunk by chunk; returns the count per table."""
        # Idempotency keys promise a replay for 24 hours; older ones only take space.
        async with self.core.db.write() as conn:
            await access_rows.purge_idempotency(conn, self.core.clock() - IDEMPOTENCY_WINDOW)
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
