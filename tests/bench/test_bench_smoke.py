"""The benchmark suite runs at its smoke size so it cannot rot (no timing assertions: figures are printed).

The peers (Celery, Procrastinate) are installed into their own virtual environments on first use."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.mark.timeout(900)  # seven benchmarks, each starting servers, workers and peers; cron waits for its period
def test_the_suite_runs_every_benchmark_at_smoke_size() -> None:
    done = subprocess.run([sys.executable, "-m", "bench", "--smoke"], cwd=ROOT, capture_output=True, text=True,
                          timeout=900)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    written = Path(done.stdout.strip().rsplit("written to ", 1)[1])
    figures = json.loads(written.read_text())["figures"]
    benchmarks = {f["benchmark"] for f in figures}
    assert benchmarks == {"throughput", "latency", "ingest", "memory", "cron", "reads", "scaling"}, benchmarks
    # Every comparison has both sides measured. A cron lag may be 0: runs created ahead of their slot are
    # claimable exactly at it.
    assert all(f["taskyard"]["median"] > 0 for f in figures if f["benchmark"] != "cron")
    assert all(f["taskyard"]["median"] >= 0 for f in figures if f["benchmark"] == "cron")
    assert all(f["peer"]["median"] > 0 for f in figures if f["peer_name"])
