"""Commands that drive a running scheduler over HTTP: `task`, `run`, `worker list|show` and `status`.

They go through `taskyard.sdk.client` only, so they work the same against a remote server. Tables are
for people; `--json` prints the response's `data` unchanged for scripts. Errors, and with `--json`
anything that is not the data, go to stderr.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from taskyard.sdk.client import (
    FINAL_RUN_STATUSES,
    JSONObject,
    LogLine,
    LogPage,
    TaskyardAPIError,
    TaskyardClient,
    TaskyardConnectionError,
)

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

POLL_INTERVAL = 0.5
LOG_PAGE = 1000
# How long `run logs --follow` and `run wait` ride out an unreachable or briefly unavailable server
# (a restart, a database failover) before giving up.
OUTAGE_TOLERANCE = 30.0

EXIT_FAILED = 1
EXIT_TIMEOUT = 2
EXIT_INTERRUPTED = 130


class TaskType(StrEnum):
    shell = "shell"
    python = "python"
    http = "http"


class Priority(StrEnum):
    low = "low"
    normal = "normal"
    high = "high"
    critical = "critical"


class Catchup(StrEnum):
    latest = "latest"
    all = "all"
    none = "none"


CONNECTION = "Connection"
Server = Annotated[str | None, typer.Option(
    "--server", help="Scheduler URL (env TASKYARD_SERVER; default http://127.0.0.1:8080)",
    show_default=False, rich_help_panel=CONNECTION)]
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", help="API key (env TASKYARD_API_KEY)", show_default=False, rich_help_panel=CONNECTION)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the response data as JSON (for scripts)")]
Page = Annotated[int, typer.Option(min=1, help="Page number")]
Size = Annotated[int, typer.Option(min=1, help="Rows per page")]

STATUS_STYLE = {
    "completed": "green", "active": "green", "healthy": "green", "success": "green",
    "running": "cyan", "pending": "yellow", "queued": "yellow", "paused": "yellow", "draining": "yellow",
    "degraded": "yellow", "standby": "yellow",
    "failed": "red", "aborted": "magenta", "offline": "red", "unhealthy": "red", "unknown": "red",
}


# plumbing


def _fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
    err.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    raise typer.Exit(code)


def describe_api_error(exc: TaskyardAPIError) -> str:
    facts = [exc.code]
    field = exc.details.get("field")
    if field:
        facts.append(f"field {field}")
    text = f"{exc.message} ({', '.join(facts)})"
    if exc.code == "AUTHENTICATION_ERROR":
        text += "; pass --api-key or set TASKYARD_API_KEY"
    return text


@contextmanager
def _connect(server: str | None, api_key: str | None) -> Iterator[TaskyardClient]:
    """A client whose API and connection errors end the command with `error: …` and exit code 1."""
    try:
        client = TaskyardClient(server, api_key)
    except ValueError as exc:
        _fail(str(exc))
    try:
        with client:
            yield client
    except TaskyardAPIError as exc:
        _fail(describe_api_error(exc))
    except TaskyardConnectionError as exc:
        _fail(str(exc))


def _print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _say(message: str, *, aside: bool = False) -> None:
    """A line for people. `aside` sends it to stderr, for when stdout carries JSON."""
    (err if aside else out).print(message, soft_wrap=True)


def _status(word: str | None) -> Text:
    if not word:
        return Text("")
    return Text(word, style=STATUS_STYLE.get(word, ""))


def _when(value: Any) -> str:
    """An API timestamp in the local time zone, to the second."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def _ago(value: Any) -> str:
    """An API timestamp relative to now ("3m ago", "in 2h"): short enough for table columns."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = (datetime.now(UTC) - moment).total_seconds()
    if abs(delta) < 1:
        return "now"
    span = _seconds(abs(delta), whole=True)
    return f"{span} ago" if delta > 0 else f"in {span}"


def _seconds(value: Any, *, whole: bool = False) -> str:
    if value is None:
        return ""
    seconds = float(value)
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 and not whole else f"{seconds:.0f}s"
    minutes, rest = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m" if whole else f"{minutes}m{rest:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours >= 48 and whole:
        return f"{hours // 24}d"
    return f"{hours}h" if whole else f"{hours}h{minutes:02d}m"


def _duration(run: JSONObject) -> str:
    if run.get("execution_time") is not None:
        return _seconds(run["execution_time"])
    try:
        start = datetime.fromisoformat(str(run["started_at"]))
        end = datetime.fromisoformat(str(run["completed_at"]))
    except (KeyError, TypeError, ValueError):
        return ""
    return _seconds((end - start).total_seconds())


def _clip(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def _properties(title: str, rows: list[tuple[str, Any]]) -> Table:
    table = Table(title=title, show_header=False, box=None, title_justify="left", title_style="bold",
                  padding=(0, 2, 0, 0))
    table.add_column(style="dim")
    table.add_column(overflow="fold")
    for key, value in rows:
        if value is None or value == "" or value == [] or value == {}:
            continue  # detail views list what is set; --json shows every field
        if isinstance(value, Text):
            table.add_row(key, value)
        elif isinstance(value, list | dict):
            table.add_row(key, json.dumps(value, ensure_ascii=False) if value else "")
        else:
            table.add_row(key, "" if value is None else str(value))
    return table


def _page_footer(page: JSONObject, noun: str) -> None:
    total = int(page.get("total") or 0)
    pages = int(page.get("total_pages") or 0)
    if pages > 1:
        _say(f"page {page.get('page')} of {pages} ({total} {noun})")
    elif not page.get("items"):
        _say(f"no {noun}")


def _inherited(ctx: typer.Context, name: str, value: str | None) -> str | None:
    """`taskyard worker --server URL list` puts the option on the group; honour it there too."""
    if value is None and ctx.parent is not None:
        parent = ctx.parent.params.get(name)
        if isinstance(parent, str):
            return parent
    return value


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
    return f"{_when(line.get('timestamp'))} {str(line.get('level') or 'info').upper():<5} {line.get('message', '')}"


def _print_log(line: LogLine) -> None:
    style = "red" if line.get("stream") == "stderr" or line.get("level") in ("error", "warn", "warning") else ""
    out.print(Text(_log_text(line), style=style), soft_wrap=True)


# task


task_app = typer.Typer(help="Define, trigger, pause and remove tasks.", no_args_is_help=True)


@task_app.command("create")
def task_create(
    name: Annotated[str, typer.Option(help="Unique task name")],
    task_type: Annotated[TaskType, typer.Option("--type", help="Executor that runs the command")],
    command: Annotated[str, typer.Option(
        help="A command line (shell), a script or module:function (python), a URL (http)")],
    arg: Annotated[list[str] | None, typer.Option("--arg", help="Argument for the command (repeatable)")] = None,
    schedule: Annotated[str | None, typer.Option(help="Cron expression, e.g. '0 2 * * *'")] = None,
    timezone: Annotated[str | None, typer.Option(help="Time zone of the schedule (default UTC)")] = None,
    priority: Annotated[Priority | None, typer.Option(help="Claim order among queued runs (default normal)")]
    = None,
    retries: Annotated[int | None, typer.Option(min=0, help="Retries after a failed attempt (default 3)")] = None,
    timeout: Annotated[int | None, typer.Option(min=1, help="Seconds before an attempt is killed (default 3600)")]
    = None,
    depends_on: Annotated[list[str] | None, typer.Option(
        "--depends-on", help="Name or id of a task that must succeed first (repeatable)")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable)")] = None,
    description: Annotated[str | None, typer.Option(help="Free text")] = None,
    catchup: Annotated[Catchup | None, typer.Option(
        help="Missed cron slots after downtime: run the latest, all, or none (default latest)")] = None,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Create a task."""
    with _connect(server, api_key) as client:
        task = client.create_task(
            name, task_type.value, command, arguments=arg or None, schedule=schedule, timezone=timezone,
            catchup=catchup.value if catchup else None, priority=priority.value if priority else None,
            retry_count=retries, timeout_seconds=timeout,
            dependencies=list[str | int](depends_on) if depends_on else None, tags=tag or None,
            description=description)
    if as_json:
        _print_json(task)
        return
    nxt = f", next run {_when(task.get('next_run_at'))}" if task.get("next_run_at") else ""
    _say(f"created task {task['id']} '{escape(str(task['name']))}' ({task['task_type']}){nxt}")


