"""Exactly one server leads the cron scheduler and the reaper: a PostgreSQL session advisory lock,
held on a connection of its own. On SQLite the single server always leads."""

from __future__ import annotations

import contextlib
from typing import Any

from sqlalchemy.engine import make_url

from taskyard.storage.database import Database

LEADER_LOCK_KEY = 7212002


class LeaderLock:
    def __init__(self, db: Database) -> None:
        self.db = db
        self._conn: Any = None

    async def try_acquire(self) -> bool:
        """True while this process holds the lock; re-checks a held connection is still alive."""
        if self.db.is_sqlite:
            return True
        import psycopg

        if self._conn is not None:
            try:
                await self._conn.execute("SELECT 1")
                return True
            except Exception:  # the connection died and the lock with it
                await self.release()
        try:
            conn = await psycopg.AsyncConnection.connect(libpq_url(self.db.url), autocommit=True)
        except Exception:
            return False
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,))
        row = await cur.fetchone()
        if row and row[0]:
            self._conn = conn
            return True
        await conn.close()
        return False

    async def release(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None


def libpq_url(url: str) -> str:
    """A URL psycopg accepts directly (no SQLAlchemy driver suffix)."""
    parsed = make_url(url if not url.startswith("postgres://") else "postgresql://" + url[11:])
    return parsed.set(drivername="postgresql").render_as_string(hide_password=False)
