"""`taskyard worker list|show`: inspect workers (the `worker` group itself, which starts an agent, is in main.py)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from taskyard.cli.commands.common import ApiKey, AsJson, Page, Server, Size, connect, inherited, out, print_json
from taskyard.cli.commands.display import ago_text, properties_table, show_page, status_text, when_text
from taskyard.sdk.client import JSONObject


def worker_list(
    ctx: typer.Context,
    status: Annotated[str | None, typer.Option(help="active, draining or offline")] = None,
    task_type: Annotated[str | None, typer.Option("--type", help="Only workers that run this task type")] = None,
    page: Page = 1, size: Size = 20,
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """List registered workers."""
    with connect(inherited(ctx, "server", server), inherited(ctx, "api_key", api_key)) as client:
        result = client.list_workers(page=page, size=size, status=status, task_type=task_type)
    show_page(result, as_json, "workers", _workers_table)


def _workers_table(workers: list[JSONObject]) -> Table:
    table = Table("id", "host", "status", "types", "running", "last heartbeat", "cpu %", "mem MB")
    for worker in workers:
        table.add_row(worker["id"], worker.get("hostname") or "", status_text(worker["status"]),
                      ",".join(worker.get("task_types") or []),
                      f"{worker.get('current_task_count') or 0}/{worker.get('max_concurrent_tasks') or 0}",
                      ago_text(worker.get("last_heartbeat")),
                      "" if worker.get("cpu_usage") is None else f"{worker['cpu_usage']:.0f}",
                      "" if worker.get("memory_usage") is None else str(worker["memory_usage"]))
    return table


def worker_show(
    ctx: typer.Context,
    worker_id: Annotated[str, typer.Argument(help="Worker id")],
    server: Server = None, api_key: ApiKey = None, as_json: AsJson = False,
) -> None:
    """Show a worker, the runs it holds and its statistics."""
    with connect(inherited(ctx, "server", server), inherited(ctx, "api_key", api_key)) as client:
        worker = client.get_worker(worker_id)
    if as_json:
        print_json(worker)
        return
    out.print(properties_table(f"worker {worker['id']}", [
        ("host", worker.get("hostname")), ("address", f"{worker.get('ip_address')}:{worker.get('port')}"),
        ("status", status_text(worker["status"])), ("task types", ",".join(worker.get("task_types") or [])),
        ("running", f"{worker.get('current_task_count') or 0} of {worker.get('max_concurrent_tasks') or 0}"),
        ("registered", when_text(worker.get("registered_at"))),
        ("last heartbeat", when_text(worker.get("last_heartbeat"))),
        ("load average", worker.get("load_average")), ("cpu %", worker.get("cpu_usage")),
        ("memory MB", worker.get("memory_usage")), ("metadata", worker.get("metadata")),
    ]))
    stats = worker.get("statistics") or {}
    if stats:
        out.print()
        out.print(properties_table("statistics", [(k.replace("_", " "), v) for k, v in stats.items()]))
    current = worker.get("current_tasks") or []
    if current:
        out.print()
        table = Table("run", "task", "status", "started", title="current runs", title_justify="left",
                      title_style="bold")
        for run in current:
            table.add_row(str(run["run_id"]), f"{run.get('task_name') or ''} ({run['task_id']})",
                          status_text(run.get("status")), when_text(run.get("started_at")))
        out.print(table)
