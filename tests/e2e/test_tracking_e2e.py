"""A real worker runs a Python task that uses every SDK call and a shell task that uses
`taskyard track`; the tracking API (spec 1) and every job tracking endpoint (spec 5) then show what they
reported."""

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

        _check_job_tracking(client, py_run, sh_run)


def _json(response: httpx.Response) -> Any:
    """A spec 5 answer: a bare object, no envelope."""
    assert response.status_code == 200, response.text
    return response.json()


def _check_job_tracking(client: httpx.Client, py_run: dict[str, Any], sh_run: dict[str, Any]) -> None:
    """Every spec 5 endpoint, read through the default tenant and project the runs live in."""
    tenant = next(t for t in _data(client.get("/api/tenants"))["items"] if t["name"] == "default")
    project = next(p for p in _data(client.get(f"/api/tenants/{tenant['id']}/projects"))["items"]
                   if p["name"] == "default")
    base = f"/api/{tenant['id']}/{project['id']}/execution"
    py_uuid = _data(client.get(f"/api/runs/{py_run['id']}"))["uuid"]
    sh_uuid = _data(client.get(f"/api/runs/{sh_run['id']}"))["uuid"]
    job = f"{base}/job/{py_uuid}"

    logs = _json(client.get(f"{job}/logs"))
    assert logs["jobId"] == py_uuid and logs["jobName"] == "crunch" and logs["jobStatus"] == "Completed"
    [warning] = [line for line in logs["logs"] if line["component"] == "Validator"]
    assert warning["level"] == "WARN" and warning["message"] == "3 rows without timestamps"
    assert warning["details"] == {"rows": 3}
    assert logs["logsSummary"]["warnEntries"] >= 1
    assert logs["logsSummary"]["totalEntries"] >= len(logs["logs"])
    assert logs["executionMetrics"]["overallProgress"] == 100
    only_warnings = _json(client.get(f"{job}/logs", params={"level": "WARN"}))["logs"]
    assert "Validator" in [line["component"] for line in only_warnings]
    assert {line["level"] for line in only_warnings} <= {"WARN", "ERROR"}
    raw = _json(client.get(f"{job}/logs", params={"format": "raw"}))["logs"]
    assert all(isinstance(line, str) for line in raw) and len(raw) == len(logs["logs"])
    assert any(line.endswith(" WARN [Validator] 3 rows without timestamps") for line in raw), raw

    progress = _json(client.get(f"{job}/progress"))
    assert progress["status"] == "Completed" and progress["overallProgress"]["percentage"] == 100
    [stage] = progress["stages"]
    assert stage["stageName"] == "Data Loading" and stage["status"] == "Completed", stage
    assert stage["recordsProcessed"] == 30 and stage["totalRecords"] == 30
    assert progress["qualityMetrics"]["warningsGenerated"] >= 1

    timeline = _json(client.get(f"{job}/timeline"))
    kinds = [item["eventType"] for item in timeline["timeline"]]
    for expected in ("JobStarted", "StageStarted", "StageCompleted", "Milestone", "JobCompleted"):
        assert expected in kinds, (expected, kinds)
    assert "Progress" not in kinds
    milestones = [item for item in timeline["timeline"] if item["eventType"] == "Milestone"]
    assert {"description": "milestone_1", "details": {"processed_records": 30}} in [
        {"description": m["description"], "details": m["details"]} for m in milestones]
    assert timeline["upcomingEvents"] == []
    detailed = _json(client.get(f"{job}/timeline", params={"includeSubEvents": "true"}))
    assert "Progress" in [item["eventType"] for item in detailed["timeline"]]

    metrics = _json(client.get(f"{job}/metrics", params={"includeHistory": "true"}))
    assert metrics["jobId"] == py_uuid and isinstance(metrics["historicalMetrics"], list)
    processing = metrics["currentMetrics"]["processing"]
    # No stage runs any more, so the rate is the task's own records_per_second metric.
    assert processing["recordsPerSecond"] == 1250 and processing["recordsProcessed"] == 30, processing
    assert any(point.get("recordsPerSecond") == 1250 for point in metrics["historicalMetrics"]), metrics
    assert metrics["currentMetrics"]["stages"]["completed"] == 1

    dependencies = _json(client.get(f"{job}/dependencies"))
    [node] = dependencies["dependencies"]["resourceDependencies"]
    assert node["resourceType"] == "ComputeNode" and node["resourceId"] == py_run["worker_id"], node
    assert node["status"] == "Released"
    assert dependencies["dependencies"]["prerequisiteJobs"] == []

    batch = _json(client.get(f"{base}/tracking/batch", params={"jobIds": f"{py_uuid},{sh_uuid}"}))
    assert batch["jobCount"] == 2 and batch["summary"]["completed"] == 2, batch["summary"]
    assert {j["jobId"]: j["status"] for j in batch["jobs"]} == {py_uuid: "Completed", sh_uuid: "Completed"}

    # The shell task's `taskyard track` calls land in the same views.
    sh_logs = _json(client.get(f"{base}/job/{sh_uuid}/logs", params={"level": "ERROR"}))
    assert ("Copier", "disk almost full") in [(line["component"], line["message"]) for line in sh_logs["logs"]]
    assert sh_logs["logsSummary"]["errorEntries"] >= 1
    [copy] = _json(client.get(f"{base}/job/{sh_uuid}/progress"))["stages"]
    assert copy["stageName"] == "Copy" and copy["status"] == "Completed" and copy["recordsProcessed"] == 2
