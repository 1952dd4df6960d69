"""The connection to SQLite or PostgreSQL, and the transaction shapes every service uses."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
from sqlalchemy import event, text
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from taskyard.domain.errors import Unavailable
from taskyard.storage.wakeup import ORIGIN_KEY, WAKE_KEY, Wakeup


def async_url(url: str) -> str:
    """The driver URL for the application: aiosqlite or psycopg 3 (async)."""
    parsed = make_url(_normalise(url))
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite+aiosqlite").render_as_string(hide_password=False)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def sync_url(url: str) -> str:
    """The driver URL for migrations: the stdlib sqlite3 or psycopg 3 (sync)."""
    parsed = make_url(_normalise(url))
    if parsed.get_backend_name() == "sqlite":
        return parsed.set(drivername="sqlite").render_as_string(hide_password=False)
    return parsed.set(drivername="postgresql+psycopg").render_as_string(hide_password=False)


def _normalise(url: str) -> str:
    return "postgresql://" + url[len("postgres://"):] if url.startswith("postgres://") else url


def sqlite_path(url: str) -> Path | None:
    parsed = make_url(_normalise(url))
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        return None
    return Path(parsed.database)


class Database:
    """Owns the engine. Writes on SQLite are serialised in-process and take the write lock up front
    (BEGIN IMMEDIATE) so concurrent writers wait instead of failing half-way through."""

    def __init__(self, url: str, *, pool_size: int = 20, pool_timeout: float = 30.0, echo: bool = False) -> None:
        self.url = url
        self._pool_timeout = pool_timeout
        path = sqlite_path(url)
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
        # orjson encodes JSON columns several times faster than the stdlib encoder SQLAlchemy defaults to.
        kwargs: dict[str, Any] = {"echo": echo, "json_serializer": json_text}
        self.dialect = make_url(_normalise(url)).get_backend_name()
        if self.dialect == "postgresql":
            # Last in, first out: a few warm connections serve a light load, and psycopg prepares a statement
            # on a connection once it has run there five times; handed round the whole pool, the hot
            # statements were planned afresh on every cold connection. No overflow: connections opened for
            # a burst and closed after it (64 triggers in flight opened 180 for 3,000 triggers) each cost
            # a backend start and cold plans; a request waits for a warm one instead (+22% triggers/s).
            kwargs.update(pool_size=pool_size, max_overflow=0, pool_timeout=pool_timeout, pool_pre_ping=False,
                          pool_recycle=1800, pool_use_lifo=True)
        self.engine: AsyncEngine = create_async_engine(async_url(url), **kwargs)
        self._write_lock = asyncio.Lock() if self.is_sqlite else None
        self.wakeup = Wakeup()
        if self.is_sqlite:
            _configure_sqlite(self.engine)

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @property
    def is_postgres(self) -> bool:
        return self.dialect == "postgresql"

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """One write transaction; committed when the block exits cleanly. If it asked for a wake-up
        (wakeup.request_wake), this server's pollers are woken as soon as it has committed."""
        async with contextlib.AsyncExitStack() as stack:
            if self._write_lock is not None:
                await stack.enter_async_context(self._write_lock)
            conn = await stack.enter_async_context(self._connect())
            if self._write_lock is not None:
                await conn.execution_options(taskyard_write=True)
            conn.info[ORIGIN_KEY] = self.wakeup.origin
            conn.info[WAKE_KEY] = False
            async with conn.begin():
                yield conn
            wake = conn.info.get(WAKE_KEY, False)
        if wake:
            self.wakeup.fire()

    @asynccontextmanager
    async def statement(self) -> AsyncIterator[AsyncConnection]:
        """PostgreSQL only: a connection whose statements are each their own transaction (autocommit), for
        a write done in one statement, which then costs no BEGIN and COMMIT round trips."""
        assert self.is_postgres, "a single-statement write is for PostgreSQL"
        async with self._connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """Reads only. On PostgreSQL each statement runs on its own (autocommit): under READ COMMITTED a
        transaction around them would give each its own snapshot anyway, and its BEGIN and COMMIT cost two
        round trips per request. On SQLite one read transaction, which is one snapshot."""
        async with self._connect() as conn:
            if self.is_postgres:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
            async with conn.begin():
                yield conn

    @asynccontextmanager
    async def _connect(self) -> AsyncIterator[AsyncConnection]:
        try:
            async with self.engine.connect() as conn:
                yield conn
        except PoolTimeout as exc:
            raise Unavailable(f"every database connection stayed busy for {self._pool_timeout:g} s") from exc
        except (OperationalError, DBAPIError, OSError) as exc:
            if _is_connection_failure(exc):
                raise Unavailable("the database is unreachable") from exc
            raise

    async def ping(self) -> float:
        """Seconds one round trip takes."""
        started = time.perf_counter()
        async with self._connect() as conn:
            await conn.execute(text("SELECT 1"))
        return time.perf_counter() - started

    def pool_status(self) -> dict[str, int]:
        pool: Any = self.engine.pool
        try:
            total = int(pool.size()) + max(int(pool.overflow()), 0)
            active = int(pool.checkedout())
        except (AttributeError, TypeError):
            return {"total": 1, "active": 0, "idle": 1}
        return {"total": total, "active": active, "idle": max(total - active, 0)}

    async def dispose(self) -> None:
        await self.engine.dispose()


def json_text(value: Any) -> str:
    try:
        return orjson.dumps(value, default=str, option=orjson.OPT_NON_STR_KEYS).decode()
    except TypeError:  # integers beyond 64 bits: the stdlib encoder takes them
        return json.dumps(value, default=str)


def _is_connection_failure(exc: BaseException) -> bool:
    if isinstance(exc, OSError):
        return True
    if isinstance(exc, DBAPIError) and exc.connection_invalidated:
        return True
    message = str(exc).lower()
    return any(s in message for s in ("connection refused", "could not connect", "connection failed",
                                      "server closed the connection", "unable to open database",
                                      "connection is closed", "terminating connection"))


def _configure_sqlite(engine: AsyncEngine) -> None:
    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Driver-level transactions off: we issue BEGIN ourselves so writes can be IMMEDIATE.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=10000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        immediate = conn.get_execution_options().get("taskyard_write", False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")
