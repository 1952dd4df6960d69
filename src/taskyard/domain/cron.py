"""Cron schedules evaluated in an IANA timezone, firing each local wall-clock slot exactly once.

Expression syntax
-----------------
Five fields ``minute hour day-of-month month day-of-week``, or six fields where the extra
**seconds field comes last** (croniter's layout). So ``"* * * * * */15"`` fires every 15 seconds,
whereas ``"*/15 * * * * *"`` fires every second of minutes 0, 15, 30 and 45. The aliases
``@hourly @daily @midnight @weekly @monthly @yearly @annually`` are accepted. Croniter's hashed and
random fields (``H``, ``R``) are rejected because a schedule must be deterministic, and so are
expressions that can never fire (``0 0 30 2 *``).

DST semantics
-------------
The expression is iterated over naive local wall-clock times of the schedule's timezone and every
wall-clock slot is mapped to one UTC instant:

* an unambiguous local time maps to its only instant;
* an ambiguous local time (fall back: the repeated hour) maps to its FIRST occurrence (fold=0);
  the second pass through the repeated hour fires nothing;
* a nonexistent local time (spring forward: the skipped hour) maps to the instant the gap ends,
  i.e. the transition instant, which is the first existing wall time after the gap.

This mapping is monotonic non-decreasing, and slots that map to the same instant fire once. Hence
a daily job fires exactly once on every local calendar date, including both transition days
(a gap-shifted fire stays on the same local date). In Europe/Berlin, ``30 2 * * *`` fires at
2026-03-29T01:00Z (03:00 CEST, the end of the gap) and at 2026-10-25T00:30Z (the first 02:30, CEST).
An hourly job (``0 * * * *``) fires once per existing hour on the spring day, 23 times, because
02:00 is shifted to 03:00 CEST and collapses with the 03:00 slot; on the fall day it fires 24 times,
once per wall-clock hour, because the repeated 02:00 CET hour does not fire again although the day
has 25 real hours.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import lru_cache
from itertools import islice, takewhile
from typing import Self
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import CroniterBadDateError, CroniterError, croniter

__all__ = [
    "ALIASES",
    "NONE_POLICY_GRACE",
    "CatchupPolicy",
    "CronError",
    "CronSchedule",
]

ALIASES: dict[str, str] = {
    "@hourly": "0 * * * *",
    "@daily": "0 0 * * *",
    "@midnight": "0 0 * * *",
    "@weekly": "0 0 * * 0",
    "@monthly": "0 0 1 * *",
    "@yearly": "0 0 1 1 *",
    "@annually": "0 0 1 1 *",
}

# A slot this close to `now` counts as due "right now" under CatchupPolicy.NONE, so a scheduler
# tick that runs slightly late does not drop the current run.
NONE_POLICY_GRACE = timedelta(seconds=60)

# Real-world DST gaps are at most 2 h; the bound only guards against corrupt tz data.
_MAX_GAP_MINUTES = 3 * 60
_HASHED_OR_RANDOM = re.compile(r"^[hr](\(\d+-\d+\))?(/\d+)?$", re.IGNORECASE)
# A fixed probe start keeps validation deterministic; without a year field, an expression that
# fires at all fires within croniter's 50-year search window from any start.
_PROBE_START = datetime(2000, 1, 1)


class CronError(ValueError):
    """A cron expression or timezone that cannot be used for a schedule."""


class CatchupPolicy(StrEnum):
    """What to fire for slots that were missed while the scheduler was not running."""

    LATEST = "latest"
    ALL = "all"
    NONE = "none"


@dataclass(frozen=True)
class CronSchedule:
    """A validated cron expression bound to an IANA timezone.

    Construction validates too, so every instance is usable; ``parse`` additionally strips
    surrounding whitespace. All instants taken and returned are timezone-aware; results are in UTC.
    """

    expression: str
    timezone: str = "UTC"

    def __post_init__(self) -> None:
        _compile(self.expression)
        _zone(self.timezone)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Self:
        if not isinstance(expression, str):
            raise CronError(f"cron expression must be a string, got {type(expression).__name__}")
        if not isinstance(timezone, str):
            raise CronError(f"timezone must be a string, got {type(timezone).__name__}")
        return cls(expression.strip(), timezone.strip())

    @property
    def zone(self) -> ZoneInfo:
        return _zone(self.timezone)

    @property
    def has_seconds(self) -> bool:
        return len(_compile(self.expression).split()) == 6

    def next_after(self, after: datetime) -> datetime:
        """The first fire instant strictly after ``after``."""
        after_utc = _as_utc(after, "after")
        for instant in self._forward(after_utc):
            return instant
        raise CronError(f"{self.expression!r} never fires after {after_utc.isoformat()}")

    def slots_between(self, start: datetime, end: datetime, limit: int = 1000) -> list[datetime]:
        """Fire instants ``t`` with ``start < t <= end``, ascending; the earliest ``limit`` of them."""
        start_utc = _as_utc(start, "start")
        end_utc = _as_utc(end, "end")
        if limit < 0:
            raise ValueError(f"limit must not be negative, got {limit}")
        if limit == 0 or end_utc <= start_utc:
            return []
        return list(islice(takewhile(lambda t: t <= end_utc, self._forward(start_utc)), limit))

    def due_slots(
        self,
        last_planned: datetime,
        now: datetime,
        policy: CatchupPolicy,
        max_slots: int = 100,
        *,
        grace: timedelta = NONE_POLICY_GRACE,
    ) -> list[datetime]:
        """Slots ``s`` with ``last_planned <= s <= now`` that should fire now, ascending.

        ``last_planned`` is the slot that was planned as the next run, so it is due itself once
        reached. LATEST returns the most recent due slot, ALL the most recent ``max_slots`` due
        slots, NONE the most recent due slot only if it is at most ``grace`` old (no catch-up).
        """
        last_utc = _as_utc(last_planned, "last_planned")
        now_utc = _as_utc(now, "now")
        policy = CatchupPolicy(policy)
        if max_slots < 1:
            raise ValueError(f"max_slots must be at least 1, got {max_slots}")
        if now_utc < last_utc:
            return []
        # Walking backwards from `now` keeps the cost proportional to what is returned, however
        # long the scheduler was down.
        due = takewhile(lambda t: t >= last_utc, self._backward(now_utc))
        if policy is CatchupPolicy.ALL:
            slots = list(islice(due, max_slots))
            slots.reverse()
            return slots
        latest = next(due, None)
        if latest is None:
            return []
        if policy is CatchupPolicy.NONE and now_utc - latest > grace:
            return []
        return [latest]

    def _forward(self, after: datetime) -> Iterator[datetime]:
        """Fire instants strictly after ``after`` (UTC), strictly increasing."""
        tz = self.zone
        # Starting at the wall time of `after` misses nothing: the mapping is monotonic and maps
        # that wall time to `after` itself, or to an earlier instant when `after` lies in the
        # second pass of a repeated hour.
        cron = croniter(_compile(self.expression), _wall(after, tz), ret_type=datetime)
        previous = after
        while True:
            try:
                local = cron.get_next(datetime)
            except CroniterBadDateError:
                return
            instant = _to_instant(local, tz)
            if instant > previous:
                previous = instant
                yield instant

    def _backward(self, at_or_before: datetime) -> Iterator[datetime]:
        """Fire instants ``<= at_or_before`` (UTC), strictly decreasing."""
        tz = self.zone
        local = _wall(at_or_before, tz)
        # In the second pass of a repeated hour, wall times up to `local + shift` have their first
        # (firing) occurrence at or before `at_or_before`; elsewhere the shift is zero.
        shift = at_or_before - local.replace(tzinfo=tz, fold=0).astimezone(UTC)
        # croniter's get_prev is exclusive and works at second resolution, hence the extra second;
        # slots past the bound are filtered out below.
        cron = croniter(_compile(self.expression), local + shift + timedelta(seconds=1), ret_type=datetime)
        previous: datetime | None = None
        while True:
            try:
                local = cron.get_prev(datetime)
            except CroniterBadDateError:
                return
            instant = _to_instant(local, tz)
            if instant > at_or_before:
                continue
            if previous is None or instant < previous:
                previous = instant
                yield instant


@lru_cache(maxsize=1024)
def _compile(expression: str) -> str:
    """Validate ``expression`` and return the equivalent plain croniter expression."""
    if not isinstance(expression, str):
        raise CronError(f"cron expression must be a string, got {type(expression).__name__}")
    text = expression.strip()
    if not text:
        raise CronError("cron expression is empty")
    if text.startswith("@"):
        alias = ALIASES.get(text.lower())
        if alias is None:
            supported = ", ".join(sorted(ALIASES))
            raise CronError(
                f"{expression!r} is not a valid cron expression: unknown alias (supported: {supported})"
            )
        return alias
    fields = text.split()
    if len(fields) not in (5, 6):
        raise CronError(
            f"{expression!r} is not a valid cron expression: expected 5 fields "
            f"(minute hour day-of-month month day-of-week) or 6 (the same plus seconds last), "
            f"got {len(fields)}"
        )
    if any(_HASHED_OR_RANDOM.match(part) for field in fields for part in field.split(",")):
        raise CronError(
            f"{expression!r} is not a valid cron expression: hashed/random fields (H, R) are not supported"
        )
    normalized = " ".join(fields)
    try:
        croniter.expand(normalized, strict=True)
    except (CroniterError, ValueError, TypeError, LookupError) as exc:
        raise CronError(f"{expression!r} is not a valid cron expression: {exc}") from None
    try:
        croniter(normalized, _PROBE_START, ret_type=datetime).get_next(datetime)
    except CroniterBadDateError:
        raise CronError(f"{expression!r} is not a valid cron expression: it can never fire") from None
    return normalized


@lru_cache(maxsize=256)
def _zone(name: str) -> ZoneInfo:
    if not isinstance(name, str):
        raise CronError(f"timezone must be a string, got {type(name).__name__}")
    if not name:
        raise CronError("timezone is empty")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise CronError(f"unknown timezone {name!r}") from None


def _as_utc(value: datetime, name: str) -> datetime:
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError(f"{name} must be a timezone-aware datetime, got naive {value.isoformat()}")
    return value.astimezone(UTC)


def _wall(instant: datetime, tz: ZoneInfo) -> datetime:
    """The naive local wall-clock time of ``instant``."""
    return instant.astimezone(tz).replace(tzinfo=None, fold=0)


def _to_instant(local: datetime, tz: ZoneInfo) -> datetime:
    """Map a naive local wall time to the UTC instant it fires at (see the module docstring)."""
    instant = local.replace(tzinfo=tz, fold=0).astimezone(UTC)
    if _wall(instant, tz) == local:
        return instant
    # `local` is in a DST gap. Step from the whole minute so that every slot in the gap lands on
    # the same transition instant; stepping from a slot's own seconds would overshoot it and break
    # monotonicity against the first existing slots after the gap.
    probe = local.replace(second=0, microsecond=0)
    for _ in range(_MAX_GAP_MINUTES):
        probe += timedelta(minutes=1)
        instant = probe.replace(tzinfo=tz, fold=0).astimezone(UTC)
        if _wall(instant, tz) == probe:
            return instant
    raise CronError(f"local time {local.isoformat()} does not exist in {tz.key} and no gap end was found")
