"""Canonical statuses and the one place a run's status may change.

Each API dialect translates these words at its edge; storage keeps them as strings.
"""

from __future__ import annotations

from enum import StrEnum

from taskyard.domain.errors import Conflict


class RunStatus(StrEnum):
    PENDING = "pending"  # waiting for dependencies
    QUEUED = "queued"  # claimable once available_at has passed (retry backoff keeps it in the future)
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    ABORTED = "aborted"

    @property
    def is_final(self) -> bool:
        return self in FINAL_RUN_STATUSES

    @property
    def is_active(self) -> bool:
        return not self.is_final


FINAL_RUN_STATUSES = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED})
ACTIVE_RUN_STATUSES = frozenset({RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING})

ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.PENDING: frozenset({RunStatus.QUEUED, RunStatus.FAILED, RunStatus.ABORTED}),
    # queued -> failed happens when a dependency fails after release or the task is deleted
    RunStatus.QUEUED: frozenset({RunStatus.RUNNING, RunStatus.FAILED, RunStatus.ABORTED}),
    # running -> queued is a new attempt: retry after failure, or a lease lost with its worker
    RunStatus.RUNNING: frozenset(
        {RunStatus.QUEUED, RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.ABORTED}
    ),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.ABORTED: frozenset(),
}


class IllegalTransition(Conflict):
    """The run cannot move to that status from its current one."""


def check_transition(current: RunStatus, target: RunStatus) -> RunStatus:
    """Return `target` if the move is allowed, else raise IllegalTransition naming both ends."""
    if target not in ALLOWED_TRANSITIONS[current]:
        raise IllegalTransition(f"a {current.value} run cannot become {target.value}",
                                current=current.value, target=target.value)
    return target


def sources_of(target: RunStatus) -> frozenset[RunStatus]:
    """Every status from which `target` may be reached: the guard of a conditional UPDATE."""
    return frozenset(s for s, targets in ALLOWED_TRANSITIONS.items() if target in targets)


class TaskStatus(StrEnum):
    ACTIVE = "active"
    PAUSED = "paused"


class WorkerStatus(StrEnum):
    ACTIVE = "active"
    DRAINING = "draining"
    OFFLINE = "offline"


class Priority(StrEnum):
    LOW = "low"
    NORMAL = "normal"
    HIGH = "high"
    CRITICAL = "critical"

    @property
    def rank(self) -> int:
        """Higher is claimed first."""
        return _PRIORITY_RANK[self]


_PRIORITY_RANK = {Priority.LOW: 0, Priority.NORMAL: 1, Priority.HIGH: 2, Priority.CRITICAL: 3}


class TriggerKind(StrEnum):
    MANUAL = "manual"
    CRON = "cron"
    RESTART = "restart"
    DEPENDENCY = "dependency"
    EXTERNAL = "external"  # created by the first tracking event of code outside taskyard
