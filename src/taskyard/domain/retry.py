"""Exponential backoff with jitter for retrying failed task runs."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from datetime import datetime, timedelta

__all__ = ["RetryPolicy"]

# Shared so that unseeded callers get independent jitter without reseeding on every call.
_DEFAULT_RNG = random.Random()


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how soon a failed run is retried.

    ``max_retries`` counts retries after the first attempt, so a task runs at most
    ``max_retries + 1`` times. ``retries_done`` is the number of retries already made.
    """

    max_retries: int
    base_delay: float = 1.0
    max_delay: float = 300.0
    multiplier: float = 2.0
    jitter: float = 0.2

    def __post_init__(self) -> None:
        if isinstance(self.max_retries, bool) or not isinstance(self.max_retries, int):
            raise ValueError(f"max_retries must be an integer, got {self.max_retries!r}")
        if self.max_retries < 0:
            raise ValueError(f"max_retries must not be negative, got {self.max_retries}")
        for name in ("base_delay", "max_delay", "multiplier", "jitter"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
        if self.base_delay < 0:
            raise ValueError(f"base_delay must not be negative, got {self.base_delay}")
        if self.max_delay < 0:
            raise ValueError(f"max_delay must not be negative, got {self.max_delay}")
        if self.base_delay > self.max_delay:
            raise ValueError(f"base_delay ({self.base_delay}) must not exceed max_delay ({self.max_delay})")
        # Below 1 the delays would shrink, which is not backoff.
        if self.multiplier < 1:
            raise ValueError(f"multiplier must be at least 1, got {self.multiplier}")
        # Above 1 the lower bound d * (1 - jitter) would go negative.
        if not 0 <= self.jitter <= 1:
            raise ValueError(f"jitter must be between 0 and 1, got {self.jitter}")

    def should_retry(self, retries_done: int) -> bool:
        """Whether another retry is allowed after ``retries_done`` retries."""
        _check_retries_done(retries_done)
        return retries_done < self.max_retries

    def delay(self, retries_done: int, rng: random.Random | None = None) -> float:
        """Seconds to wait before the next retry.

        ``base_delay * multiplier ** retries_done``, capped at ``max_delay``, then scaled by a uniform
        factor in ``[1 - jitter, 1 + jitter]``, so it lies in ``[0, max_delay * (1 + jitter)]``.
        """
        _check_retries_done(retries_done)
        try:
            raw = self.base_delay * self.multiplier**retries_done
        except OverflowError:
            raw = math.inf
        capped = min(raw, self.max_delay)
        if self.jitter == 0 or capped == 0:
            return capped
        generator = rng if rng is not None else _DEFAULT_RNG
        jittered = generator.uniform(capped * (1 - self.jitter), capped * (1 + self.jitter))
        # uniform() may round just past its bounds.
        return min(max(jittered, 0.0), self.max_delay * (1 + self.jitter))

    def next_attempt_at(self, now: datetime, retries_done: int, rng: random.Random | None = None) -> datetime:
        """When the next retry should start, ``delay(retries_done)`` after ``now``."""
        return now + timedelta(seconds=self.delay(retries_done, rng))


def _check_retries_done(retries_done: int) -> None:
    if retries_done < 0:
        raise ValueError(f"retries_done must not be negative, got {retries_done}")
