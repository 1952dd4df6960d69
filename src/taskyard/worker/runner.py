"""``taskyard worker``: runs one WorkerAgent in its own event loop until a signal stops it."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Callable

from taskyard.settings import WorkerSettings
from taskyard.worker.agent import WorkerAgent

__all__ = ["run_worker"]

logger = logging.getLogger("taskyard.worker")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


def run_worker(settings: WorkerSettings, *, max_runs: int | None = None) -> int:
    """Runs a worker until SIGTERM/SIGINT (a second signal stops it at once); returns the exit code."""
    agent = WorkerAgent(settings, max_runs=max_runs)

    def on_signal(sig: signal.Signals) -> None:
        if agent.stopping:
            logger.warning("received %s again: aborting runs and stopping now", sig.name)
        else:
            logger.info("received %s: finishing current runs, then stopping (send again to stop now)", sig.name)
        agent.stop()

    async def main() -> int:
        loop = asyncio.get_running_loop()
        installed: list[signal.Signals] = []
        for sig in (signal.SIGTERM, signal.SIGINT):
            try:
                loop.add_signal_handler(sig, on_signal, sig)
            except (NotImplementedError, RuntimeError, ValueError):
                continue
            installed.append(sig)
        try:
            return await agent.run()
        finally:
            for sig in installed:
                loop.remove_signal_handler(sig)

    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())
