"""Keeping the run tallies current (leader only); what they are and why: storage/tallies.py."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import TYPE_CHECKING

from taskyard.storage import tallies as tally_rows

if TYPE_CHECKING:
    from taskyard.services.core import Core

# Runs created within the last MARGIN are left for a later pass: a PostgreSQL transaction that drew a run's
# id may not have committed yet, and the mark must not pass a run the tallies have not seen.
MARGIN = timedelta(minutes=1)
# Runs per transaction: a first pass over a large history goes in pieces, so SQLite's single write lock
# is never held for long.
CHUNK = 20_000


class TallyService:
    def __init__(self, core: Core) -> None:
        self.core = core

    async def advance(self, *, max_chunks: int = 1000) -> int:
        """Move the mark as far as it may go; returns how many runs it passed."""
        total = 0
        for _ in range(max_chunks):
            now = self.core.clock()
            async with self.core.db.write() as conn:
                passed = await tally_rows.advance(conn, before=now - MARGIN, chunk=CHUNK, now=now)
            total += passed
            if passed < CHUNK:
                break
            await asyncio.sleep(0)  # writers waiting on SQLite's lock go between two pieces
        return total
