"""Celery 5 with a Redis broker, installed into its own virtual environment under bench/.venv-celery so
it never touches taskyard's dependencies. Its task runs the same no-op shell command as taskyard's."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

VENV = Path(__file__).resolve().parent.parent / ".venv-celery"
REDIS_URL = "redis://127.0.0.1:6379/15"

APP = textwrap.dedent('''
    import subprocess
    from celery import Celery
    app = Celery("bench", broker="{broker}", backend="{broker}")
    app.conf.worker_prefetch_multiplier = 4
    app.conf.task_acks_late = False

    @app.task
    def noop():
        subprocess.run(["true"], check=True)
''')

DRIVER = textwrap.dedent('''
    import sys, time
    sys.path.insert(0, sys.argv[1])
    from bench_app import app, noop
    n = int(sys.argv[2])
    app.control.purge()
    results = [noop.delay() for _ in range(n)]
    print("enqueued", flush=True)
    sys.stdin.readline()  # the workers start now
    start = time.perf_counter()
    for r in results:
        r.get(timeout=600)
    print(time.perf_counter() - start, flush=True)
''')


def ensure_venv() -> Path:
    python = VENV / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", "celery[redis]>=5.3,<6"], check=True)
    return python


def run(home: Path, *, runs: int, workers: int, concurrency: int) -> dict[str, float]:
    python = ensure_venv()
    home.mkdir(parents=True, exist_ok=True)
    (home / "bench_app.py").write_text(APP.format(broker=REDIS_URL))
    driver = subprocess.Popen([str(python), "-c", DRIVER, str(home), str(runs)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=home)
    assert driver.stdin and driver.stdout
    driver.stdout.readline()  # enqueued
    env = {**os.environ, "PYTHONPATH": str(home)}
    procs = [subprocess.Popen([str(python), "-m", "celery", "-A", "bench_app", "worker", "-P", "prefork",
                               "-c", str(concurrency), "-n", f"w{i}@%h", "--loglevel", "WARNING"],
                              cwd=home, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
             for i in range(workers)]
    try:
        driver.stdin.write("go\n")
        driver.stdin.flush()
        seconds = float(driver.stdout.readline())
        driver.wait(30)
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
    return {"runs": runs, "seconds": round(seconds, 3), "runs_per_second": round(runs / seconds, 1)}
