"""Weekly hours: parsing, open/closed, and the next opening, in local wall-clock time."""

from __future__ import annotations

from datetime import datetime

import pytest

from voicebot.hours import WeeklyHours, zone

SH = zone("Asia/Shanghai")


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=SH)


def test_one_range_means_every_day():
    hours = WeeklyHours.parse("09:00-21:00")
    assert hours.is_open(at("2026-11-22 09:00"))  # a Sunday
    assert not hours.is_open(at("2026-11-22 21:00"))  # the end is exclusive
    assert not hours.is_open(at("2026-11-23 08:59"))
    assert hours.describe() == "mon-sun 09:00-21:00"


def test_weekday_map_with_split_days_and_closed_days():
    hours = WeeklyHours.parse({"mon-fri": "09:00-12:00, 13:00-18:00", "sat": "10:00-16:00"})
    monday_lunch, saturday, sunday = at("2026-11-23 12:30"), at("2026-11-28 15:59"), at("2026-11-29 11:00")
    assert not hours.is_open(monday_lunch) and hours.is_open(saturday) and not hours.is_open(sunday)
    assert hours.next_open(monday_lunch) == at("2026-11-23 13:00")
    assert hours.next_open(sunday) == at("2026-11-30 09:00")  # sunday is closed: monday morning
    assert hours.next_open(at("2026-11-23 10:00")) == at("2026-11-23 10:00")  # open now
    assert hours.describe() == "mon-fri 09:00-12:00, 13:00-18:00; sat 10:00-16:00; sun closed"


def test_until_midnight_and_never_open():
    late = WeeklyHours.parse({"daily": "18:00-24:00"})
    assert late.is_open(at("2026-11-23 23:59")) and not late.is_open(at("2026-11-24 00:00"))
    assert WeeklyHours.parse("closed").next_open(at("2026-11-23 10:00")) is None


@pytest.mark.parametrize(("spec", "message"), [
    ("9-17", "not a time of day"),
    ("21:00-09:00", "ends before it starts"),
    ("09:00-12:00,11:00-13:00", "overlapping"),
    ({"mon-fri": "09:00-18:00", "fri": "10:00-12:00"}, "fri is given twice"),
    ({"funday": "09:00-18:00"}, "not a weekday"),
    ({"fri-mon": "09:00-18:00"}, "runs backwards"),
    ("25:00-26:00", "not a time of day"),
])
def test_bad_specs_say_what_is_wrong(spec, message):
    with pytest.raises(ValueError, match=message):
        WeeklyHours.parse(spec)


def test_unknown_zone_is_named():
    with pytest.raises(ValueError, match="Mars/Olympus"):
        zone("Mars/Olympus")
