"""Direct dispatch: a run triggered on this server goes straight to a worker whose long poll waits here.

A waiting poll has already found nothing to claim. Without this, a trigger commits a queued run, wakes
the poll, and the poll then claims it in a transaction of its own: a second write transaction and a
wake-up hop on the path from trigger to start. Here the trigger's own transaction queues the run and
moves it to running for the waiting worker (both history rows, the same lease as a claim), and the
poll answers with it the moment that transaction commits.

The guarantees are the claim's: the run is held under a lease from the moment it is handed over, so a
poll that dies before answering (the worker's connection dropped) leaves a run that the reaper gives
back like any other unreported claim. Polls waiting on other servers are reached the usual way
(NOTIFY, then their own claim).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from taskyard.domain.models import Run, Task


@dataclass(eq=False)
class WaitingPoll:
    """A long poll with room for a run: who is asking, for which project and task types."""

    worker_id: str
    project_id: int
    hostname: str
    task_types: frozenset[str]
    # Resolved once its handover has committed (the run and its task) or failed (None).
    handed: asyncio.Future[tuple[Run, Task] | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())
    taken: bool = False

    def deliver(self, handed: tuple[Run, Task] | None) -> None:
        if not self.handed.done():
            self.handed.set_result(handed)


class Dispatcher:
    """The polls waiting on this server, oldest first; a trigger takes at most one."""

    def __init__(self) -> None:
        self._waiting: dict[int, WaitingPoll] = {}

    def add(self, poll: WaitingPoll) -> None:
        self._waiting[id(poll)] = poll

    def remove(self, poll: WaitingPoll) -> None:
        self._waiting.pop(id(poll), None)

    def take(self, project_id: int, task_type: str) -> WaitingPoll | None:
        """The oldest waiting poll that may run this task, reserved: nobody else can take it."""
        for key, poll in self._waiting.items():
            if poll.project_id == project_id and task_type in poll.task_types:
                del self._waiting[key]
                poll.taken = True
                return poll
        return None

    def __len__(self) -> int:
        return len(self._waiting)
