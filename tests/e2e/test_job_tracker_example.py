"""Spec 5's Python `JobTracker` example, run as written against a real `taskyard server`.

The example is taken from the spec file (the code after the "Pythonの例" line). The copy we have lost its
indentation and ends in the middle of `subscribe_to_job_events`, so the test
- restores the indentation only (class body, method bodies, bracket continuations) and checks that every
  line, stripped, is exactly the spec's line: no token is changed;
- drops the unfinished last method (and checks that it is indeed unfinished);
- executes the class definition and calls every complete method on a run it triggered, in the default
  tenant and project, asserting each answer carries the top-level keys of the spec's response example.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import start_server, stop

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(120)]

_SPEC_DIR = os.environ.get("TASKYARD_SPEC_DIR") or str(Path(__file__).resolve().parents[3] / "shared" / "spec")
SPEC = Path(_SPEC_DIR) / "5-job-tracking-api.md"
MARKER = "Pythonの例"
INDENT = "    "


def example_lines(text: str) -> list[str]:
    """The Python code after the marker: a fenced block if the spec has one, else every line to the end."""
    after = text.split(MARKER, 1)[1]
    fenced = re.search(r"```(?:python|py)?\s*\n(.*?)(?:```|\Z)", after, re.DOTALL | re.IGNORECASE)
    code = fenced.group(1) if fenced else after
    return [line for line in code.splitlines() if line.strip()]


def reindent(lines: list[str]) -> list[str]:
    """Indent a flattened module made of imports, one class and its methods, whose bodies are simple
    statements (what the example is). Anything else is refused rather than guessed."""
    out: list[str] = []
    depth = 0  # open brackets
    level = 0  # block level of the next statement
    for raw in lines:
        line = raw.strip()
        if depth == 0:
            if line.startswith("class ") and line.endswith(":"):
                level = 0
                out.append(line)
                level = 1
            elif line.startswith("def ") and line.endswith(":"):
                out.append(INDENT + line)
                level = 2
            elif line.endswith(":") and not line.startswith(('"', "'")):
                raise AssertionError(f"a compound statement the re-indenter does not handle: {line!r}")
            else:
                out.append(INDENT * level + line)
        else:
            closing = 1 if line[:1] in ")]}" else 0
            out.append(INDENT * (level + depth - closing) + line)
        depth += sum(line.count(c) for c in "([{") - sum(line.count(c) for c in ")]}")
        assert depth >= 0, line
    return out


def split_last_method(lines: list[str]) -> tuple[list[str], list[str]]:
    last = max(i for i, line in enumerate(lines) if line.lstrip().startswith("def "))
    return lines[:last], lines[last:]


def compiles(source: str) -> bool:
    try:
        compile(source, "<spec>", "exec")
    except SyntaxError:
        return False
    return True


def documented_keys(text: str, path_suffix: str) -> set[str]:
    """Top-level keys of the response example that follows `GET …{path_suffix}` in the spec."""
    start = text.index(path_suffix)
    heading = re.compile(r"^レスポンス$", re.MULTILINE).search(text, start)
    assert heading is not None, path_suffix
    depth, taken = 0, []
    for line in text[heading.end():].strip().splitlines():
        taken.append(line)
        depth += line.count("{") - line.count("}")
        if depth == 0:
            break
    return set(json.loads("\n".join(taken)))


@pytest.fixture(scope="module")
def spec_text() -> str:
    if not SPEC.exists():
        reason = f"the spec is not at {SPEC} (set TASKYARD_SPEC_DIR)"
        if os.environ.get("CI"):
            pytest.fail(reason)  # CI always has shared/ beside the repository
        pytest.skip(reason)
    return SPEC.read_text(encoding="utf-8")


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    process, base_url = start_server(tmp_path)
    try:
        yield base_url
    finally:
        stop(process)


def test_the_example_is_only_reindented_and_cut(spec_text: str) -> None:
    flat = example_lines(spec_text)
    code = reindent(flat)
    assert [line.strip() for line in code] == [line.strip() for line in flat]
    complete, unfinished = split_last_method(code)
    assert unfinished[0].strip().startswith("def subscribe_to_job_events")
    assert compiles("\n".join(complete)) and not compiles("\n".join(code))


def test_every_complete_method_against_a_live_server(spec_text: str, server: str) -> None:
    complete, _ = split_last_method(reindent(example_lines(spec_text)))
    namespace: dict[str, Any] = {}
    exec(compile("\n".join(complete), str(SPEC), "exec"), namespace)  # the spec's own example
    tracker_class = namespace["JobTracker"]

    with httpx.Client(base_url=server, timeout=10) as client:
        tenant = next(t for t in client.get("/api/tenants").json()["data"]["items"] if t["name"] == "default")
        [project] = client.get(f"/api/tenants/{tenant['id']}/projects").json()["data"]["items"]
        task = client.post("/api/tasks", json={"name": "customer-journey", "task_type": "shell",
                                               "command": "echo hi"}).json()["data"]
        triggered = client.post(f"/api/tasks/{task['id']}/trigger", json={}).json()["data"]
        run_id, job_id = triggered["run_id"], triggered["uuid"]
        events = [{"runId": str(run_id), "functionName": "customer-journey", "eventName": name, "data": data}
                  for name, data in [("stage_start", {"stage": "Data Loading", "order": 1, "totalRecords": 10}),
                                     ("log", {"level": "warn", "message": "125 records without timestamps",
                                              "component": "DataValidator", "stage": "Data Loading"}),
                                     ("progress", {"percentage": 40, "message": "loading"})]]
        assert client.post("/api/tracking/batch", json={"events": events}).status_code == 200

    tracker = tracker_class(server, tenant["id"], project["id"], "your-api-key")
    methods = sorted(name for name, value in vars(tracker_class).items()
                     if callable(value) and not name.startswith("_"))
    assert methods == ["get_job_logs", "get_job_metrics", "get_job_progress", "get_job_timeline",
                       "track_multiple_jobs"]

    progress = tracker.get_job_progress(job_id)
    assert set(progress) >= documented_keys(spec_text, "/job/{jobId}/progress")
    assert progress["jobId"] == job_id and progress["overallProgress"]["percentage"] == 40

    logs = tracker.get_job_logs(job_id, level="WARN", limit=100)
    assert set(logs) >= documented_keys(spec_text, "/job/{jobId}/logs")
    assert [line["component"] for line in logs["logs"]] == ["DataValidator"]

    metrics = tracker.get_job_metrics(job_id, interval="5m", include_history=True)
    assert set(metrics) >= documented_keys(spec_text, "/job/{jobId}/metrics")

    timeline = tracker.get_job_timeline(job_id, include_sub_events=True, granularity="minutes")
    assert set(timeline) >= documented_keys(spec_text, "/job/{jobId}/timeline")
    assert "StageStarted" in {e["eventType"] for e in timeline["timeline"]}

    batch = tracker.track_multiple_jobs([job_id], include_metrics=True)
    assert set(batch) >= documented_keys(spec_text, "/tracking/batch")
    assert [j["jobId"] for j in batch["jobs"]] == [job_id] and "resourceUsage" in batch["jobs"][0]
