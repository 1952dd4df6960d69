"""The client commands (`taskyard task|run|worker|status`) against a real server process.

Runs are moved along by this test acting as a worker over the worker protocol, so no agent is needed.
Only runs of python tasks are claimed (the fake worker registers for that type alone); the other tests
use shell tasks whose runs stay queued.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from servers import clean_env, free_port, start_server, stop

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    process, base_url = start_server(tmp_path_factory.mktemp("cli-server"))
    try:
        yield base_url
    finally:
        stop(process)


@pytest.fixture(scope="module")
def api(server: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=f"{server}/api", timeout=10) as client:
        yield client


def _command(args: tuple[str, ...], server: str | None) -> list[str]:
    return [sys.executable, "-m", "taskyard.cli", *args, *(["--server", server] if server else [])]


def _env(env: dict[str, str] | None) -> dict[str, str]:
    # A wide virtual terminal keeps Rich from wrapping table cells the assertions look for.
    return clean_env({"COLUMNS": "200", **(env or {})})


def cli(server: str | None, *args: str, env: dict[str, str] | None = None,
        timeout: float = 30) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_command(args, server), capture_output=True, text=True, env=_env(env),
                          timeout=timeout)


def cli_json(server: str, *args: str) -> Any:
    result = cli(server, *args, "--json")
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def cli_background(server: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(_command(args, server), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=_env(None))


# Set-up goes straight to the API (test_task_commands covers the CLI's create and trigger): every CLI
# process costs more than half a second of start-up.


def create_task(api: httpx.Client, name: str, task_type: str = "shell", retries: int = 3) -> dict[str, Any]:
    command = "module:function" if task_type == "python" else "echo hi"
    answer = api.post("/tasks", json={"name": name, "task_type": task_type, "command": command,
                                      "retry_count": retries})
    assert answer.status_code == 201, answer.text
    task: dict[str, Any] = answer.json()["data"]
    return task


def trigger(api: httpx.Client, task_id: int) -> int:
    answer = api.post(f"/tasks/{task_id}/trigger")
    assert answer.status_code == 200, answer.text
    return int(answer.json()["data"]["run_id"])


class FakeWorker:
    """Speaks the worker protocol by hand: claim a run, report log lines and an outcome."""

    def __init__(self, api: httpx.Client, worker_id: str) -> None:
        self.api = api
        self.id = worker_id
        registered = api.post("/workers", json={"id": worker_id, "hostname": "test-host", "ip_address": "127.0.0.1",
                                                "port": 0, "task_types": ["python"], "max_concurrent_tasks": 50})
        assert registered.status_code == 201, registered.text
        self.attempts: dict[int, int] = {}

    def claim(self, run_id: int | None = None, timeout: float = 10) -> int:
        """Claim `run_id` (or whichever run turns up); any other run claimed on the way is aborted."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            answer = self.api.post(f"/workers/{self.id}/poll", json={"capacity": 10, "running": [], "wait": 0.5})
            assert answer.status_code == 200, answer.text
            wanted = None
            for run in answer.json()["data"]["runs"]:
                self.attempts[run["run_id"]] = run["attempt"]
                if run_id is None or run["run_id"] == run_id:
                    wanted = run["run_id"]
                else:
                    self.report(run["run_id"], outcome="aborted", error_message="stray run in a CLI test")
            if wanted is not None:
                return int(wanted)
        raise AssertionError(f"run {run_id} was never claimed")

    def report(self, run_id: int, *lines: str, outcome: str | None = None, result: str | None = None,
               error_message: str | None = None) -> None:
        if lines:  # as a worker does: the lines through tracking ingestion, before the outcome
            sent = self.api.post("/tracking/batch", json={"logs": [
                {"runId": run_id, "attempt": self.attempts[run_id], "message": line} for line in lines]})
            assert sent.status_code == 200, sent.text
        if outcome is None:
            return
        entry: dict[str, Any] = {"run_id": run_id, "attempt": self.attempts[run_id]}
        entry.update({k: v for k, v in {"outcome": outcome, "result": result,
                                         "error_message": error_message}.items() if v is not None})
        answer = self.api.post(f"/workers/{self.id}/report", json={"reports": [entry]})
        assert answer.status_code == 200 and answer.json()["data"]["accepted"] == [run_id], answer.text


