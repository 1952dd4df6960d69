"""Commands that drive a running scheduler over HTTP: `task`, `run`, `worker list|show` and `status`.

They go through `taskyard.sdk.client` only, so they work the same against a remote server.
"""

from __future__ import annotations

import typer

from taskyard.cli.commands.runs import run_app
from taskyard.cli.commands.status import system_status
from taskyard.cli.commands.tasks import task_app
from taskyard.cli.commands.tenancy import project_app, tenant_app
from taskyard.cli.commands.track import track_app
from taskyard.cli.commands.workers import worker_list, worker_show

__all__ = ["register"]


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
    app.add_typer(tenant_app, name="tenant")
    app.add_typer(project_app, name="project")
    app.add_typer(track_app, name="track")
    workers = _group(app, "worker", "Inspect workers.")
    workers.command("list")(worker_list)
    workers.command("show")(worker_show)
    app.command("status")(system_status)
