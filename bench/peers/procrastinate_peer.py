"""Procrastinate (PostgreSQL-only job queue), installed into its own virtual environment under
bench/.venv-procrastinate so it never touches taskyard's dependencies, and driven through subprocesses running
that venv's python. Its task runs the same no-op shell command as taskyard's no-op runs.

Each measurement gets a fresh database (dropped afterwards): all jobs are enqueued in bulk first, then the
workers start and the clock runs until every job has finished, as seen from procrastinate_jobs.
"""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from bench import _procs
from bench.peers._peer_procs import tail

VENV = Path(__file__).resolve().parent.parent / ".venv-procrastinate"
# Newest 2.x or 3.x that installs; psycopg's binary build so the venv needs no libpq headers or compiler.
REQUIREMENTS = ["procrastinate>=2,<4", "psycopg[binary]"]
# Distinct from celery_peer's bench_app.py, in case both peers are given the same home.
APP_MODULE = "bench_procrastinate_app"

APP = textwrap.dedent('''
    import asyncio
    import procrastinate

    # psycopg_pool defaults to 4 connections, one of them held by LISTEN: with more concurrent jobs than that,
    # their fetch/finish queries would queue for a connection, so the pool follows the concurrency.
    app = procrastinate.App(connector=procrastinate.PsycopgConnector(conninfo={conninfo!r}, min_size=1,
                                                                     max_size={pool_size}))


    # Async, because Procrastinate runs sync tasks through asyncio's default thread pool, which holds only
    # min(32, cores + 4) threads: on a small machine that, not --concurrency, would bound the parallelism.
    @app.task(name="noop")
    async def noop() -> None:
        proc = await asyncio.create_subprocess_exec("true")
        if await proc.wait() != 0:
            raise RuntimeError(f"true exited with {{proc.returncode}}")
''')

ENQUEUE = textwrap.dedent('''
    import importlib.metadata
    import sys
    from bench_procrastinate_app import app, noop

    n, chunk = int(sys.argv[1]), 5000
    with app.open():
        app.schema_manager.apply_schema()
        # batch_defer is one INSERT per chunk; older 2.x releases lack it and defer one job per round trip.
        if hasattr(noop, "batch_defer"):
            for i in range(0, n, chunk):
                noop.batch_defer(*({} for _ in range(min(chunk, n - i))))
        else:
            for _ in range(n):
                noop.defer()
    print(importlib.metadata.version("procrastinate"), flush=True)
''')


def ensure_venv() -> Path:
    """The venv's python, creating the venv on first use. A marker written after a successful install means an
    interrupted install is redone rather than reused; the lock keeps two concurrent first uses apart."""
    python = VENV / "bin" / "python"
    marker = VENV / ".bench-installed"
    if marker.exists():
        return python
    VENV.mkdir(parents=True, exist_ok=True)
    with (VENV / ".bench-install.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.exists():
            return python
        try:
            subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True, timeout=300)
            subprocess.run([str(python), "-m", "pip", "install", "-q", "--disable-pip-version-check", *REQUIREMENTS],
                           check=True, timeout=900)
        except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as exc:
            raise RuntimeError(f"could not install {' '.join(REQUIREMENTS)} into {VENV}: {exc}") from exc
        marker.write_text(" ".join(REQUIREMENTS) + "\n")
    return python


def throughput(home: Path, *, postgres_url: str, runs: int, workers: int, concurrency: int,
               ) -> dict[str, float | int | str]:
    """Drain `runs` pre-enqueued no-op jobs with `workers` Procrastinate worker processes of `concurrency` each.

    `postgres_url` is an admin URL (a database that exists); a fresh database is created beside it and dropped
    afterwards. Raises RuntimeError if installing, enqueueing or draining fails or overruns its time bound.
    """
    import psycopg  # taskyard's own dependency; only the parent's bookkeeping uses it

    python = ensure_venv()
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(home)}
    procs: list[subprocess.Popen[bytes]] = []
    with _procs.database_for("postgres", postgres_url) as db_url:
        assert db_url is not None
        try:
            (home / f"{APP_MODULE}.py").write_text(APP.format(conninfo=db_url, pool_size=concurrency + 2))
            try:
                enqueued = subprocess.run([str(python), "-c", ENQUEUE, str(runs)], cwd=home, env=env,
                                          capture_output=True, text=True, timeout=max(60, runs / 50))
            except subprocess.TimeoutExpired as exc:
                raise RuntimeError(f"procrastinate: enqueueing {runs} jobs took over {exc.timeout:.0f} s") from exc
            if enqueued.returncode != 0:
                raise RuntimeError(f"procrastinate: enqueueing failed: {enqueued.stderr[-2000:]}")
            version = enqueued.stdout.strip().splitlines()[-1]

            # Connected before the clock starts so the first poll does not pay for it.
            with psycopg.connect(db_url, autocommit=True) as conn:
                started = time.perf_counter()
                deadline = started + max(60, runs / 5)
                for i in range(workers):
                    log = home / f"procrastinate-worker-{i}.log"
                    with log.open("wb") as out:
                        procs.append(subprocess.Popen(
                            [str(python), "-m", "procrastinate", "--app", f"{APP_MODULE}.app", "--log-level",
                             "warning", "worker", "--name", f"bench-{i}", "--concurrency", str(concurrency)],
                            cwd=home, env=env, stdout=out, stderr=out, start_new_session=True))
                while True:
                    row = conn.execute("SELECT count(*), count(*) FILTER (WHERE status = 'failed')"
                                       " FROM procrastinate_jobs WHERE status IN ('succeeded', 'failed')").fetchone()
                    done, failed = (int(row[0]), int(row[1])) if row else (0, 0)
                    if done >= runs:
                        break
                    for i, proc in enumerate(procs):
                        if proc.poll() is not None:
                            raise RuntimeError(f"procrastinate worker {i} exited with {proc.returncode} after "
                                               f"{done}/{runs} jobs: {tail(home / f'procrastinate-worker-{i}.log')}")
                    if time.perf_counter() > deadline:
                        raise RuntimeError(f"procrastinate: only {done}/{runs} jobs finished in "
                                           f"{deadline - started:.0f} s")
                    time.sleep(0.05)
                seconds = time.perf_counter() - started
        finally:
            # Each worker's whole session, so a `true` still running under it goes too.
            for proc in procs:
                _procs.stop(proc)
    return {"runs": runs, "seconds": round(seconds, 3), "runs_per_second": round(runs / seconds, 1), "failed": failed,
            "workers": workers, "concurrency": concurrency, "version": version}
