"""The benchmarks run at a smoke size so they cannot rot (no timing assertions: figures are printed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("command", [
    ["bench.e2e", "--runs", "30", "--databases", "sqlite", "--no-peer", "--latency-samples", "3"],
    ["bench.ingest", "--events", "500", "--naive-events", "20", "--databases", "sqlite"],
])
def test_benchmark_runs_at_smoke_size(command: list[str]) -> None:
    done = subprocess.run([sys.executable, "-m", *command], cwd=ROOT, capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "written to" in done.stdout
