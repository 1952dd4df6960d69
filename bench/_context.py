"""What every benchmark of the suite gets: where to put things, which databases, how big and how often."""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from bench import _procs

DATABASE_NAMES = {"sqlite": "SQLite", "postgres": "PostgreSQL"}


@dataclass(frozen=True)
class Server:
    """A running `taskyard server`: its base URL, its process, and the database it serves."""

    url: str
    process: subprocess.Popen[bytes]
    database_url: str  # sqlite:///<home>/taskyard.db for SQLite


@dataclass(frozen=True)
class Context:
    root: Path  # a temporary directory, removed after the suite
    postgres_url: str  # an admin URL: each measurement creates and drops its own database
    databases: tuple[str, ...]  # "sqlite", "postgres"
    repeat: int  # repetitions per figure; the median is reported with the spread
    smoke: bool  # the smallest sizes, so that CI proves the suite still runs (no timing claims)
    workers: int = 2
    concurrency: int = 8

    def size(self, full: int, smoke: int) -> int:
        return smoke if self.smoke else full

    def home(self, name: str) -> Path:
        path = self.root / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    @contextlib.contextmanager
    def server(self, database: str, name: str, env: dict[str, str] | None = None) -> Iterator[str]:
        """A real `taskyard server` on a fresh database; yields its base URL."""
        with self.served(database, name, env) as server:
            yield server.url

    @contextlib.contextmanager
    def served(self, database: str, name: str, env: dict[str, str] | None = None) -> Iterator[Server]:
        """The same, for benchmarks that also need the server's process or its database."""
        home = self.home(f"{name}-{database}")
        with _procs.database_for(database, self.postgres_url) as url_db:
            proc, url = _procs.start_server(home, url_db, env)
            try:
                yield Server(url, proc, url_db or f"sqlite:///{home / 'taskyard.db'}")
            finally:
                _procs.stop(proc)
