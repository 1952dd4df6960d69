"""``taskyard worker``: runs one WorkerAgent in its own event loop until a signal stops it."""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import sys
import warnings
from collections.abc import Callable

from taskyard.settings import WorkerSettings
from taskyard.worker.agent import WorkerAgent

__all__ = ["run_worker"]

logger = logging.getLogger("taskyard.worker")


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    """The standard event loop, not uvloop: a worker spawns a process per run, and uvloop (libuv) forks
    the whole worker to do it (~1.9 ms of CPU and ~5 ms per spawn here), where the standard loop's
    subprocess support uses vfork (~0.5 ms). The worker's other work is a few HTTP requests per batch."""
    if sys.version_info < (3, 12) and hasattr(os, "pidfd_open"):
        # From 3.12 this is the default; before, each child got a thread to wait on it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            asyncio.set_child_watcher(asyncio.PidfdChildWatcher())
    return None


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

    # What importing left behind lives as long as the process; frozen, the collector never scans it again.
    gc.collect()
    gc.freeze()
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        return runner.run(main())
