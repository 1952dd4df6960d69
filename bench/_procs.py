"""Start and stop real taskyard processes for benchmarks (loopback only, bounded in time)."""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(home: Path, database_url: str | None, env_extra: dict[str, str] | None = None,
                 ) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**os.environ, "TASKYARD_HOME": str(home), "TASKYARD_PORT": str(port), "TASKYARD_RATE_LIMIT": "0",
           "TASKYARD_LOG_LEVEL": "warning", **(env_extra or {})}
    if database_url:
        env["TASKYARD_DATABASE_URL"] = database_url
    home.mkdir(parents=True, exist_ok=True)
    log = (home / f"server-{port}.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "taskyard.cli", "server"], env=env, stdout=log, stderr=log,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/api/system/health", timeout=1).status_code == 200:
                return proc, url
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {(home / f'server-{port}.log').read_text()[-2000:]}")
        time.sleep(0.1)
    stop(proc)
    raise RuntimeError("server did not become healthy in 30 s")


def start_worker(url: str, home: Path, name: str, concurrency: int, env_extra: dict[str, str] | None = None,
                 ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "TASKYARD_LOG_LEVEL": "warning", **(env_extra or {})}
    log = (home / f"worker-{name}.log").open("wb")
    return subprocess.Popen([sys.executable, "-m", "taskyard.cli", "worker", "--server", url, "--name", name,
                             "--concurrency", str(concurrency)], env=env, stdout=log, stderr=log,
                            start_new_session=True)


def stop(proc: subprocess.Popen[bytes], timeout: float = 15) -> None:
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(5)


@contextlib.contextmanager
def database_for(kind: str, admin_url: str) -> Iterator[str | None]:
    """None for SQLite (the server's home holds it); for PostgreSQL a fresh database, dropped after."""
    if kind != "postgres":
        yield None
        return
    import psycopg

    name = f"taskyard_bench_{secrets.token_hex(4)}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    try:
        yield f"{admin_url.rsplit('/', 1)[0]}/{name}"
    finally:
        with contextlib.suppress(psycopg.Error), psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
