"""PostgreSQL connections: a burst of requests waits for the pool's warm connections instead of opening
new ones (each a backend start and cold statement plans), and a request that waits too long is told the
database is busy rather than failing with an internal error."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import text

from taskyard.domain.errors import Unavailable
from taskyard.storage.database import Database


@pytest.fixture
def postgres_url(database_url: str) -> str:
    if not database_url.startswith("postgresql"):
        pytest.skip("SQLite has no connection pool to size")
    return database_url


async def _backends(db: Database) -> int:
    async with db.read() as conn:
        return int((await conn.execute(text(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
            " AND backend_type = 'client backend'"))).scalar_one())


async def test_a_burst_uses_the_pool_s_connections_only(postgres_url) -> None:
    db = Database(postgres_url, pool_size=3)
    peak = 0

    async def busy() -> None:
        nonlocal peak
        async with db.read() as conn:
            await conn.execute(text("SELECT pg_sleep(0.05)"))
            peak = max(peak, int((await conn.execute(text(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                " AND backend_type = 'client backend' AND application_name = ''"))).scalar_one()))

    try:
        await asyncio.gather(*(busy() for _ in range(20)))
        assert 1 <= peak <= 3
        assert db.pool_status()["active"] == 0
        assert await _backends(db) <= 3
    finally:
        await db.dispose()


async def test_a_request_that_finds_every_connection_busy_is_told_so(postgres_url) -> None:
    db = Database(postgres_url, pool_size=1, pool_timeout=0.2)
    try:
        async with db.read() as held:
            await held.execute(text("SELECT 1"))
            with pytest.raises(Unavailable, match=r"busy for 0\.2 s"):
                async with db.read() as conn:
                    await conn.execute(text("SELECT 1"))
    finally:
        await db.dispose()
