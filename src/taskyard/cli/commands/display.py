"""How the client commands show values to people: statuses, times, durations, property lists, pages."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rich.table import Table
from rich.text import Text

from taskyard.cli.commands.common import out, print_json, say
from taskyard.sdk.client import JSONObject, Page

STATUS_STYLE = {
    "completed": "green", "active": "green", "healthy": "green", "success": "green",
    "running": "cyan", "pending": "yellow", "queued": "yellow", "paused": "yellow", "draining": "yellow",
    "degraded": "yellow", "standby": "yellow",
    "failed": "red", "aborted": "magenta", "offline": "red", "unhealthy": "red", "unknown": "red",
}


def status_text(word: str | None) -> Text:
    if not word:
        return Text("")
    return Text(word, style=STATUS_STYLE.get(word, ""))


def _timestamp_text(value: Any, render: Callable[[datetime], str]) -> str:
    """``render`` of an API timestamp; nothing for no value, and a value that is no timestamp as it is."""
    if not value:
        return ""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return str(value)
    return render(moment)


def when_text(value: Any) -> str:
    """An API timestamp in the local time zone, to the second."""
    return _timestamp_text(value, _local_time)


def _local_time(moment: datetime) -> str:
    if moment.tzinfo is not None:
        moment = moment.astimezone()
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def ago_text(value: Any) -> str:
    """An API timestamp relative to now ("3m ago", "in 2h"): short enough for table columns."""
    return _timestamp_text(value, _relative_time)


def _relative_time(moment: datetime) -> str:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = (datetime.now(UTC) - moment).total_seconds()
    if abs(delta) < 1:
        return "now"
    span = seconds_text(abs(delta), whole=True)
    return f"{span} ago" if delta > 0 else f"in {span}"


def seconds_text(value: Any, *, whole: bool = False) -> str:
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


def duration_text(run: JSONObject) -> str:
    if run.get("execution_time") is not None:
        return seconds_text(run["execution_time"])
    try:
        start = datetime.fromisoformat(str(run["started_at"]))
        end = datetime.fromisoformat(str(run["completed_at"]))
    except (KeyError, TypeError, ValueError):
        return ""
    return seconds_text((end - start).total_seconds())


def clip_text(value: Any, width: int = 60) -> str:
    text = "" if value is None else str(value).replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


def properties_table(title: str, rows: list[tuple[str, Any]]) -> Table:
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


def page_footer(page: JSONObject, noun: str) -> None:
    total = int(page.get("total") or 0)
    pages = int(page.get("total_pages") or 0)
    if pages > 1:
        say(f"page {page.get('page')} of {pages} ({total} {noun})")
    elif not page.get("items"):
        say(f"no {noun}")


def show_page(page: Page, as_json: bool, noun: str, table: Callable[[list[JSONObject]], Table]) -> None:
    """A list command's answer: the page as JSON, or `table` of its items and where in the list this is."""
    if as_json:
        print_json(page)
        return
    if page["items"]:
        out.print(table(page["items"]))
    page_footer(dict(page), noun)