@pytest.fixture(scope="module")
def worker(api: httpx.Client) -> FakeWorker:
    return FakeWorker(api, "cli-test-worker")


def finish(process: subprocess.Popen[str], timeout: float = 20) -> tuple[int, str, str]:
    out, err = process.communicate(timeout=timeout)
    return process.returncode, out, err


def test_task_commands(server: str) -> None:
    created = cli(server, "task", "create", "--name", "nightly", "--type", "shell", "--command", "echo",
                  "--arg", "one", "--arg", "two words", "--schedule", "0 2 * * *", "--timezone", "Europe/Paris",
                  "--priority", "high", "--retries", "1", "--timeout", "60", "--tag", "etl", "--tag", "daily",
                  "--description", "the nightly batch", "--catchup", "none")
    assert created.returncode == 0, created.stderr
    assert "created task" in created.stdout and "nightly" in created.stdout

    task = cli_json(server, "task", "create", "--name", "after-nightly", "--type", "python", "--command", "m:f",
                    "--depends-on", "nightly")
    nightly = cli_json(server, "task", "show", str(task["dependencies"][0]))
    assert nightly["name"] == "nightly"
    assert nightly["arguments"] == ["one", "two words"]
    assert (nightly["schedule"], nightly["timezone"], nightly["catchup"]) == ("0 2 * * *", "Europe/Paris", "none")
    assert (nightly["priority"], nightly["retry_count"], nightly["timeout_seconds"]) == ("high", 1, 60)
    assert nightly["tags"] == ["etl", "daily"] and nightly["description"] == "the nightly batch"
    assert nightly["next_run_at"] and "statistics" in nightly

    shown = cli(server, "task", "show", str(nightly["id"]))
    assert shown.returncode == 0, shown.stderr
    assert "nightly" in shown.stdout and "0 2 * * *" in shown.stdout and "Europe/Paris" in shown.stdout

    listed = cli(server, "task", "list")
    assert listed.returncode == 0 and "nightly" in listed.stdout and "after-nightly" in listed.stdout
    assert [t["name"] for t in cli_json(server, "task", "list", "--type", "python")["items"]] == ["after-nightly"]
    page = cli_json(server, "task", "list", "--size", "1", "--page", "2")
    assert page["page"] == 2 and page["size"] == 1 and len(page["items"]) == 1

    triggered = cli_json(server, "task", "trigger", str(nightly["id"]), "--param", "day=2024-01-01",
                         "--params-json", '{"day": "overridden", "limit": 5}', "--priority", "critical")
    run = cli_json(server, "run", "show", str(triggered["run_id"]))
    assert run["parameters"] == {"day": "2024-01-01", "limit": 5} and run["priority"] == "critical"

    paused = cli(server, "task", "pause", str(nightly["id"]))
    assert paused.returncode == 0 and "paused" in paused.stdout
    refused = cli(server, "task", "trigger", str(nightly["id"]))
    assert refused.returncode == 1
    assert refused.stderr.startswith("error: ") and "paused" in refused.stderr and "RESOURCE_CONFLICT" in refused.stderr
    resumed = cli_json(server, "task", "resume", str(nightly["id"]))
    assert resumed["status"] == "active" and resumed["next_run_at"]

    deleted = cli(server, "task", "delete", str(task["id"]))
    assert deleted.returncode == 0 and "deleted" in deleted.stdout
    assert cli(server, "task", "show", str(task["id"])).returncode == 1


def test_run_commands(server: str, api: httpx.Client) -> None:
    task = create_task(api, "runs-demo")
    first = trigger(api, task["id"])

    listed = cli_json(server, "run", "list", "--task", str(task["id"]))
    assert [r["id"] for r in listed["items"]] == [first] and listed["items"][0]["status"] == "pending"
    table = cli(server, "run", "list", "--task", str(task["id"]), "--status", "pending")
    assert table.returncode == 0 and "runs-demo" in table.stdout and "pending" in table.stdout

    shown = cli(server, "run", "show", str(first))
    assert shown.returncode == 0, shown.stderr
    assert "runs-demo" in shown.stdout and "history" in shown.stdout and "triggered" in shown.stdout

    aborted = cli(server, "run", "abort", str(first))
    assert aborted.returncode == 0 and f"run {first} aborted" in aborted.stdout

    restarted = cli_json(server, "run", "restart", str(first))
    assert restarted["original_run_id"] == first and restarted["status"] == "pending"
    second = restarted["new_run_id"]
    assert cli_json(server, "run", "show", str(second))["restarted_from"] == first
    human = cli(server, "run", "restart", str(second))
    assert human.returncode == 0 and f"run {second} restarted as run" in human.stdout

    aborted_ids = [r["id"] for r in cli_json(server, "run", "list", "--status", "aborted")["items"]]
    assert first in aborted_ids and second not in aborted_ids


