"""The `taskyard` command."""

from __future__ import annotations

import asyncio
import logging
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer
from rich.console import Console

from taskyard import __version__
from taskyard.settings import ServerSettings, SettingsError, WorkerSettings

if TYPE_CHECKING:
    from taskyard.services.core import Core

app = typer.Typer(name="taskyard", help="A distributed task scheduler that tracks every run.",
                  no_args_is_help=True, add_completion=False, pretty_exceptions_enable=False)
db_app = typer.Typer(help="Database schema.", no_args_is_help=True)
key_app = typer.Typer(help="API keys (stored hashed; the secret is shown once).", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(key_app, name="apikey")

err = Console(stderr=True)

S = TypeVar("S", ServerSettings, WorkerSettings)

Host = Annotated[str | None, typer.Option(help="Address to bind (env TASKYARD_HOST, default 127.0.0.1)")]
Port = Annotated[int | None, typer.Option(help="Port (env TASKYARD_PORT, default 8080)")]
DatabaseUrl = Annotated[str | None, typer.Option(
    "--database-url", help="sqlite:///path or postgresql://… (env TASKYARD_DATABASE_URL)")]
Home = Annotated[Path | None, typer.Option(help="Data directory for SQLite (env TASKYARD_HOME, default ./.taskyard)")]


def _setup_logging(level: str = "info") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
                        stream=sys.stderr)
    # One line per HTTP request and per migration step drowns what people need to see.
    for chatty in ("httpx", "httpcore", "alembic"):
        logging.getLogger(chatty).setLevel(max(logging.WARNING, logging.getLogger().level))


def _settings(kind: type[S], **overrides: object) -> S:
    """Settings from the options, the environment and defaults; bad values end the command with exit code 2."""
    try:
        return kind.load(**overrides)
    except SettingsError as exc:
        err.print(f"[red]error:[/red] {exc}")
        raise typer.Exit(2) from exc


@app.command()
def up(host: Host = None, port: Port = None, database_url: DatabaseUrl = None, home: Home = None,
       concurrency: Annotated[int | None, typer.Option(help="Embedded worker slots (env TASKYARD_CONCURRENCY)")] = None,
       ) -> None:
    """API server, cron scheduler and one embedded worker in one process (SQLite by default)."""
    from taskyard.cli.serve import serve_with_worker

    settings = _settings(ServerSettings, host=host, port=port, database_url=database_url, home=home)
    _setup_logging(settings.log_level)
    local = "127.0.0.1" if settings.host in {"0.0.0.0", "::", ""} else settings.host
    worker = _settings(WorkerSettings, server=f"http://{local}:{settings.port}", concurrency=concurrency,
                       name=os.environ.get("TASKYARD_NAME") or "embedded")
    err.print(f"taskyard {__version__}: http://{settings.host}:{settings.port}/api "
              f"(database {settings.resolved_database_url.split('://')[0]}, embedded worker)")
    serve_with_worker(settings, worker)


@app.command()
def server(host: Host = None, port: Port = None, database_url: DatabaseUrl = None, home: Home = None) -> None:
    """API server and cron scheduler, no worker."""
    from taskyard.cli.serve import serve

    settings = _settings(ServerSettings, host=host, port=port, database_url=database_url, home=home)
    _setup_logging(settings.log_level)
    err.print(f"taskyard {__version__}: http://{settings.host}:{settings.port}/api")
    serve(settings)


# A group so that `taskyard worker list|show` can inspect workers while a bare `taskyard worker [options]`
# still starts an agent, as it always has.
worker_app = typer.Typer(invoke_without_command=True)
app.add_typer(worker_app, name="worker")


