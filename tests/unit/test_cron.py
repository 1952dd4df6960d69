from __future__ import annotations

import bisect
from datetime import UTC, date, datetime, timedelta
from itertools import pairwise
from zoneinfo import ZoneInfo

import pytest

from taskyard.domain.cron import ALIASES, NONE_POLICY_GRACE, CatchupPolicy, CronError, CronSchedule

MINUTE = timedelta(minutes=1)
TINY = timedelta(microseconds=1)


def utc(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def local_year(schedule: CronSchedule, year: int) -> list[datetime]:
    tz = ZoneInfo(schedule.timezone)
    start = datetime(year, 1, 1, tzinfo=tz)
    end = datetime(year + 1, 1, 1, tzinfo=tz)
    return schedule.slots_between(start - TINY, end - TINY, limit=100_000)


# Independent oracle: instead of mapping wall times to instants like the implementation, it walks
# real instants minute by minute and fires at the instant a matching wall minute is first reached,
# either directly or by being jumped over by a DST gap. Supports "M H * * *" with M/H each a
# number, "*" or "*/n".
def _field_matches(spec: str, value: int) -> bool:
    if spec == "*":
        return True
    if spec.startswith("*/"):
        return value % int(spec[2:]) == 0
    return value == int(spec)


def oracle_fires(expression: str, timezone: str, start: datetime, end: datetime) -> list[datetime]:
    minute_spec, hour_spec, *rest = expression.split()
    assert rest == ["*", "*", "*"]
    tz = ZoneInfo(timezone)

    def wall(instant: datetime) -> datetime:
        return instant.astimezone(tz).replace(tzinfo=None)

    def matches(w: datetime) -> bool:
        return _field_matches(minute_spec, w.minute) and _field_matches(hour_spec, w.hour)

    assert start.second == 0 and start.microsecond == 0
    fires: list[datetime] = []
    instant = start
    high = wall(instant)
    while True:
        instant += MINUTE
        if instant > end:
            return fires
        w = wall(instant)
        if w <= high:
            continue  # second pass through a repeated wall time: already reached earlier
        reached = []
        m = high + MINUTE
        while m <= w:
            reached.append(m)
            m += MINUTE
        if any(matches(r) for r in reached):
            fires.append(instant)
        high = w


# (zone, UTC instant of the 2026 spring-forward transition, UTC instant of the fall-back transition)
TRANSITIONS_2026 = {
    "Europe/Berlin": (utc(2026, 3, 29, 1), utc(2026, 10, 25, 1)),
    "America/New_York": (utc(2026, 3, 8, 7), utc(2026, 11, 1, 6)),
    "America/Santiago": (utc(2026, 9, 6, 4), utc(2026, 4, 5, 3)),
    "Australia/Lord_Howe": (utc(2026, 10, 3, 15, 30), utc(2026, 4, 4, 15)),
}
ORACLE_EXPRESSIONS = [
    "30 2 * * *",
    "30 1 * * *",
    "0 0 * * *",
    "30 23 * * *",
    "15 2 * * *",
    "45 1 * * *",
    "0 * * * *",
    "*/30 * * * *",
    "*/15 * * * *",
]


# --------------------------------------------------------------------------- parsing


def test_parse_accepts_five_fields_and_strips() -> None:
    schedule = CronSchedule.parse("  */5 * * * *  ", "Europe/Berlin")
    assert schedule == CronSchedule("*/5 * * * *", "Europe/Berlin")
    assert schedule.timezone == "Europe/Berlin"
    assert schedule.zone == ZoneInfo("Europe/Berlin")
    assert not schedule.has_seconds
    assert schedule.next_after(utc(2026, 1, 1, 10, 2)) == utc(2026, 1, 1, 10, 5)


def test_default_timezone_is_utc() -> None:
    schedule = CronSchedule.parse("0 9 * * *")
    assert schedule.timezone == "UTC"
    assert schedule.next_after(utc(2026, 1, 1, 9)) == utc(2026, 1, 2, 9)


def test_schedule_is_hashable_value_object() -> None:
    assert (
        len({CronSchedule("0 9 * * *"), CronSchedule.parse("0 9 * * *"), CronSchedule("0 9 * * *", "UTC")})
        == 1
    )


def test_seconds_field_is_last_per_croniter_layout() -> None:
    every_15s = CronSchedule.parse("* * * * * */15")
    assert every_15s.has_seconds
    start = utc(2026, 1, 1, 12, 0, 0)
    assert every_15s.slots_between(start - TINY, start + timedelta(minutes=1)) == [
        start + timedelta(seconds=s) for s in (0, 15, 30, 45, 60)
    ]
    # With seconds last, a leading "*/15" is the minute field: every second of minutes 0/15/30/45.
    quarter_minutes = CronSchedule.parse("*/15 * * * * *")
    assert quarter_minutes.next_after(utc(2026, 1, 1, 12, 0, 0)) == utc(2026, 1, 1, 12, 0, 1)
    assert quarter_minutes.next_after(utc(2026, 1, 1, 12, 0, 59)) == utc(2026, 1, 1, 12, 15, 0)


def test_seconds_field_specific_second() -> None:
    schedule = CronSchedule.parse("30 9 * * * 10", "Europe/Berlin")
    assert schedule.next_after(utc(2026, 7, 1)) == utc(2026, 7, 1, 7, 30, 10)


@pytest.mark.parametrize(
    ("alias", "expression"),
    [
        ("@hourly", "0 * * * *"),
        ("@daily", "0 0 * * *"),
        ("@midnight", "0 0 * * *"),
        ("@weekly", "0 0 * * 0"),
        ("@monthly", "0 0 1 * *"),
        ("@yearly", "0 0 1 1 *"),
        ("@annually", "0 0 1 1 *"),
        ("@DAILY", "0 0 * * *"),
    ],
)
def test_aliases(alias: str, expression: str) -> None:
    start, end = utc(2025, 12, 1), utc(2028, 1, 1)
    assert CronSchedule.parse(alias, "Asia/Tokyo").slots_between(
        start, end, limit=5000
    ) == CronSchedule.parse(expression, "Asia/Tokyo").slots_between(start, end, limit=5000)


def test_all_documented_aliases_are_known() -> None:
    assert set(ALIASES) == {"@hourly", "@daily", "@midnight", "@weekly", "@monthly", "@yearly", "@annually"}


def test_aliases_fire_where_expected() -> None:
    assert CronSchedule.parse("@weekly").next_after(utc(2026, 1, 1)) == utc(2026, 1, 4)  # a Sunday
    assert CronSchedule.parse("@yearly", "Europe/Berlin").next_after(utc(2026, 6, 1)) == utc(2026, 12, 31, 23)


@pytest.mark.parametrize(
    ("expression", "fragment"),
    [
        ("", "empty"),
        ("   ", "empty"),
        ("* * * *", "got 4"),
        ("* * * * * * *", "got 7"),
        ("61 * * * *", "out of range"),
        ("* 24 * * *", "out of range"),
        ("* * 0 * *", "out of range"),
        ("* * * 13 *", "out of range"),
        ("* * * * 8", "out of range"),
        ("* * * * * 60", "out of range"),
        ("*/0 * * * *", "step"),
        ("a b c d e", "not acceptable"),
        ("0 0 30 2 *", "can never occur"),
        ("0 0 31 4,6 *", "can never occur"),
        ("@reboot", "unknown alias"),
        ("@every 5m", "unknown alias"),
        ("H * * * *", "hashed/random"),
        ("R * * * *", "hashed/random"),
        ("0 H(0-5) * * *", "hashed/random"),
    ],
)
def test_bad_expressions_raise_clear_cron_error(expression: str, fragment: str) -> None:
    with pytest.raises(CronError) as info:
        CronSchedule.parse(expression)
    message = str(info.value)
    assert fragment in message
    if expression.strip():
        assert f"{expression.strip()!r} is not a valid cron expression" in message


def test_cron_error_is_value_error() -> None:
    assert issubclass(CronError, ValueError)


def test_constructor_validates_too() -> None:
    with pytest.raises(CronError, match="not a valid cron expression"):
        CronSchedule("61 * * * *")
    with pytest.raises(CronError, match="unknown timezone"):
        CronSchedule("* * * * *", "Nowhere/Special")


@pytest.mark.parametrize(
    "timezone", ["Mars/Base", "Europe", "../etc/passwd", "/etc/localtime", "Europe/Berlin/x"]
)
def test_bad_timezones_raise_cron_error(timezone: str) -> None:
    with pytest.raises(CronError) as info:
        CronSchedule.parse("0 0 * * *", timezone)
    assert str(info.value) == f"unknown timezone {timezone!r}"


def test_empty_timezone() -> None:
    with pytest.raises(CronError, match="timezone is empty"):
        CronSchedule.parse("0 0 * * *", "")


def test_naive_datetimes_are_rejected() -> None:
    schedule = CronSchedule.parse("* * * * *")
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.next_after(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.slots_between(datetime(2026, 1, 1), utc(2026, 1, 2))
    with pytest.raises(ValueError, match="timezone-aware"):
        schedule.due_slots(utc(2026, 1, 1), datetime(2026, 1, 2), CatchupPolicy.ALL)


# --------------------------------------------------------------------------- next_after / slots_between


def test_next_after_is_strict_and_returns_utc() -> None:
    schedule = CronSchedule.parse("0 9 * * *", "Asia/Kolkata")
    slot = utc(2026, 5, 1, 3, 30)
    assert schedule.next_after(slot - TINY) == slot
    nxt = schedule.next_after(slot)
    assert nxt == utc(2026, 5, 2, 3, 30)
    assert nxt.tzinfo is UTC


def test_next_after_accepts_any_aware_timezone() -> None:
    schedule = CronSchedule.parse("0 9 * * *", "Europe/Berlin")
    after = datetime(2026, 5, 1, 8, 59, tzinfo=ZoneInfo("Europe/Berlin"))
    assert schedule.next_after(after) == utc(2026, 5, 1, 7)


def test_next_after_with_sub_second_input() -> None:
    schedule = CronSchedule.parse("* * * * * *")
    assert schedule.next_after(utc(2026, 1, 1, 0, 0, 0) + timedelta(microseconds=500_000)) == utc(
        2026, 1, 1, 0, 0, 1
    )


def test_next_after_rare_schedule_is_cheap() -> None:
    leap_day = CronSchedule.parse("0 12 29 2 *", "Pacific/Auckland")
    assert leap_day.next_after(utc(2026, 1, 1)) == utc(2028, 2, 28, 23)


def test_slots_between_bounds_and_limit() -> None:
    schedule = CronSchedule.parse("*/10 * * * *")
    start, end = utc(2026, 1, 1, 0, 0), utc(2026, 1, 1, 1, 0)
    slots = schedule.slots_between(start, end)
    assert slots == [start + timedelta(minutes=m) for m in (10, 20, 30, 40, 50, 60)]  # (start, end]
    assert schedule.slots_between(start, end, limit=2) == slots[:2]
    assert schedule.slots_between(start, end, limit=0) == []
    assert schedule.slots_between(end, start) == []
    assert schedule.slots_between(start, start) == []
    with pytest.raises(ValueError, match="limit"):
        schedule.slots_between(start, end, limit=-1)


# --------------------------------------------------------------------------- DST: a year, one fire per day


@pytest.mark.parametrize(
    ("timezone", "expression"),
    [
        ("Europe/Berlin", "30 2 * * *"),
        ("America/New_York", "30 2 * * *"),
        ("America/New_York", "30 1 * * *"),
        ("America/Santiago", "0 0 * * *"),
        ("America/Santiago", "30 23 * * *"),
        ("Australia/Lord_Howe", "15 2 * * *"),
        ("Australia/Lord_Howe", "45 1 * * *"),
        ("UTC", "30 2 * * *"),
    ],
)
def test_daily_job_fires_once_per_local_day_for_a_whole_year(timezone: str, expression: str) -> None:
    schedule = CronSchedule.parse(expression, timezone)
    tz = ZoneInfo(timezone)
    slots = local_year(schedule, 2026)

    assert len(slots) == 365
    assert all(a < b for a, b in pairwise(slots))
    assert len(set(slots)) == len(slots)
    assert all(s.tzinfo is UTC for s in slots)
    local_dates = [s.astimezone(tz).date() for s in slots]
    all_dates = [date(2026, 1, 1) + timedelta(days=i) for i in range(365)]
    assert local_dates == all_dates
    # Every slot that exists in local time fires exactly at that wall time.
    hour, minute = int(expression.split()[1]), int(expression.split()[0])
    shifted = [s for s in slots if (s.astimezone(tz).hour, s.astimezone(tz).minute) != (hour, minute)]
    assert len(shifted) <= 1  # only the spring-forward day, if the time falls in its gap


@pytest.mark.parametrize(
    ("timezone", "expression", "local_day", "expected", "expected_local"),
    [
        # Berlin: gap 02:00->03:00 on Mar 29, repeated 02:00-03:00 on Oct 25.
        ("Europe/Berlin", "30 2 * * *", date(2026, 3, 29), utc(2026, 3, 29, 1, 0), "03:00+0200"),
        ("Europe/Berlin", "30 2 * * *", date(2026, 10, 25), utc(2026, 10, 25, 0, 30), "02:30+0200"),
        # New York: gap 02:00->03:00 on Mar 8, repeated 01:00-02:00 on Nov 1.
        ("America/New_York", "30 2 * * *", date(2026, 3, 8), utc(2026, 3, 8, 7, 0), "03:00-0400"),
        ("America/New_York", "30 2 * * *", date(2026, 11, 1), utc(2026, 11, 1, 7, 30), "02:30-0500"),
        ("America/New_York", "30 1 * * *", date(2026, 11, 1), utc(2026, 11, 1, 5, 30), "01:30-0400"),
        # Santiago: gap 00:00->01:00 on Sep 6, repeated 23:00-24:00 on Apr 4.
        ("America/Santiago", "0 0 * * *", date(2026, 9, 6), utc(2026, 9, 6, 4, 0), "01:00-0300"),
        ("America/Santiago", "0 0 * * *", date(2026, 4, 5), utc(2026, 4, 5, 4, 0), "00:00-0400"),
        ("America/Santiago", "30 23 * * *", date(2026, 4, 4), utc(2026, 4, 5, 2, 30), "23:30-0300"),
        ("America/Santiago", "30 23 * * *", date(2026, 9, 5), utc(2026, 9, 6, 3, 30), "23:30-0400"),
        # Lord Howe: 30-minute shift, gap 02:00->02:30 on Oct 4, repeated 01:30-02:00 on Apr 5.
        ("Australia/Lord_Howe", "15 2 * * *", date(2026, 10, 4), utc(2026, 10, 3, 15, 30), "02:30+1100"),
        ("Australia/Lord_Howe", "15 2 * * *", date(2026, 4, 5), utc(2026, 4, 4, 15, 45), "02:15+1030"),
        ("Australia/Lord_Howe", "45 1 * * *", date(2026, 4, 5), utc(2026, 4, 4, 14, 45), "01:45+1100"),
        ("Australia/Lord_Howe", "45 1 * * *", date(2026, 10, 4), utc(2026, 10, 3, 15, 15), "01:45+1030"),
    ],
)
def test_exact_fire_instants_on_transition_days(
    timezone: str, expression: str, local_day: date, expected: datetime, expected_local: str
) -> None:
    schedule = CronSchedule.parse(expression, timezone)
    tz = ZoneInfo(timezone)
    year = local_year(schedule, 2026)
    fires = [s for s in year if s.astimezone(tz).date() == local_day]
    assert fires == [expected]
    assert expected.astimezone(tz).strftime("%H:%M%z") == expected_local
    # The same instant is reached by stepping from just before it, and from the previous fire.
    assert schedule.next_after(expected - TINY) == expected
    previous = year[year.index(expected) - 1]
    assert schedule.next_after(previous) == expected
    assert schedule.next_after(expected) == year[year.index(expected) + 1]


def _hourly_labels(day: date) -> list[str]:
    schedule = CronSchedule.parse("0 * * * *", "Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    start = datetime(day.year, day.month, day.day, tzinfo=tz)
    end = start + timedelta(days=1)  # wall-clock arithmetic: next local midnight
    slots = schedule.slots_between(start - TINY, end - TINY)
    assert all(a < b for a, b in pairwise(slots))
    return [s.astimezone(tz).strftime("%H:%M%z") for s in slots]


def test_hourly_job_on_spring_forward_day_fires_once_per_real_hour() -> None:
    labels = _hourly_labels(date(2026, 3, 29))
    # 02:00 does not exist; it is shifted to 03:00 CEST and collapses with the 03:00 slot.
    assert len(labels) == 23
    assert labels[:4] == ["00:00+0100", "01:00+0100", "03:00+0200", "04:00+0200"]


def test_hourly_job_on_fall_back_day_fires_once_per_wall_clock_hour() -> None:
    labels = _hourly_labels(date(2026, 10, 25))
    # The day has 25 real hours, but the repeated 02:00 (CET) does not fire a second time.
    assert len(labels) == 24
    assert labels[:5] == ["00:00+0200", "01:00+0200", "02:00+0200", "03:00+0100", "04:00+0100"]


def test_sub_minute_slots_in_a_gap_collapse_to_the_gap_end() -> None:
    schedule = CronSchedule.parse("* * * * * */20", "Europe/Berlin")
    transition = utc(2026, 3, 29, 1)
    slots = schedule.slots_between(transition - timedelta(seconds=41), transition + timedelta(seconds=40))
    assert slots == [
        transition - timedelta(seconds=40),
        transition - timedelta(seconds=20),
        transition,
        transition + timedelta(seconds=20),
        transition + timedelta(seconds=40),
    ]


def test_sub_minute_slots_skip_the_second_pass_of_a_repeated_hour() -> None:
    schedule = CronSchedule.parse("* * * * * */30", "Europe/Berlin")
    # 01:30Z is 02:30 CET, the second pass; 02:30 CEST (00:30Z) already fired.
    second_pass = utc(2026, 10, 25, 1, 30)
    assert schedule.next_after(second_pass) == utc(2026, 10, 25, 2, 0)
    first_pass = utc(2026, 10, 25, 0, 30)
    assert schedule.next_after(first_pass) == utc(2026, 10, 25, 0, 30, 30)


def test_next_after_inside_the_second_pass_of_a_repeated_hour() -> None:
    schedule = CronSchedule.parse("30 2 * * *", "Europe/Berlin")
    # 01:15Z is 02:15 CET in the second pass: today's 02:30 already fired at 00:30Z.
    assert schedule.next_after(utc(2026, 10, 25, 1, 15)) == utc(2026, 10, 26, 1, 30)
    assert schedule.next_after(utc(2026, 10, 25, 0, 15)) == utc(2026, 10, 25, 0, 30)


@pytest.mark.parametrize("timezone", sorted(TRANSITIONS_2026))
@pytest.mark.parametrize("which", ["spring", "fall"])
@pytest.mark.parametrize("expression", ORACLE_EXPRESSIONS)
def test_matches_instant_scanning_oracle_around_transitions(
    timezone: str, which: str, expression: str
) -> None:
    transition = TRANSITIONS_2026[timezone][0 if which == "spring" else 1]
    start, end = transition - timedelta(days=2), transition + timedelta(days=2)
    schedule = CronSchedule.parse(expression, timezone)
    expected = oracle_fires(expression, timezone, start, end)
    assert schedule.slots_between(start, end, limit=100_000) == expected

    # next_after and the backward walk behind due_slots agree with the oracle at arbitrary points,
    # including ones inside gaps' neighbourhoods and second passes of repeated hours.
    probe = transition - timedelta(hours=5)
    while probe < transition + timedelta(hours=5):
        i = bisect.bisect_right(expected, probe)
        assert schedule.next_after(probe) == expected[i], probe
        latest = schedule.due_slots(start, probe, CatchupPolicy.LATEST)
        assert latest == [expected[i - 1]], probe
        probe += timedelta(minutes=7, seconds=30)


# --------------------------------------------------------------------------- due_slots


def test_due_slots_policies_every_minute_ten_minutes_behind() -> None:
    schedule = CronSchedule.parse("* * * * *")
    now = utc(2026, 6, 1, 12, 0)
    last_planned = now - timedelta(minutes=10)
    assert schedule.due_slots(last_planned, now, CatchupPolicy.LATEST) == [now]
    all_slots = schedule.due_slots(last_planned, now, CatchupPolicy.ALL)
    assert all_slots == [last_planned + timedelta(minutes=m) for m in range(11)]
    assert schedule.due_slots(last_planned, now, CatchupPolicy.NONE) == [now]
    # Latest slot 30 s old: still "right now".
    assert schedule.due_slots(last_planned, now + timedelta(seconds=30), CatchupPolicy.NONE) == [now]


def test_due_slots_none_skips_slots_older_than_grace() -> None:
    schedule = CronSchedule.parse("*/5 * * * *")
    last_planned = utc(2026, 6, 1, 12, 0)
    assert timedelta(seconds=60) == NONE_POLICY_GRACE
    assert schedule.due_slots(last_planned, utc(2026, 6, 1, 12, 5, 30), CatchupPolicy.NONE) == [
        utc(2026, 6, 1, 12, 5)
    ]
    assert schedule.due_slots(last_planned, utc(2026, 6, 1, 12, 6, 0), CatchupPolicy.NONE) == [
        utc(2026, 6, 1, 12, 5)
    ]
    assert schedule.due_slots(last_planned, utc(2026, 6, 1, 12, 6, 1), CatchupPolicy.NONE) == []
    assert schedule.due_slots(last_planned, utc(2026, 6, 1, 12, 7), CatchupPolicy.NONE) == []
    assert schedule.due_slots(
        last_planned, utc(2026, 6, 1, 12, 7), CatchupPolicy.NONE, grace=timedelta(minutes=3)
    ) == [utc(2026, 6, 1, 12, 5)]
    # Other policies still catch up.
    assert schedule.due_slots(last_planned, utc(2026, 6, 1, 12, 7), CatchupPolicy.LATEST) == [
        utc(2026, 6, 1, 12, 5)
    ]


def test_due_slots_all_keeps_the_most_recent_max_slots() -> None:
    schedule = CronSchedule.parse("* * * * *")
    now = utc(2026, 6, 1, 12, 0)
    slots = schedule.due_slots(now - timedelta(minutes=10), now, CatchupPolicy.ALL, max_slots=3)
    assert slots == [now - timedelta(minutes=2), now - timedelta(minutes=1), now]


def test_due_slots_long_downtime_is_cheap() -> None:
    schedule = CronSchedule.parse("* * * * * *", "Europe/Berlin")
    now = utc(2026, 6, 1, 12, 0, 0)
    slots = schedule.due_slots(now - timedelta(days=60), now, CatchupPolicy.ALL)
    assert len(slots) == 100
    assert slots[-1] == now
    assert slots[0] == now - timedelta(seconds=99)


def test_due_slots_last_planned_is_itself_due() -> None:
    schedule = CronSchedule.parse("0 * * * *")
    planned = utc(2026, 6, 1, 12)
    for policy in CatchupPolicy:
        assert schedule.due_slots(planned, planned, policy) == [planned]
        assert schedule.due_slots(planned, planned + timedelta(seconds=5), policy) == [planned]
        assert schedule.due_slots(planned, planned - timedelta(seconds=1), policy) == []


def test_due_slots_nothing_due_between_slots() -> None:
    schedule = CronSchedule.parse("0 * * * *")
    for policy in CatchupPolicy:
        assert schedule.due_slots(utc(2026, 6, 1, 12, 0, 1), utc(2026, 6, 1, 12, 59), policy) == []


def test_due_slots_accepts_policy_strings_and_validates_max_slots() -> None:
    schedule = CronSchedule.parse("* * * * *")
    now = utc(2026, 6, 1, 12, 0)
    assert schedule.due_slots(now - MINUTE, now, "all") == [now - MINUTE, now]  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="max_slots"):
        schedule.due_slots(now - MINUTE, now, CatchupPolicy.ALL, max_slots=0)


def test_due_slots_across_fall_back_skip_the_repeated_hour() -> None:
    schedule = CronSchedule.parse("*/30 * * * *", "Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    # From 01:00 CEST to 03:30 CET (02:30Z); now sits after the second pass through 02:xx.
    slots = schedule.due_slots(utc(2026, 10, 24, 23), utc(2026, 10, 25, 2, 30), CatchupPolicy.ALL)
    labels = [s.astimezone(tz).strftime("%H:%M%z") for s in slots]
    assert labels == ["01:00+0200", "01:30+0200", "02:00+0200", "02:30+0200", "03:00+0100", "03:30+0100"]
    # In the second pass, the latest due slot is the first-pass 02:30.
    assert schedule.due_slots(utc(2026, 10, 24, 23), utc(2026, 10, 25, 1, 45), CatchupPolicy.LATEST) == [
        utc(2026, 10, 25, 0, 30)
    ]
    assert schedule.due_slots(utc(2026, 10, 24, 23), utc(2026, 10, 25, 1, 45), CatchupPolicy.NONE) == []


def test_due_slots_across_spring_forward_collapse_the_gap() -> None:
    schedule = CronSchedule.parse("*/30 * * * *", "Europe/Berlin")
    tz = ZoneInfo("Europe/Berlin")
    slots = schedule.due_slots(utc(2026, 3, 29, 0), utc(2026, 3, 29, 1, 30), CatchupPolicy.ALL)
    labels = [s.astimezone(tz).strftime("%H:%M%z") for s in slots]
    # 02:00 and 02:30 do not exist; both land on 03:00 CEST together with the real 03:00 slot.
    assert labels == ["01:00+0100", "01:30+0100", "03:00+0200", "03:30+0200"]