def test_run_logs_and_follow(server: str, api: httpx.Client, worker: FakeWorker) -> None:
    task = create_task(api, "logs-demo", "python", retries=0)
    run_id = trigger(api, task["id"])
    worker.claim(run_id)
    worker.report(run_id, "step one", "step two")

    printed = cli(server, "run", "logs", str(run_id))
    assert printed.returncode == 0, printed.stderr
    assert printed.stdout.index("step one") < printed.stdout.index("step two")

    follower = cli_background(server, "run", "logs", str(run_id), "--follow")
    time.sleep(1.5)  # the follower is polling by now; the lines below must arrive through ?after=
    worker.report(run_id, "step three")
    worker.report(run_id, "all done", outcome="completed", result="ok")
    code, out, err = finish(follower)
    assert code == 0, err
    assert [line.split()[-1] for line in out.splitlines()[:2]] == ["one", "two"]
    assert "step three" in out and "all done" in out and "completed" in out

    data = cli_json(server, "run", "logs", str(run_id))
    assert data["status"] == "completed"
    assert [line["message"] for line in data["items"]] == ["step one", "step two", "step three", "all done"]
    assert data["next_after"] == data["items"][-1]["id"]

    shown = cli(server, "run", "show", str(run_id))
    assert "all done" in shown.stdout and "completed" in shown.stdout

    failed_run = trigger(api, create_task(api, "logs-fail", "python", retries=0)["id"])
    worker.claim(failed_run)
    worker.report(failed_run, "about to fail", outcome="failed", error_message="boom")
    followed = cli(server, "run", "logs", str(failed_run), "--follow", "--json")
    assert followed.returncode == 1
    assert [json.loads(line)["message"] for line in followed.stdout.splitlines()] == ["about to fail"]


def test_run_wait_exit_codes(server: str, api: httpx.Client, worker: FakeWorker) -> None:
    task = create_task(api, "wait-demo", "python", retries=0)

    run_id = trigger(api, task["id"])
    waiter = cli_background(server, "run", "wait", str(run_id), "--timeout", "20")
    time.sleep(1)
    worker.claim(run_id)
    worker.report(run_id, "working", outcome="completed", result="42")
    code, out, err = finish(waiter)
    assert code == 0, err
    assert f"run {run_id} completed" in out and "42" in out

    run_id = trigger(api, task["id"])
    worker.claim(run_id)
    worker.report(run_id, outcome="failed", error_message="disk full")
    failed = cli(server, "run", "wait", str(run_id))
    assert failed.returncode == 1
    assert f"run {run_id} failed" in failed.stdout and "disk full" in failed.stdout
    assert cli_json_code(server, 1, "run", "wait", str(run_id))["status"] == "failed"

    stuck = trigger(api, create_task(api, "never-claimed")["id"])
    started = time.monotonic()
    timed_out = cli(server, "run", "wait", str(stuck), "--timeout", "1")
    assert timed_out.returncode == 2, timed_out.stderr
    assert "still pending" in timed_out.stderr and time.monotonic() - started < 15

    waiting_trigger = cli_background(server, "task", "trigger", str(task["id"]), "--wait", "--wait-timeout", "20")
    claimed = worker.claim()
    worker.report(claimed, outcome="completed", result="via trigger")
    code, out, err = finish(waiting_trigger)
    assert code == 0, err
    assert f"run {claimed}" in out and "completed" in out


def cli_json_code(server: str, expected_code: int, *args: str) -> Any:
    result = cli(server, *args, "--json")
    assert result.returncode == expected_code, result.stderr
    return json.loads(result.stdout)


