"""Wake long-polling workers at once when runs become claimable or control messages wait.

In one process an asyncio event does it; across PostgreSQL servers, LISTEN/NOTIFY feeds the same event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

log = logging.getLogger("taskyard.storage.wakeup")

CHANNEL = "taskyard_wakeup"


class Wakeup:
    def __init__(self) -> None:
        self._event = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None

    def fire(self) -> None:
        """Wake every current waiter; later waiters wait for the next fire."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    async def wait(self, timeout: float) -> bool:
        """True if woken, False on timeout."""
        event = self._event
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def current(self) -> asyncio.Event:
        """The event the next fire() sets; grab it before checking state to never miss a wake-up."""
        return self._event

    def start_listening(self, conninfo: str) -> None:
        """Follow NOTIFYs from every server on the same PostgreSQL database."""
        if self._listener is None:
            self._listener = asyncio.create_task(self._listen(conninfo), name="taskyard-listen")

    async def stop(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._listener
            self._listener = None

    async def _listen(self, conninfo: str) -> None:
        import psycopg

        while True:
            try:
                conn: Any = await psycopg.AsyncConnection.connect(conninfo, autocommit=True)
                async with conn:
                    await conn.execute(f"LISTEN {CHANNEL}")
                    self.fire()  # anything sent while we were not listening
                    async for _ in conn.notifies():
                        self.fire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect: a lost listener must not stop wake-ups for good
                log.warning("wake-up listener lost its connection: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
