"""The run status transition table: every ordered pair is either allowed or refused, nothing else."""

from __future__ import annotations

import itertools

import pytest

from taskyard.domain.errors import Conflict
from taskyard.domain.status import (
    ACTIVE_RUN_STATUSES,
    ALLOWED_TRANSITIONS,
    FINAL_RUN_STATUSES,
    IllegalTransition,
    RunStatus,
    check_transition,
    sources_of,
)

P, Q, R, C, F, A = (RunStatus.PENDING, RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.COMPLETED,
                    RunStatus.FAILED, RunStatus.ABORTED)

EXPECTED_ALLOWED = {
    (P, Q), (P, F), (P, A),
    (Q, R), (Q, F), (Q, A),
    (R, Q), (R, C), (R, F), (R, A),
}
ALL_PAIRS = list(itertools.product(RunStatus, RunStatus))


def test_table_covers_every_status() -> None:
    assert set(ALLOWED_TRANSITIONS) == set(RunStatus)


def test_table_is_exactly_the_documented_one() -> None:
    table = {(src, dst) for src, targets in ALLOWED_TRANSITIONS.items() for dst in targets}
    assert table == EXPECTED_ALLOWED


@pytest.mark.parametrize(("current", "target"), sorted(EXPECTED_ALLOWED))
def test_allowed_pairs(current: RunStatus, target: RunStatus) -> None:
    assert check_transition(current, target) is target


@pytest.mark.parametrize(("current", "target"), [p for p in ALL_PAIRS if p not in EXPECTED_ALLOWED])
def test_refused_pairs(current: RunStatus, target: RunStatus) -> None:
    with pytest.raises(IllegalTransition) as caught:
        check_transition(current, target)
    assert isinstance(caught.value, Conflict)
    assert caught.value.details == {"current": current.value, "target": target.value}
    assert current.value in caught.value.message and target.value in caught.value.message


def test_no_self_transitions_and_finals_are_terminal() -> None:
    for status in RunStatus:
        assert status not in ALLOWED_TRANSITIONS[status]
    for final in FINAL_RUN_STATUSES:
        assert ALLOWED_TRANSITIONS[final] == frozenset()
        assert final.is_final and not final.is_active
    for active in ACTIVE_RUN_STATUSES:
        assert active.is_active and not active.is_final
    assert set(RunStatus) == FINAL_RUN_STATUSES | ACTIVE_RUN_STATUSES
    assert not FINAL_RUN_STATUSES & ACTIVE_RUN_STATUSES


@pytest.mark.parametrize("target", list(RunStatus))
def test_sources_of_inverts_the_table(target: RunStatus) -> None:
    assert sources_of(target) == {src for src, dst in EXPECTED_ALLOWED if dst == target}
