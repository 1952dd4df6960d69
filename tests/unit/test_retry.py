from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta

import pytest

from taskyard.domain.retry import RetryPolicy


def test_defaults() -> None:
    policy = RetryPolicy(max_retries=3)
    assert (policy.base_delay, policy.max_delay, policy.multiplier, policy.jitter) == (1.0, 300.0, 2.0, 0.2)


@pytest.mark.parametrize(
    ("max_retries", "retries_done", "expected"),
    [(0, 0, False), (1, 0, True), (1, 1, False), (3, 2, True), (3, 3, False), (3, 4, False)],
)
def test_should_retry_boundaries(max_retries: int, retries_done: int, expected: bool) -> None:
    assert RetryPolicy(max_retries=max_retries).should_retry(retries_done) is expected


def test_should_retry_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="retries_done"):
        RetryPolicy(max_retries=3).should_retry(-1)


def test_exponential_growth_without_jitter() -> None:
    policy = RetryPolicy(max_retries=10, base_delay=0.5, max_delay=1000, multiplier=3, jitter=0)
    assert [policy.delay(n) for n in range(5)] == [0.5, 1.5, 4.5, 13.5, 40.5]


def test_delay_is_capped_at_max_delay() -> None:
    policy = RetryPolicy(max_retries=100, base_delay=1, max_delay=60, jitter=0)
    assert [policy.delay(n) for n in range(4, 9)] == [16, 32, 60, 60, 60]
    # Huge exponents overflow float arithmetic; they must still cap rather than raise.
    assert policy.delay(5000) == 60


def test_multiplier_one_gives_constant_delay() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=7, multiplier=1, jitter=0)
    assert {policy.delay(n) for n in range(6)} == {7}


def test_jitter_bounds_over_many_samples() -> None:
    policy = RetryPolicy(max_retries=20, base_delay=2, max_delay=100, jitter=0.25)
    rng = random.Random(1234)
    for retries_done in range(12):
        nominal = min(2 * 2**retries_done, 100)
        samples = [policy.delay(retries_done, rng) for _ in range(2000)]
        assert min(samples) >= nominal * 0.75
        assert max(samples) <= nominal * 1.25
        assert max(samples) <= policy.max_delay * (1 + policy.jitter)
        # Uniform jitter spreads across the band instead of sticking to one value.
        assert min(samples) < nominal * 0.76
        assert max(samples) > nominal * 1.24
        mean = sum(samples) / len(samples)
        assert abs(mean - nominal) < nominal * 0.02


def test_jitter_is_reproducible_with_a_seeded_rng() -> None:
    policy = RetryPolicy(max_retries=5)
    first = [policy.delay(n, random.Random(42)) for n in range(5)]
    second = [policy.delay(n, random.Random(42)) for n in range(5)]
    assert first == second


def test_full_jitter_never_negative() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=1, max_delay=10, jitter=1.0)
    rng = random.Random(7)
    samples = [policy.delay(n % 6, rng) for n in range(5000)]
    assert min(samples) >= 0
    assert max(samples) <= 20


def test_unseeded_delay_stays_in_bounds() -> None:
    policy = RetryPolicy(max_retries=5, base_delay=10, max_delay=300)
    for _ in range(200):
        assert 8 <= policy.delay(0) <= 12


def test_zero_base_delay_means_immediate_retry() -> None:
    policy = RetryPolicy(max_retries=2, base_delay=0)
    assert policy.delay(0, random.Random(1)) == 0
    assert policy.delay(5, random.Random(1)) == 0


def test_next_attempt_at_adds_the_delay() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=5, jitter=0)
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    assert policy.next_attempt_at(now, 0) == now + timedelta(seconds=5)
    assert policy.next_attempt_at(now, 2) == now + timedelta(seconds=20)


def test_next_attempt_at_uses_rng() -> None:
    policy = RetryPolicy(max_retries=3, base_delay=10)
    now = datetime(2026, 1, 1, 12, tzinfo=UTC)
    expected = now + timedelta(seconds=policy.delay(1, random.Random(99)))
    assert policy.next_attempt_at(now, 1, random.Random(99)) == expected
    assert now + timedelta(seconds=16) <= expected <= now + timedelta(seconds=24)


@pytest.mark.parametrize(
    ("kwargs", "fragment"),
    [
        ({"max_retries": -1}, "max_retries must not be negative"),
        ({"max_retries": 1.5}, "max_retries must be an integer"),
        ({"max_retries": True}, "max_retries must be an integer"),
        ({"max_retries": 1, "base_delay": -0.1}, "base_delay must not be negative"),
        ({"max_retries": 1, "max_delay": -1}, "max_delay must not be negative"),
        ({"max_retries": 1, "base_delay": 10, "max_delay": 5}, "must not exceed max_delay"),
        ({"max_retries": 1, "multiplier": 0.5}, "multiplier must be at least 1"),
        ({"max_retries": 1, "jitter": -0.1}, "jitter must be between 0 and 1"),
        ({"max_retries": 1, "jitter": 1.5}, "jitter must be between 0 and 1"),
        ({"max_retries": 1, "base_delay": float("nan")}, "base_delay must be a finite number"),
        ({"max_retries": 1, "max_delay": float("inf")}, "max_delay must be a finite number"),
    ],
)
def test_invalid_policies_raise_value_error(kwargs: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValueError, match=fragment):
        RetryPolicy(**kwargs)  # type: ignore[arg-type]


def test_delay_rejects_negative_count() -> None:
    with pytest.raises(ValueError, match="retries_done"):
        RetryPolicy(max_retries=3).delay(-1)


def test_policy_is_frozen() -> None:
    policy = RetryPolicy(max_retries=3)
    with pytest.raises(AttributeError):
        policy.max_retries = 4  # type: ignore[misc]
