"""Real `taskyard server` processes for end-to-end tests.

    process, base_url = start_server(tmp_path)
    try:
        ...
    finally:
        stop(process)
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

import httpx

STARTUP_TIMEOUT = 30.0
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def clean_env(env_extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The caller's environment without TASKYARD_* settings, so a developer's shell cannot leak in."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TASKYARD_")}
    env.update(env_extra or {})
    return env


def start_server(tmp_path: Path, env_extra: Mapping[str, str] | None = None,
                 database_url: str | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """Start `taskyard server` on a free loopback port with its home under `tmp_path` (SQLite unless
    `database_url` is given) and return once /api/system/health answers.

    `env_extra` is applied last, so it may override TASKYARD_HOME and the rest."""
    home = tmp_path / "taskyard-home"
    home.mkdir(parents=True, exist_ok=True)
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        env = clean_env({"TASKYARD_HOME": str(home), "TASKYARD_HOST": "127.0.0.1", "TASKYARD_PORT": str(port),
                         **({"TASKYARD_DATABASE_URL": database_url} if database_url else {}),
                         **(env_extra or {})})
        log_path = tmp_path / f"server-{port}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen([sys.executable, "-m", "taskyard.cli", "server"], env=env, cwd=tmp_path,
                                       stdout=log, stderr=subprocess.STDOUT)
        base_url = f"http://127.0.0.1:{port}"
        if _wait_healthy(process, base_url):
            return process, base_url
        stop(process)
        output = log_path.read_text(errors="replace")
        # free_port() cannot reserve the port; another process may take it before the server binds.
        if "address already in use" not in output.lower():
            raise RuntimeError(f"taskyard server did not become healthy at {base_url}:\n{output}")
    raise RuntimeError(f"no free port for the taskyard server after {PORT_ATTEMPTS} attempts")


def _wait_healthy(process: subprocess.Popen[bytes], base_url: str) -> bool:
    deadline = time.monotonic() + STARTUP_TIMEOUT
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            # 401/403: up, but with authentication on the health check itself needs a key.
            if httpx.get(f"{base_url}/api/system/health", timeout=2).status_code in (200, 401, 403):
                return True
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    return False


def stop(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM, then SIGKILL if the server has not exited within 10 s."""
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout=10)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
