"""Wake long-polling workers at once when runs become claimable or control messages wait.

In one process an asyncio event does it; across PostgreSQL servers, LISTEN/NOTIFY feeds the same event.
A transaction that makes work claimable marks its connection (`request_wake`): once it commits, this
server's pollers are woken at once, and its NOTIFY carries this server's origin so that the listener
skips the echo of its own wake-up (a second, empty claim per wake) and only other servers act on it.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from typing import Any

from sqlalchemy import bindparam, func, text
from sqlalchemy.ext.asyncio import AsyncConnection

log = logging.getLogger("taskyard.storage.wakeup")

CHANNEL = "taskyard_wakeup"
# Keys of a connection's `info`: which server's wake-up it belongs to, and whether its transaction asked
# for a wake-up at commit.
ORIGIN_KEY = "taskyard_wakeup_origin"
WAKE_KEY = "taskyard_wake_at_commit"
_NOTIFY = text(f"SELECT pg_notify('{CHANNEL}', :origin)")


async def request_wake(conn: AsyncConnection) -> None:
    """Wake pollers once this transaction commits: this server's at once, other PostgreSQL servers'
    through NOTIFY (sent on commit, dropped on rollback)."""
    origin = wake_on_commit(conn)
    if conn.dialect.name == "postgresql":
        await conn.execute(_NOTIFY, {"origin": origin})


def wake_on_commit(conn: AsyncConnection) -> str:
    """Wake this server's pollers once this transaction commits; returns the payload for the NOTIFY that
    the caller sends to the other servers (in a statement of its own: `notify_column`)."""
    conn.info[WAKE_KEY] = True
    return str(conn.info.get(ORIGIN_KEY, ""))


def notify_column() -> Any:
    """`pg_notify` as a column of a statement that writes claimable runs: the NOTIFY rides along instead of
    costing a round trip. Its payload is the parameter `b_origin`."""
    return func.pg_notify(CHANNEL, bindparam("b_origin"))


class Wakeup:
    def __init__(self) -> None:
        self.origin = uuid.uuid4().hex
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
                    async for notice in conn.notifies():
                        if notice.payload != self.origin:  # our own were fired at commit
                            self.fire()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # reconnect: a lost listener must not stop wake-ups for good
                log.warning("wake-up listener lost its connection: %s; reconnecting", exc)
                await asyncio.sleep(1.0)
