"""`taskyard status`: health and statistics of the scheduler."""

from __future__ import annotations

from typing import Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from taskyard.cli.commands.common import (
    EXIT_FAILED,
    ApiKey,
    AsJson,
    Server,
    connect,
    describe_api_error,
    err,
    out,
    print_json,
)
from taskyard.cli.commands.display import seconds_text, status_text, when_text
from taskyard.sdk.client import JSONObject, TaskyardAPIError


def system_status(server: Server = None, api_key: ApiKey = None, as_json: AsJson = False) -> None:
    """Health and statistics of the scheduler. Exit code 1 if it reports itself unhealthy."""
    with connect(server, api_key) as client:
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
        print_json({"health": health, "stats": stats})
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
        return when_text(value)
    return str(value)


def _print_status(url: str, health: JSONObject, stats: JSONObject | None, stats_error: str | None) -> None:
    uptime = seconds_text(health.get("uptime_seconds"))
    out.print(Text.assemble(f"taskyard {health.get('version', '')} at {url}: ", status_text(str(health.get("status"))),
                            f" (up {uptime})" if uptime else ""), soft_wrap=True)
    components = health.get("components") or {}
    table = Table("component", "status", "details")
    for name, info in components.items():
        details = [f"{k.replace('_', ' ')} {_figure(k, v)}" for k, v in info.items()
                   if k != "status" and v is not None]
        table.add_row(name, status_text(info.get("status")), ", ".join(details))
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
    out.print(f"average run {seconds_text(perf.get('average_execution_time')) or '-'}, "
              f"{perf.get('tasks_per_minute', 0)} runs/min, "
              f"success rate {'-' if rate is None else f'{rate}%'}", soft_wrap=True)
