"""What every client command shares: the connection options, the client, errors and the two output streams.

Tables are for people; `--json` prints the response's `data` unchanged for scripts. Errors, and with
`--json` anything that is not the data, go to stderr.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, NoReturn

import typer
from rich.console import Console
from rich.markup import escape

from taskyard.sdk.client import JSONObject, TaskyardAPIError, TaskyardClient, TaskyardConnectionError

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)

EXIT_FAILED = 1
EXIT_TIMEOUT = 2
EXIT_INTERRUPTED = 130

CONNECTION = "Connection"
Server = Annotated[str | None, typer.Option(
    "--server", help="Scheduler URL (env TASKYARD_SERVER; default http://127.0.0.1:8080)",
    show_default=False, rich_help_panel=CONNECTION)]
ApiKey = Annotated[str | None, typer.Option(
    "--api-key", help="API key (env TASKYARD_API_KEY)", show_default=False, rich_help_panel=CONNECTION)]
AsJson = Annotated[bool, typer.Option("--json", help="Print the response data as JSON (for scripts)")]
Page = Annotated[int, typer.Option(min=1, help="Page number")]
Size = Annotated[int, typer.Option(min=1, help="Rows per page")]


def fail(message: str, code: int = EXIT_FAILED) -> NoReturn:
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
def connect(server: str | None, api_key: str | None) -> Iterator[TaskyardClient]:
    """A client whose API and connection errors end the command with `error: …` and exit code 1."""
    try:
        client = TaskyardClient(server, api_key)
    except ValueError as exc:
        fail(str(exc))
    try:
        with client:
            yield client
    except TaskyardAPIError as exc:
        fail(describe_api_error(exc))
    except TaskyardConnectionError as exc:
        fail(str(exc))


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def say(message: str, *, aside: bool = False) -> None:
    """A line for people. `aside` sends it to stderr, for when stdout carries JSON."""
    (err if aside else out).print(message, soft_wrap=True)


def inherited(ctx: typer.Context, name: str, value: str | None) -> str | None:
    """`taskyard worker --server URL list` puts the option on the group; honour it there too."""
    if value is None and ctx.parent is not None:
        parent = ctx.parent.params.get(name)
        if isinstance(parent, str):
            return parent
    return value


def act(
    server: str | None,
    api_key: str | None,
    as_json: bool,
    call: Callable[[TaskyardClient], JSONObject],
    summary: Callable[[JSONObject], str],
) -> None:
    """One request, then its answer: the data with `--json`, otherwise `summary` of it as one line."""
    with connect(server, api_key) as client:
        answer = call(client)
    if as_json:
        print_json(answer)
    else:
        say(summary(answer))
