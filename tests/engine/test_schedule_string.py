"""Schedule strings: the original's parser and messages, next occurrence, cron extension."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from datetime import datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from evqueue.engine.schedule_string import CronSchedule, LevelSchedule, parse_schedule
from evqueue.protocol.errors import ApiError


def set_tz(tz: str | None) -> None:
    if tz is None:
        os.environ.pop("TZ", None)
    else:
        os.environ["TZ"] = tz
    time.tzset()


@pytest.fixture(autouse=True)
def utc() -> Iterator[None]:
    old = os.environ.get("TZ")
    set_tz("UTC")
    yield
    set_tz(old)


def ts(text: str) -> float:
    """Local 'YYYY-MM-DD HH:MM:SS' → timestamp."""
    return time.mktime(time.strptime(text, "%Y-%m-%d %H:%M:%S"))


def local(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def next_of(schedule: str, after: str) -> str:
    return local(parse_schedule(schedule).next_time(ts(after)))


@pytest.mark.parametrize(("text", "message"), [
    ("", "Empty schedule"),
    ("*", "Non numeric data in schedule offset"),
    ("a", "Non numeric data in schedule offset"),
    ("5,,6", "Non numeric data in schedule offset"),
    ("5 ;", "Non numeric data in schedule offset"),
    ("5a", "Non numeric data in schedule offset"),
    (";;x", "Non numeric data in schedule offset"),
    ("60", "Out of range schedule offset"),
    ("1-5", "Out of range schedule offset"),  # strtol reads 1, then -5
    ("0;61;;;;", "Out of range schedule offset"),  # golden 29
    ("0;0;24", "Out of range schedule offset"),
    ("0;0;0;31", "Out of range schedule offset"),
    ("0;0;0;0;12", "Out of range schedule offset"),
    ("0;0;0;0;0;7", "Out of range schedule offset"),
    ("99999999999999999999", "Out of range schedule offset"),
    ("1;2;3;4;5;6;7", "Garbage at end of schedule"),
    ("1;2;3;4;5;6;;", "Garbage at end of schedule"),
    (";;;;;;;", "Garbage at end of schedule"),
    ("0;0;0;29;1", "Schedule constraints are impossible to satisfy"),  # 30 February
    ("0;0;0;30;3", "Schedule constraints are impossible to satisfy"),  # 31 April
    ("0;0;0;30;1,3,5,8,10", "Schedule constraints are impossible to satisfy"),
    ("0;0;0;29,30;1", "Schedule constraints are impossible to satisfy"),
])
def test_invalid_schedules(text: str, message: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_schedule(text)
    assert (info.value.code, info.value.message) == ("INVALID_SCHEDULE", message)


@pytest.mark.parametrize("text", [
    "0;30;2", "0;30;3;0;0;", "0", ";;;;;", " +5", "5,;", "5,", "1;2;3;4;5;6;",
    "0,10,20,30,40,50", "0;0;12;;;1,2,3,4,5",
    "0;0;0;28;1",  # 29 February: leap years only, accepted
    "0;0;0;29;1,2", "0;0;0;30;0,3", "0;0;0;5,30;3",  # only the first day is checked
])
def test_valid_schedules(text: str) -> None:
    s = parse_schedule(text)
    assert isinstance(s, LevelSchedule)
    assert s.text == text


@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("0;30;3;0;0;", "2026-11-24 08:23:27", "2027-01-01 03:30:00"),  # golden 28
    (";;;;;", "2026-01-01 12:00:00", "2026-01-01 12:00:01"),
    ("0", "2026-01-01 12:00:00", "2026-01-01 12:01:00"),
    ("0,10,20,30,40,50", "2026-01-01 12:00:05", "2026-01-01 12:00:10"),
    ("0,10,20,30,40,50", "2026-01-01 12:00:10", "2026-01-01 12:00:20"),  # strictly after
    ("0,10,20,30,40,50", "2026-01-01 23:59:55", "2026-01-02 00:00:00"),
    ("0;30;2", "2026-01-01 02:30:00", "2026-01-02 02:30:00"),
    ("0;30;2", "2026-12-31 03:00:00", "2027-01-01 02:30:00"),
    # Mondays to Fridays at noon, asked on a Friday afternoon
    ("0;0;12;;;1,2,3,4,5", "2026-01-02 13:00:00", "2026-01-05 12:00:00"),
    # 29 February, asked in March 2025
    ("0;0;0;28;1", "2025-03-01 00:00:00", "2028-02-29 00:00:00"),
    # 31st of a month: skips the 30-day months
    ("0;0;0;30", "2026-04-01 00:00:00", "2026-05-31 00:00:00"),
    # 29 February that is a Sunday
    ("0;0;0;28;1;0", "2026-01-01 00:00:00", "2032-02-29 00:00:00"),
    # minute/hour carry inside a day
    ("59;59;23", "2026-06-15 23:59:59", "2026-06-16 23:59:59"),
    ("5;10,50;7,9", "2026-06-15 07:50:06", "2026-06-15 09:10:05"),
])
def test_next_time(schedule: str, after: str, expected: str) -> None:
    assert next_of(schedule, after) == expected


def test_next_time_fractional_now() -> None:
    s = parse_schedule("0,10,20,30,40,50")
    assert local(s.next_time(ts("2026-01-01 12:00:09") + 0.5)) == "2026-01-01 12:00:10"
    assert local(s.next_time(ts("2026-01-01 12:00:10") + 0.5)) == "2026-01-01 12:00:20"


def test_dst_gap_runs_at_the_shifted_hour() -> None:
    set_tz("Europe/Paris")
    # 2026-03-29: 02:00 CET jumps to 03:00 CEST, 02:30 does not exist (mktime → 03:30)
    after = ts("2026-03-29 00:00:00")
    at = parse_schedule("0;30;2").next_time(after)
    assert local(at) == "2026-03-29 03:30:00"
    assert at - after == 2.5 * 3600
    assert local(parse_schedule("0;30;2").next_time(at)) == "2026-03-30 02:30:00"


def test_dst_end_moves_forward() -> None:
    set_tz("Europe/Paris")
    # 2026-10-25: 03:00 CEST goes back to 02:00 CET, 02:30 happens twice
    s = parse_schedule("0;30;2")
    first = s.next_time(ts("2026-10-25 00:00:00"))
    assert local(first) == "2026-10-25 02:30:00"
    assert first == ts("2026-10-25 00:00:00") + 2.5 * 3600  # the first 02:30 (CEST)
    # the repeated wall-clock 02:30 does not run twice
    assert local(s.next_time(first)) == "2026-10-26 02:30:00"
    # asked during the repeated hour, the answer is still in the future
    assert local(s.next_time(first + 3600)) == "2026-10-26 02:30:00"


# -- cron extension ----------------------------------------------------------------------------
@pytest.mark.parametrize(("schedule", "after", "expected"), [
    ("*/15 * * * *", "2026-01-01 12:07:00", "2026-01-01 12:15:00"),
    ("*/15 * * * *", "2026-01-01 12:15:00", "2026-01-01 12:30:00"),
    ("30 2 * * 1-5", "2026-01-02 13:00:00", "2026-01-05 02:30:00"),
    ("30 0 12 * * *", "2026-01-01 13:00:00", "2026-01-02 12:00:30"),  # seconds first
    ("*/10 * * * * *", "2026-01-01 12:00:05", "2026-01-01 12:00:10"),
    ("@daily", "2026-01-01 12:00:00", "2026-01-02 00:00:00"),
    ("  0 0 1 1 *  ", "2026-06-01 00:00:00", "2027-01-01 00:00:00"),
])
def test_cron(schedule: str, after: str, expected: str) -> None:
    assert isinstance(parse_schedule(schedule), CronSchedule)
    assert next_of(schedule, after) == expected


@pytest.mark.parametrize("text", ["61 * * * *", "a b c d e", "*/0 * * * *", "0 0 30 2 *",
                                  "@reboot", "@nope"])
def test_invalid_cron(text: str) -> None:
    with pytest.raises(ApiError) as info:
        parse_schedule(text)
    assert info.value.code == "INVALID_SCHEDULE"
    assert info.value.message.startswith("Invalid cron expression : ")


def test_cron_detection_keeps_original_errors() -> None:
    """One or two blank-separated tokens, or any ';', is the original's format."""
    for text, message in [("* *", "Non numeric data in schedule offset"),
                          ("* * * * *;", "Non numeric data in schedule offset")]:
        with pytest.raises(ApiError) as info:
            parse_schedule(text)
        assert info.value.message == message


