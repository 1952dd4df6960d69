"""On PostgreSQL a claim reads the few runs it takes, however many are queued and whatever the planner's
statistics say: statistics taken before a burst of triggers say queued runs are rare, and a planner that
believes them fetches and sorts the whole queue for every claim."""

from __future__ import annotations

import pytest
from contract_kit import make_task, make_worker
from sqlalchemy import text

from taskyard.services.lifecycle import lease_deadline
from taskyard.storage import runs as run_rows

QUEUED = 8000


@pytest.fixture
def pg_core(core):
    if not core.db.is_postgres:
        pytest.skip("SQLite has no statistics until ANALYZE, and walks ix_runs_claim without them")
    return core


@pytest.mark.parametrize("statistics", ["none", "from before the burst"])
async def test_a_claim_reads_its_own_runs_not_the_whole_queue(pg_core, clock, statistics) -> None:
    task = await make_task(pg_core)
    worker = await make_worker(pg_core)
    async with pg_core.db.statement() as conn:
        # No statistics change while the burst lands.
        await conn.execute(text("ALTER TABLE runs SET (autovacuum_enabled = false)"))
        if statistics != "none":
            await conn.execute(text("ANALYZE runs"))
    first = (await pg_core.runs.trigger(task.id)).run
    async with pg_core.db.statement() as conn:
        # The rest of the burst as copies of the first run, each with its own id and uuid.
        columns = [c for c in (await conn.execute(text(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 'runs'"))).scalars()
            if c not in ("id", "uuid")]
        names = ", ".join(columns)
        await conn.execute(text(
            f"INSERT INTO runs (uuid, {names}) SELECT gen_random_uuid()::text, {names}"
            " FROM runs, generate_series(2, :n) WHERE runs.id = :id"), {"n": QUEUED, "id": first.id})

    async with pg_core.db.write() as conn:
        claimed, _ = await run_rows.claim(conn, project_id=worker.project_id, worker_id=worker.id,
                                          hostname=worker.hostname, task_types=["http", "python", "shell"],
                                          limit=4, now=clock.now, lease_until=lease_deadline(clock.now, 10))
        # What this transaction has read so far, index by index.
        read = dict((await conn.execute(text(
            "SELECT indexrelid::regclass::text, pg_stat_get_xact_tuples_returned(indexrelid) FROM pg_index"
            " WHERE indrelid = 'runs'::regclass"))).all())

    assert len(claimed) == 4
    # Each claimed run through ix_runs_claim, again through the primary key to be updated, and once more
    # where its history row's foreign key is checked: a few entries a run, never the queue.
    assert sum(read.values()) <= 3 * len(claimed), f"the claim read {read} with {QUEUED} runs queued"
