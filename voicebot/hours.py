"""Weekly opening hours: business hours of a hotline, calling windows of a campaign."""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
Window = tuple[time, time]  # [start, end) in local time; end 24:00 is written as time.max


def zone(name: str) -> ZoneInfo:
    """The IANA time zone `name`; ValueError with the name when it is unknown."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as err:
        raise ValueError(f"unknown time zone {name!r} (use an IANA name such as Asia/Shanghai)") from err


def _clock(text: str) -> time:
    hours, sep, minutes = text.strip().partition(":")
    if not sep or not hours.isdigit() or not minutes.isdigit() or len(minutes) != 2:
        raise ValueError(f"{text.strip()!r} is not a time of day like 09:00")
    h, m = int(hours), int(minutes)
    if (h, m) == (24, 0):
        return time.max
    if not (0 <= h < 24 and 0 <= m < 60):
        raise ValueError(f"{text.strip()!r} is not a time of day like 09:00")
    return time(h, m)


def _windows(text: str) -> tuple[Window, ...]:
    """'09:00-12:00, 13:00-18:00' or 'closed' → sorted, non-overlapping windows."""
    if text.strip().lower() in ("closed", "none", "-"):
        return ()
    out: list[Window] = []
    for part in text.split(","):
        start, sep, end = part.partition("-")
        if not sep:
            raise ValueError(f"{part.strip()!r} is not a range like 09:00-18:00")
        window = (_clock(start), _clock(end))
        if window[0] >= window[1]:
            raise ValueError(f"{part.strip()!r} ends before it starts (ranges past midnight: split them)")
        out.append(window)
    out.sort()
    for (_, end), (start, _) in itertools.pairwise(out):
        if start < end:
            raise ValueError(f"overlapping ranges in {text.strip()!r}")
    return tuple(out)


def _days(key: str) -> list[int]:
    """'mon-fri', 'sat,sun', 'daily', 'weekdays', 'weekends' → weekday numbers (Monday 0)."""
    key = key.strip().lower()
    named = {"daily": DAYS, "everyday": DAYS, "weekdays": DAYS[:5], "weekends": DAYS[5:]}
    if key in named:
        return [DAYS.index(d) for d in named[key]]
    days: list[int] = []
    for part in key.split(","):
        first, sep, last = part.strip().partition("-")
        for name in (first, last) if sep else (first,):
            if name[:3] not in DAYS:
                raise ValueError(f"{name!r} is not a weekday (mon..sun, daily, weekdays, weekends)")
        a, b = DAYS.index(first[:3]), DAYS.index((last if sep else first)[:3])
        if b < a:
            raise ValueError(f"{part.strip()!r} runs backwards; write it as two ranges")
        days.extend(range(a, b + 1))
    return days


@dataclass(frozen=True)
class WeeklyHours:
    """Opening windows for each weekday (Monday 0), in local time."""

    days: tuple[tuple[Window, ...], ...]

    @classmethod
    def parse(cls, spec: str | Mapping[str, str]) -> WeeklyHours:
        """'09:00-21:00' (every day) or {'mon-fri': '09:00-18:00', 'sat': '10:00-16:00', 'sun': 'closed'}.

        Days a mapping leaves out are closed; a day named twice is an error.
        """
        if isinstance(spec, str):
            every = _windows(spec)
            return cls(days=(every,) * 7)
        days: list[tuple[Window, ...] | None] = [None] * 7
        for key, value in spec.items():
            windows = _windows(str(value))
            for day in _days(str(key)):
                if days[day] is not None:
                    raise ValueError(f"{DAYS[day]} is given twice")
                days[day] = windows
        return cls(days=tuple(d or () for d in days))

    def is_open(self, local: datetime) -> bool:
        """Whether `local` (a wall-clock time in the place these hours apply to) is inside a window."""
        now = local.time().replace(tzinfo=None)
        return any(start <= now < end or (end == time.max and now >= start)
                   for start, end in self.days[local.weekday()])

    def next_open(self, local: datetime) -> datetime | None:
        """`local` itself when open, else the start of the next window within a week; None if never open."""
        if self.is_open(local):
            return local
        for offset in range(8):
            day = (local + timedelta(days=offset)).date()
            for start, _end in self.days[day.weekday()]:
                candidate = datetime.combine(day, start, tzinfo=local.tzinfo)
                if candidate > local:
                    return candidate
        return None

    def describe(self) -> str:
        """Human-readable summary, e.g. 'mon-fri 09:00-18:00; sat-sun closed'."""
        parts: list[str] = []
        i = 0
        while i < 7:
            j = i
            while j + 1 < 7 and self.days[j + 1] == self.days[i]:
                j += 1
            windows = ", ".join(f"{s:%H:%M}-{'24:00' if e == time.max else f'{e:%H:%M}'}" for s, e in self.days[i])
            label = DAYS[i] if i == j else f"{DAYS[i]}-{DAYS[j]}"
            parts.append(f"{label} {windows or 'closed'}")
            i = j + 1
        return "; ".join(parts)