def test_worker_list_and_show(server: str, worker: FakeWorker) -> None:
    table = cli(server, "worker", "list")
    assert table.returncode == 0, table.stderr
    assert worker.id in table.stdout and "python" in table.stdout

    assert worker.id in [w["id"] for w in cli_json(server, "worker", "list")["items"]]
    shown = cli_json(server, "worker", "show", worker.id)
    assert shown["hostname"] == "test-host" and "statistics" in shown

    # The group's own --server (meant for the agent) also reaches the subcommand.
    on_group = subprocess.run([sys.executable, "-m", "taskyard.cli", "worker", "--server", server, "list", "--json"],
                              capture_output=True, text=True, env=_env(None), timeout=30)
    assert on_group.returncode == 0, on_group.stderr
    assert worker.id in [w["id"] for w in json.loads(on_group.stdout)["items"]]


def test_tenant_and_project_commands(server: str) -> None:
    made = cli(server, "tenant", "create", "cli-tenant")
    assert made.returncode == 0, made.stderr
    assert "created tenant" in made.stdout and "cli-tenant" in made.stdout
    tenants = cli_json(server, "tenant", "list")["items"]
    assert [t["name"] for t in tenants][:1] == ["default"]
    tenant = next(t for t in tenants if t["name"] == "cli-tenant")
    table = cli(server, "tenant", "list")
    assert table.returncode == 0 and "cli-tenant" in table.stdout and tenant["id"] in table.stdout

    project = cli_json(server, "project", "create", "web", "--tenant", tenant["id"])
    assert project["name"] == "web" and project["tenant_id"] == tenant["id"]
    assert [p["id"] for p in cli_json(server, "project", "list", "--tenant", tenant["id"])["items"]] \
        == [project["id"]]
    listed = cli(server, "project", "list", "--tenant", tenant["id"])
    assert listed.returncode == 0 and "web" in listed.stdout and project["id"] in listed.stdout

    again = cli(server, "project", "create", "web", "--tenant", tenant["id"])
    assert again.returncode == 1 and "RESOURCE_CONFLICT" in again.stderr and "field name" in again.stderr
    nowhere = cli(server, "project", "list", "--tenant", "not-a-guid")
    assert nowhere.returncode == 1 and "RESOURCE_NOT_FOUND" in nowhere.stderr
    assert cli(server, "tenant", "create", "cli-tenant").returncode == 1


def test_status(server: str) -> None:
    human = cli(None, "status", env={"TASKYARD_SERVER": server})
    assert human.returncode == 0, human.stderr
    assert "healthy" in human.stdout and "database" in human.stdout and server in human.stdout

    data = cli_json(server, "status")
    assert data["health"]["status"] == "healthy"
    assert {"tasks", "task_runs", "workers"} <= set(data["stats"])


def test_errors(server: str, tmp_path: Path) -> None:
    missing = cli(server, "task", "show", "999")
    assert missing.returncode == 1
    assert missing.stderr.strip() == "error: task 999 does not exist (RESOURCE_NOT_FOUND)"
    assert missing.stdout == ""

    invalid = cli(server, "task", "create", "--name", "bad-cron", "--type", "shell", "--command", "true",
                  "--schedule", "not a cron")
    assert invalid.returncode == 1
    assert "VALIDATION_ERROR" in invalid.stderr and "field schedule" in invalid.stderr

    bad_json = cli(server, "task", "trigger", "1", "--params-json", "[1, 2]")
    assert bad_json.returncode == 2 and "JSON object" in bad_json.stderr

    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = cli(nowhere, "task", "list")
    assert unreachable.returncode == 1
    assert unreachable.stderr.startswith("error: cannot reach the taskyard server at " + nowhere)


def test_api_key(tmp_path: Path) -> None:
    home = tmp_path / "secured-home"
    made = subprocess.run([sys.executable, "-m", "taskyard.cli", "apikey", "create", "--name", "cli-test",
                           "--home", str(home), "--json"], capture_output=True, text=True, env=clean_env(),
                          timeout=30)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)["key"]
    process, secured = start_server(tmp_path, env_extra={"TASKYARD_HOME": str(home)})
    try:
        refused = cli(secured, "task", "list")
        assert refused.returncode == 1
        assert "AUTHENTICATION_ERROR" in refused.stderr and "--api-key" in refused.stderr
        assert cli(secured, "task", "list", "--api-key", key).returncode == 0
        assert cli(secured, "status", env={"TASKYARD_API_KEY": key}).returncode == 0
    finally:
        stop(process)
