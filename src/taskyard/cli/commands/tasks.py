"""`taskyard task …`: define, list, show, trigger, pause, resume and delete tasks."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table

from taskyard.cli.commands.common import ApiKey, AsJson, Page, Server, Size, act, connect, out, print_json, say
from taskyard.cli.commands.display import ago_text, properties_table, seconds_text, show_page, status_text, when_text
from taskyard.cli.commands.runs import runs_table, wait_for
from taskyard.sdk.client import JSONObject


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
    act(server, api_key, as_json,
        lambda client: client.create_task(
            name, task_type.value, command, arguments=arg or None, schedule=schedule, timezone=timezone,
            catchup=catchup.value if catchup else None, priority=priority.value if priority else None,
            retry_count=retries, timeout_seconds=timeout,
            dependencies=list[str | int](depends_on) if depends_on else None, tags=tag or None,
            description=description),
        lambda task: f"created task {task['id']} '{escape(str(task['name']))}' ({task['task_type']}){_next_run(task)}")


def _next_run(task: JSONObject) -> str:
    return f", next run {when_text(task.get('next_run_at'))}" if task.get("next_run_at") else ""


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
    with connect(server, api_key) as client:
        result = client.list_tasks(page=page, size=size, status=status, task_type=task_type, priority=priority,
                                   search=search)
    show_page(result, as_json, "tasks", _tasks_table)


def _tasks_table(tasks: list[JSONObject]) -> Table:
    table = Table("id", "name", "type", "status", "priority", "schedule")
    for heading in ("next run", "last run"):
        table.add_column(heading, no_wrap=True)
    for task in tasks:
        table.add_row(str(task["id"]), task["name"], task["task_type"], status_text(task["status"]),
                      task["priority"], task.get("schedule") or "", ago_text(task.get("next_run_at")),
                      ago_text(task.get("last_run_at")))
    return table


@task_app.command("show")
def task_show(task_id: Annotated[int, typer.Argument(help="Task id")],
              server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Show a task, its statistics and its latest runs."""
    with connect(server, api_key) as client:
        task = client.get_task(task_id)
        recent = None if as_json else client.list_runs(task_id=task_id, size=5)
    if as_json:
        print_json(task)
        return
    out.print(properties_table(f"task {task['id']}", [
        ("name", task["name"]), ("description", task.get("description")), ("status", status_text(task["status"])),
        ("type", task["task_type"]), ("executor", task.get("executor")), ("command", task["command"]),
        ("arguments", task.get("arguments")), ("schedule", task.get("schedule")),
        ("timezone", task.get("timezone")), ("catchup", task.get("catchup")), ("priority", task["priority"]),
        ("retries", task.get("retry_count")), ("timeout", seconds_text(task.get("timeout_seconds"))),
        ("depends on", task.get("dependencies")), ("tags", task.get("tags")),
        ("metadata", task.get("metadata")), ("created", when_text(task.get("created_at"))),
        ("updated", when_text(task.get("updated_at"))), ("last run", when_text(task.get("last_run_at"))),
        ("next run", when_text(task.get("next_run_at"))),
    ]))
    stats = task.get("statistics") or {}
    if stats:
        out.print()
        out.print(properties_table("statistics", [
            ("runs", stats.get("total_runs")), ("succeeded", stats.get("successful_runs")),
            ("failed", stats.get("failed_runs")), ("average time", seconds_text(stats.get("average_execution_time"))),
            ("last status", status_text(stats.get("last_execution_status"))),
        ]))
    if recent and recent["items"]:
        out.print()
        out.print(runs_table(recent["items"], title="latest runs"))


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
    with connect(server, api_key) as client:
        answer = client.trigger_task(task_id, parameters=parameters,
                                     priority=priority.value if priority else None)
        if not wait:
            if as_json:
                print_json(answer)
            else:
                say(f"triggered task {task_id}: run {answer['run_id']} {answer['status']}")
            return
        say(f"triggered task {task_id}: run {answer['run_id']}", aside=as_json)
        code = wait_for(client, int(answer["run_id"]), wait_timeout, as_json)
    raise typer.Exit(code)


@task_app.command("pause")
def task_pause(task_id: Annotated[int, typer.Argument(help="Task id")],
               server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Stop scheduling a task (manual triggers are refused too)."""
    act(server, api_key, as_json, lambda client: client.pause_task(task_id),
        lambda answer: f"task {task_id} {answer['status']}")


@task_app.command("resume")
def task_resume(task_id: Annotated[int, typer.Argument(help="Task id")],
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Schedule a paused task again."""
    act(server, api_key, as_json, lambda client: client.resume_task(task_id),
        lambda answer: f"task {task_id} {answer['status']}{_next_run(answer)}")


@task_app.command("delete")
def task_delete(task_id: Annotated[int, typer.Argument(help="Task id")],
                server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Delete a task."""
    act(server, api_key, as_json, lambda client: client.delete_task(task_id),
        lambda answer: f"task {answer.get('deleted_id', task_id)} deleted")