# -- property: the answer is the first matching second ----------------------------------------
def _first_match(levels: list[list[int]], after: int) -> float:
    """Brute force over the candidate grid of the next 8 days (UTC: no DST)."""
    seconds, minutes, hours, _, _, weekdays = (sorted(set(lv)) for lv in levels)
    day0 = after - after % 86400
    for day in range(8):
        base = day0 + day * 86400
        if weekdays and (time.gmtime(base).tm_wday + 1) % 7 not in weekdays:
            continue
        for h in hours or range(24):
            for m in minutes or range(60):
                for s in seconds or range(60):
                    if base + h * 3600 + m * 60 + s > after:
                        return base + h * 3600 + m * 60 + s
    raise AssertionError("no match within 8 days")


@settings(max_examples=200, deadline=None)
@given(
    seconds=st.lists(st.integers(0, 59), max_size=4),
    minutes=st.lists(st.integers(0, 59), max_size=3),
    hours=st.lists(st.integers(0, 23), max_size=3),
    weekdays=st.lists(st.integers(0, 6), max_size=2),
    after=st.integers(int(ts("2020-01-01 00:00:00")), int(ts("2030-01-01 00:00:00"))),
)
def test_next_time_is_the_first_match(seconds: list[int], minutes: list[int], hours: list[int],
                                      weekdays: list[int], after: int) -> None:
    levels = [seconds, minutes, hours, [], [], weekdays]
    text = ";".join(",".join(map(str, lv)) for lv in levels)
    assert parse_schedule(text).next_time(after) == _first_match(levels, after)


def test_now_is_local_time() -> None:
    set_tz("America/New_York")
    at = parse_schedule("0;0;12").next_time(ts("2026-01-01 00:00:00"))
    assert datetime.fromtimestamp(at).hour == 12
