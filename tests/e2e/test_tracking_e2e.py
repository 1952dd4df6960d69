"""A real worker runs a Python task that uses every SDK call and a shell task that uses
`taskyard track`; the tracking API then shows what they reported."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import clean_env, start_server, stop

pytestmark = pytest.mark.e2e

TASK_MODULE = textwrap.dedent('''
    from taskyard import track

    def crunch(rows=30):
        track.event("start_crunch", {"rows": rows})
        track.progress(10, "warming up")
        with track.stage("Data Loading", total=rows) as stage:
            for _ in range(rows):
                stage.advance(1)
        track.log("warn", "3 rows without timestamps", component="Validator", details={"rows": 3})
        track.metric("records_per_second", 1250.0, "records/s")
        track.progress(100)
        track.event("milestone_1", {"processed_records": rows})
        return {"rows": rows}
''')


@pytest.fixture
def live(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    workdir = tmp_path / "tasks"
    workdir.mkdir()
    (workdir / "crunchmod.py").write_text(TASK_MODULE)
    server, url = start_server(tmp_path / "server")
    env = clean_env({"PYTHONPATH": str(workdir)})
    worker = subprocess.Popen([sys.executable, "-m", "taskyard.cli", "worker", "--server", url, "--name", "w1",
                               "--concurrency", "2"], env=env, cwd=workdir, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        yield url, workdir
    finally:
        stop(worker)
        stop(server)


def _data(response: httpx.Response) -> Any:
    response.raise_for_status()
    return response.json()["data"]


def _run_to_completion(client: httpx.Client, body: dict[str, Any]) -> dict[str, Any]:
    task = _data(client.post("/api/tasks", json=body))
    run_id = _data(client.post(f"/api/tasks/{task['id']}/trigger", json={}))["run_id"]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        run = _data(client.get(f"/api/runs/{run_id}"))
        if run["state"] in ("completed", "failed", "aborted"):
            assert run["state"] == "completed", run
            return dict(run)
        time.sleep(0.2)
    raise AssertionError(f"run {run_id} did not finish")


def test_python_sdk_and_shell_cli_reach_the_tracking_api(live: tuple[str, Path]) -> None:
    url, _ = live
    with httpx.Client(base_url=url, timeout=30) as client:
        py_run = _run_to_completion(client, {"name": "crunch", "task_type": "python",
                                             "command": "crunchmod:crunch", "retry_count": 0})
        sh_run = _run_to_completion(client, {
            "name": "shell-tracked", "task_type": "shell", "retry_count": 0,
            "command": "taskyard track event start_copy --data '{\"files\": 2}' && "
                       "taskyard track progress 50 && "
                       "taskyard track stage Copy --status start --total 2 && "
                       "taskyard track stage Copy --status end --done 2 && "
                       "taskyard track log error 'disk almost full' --component Copier && "
                       "taskyard track metric files_copied 2"})

        runs = client.get("/api/tracking/runs").json()
        by_run_id = {r["runId"]: r for r in runs}
        assert by_run_id[str(py_run["id"])]["functionName"] == "crunch"
        assert by_run_id[str(py_run["id"])]["status"] == "SUCCESS"

        py_events = client.get(f"/api/tracking/runs/{py_run['id']}/events").json()
        names = [e["eventName"] for e in py_events]
        for expected in ("start_crunch", "progress", "stage_start", "stage_progress", "stage_end", "log", "metric",
                         "milestone_1"):
            assert expected in names, (expected, names)
        assert all(isinstance(e["eventData"], str) for e in py_events)

        sh_events = client.get(f"/api/tracking/runs/{sh_run['id']}/events").json()
        sh_names = [e["eventName"] for e in sh_events]
        for expected in ("start_copy", "progress", "stage_start", "stage_end", "log", "metric"):
            assert expected in sh_names, (expected, sh_names)