@worker_app.callback()
def worker(
    ctx: typer.Context,
    server: Annotated[str | None, typer.Option(help="Server URL (env TASKYARD_SERVER)")] = None,
    api_key: Annotated[str | None, typer.Option(help="API key (env TASKYARD_API_KEY)")] = None,
    task_types: Annotated[str | None, typer.Option(help="Comma list (env TASKYARD_TASK_TYPES)")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Parallel runs (env TASKYARD_CONCURRENCY)")] = None,
    name: Annotated[str | None, typer.Option(help="Stable worker id (env TASKYARD_NAME)")] = None,
    max_runs: Annotated[int | None, typer.Option(help="Exit after this many runs")] = None,
) -> None:
    """A worker agent: registers with the server and runs what it claims. `list` and `show` inspect workers."""
    if ctx.invoked_subcommand is not None:
        return
    from taskyard.worker.runner import run_worker

    settings = _settings(WorkerSettings, server=server, api_key=api_key, task_types=task_types,
                         concurrency=concurrency, name=name)
    _setup_logging(os.environ.get("TASKYARD_LOG_LEVEL", "info"))
    raise typer.Exit(run_worker(settings, max_runs=max_runs))


@db_app.command("upgrade")
def db_upgrade(database_url: DatabaseUrl = None, home: Home = None) -> None:
    """Apply every pending migration."""
    from taskyard.storage import migrate

    settings = _settings(ServerSettings, database_url=database_url, home=home)
    migrate.upgrade(settings.resolved_database_url)
    err.print(f"database at revision {migrate.current_revision(settings.resolved_database_url)}")


def _with_core(settings: ServerSettings) -> Core:
    from taskyard.api.app import build_core
    from taskyard.storage import migrate

    migrate.upgrade(settings.resolved_database_url)
    return build_core(settings)


@key_app.command("create")
def apikey_create(name: Annotated[str, typer.Option(help="Who or what uses the key")],
                  role: Annotated[str, typer.Option(help="admin, operator, viewer or worker")] = "operator",
                  project: Annotated[str | None, typer.Option(
                      help="Project GUID the key acts in (default: the default project; admin keys: every project)",
                  )] = None,
                  database_url: DatabaseUrl = None, home: Home = None,
                  json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Create a key and print its secret once."""
    import json

    from taskyard.domain.errors import TaskyardError

    core = _with_core(_settings(ServerSettings, database_url=database_url, home=home))

    async def go() -> None:
        try:
            key = await core.access.create_key(name, role, project)
        finally:
            await core.db.dispose()
        where = key.project_uuid or ("every project" if key.project_id is None else "the default project")
        if json_out:
            print(json.dumps({"id": key.id, "name": key.name, "role": key.role.value, "project": key.project_uuid,
                              "all_projects": key.project_id is None, "key": key.secret}))
        else:
            err.print(f"API key {key.id} '{key.name}' ({key.role.value}, {where}). "
                      "Store it now; it is not shown again:")
            print(key.secret)

    try:
        asyncio.run(go())
    except TaskyardError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(2) from exc


@key_app.command("list")
def apikey_list(database_url: DatabaseUrl = None, home: Home = None,
                json_out: Annotated[bool, typer.Option("--json")] = False) -> None:
    """List keys (never their secrets)."""
    import json

    from rich.table import Table

    core = _with_core(_settings(ServerSettings, database_url=database_url, home=home))

    async def go() -> list[dict[str, Any]]:
        try:
            return await core.access.list_keys()
        finally:
            await core.db.dispose()

    keys = asyncio.run(go())
    if json_out:
        print(json.dumps(keys, default=str))
        return
    table = Table("id", "name", "role", "project", "prefix", "created", "last used", "revoked")
    for k in keys:
        k = {**k, "project_id": "all" if k.get("project_id") is None else k["project_id"]}
        table.add_row(*(str(k.get(c) or "") for c in ("id", "name", "role", "project_id", "prefix", "created_at",
                                                        "last_used_at", "revoked_at")))
    Console().print(table)


@key_app.command("revoke")
def apikey_revoke(key_id: int, database_url: DatabaseUrl = None, home: Home = None) -> None:
    """Revoke a key; requests with it fail from now on."""
    from taskyard.domain.errors import TaskyardError

    core = _with_core(_settings(ServerSettings, database_url=database_url, home=home))

    async def go() -> None:
        try:
            await core.access.revoke_key(key_id)
        finally:
            await core.db.dispose()

    try:
        asyncio.run(go())
    except TaskyardError as exc:
        err.print(f"[red]error:[/red] {exc.message}")
        raise typer.Exit(1) from exc
    err.print(f"API key {key_id} revoked")


@app.command()
def version() -> None:
    """Print the version."""
    print(__version__)


def main() -> None:
    from taskyard.cli.commands import register

    register(app)
    app()
