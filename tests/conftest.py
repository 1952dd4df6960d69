"""Shared fixtures: real SQLite and PostgreSQL databases, the app over ASGI, a settable clock."""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import psycopg
import pytest

from taskyard.api.app import create_app
from taskyard.services.core import Core, CoreConfig
from taskyard.settings import ServerSettings
from taskyard.storage import migrate
from taskyard.storage.database import Database

POSTGRES_URL = os.environ.get("TASKYARD_TEST_POSTGRES_URL")
# One per pytest process: concurrent sessions on the same server must not drop each other's template.
TEMPLATE = f"taskyard_test_template_{os.getpid()}"


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2026, 1, 5, 12, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _admin_conninfo() -> str:
    assert POSTGRES_URL
    return POSTGRES_URL


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str | None]:
    """A migrated template database; each test clones it (fast, fully isolated)."""
    if not POSTGRES_URL:
        if os.environ.get("CI"):
            pytest.fail("TASKYARD_TEST_POSTGRES_URL is not set in CI")
        yield None
        return
    try:
        with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {TEMPLATE}")
    except psycopg.OperationalError as exc:
        pytest.fail(f"PostgreSQL at TASKYARD_TEST_POSTGRES_URL is unreachable: {exc}")
    url = _database_url(TEMPLATE)
    migrate.upgrade(url)
    yield url
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {TEMPLATE} WITH (FORCE)")


def _database_url(name: str) -> str:
    assert POSTGRES_URL
    base = POSTGRES_URL.rsplit("/", 1)[0]
    return f"{base}/{name}"


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A migrated SQLite file; each test copies it (running the migrations per test is slow)."""
    path = tmp_path_factory.mktemp("sqlite_template") / "taskyard.db"
    migrate.upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path, postgres_template: str | None,
                 sqlite_template: Path) -> Iterator[str]:
    """A fresh, migrated database of each kind."""
    if request.param == "sqlite":
        shutil.copyfile(sqlite_template, tmp_path / "taskyard.db")
        yield f"sqlite:///{tmp_path / 'taskyard.db'}"
        return
    if postgres_template is None:
        pytest.skip("set TASKYARD_TEST_POSTGRES_URL to run the PostgreSQL half")
    name = f"taskyard_t_{secrets.token_hex(5)}"
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE}")
    yield _database_url(name)
    with psycopg.connect(_admin_conninfo(), autocommit=True) as conn:
        conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def core(database_url: str, clock: FakeClock) -> AsyncIterator[Core]:
    db = Database(database_url)
    service = Core(db, CoreConfig(lease_seconds=10, retry_base_delay=1.0), clock=clock)
    yield service
    await db.dispose()


def server_settings(database_url: str, **extra: object) -> ServerSettings:
    return ServerSettings(database_url=database_url, rate_limit=0, **extra)  # type: ignore[arg-type]


@pytest.fixture
async def app_client(database_url: str) -> AsyncIterator[httpx.AsyncClient]:
    """The whole app, lifespan included, over ASGI (no network)."""
    async with _client(server_settings(database_url)) as client:
        yield client


class _client:
    def __init__(self, settings: ServerSettings, **app_kwargs: object) -> None:
        self.app = create_app(settings, migrate_on_start=False, **app_kwargs)  # type: ignore[arg-type]

    async def __aenter__(self) -> httpx.AsyncClient:
        self._lifespan = self.app.router.lifespan_context(self.app)
        await self._lifespan.__aenter__()
        self._client = httpx.AsyncClient(transport=httpx.ASGITransport(app=self.app), base_url="http://testserver")
        return self._client

    async def __aexit__(self, *exc: object) -> None:
        await self._client.aclose()
        await self._lifespan.__aexit__(None, None, None)


def app_with(settings: ServerSettings, **app_kwargs: object) -> _client:
    return _client(settings, **app_kwargs)