@task_app.command("list")
def task_list(
    status: Annotated[str | None, typer.Option(help="active or paused")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="shell, python or http")] = None,
    priority: Annotated[str | None, typer.Option(help="low, normal, high or critical")] = None,
    search: Annotated[str | None, typer.Option(help="Text in the name or description")] = None,
    page: Page = 1, size: Size = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """List tasks, newest first."""
    with _connect(server, api_key) as client:
        result = client.list_tasks(page=page, size=size, status=status, task_type=task_type, priority=priority,
                                   search=search)
    if as_json:
        _print_json(result)
        return
    table = Table("id", "name", "type", "status", "priority", "schedule")
    for heading in ("next run", "last run"):
        table.add_column(heading, no_wrap=True)
    for task in result["items"]:
        table.add_row(str(task["id"]), task["name"], task["task_type"], _status(task["status"]),
                      task["priority"], task.get("schedule") or "", _ago(task.get("next_run_at")),
                      _ago(task.get("last_run_at")))
    if result["items"]:
        out.print(table)
    _page_footer(dict(result), "tasks")


@task_app.command("show")
def task_show(task_id: Annotated[int, typer.Argument(help="Task id")],
              server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a task, its statistics and its latest runs."""
    with _connect(server, api_key) as client:
        task = client.get_task(task_id)
        recent = None if as_json else client.list_runs(task_id=task_id, size=5)
    if as_json:
        _print_json(task)
        return
    out.print(_properties(f"task {task['id']}", [
        ("name", task["name"]), ("description", task.get("description")), ("status", _status(task["status"])),
        ("type", task["task_type"]), ("executor", task.get("executor")), ("command", task["command"]),
        ("arguments", task.get("arguments")), ("schedule", task.get("schedule")),
        ("timezone", task.get("timezone")), ("catchup", task.get("catchup")), ("priority", task["priority"]),
        ("retries", task.get("retry_count")), ("timeout", _seconds(task.get("timeout_seconds"))),
        ("depends on", task.get("dependencies")), ("tags", task.get("tags")),
        ("metadata", task.get("metadata")), ("created", _when(task.get("created_at"))),
        ("updated", _when(task.get("updated_at"))), ("last run", _when(task.get("last_run_at"))),
        ("next run", _when(task.get("next_run_at"))),
    ]))
    stats = task.get("statistics") or {}
    if stats:
        out.print()
        out.print(_properties("statistics", [
            ("runs", stats.get("total_runs")), ("succeeded", stats.get("successful_runs")),
            ("failed", stats.get("failed_runs")), ("average time", _seconds(stats.get("average_execution_time"))),
            ("last status", _status(stats.get("last_execution_status"))),
        ]))
    if recent and recent["items"]:
        out.print()
        out.print(_runs_table(recent["items"], title="latest runs"))


def _parse_params(pairs: list[str] | None, params_json: str | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if params_json is not None:
        try:
            loaded = json.loads(params_json)
        except ValueError as exc:
            raise typer.BadParameter(f"not valid JSON: {exc}", param_hint="--params-json") from exc
        if not isinstance(loaded, dict):
            raise typer.BadParameter("must be a JSON object", param_hint="--params-json")
        params.update(loaded)
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key.strip():
            raise typer.BadParameter(f"expected key=value, got {pair!r}", param_hint="--param")
        params[key.strip()] = value
    return params


@task_app.command("trigger")
def task_trigger(
    task_id: Annotated[int, typer.Argument(help="Task id")],
    param: Annotated[list[str] | None, typer.Option(
        "--param", help="Run parameter key=value (repeatable; the value is a string)")] = None,
    params_json: Annotated[str | None, typer.Option(
        "--params-json", help="Run parameters as a JSON object; --param entries override its keys")] = None,
    priority: Annotated[Priority | None, typer.Option(help="Priority of this run only")] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Wait for the run to finish, like `run wait`")] = False,
    wait_timeout: Annotated[float | None, typer.Option(
        "--wait-timeout", min=0, help="With --wait: give up after this many seconds (exit code 2)")] = None,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Start a run of a task now. With --wait the exit code is 0 only if the run completes."""
    parameters = _parse_params(param, params_json)
    with _connect(server, api_key) as client:
        answer = client.trigger_task(task_id, parameters=parameters,
                                     priority=priority.value if priority else None)
        if not wait:
            if as_json:
                _print_json(answer)
            else:
                _say(f"triggered task {task_id}: run {answer['run_id']} {answer['status']}")
            return
        _say(f"triggered task {task_id}: run {answer['run_id']}", aside=as_json)
        code = _wait_for(client, int(answer["run_id"]), wait_timeout, as_json)
    raise typer.Exit(code)


@task_app.command("pause")
def task_pause(task_id: Annotated[int, typer.Argument(help="Task id")],
               server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Stop scheduling a task (manual triggers are refused too)."""
    with _connect(server, api_key) as client:
        answer = client.pause_task(task_id)
    if as_json:
        _print_json(answer)
    else:
        _say(f"task {task_id} {answer['status']}")


@task_app.command("resume")
def task_resume(task_id: Annotated[int, typer.Argument(help="Task id")],
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Schedule a paused task again."""
    with _connect(server, api_key) as client:
        answer = client.resume_task(task_id)
    if as_json:
        _print_json(answer)
        return
    nxt = f", next run {_when(answer.get('next_run_at'))}" if answer.get("next_run_at") else ""
    _say(f"task {task_id} {answer['status']}{nxt}")


@task_app.command("delete")
def task_delete(task_id: Annotated[int, typer.Argument(help="Task id")],
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Delete a task."""
    with _connect(server, api_key) as client:
        answer = client.delete_task(task_id)
    if as_json:
        _print_json(answer)
    else:
        _say(f"task {answer.get('deleted_id', task_id)} deleted")


# run


run_app = typer.Typer(help="Inspect, follow, abort and restart runs.", no_args_is_help=True)


def _runs_table(runs: list[JSONObject], title: str | None = None) -> Table:
    table = Table(title=title, title_justify="left", title_style="bold")
    for heading in ("id", "task", "status", "try", "trigger", "worker", "created", "took", "outcome"):
        table.add_column(heading, no_wrap=heading in ("id", "status", "created", "took"))
    for run in runs:
        outcome = run.get("error_message") if run.get("status") in ("failed", "aborted") else run.get("result")
        table.add_row(str(run["id"]), f"{run.get('task_name') or ''} ({run['task_id']})", _status(run["status"]),
                      str(run.get("attempt", "")), run.get("trigger") or "", run.get("worker_id") or "",
                      _ago(run.get("created_at")), _duration(run), _clip(outcome, 40))
    return table


@run_app.command("list")
def run_list(
    task: Annotated[int | None, typer.Option("--task", min=1, help="Only runs of this task id")] = None,
    status: Annotated[str | None, typer.Option(help="pending, running, completed, failed or aborted")] = None,
    worker: Annotated[str | None, typer.Option("--worker", help="Only runs held by this worker id")] = None,
    page: Page = 1, size: Size = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """List runs, newest first."""
    with _connect(server, api_key) as client:
        result = client.list_runs(page=page, size=size, task_id=task, status=status, worker_id=worker)
    if as_json:
        _print_json(result)
        return
    if result["items"]:
        out.print(_runs_table(result["items"]))
    _page_footer(dict(result), "runs")


@run_app.command("show")
def run_show(
    run_id: Annotated[int, typer.Argument(help="Run id")],
    lines: Annotated[int, typer.Option(min=0, help="How many of the last log lines to show")] = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Show a run: its details, last log lines and status history."""
    with _connect(server, api_key) as client:
        run = client.get_run(run_id)
    if as_json:
        _print_json(run)
        return
    out.print(_properties(f"run {run['id']}", [
        ("task", f"{run.get('task_name') or ''} ({run['task_id']})"), ("status", _status(run["status"])),
        ("state", run.get("state")), ("trigger", run.get("trigger")), ("priority", run.get("priority")),
        ("attempt", run.get("attempt")), ("retries", f"{run.get('retry_count', 0)} of {run.get('max_retries', 0)}"),
        ("worker", " on ".join(str(v) for v in (run.get("worker_id"), run.get("worker_hostname")) if v)),
        ("parameters", run.get("parameters")), ("created", _when(run.get("created_at"))),
        ("started", _when(run.get("started_at"))), ("finished", _when(run.get("completed_at"))),
        ("took", _duration(run)), ("exit code", run.get("exit_code")), ("result", run.get("result")),
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
            table.add_row(_when(step.get("at")), _status(step.get("status")), str(step.get("attempt", "")),
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
    with _connect(server, api_key) as client:
        if not follow:
            collected = _all_logs(client, run_id)
            if as_json:
                _print_json(collected)
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
    _say(f"run {run_id} {final}", aside=as_json)
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


def _wait_for(client: TaskyardClient, run_id: int, timeout: float | None, as_json: bool) -> int:
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
                elapsed = _seconds(time.monotonic() - started)
                spinner.update(f"run {run_id} [{STATUS_STYLE.get(status, '')}]{status}[/] · {elapsed}"
                               + (f" · {escape(_clip(last_message))}" if last_message else ""))
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    run = client.get_run(run_id) if status in FINAL_RUN_STATUSES or as_json else run
    if as_json:
        _print_json({k: v for k, v in run.items() if k != "logs"})
    if timed_out:
        err.print(f"run {run_id} still {status} after {_seconds(timeout)}; stopped waiting", soft_wrap=True)
        return EXIT_TIMEOUT
    if not as_json:
        took = f" in {_duration(run)}" if _duration(run) else ""
        out.print(Text.assemble(f"run {run_id} ", _status(status), took), soft_wrap=True)
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
    with _connect(server, api_key) as client:
        code = _wait_for(client, run_id, timeout, as_json)
    raise typer.Exit(code)


@run_app.command("abort")
def run_abort(run_id: Annotated[int, typer.Argument(help="Run id")],
              server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Abort a run that has not finished; a worker running it is told to stop."""
    with _connect(server, api_key) as client:
        answer = client.abort_run(run_id)
    if as_json:
        _print_json(answer)
    else:
        _say(f"run {answer.get('id', run_id)} {answer['status']}")


@run_app.command("restart")
def run_restart(run_id: Annotated[int, typer.Argument(help="Run id")],
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Start a new run with the same parameters as this one."""
    with _connect(server, api_key) as client:
        answer = client.restart_run(run_id)
    if as_json:
        _print_json(answer)
        return
    _say(f"run {run_id} restarted as run {answer['new_run_id']} ({answer['status']})")


# worker (the group itself, which starts an agent, lives in main.py)


def worker_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="active, draining or offline")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only workers that run this task type")] = None,
    page: Page = 1, size: Size = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """List registered workers."""
    with _connect(_inherited(ctx, "server", server), _inherited(ctx, "api_key", api_key)) as client:
        result = client.list_workers(page=page, size=size, status=status, task_type=task_type)
    if as_json:
        _print_json(result)
        return
    table = Table("id", "host", "status", "types", "running", "last heartbeat", "cpu %", "mem MB")
    for worker in result["items"]:
        table.add_row(worker["id"], worker.get("hostname") or "", _status(worker["status"]),
                      ",".join(worker.get("task_types") or []),
                      f"{worker.get('current_task_count') or 0}/{worker.get('max_concurrent_tasks') or 0}",
                      _ago(worker.get("last_heartbeat")),
                      "" if worker.get("cpu_usage") is None else f"{worker['cpu_usage']:.0f}",
                      "" if worker.get("memory_usage") is None else str(worker["memory_usage"]))
    if result["items"]:
        out.print(table)
    _page_footer(dict(result), "workers")


def worker_show(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(help="Worker id")],
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Show a worker, the runs it holds and its statistics."""
    with _connect(_inherited(ctx, "server", server), _inherited(ctx, "api_key", api_key)) as client:
        worker = client.get_worker(worker_id)
    if as_json:
        _print_json(worker)
        return
    out.print(_properties(f"worker {worker['id']}", [
        ("host", worker.get("hostname")), ("address", f"{worker.get('ip_address')}:{worker.get('port')}"),
        ("status", _status(worker["status"])), ("task types", ",".join(worker.get("task_types") or [])),
        ("running", f"{worker.get('current_task_count') or 0} of {worker.get('max_concurrent_tasks') or 0}"),
        ("registered", _when(worker.get("registered_at"))), ("last heartbeat", _when(worker.get("last_heartbeat"))),
        ("load average", worker.get("load_average")), ("cpu %", worker.get("cpu_usage")),
        ("memory MB", worker.get("memory_usage")), ("metadata", worker.get("metadata")),
    ]))
    stats = worker.get("statistics") or {}
    if stats:
        out.print()
        out.print(_properties("statistics", [(k.replace("_", " "), v) for k, v in stats.items()]))
    current = worker.get("current_tasks") or []
    if current:
        out.print()
        table = Table("run", "task", "status", "started", title="current runs", title_justify="left",
                      title_style="bold")
        for run in current:
            table.add_row(str(run["run_id"]), f"{run.get('task_name') or ''} ({run['task_id']})",
                          _status(run.get("status")), _when(run.get("started_at")))
        out.print(table)


# status


def system_status(server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Health and statistics of the scheduler. Exit code 1 if it reports itself unhealthy."""
    with _connect(server, api_key) as client:
        health = client.health()
        stats: JSONObject | None = None
        stats_error: str | None = None
        try:
            stats = client.stats()
        except TaskyardAPIError as exc:
            # An unhealthy database fails the statistics too; the health report says why.
            stats_error = describe_api_error(exc)
    overall = str(health.get("status"))
    if as_json:
        _print_json({"health": health, "stats": stats})
    else:
        _print_status(client.base_url, health, stats, stats_error)
    if overall == "unhealthy":
        raise typer.Exit(EXIT_FAILED)


def _figure(key: str, value: Any) -> str:
    if isinstance(value, dict):
        return " ".join(f"{k} {_figure(k, v)}" for k, v in value.items())
    if key.endswith("response_time") and isinstance(value, int | float):
        return f"{value * 1000:.1f}ms"
    if key.endswith("_at"):
        return _when(value)
    return str(value)


def _print_status(url: str, health: JSONObject, stats: JSONObject | None, stats_error: str | None) -> None:
    uptime = _seconds(health.get("uptime_seconds"))
    out.print(Text.assemble(f"taskyard {health.get('version', '')} at {url}: ", _status(str(health.get("status"))),
                            f" (up {uptime})" if uptime else ""), soft_wrap=True)
    components = health.get("components") or {}
    table = Table("component", "status", "details")
    for name, info in components.items():
        details = [f"{k.replace('_', ' ')} {_figure(k, v)}" for k, v in info.items()
                   if k != "status" and v is not None]
        table.add_row(name, _status(info.get("status")), ", ".join(details))
    out.print(table)
    if stats is None:
        if stats_error:
            err.print(f"[red]statistics unavailable:[/red] {escape(stats_error)}", soft_wrap=True)
        return
    counts = Table("", "total", "breakdown", title="statistics", title_justify="left", title_style="bold")
    for section in ("tasks", "task_runs", "workers"):
        figures = stats.get(section) or {}
        breakdown = ", ".join(f"{k} {v}" for k, v in figures.items() if k != "total")
        counts.add_row(section.replace("_", " "), str(figures.get("total", "")), breakdown)
    out.print(counts)
    perf = stats.get("performance") or {}
    rate = perf.get("success_rate")
    out.print(f"average run {_seconds(perf.get('average_execution_time')) or '-'}, "
              f"{perf.get('tasks_per_minute', 0)} runs/min, "
              f"success rate {'-' if rate is None else f'{rate}%'}", soft_wrap=True)


# registration


def _group(app: typer.Typer, name: str, help_text: str) -> typer.Typer:
    for info in app.registered_groups:
        if info.name == name and info.typer_instance is not None:
            return info.typer_instance
    group = typer.Typer(help=help_text, no_args_is_help=True)
    app.add_typer(group, name=name)
    return group


def register(app: typer.Typer) -> None:
    """Add the client commands to `app`; a second call is a no-op."""
    if any(info.name in ("task", "run") for info in app.registered_groups):
        return
    app.add_typer(task_app, name="task")
    app.add_typer(run_app, name="run")
    workers = _group(app, "worker", "Inspect workers.")
    workers.command("list")(worker_list)
    workers.command("show")(worker_show)
    app.command("status")(system_status)
