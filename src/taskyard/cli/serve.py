"""Run the API server (and, for `taskyard up`, an embedded worker) under uvicorn."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
from types import FrameType
from typing import Any

import uvicorn

from taskyard.server import create_server_app
from taskyard.settings import ServerSettings, WorkerSettings

log = logging.getLogger("taskyard.cli")


class _Server(uvicorn.Server):
    """A uvicorn server whose first exit signal is handed to a callback (to drain the worker first)."""

    on_exit_request: asyncio.Event | None = None

    async def startup(self, sockets: list[Any] | None = None) -> None:
        await super().startup(sockets)
        # Everything built by start-up (modules, the app, SQLAlchemy's tables) lives as long as the process.
        # Frozen, the collector stops scanning it: a full collection over it took 60-70 ms here and
        # stalled every request in flight, which set the p99 of reads under load.
        gc.collect()
        gc.freeze()

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self.on_exit_request is not None and not self.on_exit_request.is_set():
            self.on_exit_request.set()
            return
        super().handle_exit(sig, frame)


def _config(settings: ServerSettings) -> uvicorn.Config:
    app = create_server_app(settings)
    loop = "uvloop"
    try:
        import uvloop  # noqa: F401
    except ImportError:
        loop = "asyncio"
    return uvicorn.Config(app, host=settings.host, port=settings.port, loop=loop, http="httptools",
                          log_level="warning", access_log=False, lifespan="on", timeout_graceful_shutdown=5)


def serve(settings: ServerSettings) -> None:
    server = _Server(_config(settings))
    server.run()


def serve_with_worker(settings: ServerSettings, worker_settings: WorkerSettings) -> None:
    from taskyard.worker.agent import WorkerAgent

    server = _Server(_config(settings))

    async def main() -> None:
        exit_requested = asyncio.Event()
        server.on_exit_request = exit_requested
        serving = asyncio.create_task(server.serve())
        while not server.started:
            if serving.done():
                await serving
                return
            await asyncio.sleep(0.02)
        agent = WorkerAgent(worker_settings)
        working = asyncio.create_task(agent.run())
        waiter = asyncio.create_task(exit_requested.wait())
        await asyncio.wait({serving, working, waiter}, return_when=asyncio.FIRST_COMPLETED)
        # Stop the worker while the API is still up, so it can report and unregister.
        agent.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(working, worker_settings.shutdown_grace_seconds + 10)
        server.should_exit = True
        await serving

    try:
        import uvloop

        uvloop.run(main())
    except ImportError:
        asyncio.run(main())
