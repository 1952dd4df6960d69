"""`taskyard run …`: list, show, follow, wait for, abort and restart runs."""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from taskyard.cli.commands.common import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_TIMEOUT,
    ApiKey,
    AsJson,
    Page,
    Server,
    Size,
    act,
    connect,
    err,
    out,
    print_json,
    say,
)
from taskyard.cli.commands.display import (
    STATUS_STYLE,
    ago_text,
    clip_text,
    duration_text,
    properties_table,
    seconds_text,
    show_page,
    status_text,
    when_text,
)
from taskyard.sdk.client import (
    FINAL_RUN_STATUSES,
    JSONObject,
    LogLine,
    LogPage,
    TaskyardAPIError,
    TaskyardClient,
    TaskyardConnectionError,
)

POLL_INTERVAL = 0.5
LOG_PAGE = 1000
# How long `run logs --follow` and `run wait` ride out an unreachable or briefly unavailable server
# (a restart, a database failover) before giving up.
OUTAGE_TOLERANCE = 30.0


run_app = typer.Typer(help="Inspect, follow, abort and restart runs.", no_args_is_help=True)


def runs_table(runs: list[JSONObject], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for heading in ("id", "task", "status", "try", "trigger", "worker", "created", "took", "outcome"):
        table.add_column(heading, no_wrap=heading in ("id", "status", "created", "took"))
    for run in runs:
        outcome = run.get("error_message") if run.get("status") in ("failed", "aborted") else run.get("result")
        table.add_row(str(run["id"]), f"{run.get('task_name') or ''} ({run['task_id']})", status_text(run["status"]),
                      str(run.get("attempt", "")), run.get("trigger") or "", run.get("worker_id") or "",
                      ago_text(run.get("created_at")), duration_text(run), clip_text(outcome, 40))
    return table


# log lines


def _poll_logs(client: TaskyardClient, run_id: int, after: int) -> LogPage:
    """Long waits outlive a server restart or a short database outage; a longer one still fails."""
    give_up = time.monotonic() + OUTAGE_TOLERANCE
    while True:
        try:
            return client.run_logs(run_id, after=after, limit=LOG_PAGE)
        except TaskyardConnectionError:
            if time.monotonic() >= give_up:
                raise
        except TaskyardAPIError as exc:
            if exc.status not in (429, 502, 503, 504) or time.monotonic() >= give_up:
                raise
        time.sleep(1.0)


def _log_text(line: LogLine) -> str:
    return f"{when_text(line.get('timestamp'))} {str(line.get('level') or 'info').upper():<5} {line.get('message', '')}"


def _print_log(line: LogLine) -> None:
    style = "red" if line.get("stream") == "stderr" or line.get("level") in ("error", "warn", "warning") else ""
    out.print(Text(_log_text(line), style=style), soft_wrap=True)


# commands


@run_app.command("list")
def run_list(
    task: Annotated[int | None, typer.Option("--task", min=1, help="Only runs of this task id")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, completed, failed or aborted")] = None,
    worker: Annotated[str | None, typer.Option("--worker", help="Only runs held by this worker id")] = None,
    page: Page = 1, size: Size = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """List runs, newest first."""
    with connect(server, api_key) as client:
        result = client.list_runs(page=page, size=size, task_id=task, status=status, worker_id=worker)
    show_page(result, as_json, "runs", runs_table)


@run_app.command("show")
def run_show(
    run_id: Annotated[int, typer.Argument(help="Run id")],
    lines: Annotated[int, typer.Option(min=0, help="How many of the last log lines to show")] = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Show a run: its details, last log lines and status history."""
    with connect(server, api_key) as client:
        run = client.get_run(run_id)
    if as_json:
        print_json(run)
        return
    out.print(properties_table(f"run {run['id']}", [
        ("task", f"{run.get('task_name') or ''} ({run['task_id']})"), ("status", status_text(run["status"])),
        ("state", run.get("state")), ("trigger", run.get("trigger")), ("priority", run.get("priority")),
        ("attempt", run.get("attempt")), ("retries", f"{run.get('retry_count', 0)} of {run.get('max_retries', 0)}"),
        ("worker", " on ".join(str(v) for v in (run.get("worker_id"), run.get("worker_hostname")) if v)),
        ("parameters", run.get("parameters")), ("created", when_text(run.get("created_at"))),
        ("started", when_text(run.get("started_at"))), ("finished", when_text(run.get("completed_at"))),
        ("took", duration_text(run)), ("exit code", run.get("exit_code")), ("result", run.get("result")),
        ("error", run.get("error_message")), ("waiting on runs", run.get("waiting_on")),
        ("restart of run", run.get("restarted_from")),
    ]))
    logs: list[LogLine] = run.get("logs") or []
    if lines and logs:
        shown = logs[-lines:]
        total = int(run.get("logs_total") or len(logs))
        out.print()
        out.print(Text(f"last {len(shown)} of {total} log lines", style="bold"))
        for line in shown:
            _print_log(line)
    history = run.get("history") or []
    if history:
        out.print()
        table = Table("at", "status", "try", "worker", "reason", title="history", title_justify="left",
                      title_style="bold")
        for step in history:
            table.add_row(when_text(step.get("at")), status_text(step.get("status")), str(step.get("attempt", "")),
                          step.get("worker_id") or "", step.get("reason") or "")
        out.print(table)


@run_app.command("logs")
def run_logs(
    run_id: Annotated[int, typer.Argument(help="Run id")],
    follow: Annotated[bool, typer.Option("--follow", "-f", help=(
        "Keep printing new lines until the run finishes; exit code 0 only if it completes"))] = False,
    server: Server = None, api_key: ApiKey = None,
    as_json: Annotated[bool, typer.Option("--json", help=(
        "Print the data as JSON; with --follow, one JSON object per log line"))] = False,
) -> None:
    """Print a run's log lines, oldest first."""
    with connect(server, api_key) as client:
        if not follow:
            collected = _all_logs(client, run_id)
            if as_json:
                print_json(collected)
            else:
                for line in collected["items"]:
                    _print_log(line)
            return

        def emit(line: LogLine) -> None:
            if as_json:
                sys.stdout.write(json.dumps(line, ensure_ascii=False) + "\n")
                sys.stdout.flush()
            else:
                _print_log(line)

        try:
            final = _follow(client, run_id, emit)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_INTERRUPTED) from None
    say(f"run {run_id} {final}", aside=as_json)
    raise typer.Exit(0 if final == "completed" else EXIT_FAILED)


def _all_logs(client: TaskyardClient, run_id: int) -> LogPage:
    page = client.run_logs(run_id, after=0, limit=LOG_PAGE)
    items = list(page["items"])
    while len(page["items"]) >= LOG_PAGE:
        page = client.run_logs(run_id, after=page["next_after"], limit=LOG_PAGE)
        items.extend(page["items"])
    return {**page, "items": items}


def _follow(client: TaskyardClient, run_id: int, emit: Callable[[LogLine], None], after: int = 0) -> str:
    """Emit lines as they arrive; return the final status word."""
    while True:
        page = _poll_logs(client, run_id, after)
        for line in page["items"]:
            emit(line)
        after = page["next_after"]
        if len(page["items"]) >= LOG_PAGE:
            continue  # a backlog; fetch the rest before sleeping
        if page["status"] in FINAL_RUN_STATUSES:
            return page["status"]
        time.sleep(POLL_INTERVAL)


def wait_for(client: TaskyardClient, run_id: int, timeout: float | None, as_json: bool) -> int:
    """Poll until the run is final. Exit code: 0 completed, 1 failed or aborted, 2 on timeout."""
    started = time.monotonic()
    deadline = None if timeout is None else started + timeout
    run = client.get_run(run_id)
    status = str(run["status"])
    tail: list[LogLine] = run.get("logs") or []
    after = tail[-1]["id"] if tail else 0
    last_message = tail[-1]["message"] if tail else ""
    timed_out = False
    try:
        with err.status(f"run {run_id} {status}") as spinner:
            while status not in FINAL_RUN_STATUSES:
                if deadline is not None and time.monotonic() >= deadline:
                    timed_out = True
                    break
                pause = POLL_INTERVAL if deadline is None else max(0.0, min(POLL_INTERVAL, deadline - time.monotonic()))
                time.sleep(pause)
                page = _poll_logs(client, run_id, after)
                status, after = page["status"], page["next_after"]
                if page["items"]:
                    last_message = page["items"][-1]["message"]
                elapsed = seconds_text(time.monotonic() - started)
                spinner.update(f"run {run_id} [{STATUS_STYLE.get(status, '')}]{status}[/] · {elapsed}"
                               + (f" · {escape(clip_text(last_message))}" if last_message else ""))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    run = client.get_run(run_id) if status in FINAL_RUN_STATUSES or as_json else run
    if as_json:
        print_json({k: v for k, v in run.items() if k != "logs"})
    if timed_out:
        err.print(f"run {run_id} still {status} after {seconds_text(timeout)}; stopped waiting", soft_wrap=True)
        return EXIT_TIMEOUT
    if not as_json:
        took = f" in {duration_text(run)}" if duration_text(run) else ""
        out.print(Text.assemble(f"run {run_id} ", status_text(status), took), soft_wrap=True)
        if status == "completed" and run.get("result"):
            out.print(Text(f"result: {run['result']}"), soft_wrap=True)
        elif status != "completed" and run.get("error_message"):
            out.print(Text(f"error: {run['error_message']}", style="red"), soft_wrap=True)
    return 0 if status == "completed" else EXIT_FAILED


@run_app.command("wait")
def run_wait(
    run_id: Annotated[int, typer.Argument(help="Run id")],
    timeout: Annotated[float | None, typer.Option(min=0, help="Give up after this many seconds")] = None,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Wait for a run to finish. Exit code 0 if it completed, 1 if it failed or was aborted, 2 on timeout."""
    with connect(server, api_key) as client:
        code = wait_for(client, run_id, timeout, as_json)
    raise typer.Exit(code)


@run_app.command("abort")
def run_abort(run_id: Annotated[int, typer.Argument(help="Run id")],
              server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Abort a run that has not finished; a worker running it is told to stop."""
    act(server, api_key, as_json, lambda client: client.abort_run(run_id),
        lambda answer: f"run {answer.get('id', run_id)} {answer['status']}")


@run_app.command("restart")
def run_restart(run_id: Annotated[int, typer.Argument(help="Run id")],
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Start a new run with the same parameters as this one."""
    act(server, api_key, as_json, lambda client: client.restart_run(run_id),
        lambda answer: f"run {run_id} restarted as run {answer['new_run_id']} ({answer['status']})")
