"""Append-only bulk writes for the tables that take rows by the thousand (run_events, run_logs,
run_samples), below SQLAlchemy's per-row parameter handling.

At tens of thousands of rows a second, SQLAlchemy's compiled executemany spends more time per row on
bind processing (type decorators, JSON serialisation through the dialect, parameter dictionaries) than
the database spends storing it. Here rows are tuples in column order, converted once to what the driver
takes, and handed over in one call:

- PostgreSQL: ``COPY … FROM STDIN`` on the same connection, so inside the caller's transaction;
- SQLite: one prepared ``INSERT`` run by the driver's ``executemany`` (a C loop).

Values arrive as the rest of the code holds them (aware datetimes, JSON-able objects) and are stored
exactly as the SQLAlchemy column types would store them, so every reader sees the same data.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, Table
from sqlalchemy.ext.asyncio import AsyncConnection

from taskyard.storage.database import json_text
from taskyard.storage.types import UTCDateTime

Row = Sequence[Any]
_Convert = Callable[[Any], Any]


async def append(conn: AsyncConnection, table: Table, columns: Sequence[str], rows: Sequence[Row]) -> None:
    """Insert `rows` (tuples in the order of `columns`) into `table` in the caller's transaction."""
    if not rows:
        return
    postgres = conn.dialect.name == "postgresql"
    converters = [_converter(table, name, postgres=postgres) for name in columns]
    converted = _converted(rows, converters)
    names = ", ".join(f'"{name}"' for name in columns)
    if postgres:
        raw = await conn.get_raw_connection()
        driver: Any = raw.driver_connection
        async with driver.cursor() as cursor, cursor.copy(f'COPY "{table.name}" ({names}) FROM STDIN') as copy:
            for row in converted:
                await copy.write_row(row)
    else:
        marks = ", ".join("?" for _ in columns)
        await conn.exec_driver_sql(f'INSERT INTO "{table.name}" ({names}) VALUES ({marks})', converted)


def _converted(rows: Sequence[Row], converters: list[_Convert | None]) -> list[tuple[Any, ...]]:
    """Column by column: zip and map loop in C, so a row costs only its converter calls."""
    columns: list[Any] = list(zip(*rows, strict=True))
    for index, convert in enumerate(converters):
        if convert is not None:
            columns[index] = map(convert, columns[index])
    return list(zip(*columns, strict=True))


def _converter(table: Table, name: str, *, postgres: bool) -> _Convert | None:
    kind = table.c[name].type
    if isinstance(kind, UTCDateTime):
        return _utc if postgres else sqlite_instant
    if isinstance(kind, JSON) or isinstance(getattr(kind, "impl", None), JSON):
        return _json
    return None


def _utc(value: datetime | None) -> datetime | None:
    return value.replace(tzinfo=UTC) if value is not None and value.tzinfo is None else value


def _json(value: Any) -> str | None:
    return None if value is None else json_text(value)


def sqlite_instant(value: datetime | None) -> str | None:
    """The text SQLAlchemy's SQLite DATETIME stores for a naive UTC datetime: string order is time order."""
    if value is None:
        return None
    if value.tzinfo is not None and value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    # str() is the cheapest formatting ("YYYY-MM-DD HH:MM:SS.ffffff[+00:00]"), but drops a zero fraction.
    text = str(value)
    return text[:26] if value.microsecond else text[:19] + ".000000"
