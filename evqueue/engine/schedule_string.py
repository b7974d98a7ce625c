"""Workflow schedule strings: parsing, validation and next occurrence (workflow.md §7.1–7.2).

The original's format is six ``;``-separated levels — seconds, minutes, hours, day of month
(0-based), month (0-based), weekday (0 = Sunday) — each a comma-separated list of integers, an
empty level meaning "any". It is parsed the way the original's ``strtol`` loop does, so the
same strings are accepted and rejected with the same messages (``1-5`` reads as 1 then -5).

As an extension, a string without ``;`` made of 5 or 6 blank-separated fields, or starting
with ``@`` (``@daily``), is a cron expression evaluated by ``croniter``: 5 fields are standard
cron (minute first), 6 fields put the seconds first like the original's format (and Quartz).
Such strings are ours only: a C++ node sharing the database would reject them.

Times are local: a candidate wall-clock time is turned into a timestamp with ``mktime`` and
``tm_isdst = -1``, as the original does, so a time in a DST gap runs at the shifted hour.
"""

from __future__ import annotations

import bisect
import re
import time
from abc import ABC, abstractmethod
from datetime import date, datetime, timedelta
from typing import TYPE_CHECKING

from evqueue.protocol.errors import ApiError

if TYPE_CHECKING:
    from croniter import croniter

#: Values per level: seconds, minutes, hours, days (0-based), months (0-based), weekdays.
_LEVEL_SIZES = (60, 60, 24, 31, 12, 7)
#: What ``strtol`` accepts: C blanks, an optional sign, ASCII digits.
_STRTOL = re.compile(r"[ \t\n\v\f\r]*[+-]?[0-9]+")
_MONTHS_31 = frozenset((0, 2, 4, 6, 7, 9, 11))
#: Longest search for a matching day: a 29 February on a given weekday can be 40 years away.
_MAX_DAYS = 366 * 50
#: The original's answer when no occurrence is found (it cannot happen for a valid schedule).
_FALLBACK = 365 * 86400


def _error(message: str) -> ApiError:
    return ApiError("INVALID_SCHEDULE", message)


def _mktime(day: date, hour: int, minute: int, second: int) -> float:
    return time.mktime((day.year, day.month, day.day, hour, minute, second, 0, 0, -1))


class Schedule(ABC):
    """A parsed schedule string."""

    def __init__(self, text: str) -> None:
        self.text = text

    @abstractmethod
    def next_time(self, after: float) -> float:
        """The first occurrence strictly after the timestamp ``after`` (whole seconds)."""


class LevelSchedule(Schedule):
    """The original's ``sec;min;hour;day;month;weekday`` format."""

    def __init__(self, text: str, levels: list[list[int]]) -> None:
        super().__init__(text)
        full = [list(range(n)) for n in _LEVEL_SIZES]
        self._seconds, self._minutes, self._hours, days, months, weekdays = (
            sorted(values) if values else full[i] for i, values in enumerate(levels)
        )
        self._days, self._months, self._weekdays = set(days), set(months), set(weekdays)

    def next_time(self, after: float) -> float:
        start = int(after) + 1
        lt = time.localtime(start)
        day = date(lt.tm_year, lt.tm_mon, lt.tm_mday)
        earliest: tuple[int, int, int] | None = (lt.tm_hour, lt.tm_min, lt.tm_sec)
        for _ in range(_MAX_DAYS):
            if self._day_matches(day):
                hms = self._first_time(earliest)
                while hms is not None:
                    epoch = _mktime(day, *hms)
                    if epoch >= start:
                        return epoch
                    # a repeated wall-clock hour (DST end) mapped before ``start``: go on
                    hms = self._first_time((hms[0], hms[1], hms[2] + 1))
            day += timedelta(days=1)
            earliest = None
        return after + _FALLBACK

    def _day_matches(self, day: date) -> bool:
        return (
            day.day - 1 in self._days
            and day.month - 1 in self._months
            and (day.weekday() + 1) % 7 in self._weekdays
        )

    def _first_time(self, earliest: tuple[int, int, int] | None) -> tuple[int, int, int] | None:
        """The smallest selected (hour, minute, second) >= ``earliest`` (None: of the day)."""
        if earliest is None:
            return self._hours[0], self._minutes[0], self._seconds[0]
        h0, m0, s0 = earliest
        for hour in self._hours[bisect.bisect_left(self._hours, h0):]:
            minutes = self._minutes
            if hour == h0:
                minutes = minutes[bisect.bisect_left(minutes, m0):]
            for minute in minutes:
                seconds = self._seconds
                if hour == h0 and minute == m0:
                    seconds = seconds[bisect.bisect_left(seconds, s0):]
                if seconds:
                    return hour, minute, seconds[0]
        return None


class CronSchedule(Schedule):
    """A cron expression (our extension), evaluated in local wall-clock time. croniter (and
    dateutil) are imported with the first cron schedule: 2.5 MB a daemon without any spares."""

    def __init__(self, text: str) -> None:
        from croniter import CroniterError

        super().__init__(text)
        self._six = len(text.split()) == 6
        try:
            # also rejects expressions that never match (30 February)
            self._iter(time.time()).get_next(datetime)
        except (CroniterError, ValueError, KeyError) as e:
            raise _error(f"Invalid cron expression : {e}") from None

    def _iter(self, after: float) -> croniter:
        from croniter import croniter

        return croniter(self.text, datetime.fromtimestamp(int(after)),
                        second_at_beginning=self._six)

    def next_time(self, after: float) -> float:
        it = self._iter(after)
        for _ in range(3):  # at most two wall-clock times can map before ``after`` (DST end)
            dt = it.get_next(datetime)
            epoch = time.mktime(dt.timetuple()[:8] + (-1,))
            if epoch > after:
                return epoch
        return after + _FALLBACK


def _is_cron(text: str) -> bool:
    return ";" not in text and (text.lstrip().startswith("@") or len(text.split()) in (5, 6))


def parse_schedule(text: str) -> Schedule:
    """Parse a schedule string; invalid → ``ApiError("INVALID_SCHEDULE", …)`` with the
    original's messages."""
    if not text:
        raise _error("Empty schedule")
    if _is_cron(text):
        return CronSchedule(text)
    levels: list[list[int]] = [[] for _ in _LEVEL_SIZES]
    level = 0
    pos = 0
    while pos < len(text):
        if level == len(_LEVEL_SIZES):  # only one ';' may follow the last level
            raise _error("Garbage at end of schedule")
        if text[pos] == ";":
            level += 1
            pos += 1
            continue
        m = _STRTOL.match(text, pos)
        if m is None:
            raise _error("Non numeric data in schedule offset")
        value = int(m.group())
        if not 0 <= value < _LEVEL_SIZES[level]:
            raise _error("Out of range schedule offset")
        levels[level].append(value)
        pos = m.end()
        if text.startswith(",", pos):
            pos += 1
    _check_days(levels[3], levels[4])
    return LevelSchedule(text, levels)


def _check_days(days: list[int], months: list[int]) -> None:
    """Reject a first selected day that no selected month has (30th/31st; 29 Feb is fine)."""
    if not days or not months:
        return
    first = min(days)
    if first == 30 and not _MONTHS_31.intersection(months) or first == 29 and set(months) == {1}:
        raise _error("Schedule constraints are impossible to satisfy")
