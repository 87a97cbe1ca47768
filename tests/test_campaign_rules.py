"""Campaign rules: which outcomes are retried, when a callee may be rung in their own time zone, frequency caps."""

from __future__ import annotations

from datetime import datetime

import pytest

from voicebot.campaign import rules
from voicebot.campaign.db import CampaignError
from voicebot.campaign.launch import DEFAULTS, parse_windows, run_options
from voicebot.campaign.rules import CallingPolicy, RetryPolicy, local_time, parse_duration, window_hint
from voicebot.hours import WeeklyHours, zone


def epoch(text: str, tz: str = "UTC") -> float:
    """Wall-clock time `text` in `tz` as epoch seconds."""
    return datetime.fromisoformat(text).replace(tzinfo=zone(tz)).timestamp()


# --- retries -----------------------------------------------------------------------------------


@pytest.mark.parametrize("outcome", ["busy", "no_answer", "powered_off", "failed", "dropped", "voicemail"])
def test_network_outcomes_are_retried_after_the_delay_until_the_last_attempt(outcome):
    policy = RetryPolicy(max_attempts=3, delay=600)
    assert policy.retry_at(outcome, 1, 1000.0) == 1600.0
    assert policy.retry_at(outcome, 2, 5000.0) == 5600.0
    assert policy.retry_at(outcome, 3, 5000.0) is None  # the third attempt was the last


@pytest.mark.parametrize("outcome", ["refused", "wrong_number", "do_not_call", "invalid_number", "door_delivery",
                                     "station_consent", "transferred", "cancelled", "dnc_skipped"])
def test_refusals_conversation_outcomes_and_bad_numbers_are_final(outcome):
    assert RetryPolicy(max_attempts=5, delay=0).retry_at(outcome, 1, 1000.0) is None


def test_one_attempt_means_no_retry():
    assert RetryPolicy(max_attempts=1, delay=0).retry_at("busy", 1, 10.0) is None


@pytest.mark.parametrize("forbidden", ["refused", "wrong_number", "do_not_call", "invalid_number", "cancelled"])
def test_a_policy_cannot_be_told_to_retry_what_must_never_be_retried(forbidden):
    with pytest.raises(ValueError, match=f"never retried: {forbidden}"):
        RetryPolicy(retryable=frozenset({"busy", forbidden}))


def test_custom_retry_set_and_bad_max_attempts():
    only_busy = RetryPolicy(max_attempts=2, delay=60, retryable=frozenset({"busy"}))
    assert only_busy.retry_at("busy", 1, 0.0) == 60.0 and only_busy.retry_at("no_answer", 1, 0.0) is None
    with pytest.raises(ValueError, match="at least 1"):
        RetryPolicy(max_attempts=0)


def test_stored_options_reject_a_forbidden_retry_with_a_coded_error():
    with pytest.raises(CampaignError, match="bad campaign option: these outcomes are never retried: refused") as info:
        run_options({**DEFAULTS, "retry_on": ["busy", "refused"]})
    assert info.value.code == "campaign_options"


@pytest.mark.parametrize(("option", "value", "message"), [
    ("retry_delay", "soon", "not a duration"),
    ("cap_period", "nan", "not a duration"),
    ("window", "9-17", "not a time of day"),
    ("max_per_number", 0, "at least 1"),
    ("concurrency", 0, "concurrency"),
    ("cps", 0, "calls per second"),
])
def test_bad_options_name_the_problem(option, value, message):
    with pytest.raises(CampaignError, match=message):
        run_options({**DEFAULTS, option: value})


# --- calling windows in the callee's time zone ------------------------------------------------------


def test_the_same_instant_is_inside_one_callees_window_and_outside_anothers():
    policy = CallingPolicy(windows=WeeklyHours.parse("09:00-21:00"))
    now = epoch("2026-11-23 02:00")  # Monday 10:00 in Shanghai; Sunday 21:00 in New York
    assert policy.next_allowed(now, "Asia/Shanghai") == now
    new_york_opens = epoch("2026-11-23 09:00", "America/New_York")
    assert policy.next_allowed(now, "America/New_York") == new_york_opens
    assert new_york_opens - now == 12 * 3600  # 09:00 EST is 14:00 UTC
    assert local_time(now, "America/New_York") == "Sun 21:00" and local_time(now, "Asia/Shanghai") == "Mon 10:00"


def test_window_edges_start_inclusive_end_exclusive():
    policy = CallingPolicy(windows=WeeklyHours.parse("09:00-21:00"))
    opens, closes = epoch("2026-11-23 09:00", "Asia/Shanghai"), epoch("2026-11-23 21:00", "Asia/Shanghai")
    assert policy.next_allowed(opens, "Asia/Shanghai") == opens
    assert policy.next_allowed(opens - 1, "Asia/Shanghai") == opens
    assert policy.next_allowed(closes - 1, "Asia/Shanghai") == closes - 1
    assert policy.next_allowed(closes, "Asia/Shanghai") == epoch("2026-11-24 09:00", "Asia/Shanghai")


def test_weekday_windows_skip_to_the_next_open_day():
    policy = CallingPolicy(windows=parse_windows("mon-fri=09:00-21:00;sat=10:00-16:00"))
    friday_night = epoch("2026-11-27 21:30", "Asia/Shanghai")
    assert policy.next_allowed(friday_night, "Asia/Shanghai") == epoch("2026-11-28 10:00", "Asia/Shanghai")
    saturday_evening = epoch("2026-11-28 16:00", "Asia/Shanghai")
    # Sunday is not named, so closed: Monday morning.
    assert policy.next_allowed(saturday_evening, "Asia/Shanghai") == epoch("2026-11-30 09:00", "Asia/Shanghai")
    assert policy.next_allowed(epoch("2026-11-28 12:00", "Asia/Shanghai"), "Asia/Shanghai") == epoch(
        "2026-11-28 12:00", "Asia/Shanghai")


def test_windows_follow_daylight_saving_time():
    policy = CallingPolicy(windows=WeeklyHours.parse("09:00-21:00"))
    saturday_night = epoch("2026-03-07 22:00", "America/New_York")  # clocks go forward at 02:00 on Sunday
    opens = policy.next_allowed(saturday_night, "America/New_York")
    assert opens == epoch("2026-03-08 09:00", "America/New_York") == epoch("2026-03-08 13:00")  # EDT, UTC-4
    assert opens - saturday_night == 10 * 3600  # 11 hours on the wall clock, 10 in real time


def test_never_open_windows_give_none_and_a_hint():
    closed = WeeklyHours.parse("closed")
    assert CallingPolicy(windows=closed).next_allowed(0.0, "Asia/Shanghai") is None
    assert window_hint(closed, 0.0, "Asia/Shanghai") == "the calling windows are never open"
    hint = window_hint(WeeklyHours.parse("09:00-21:00"), epoch("2026-11-23 08:00", "Asia/Shanghai"), "Asia/Shanghai")
    assert hint == "calling window opens in 1:00:00 (Mon 09:00 Asia/Shanghai)"


def test_unknown_time_zone_is_an_error_naming_it():
    with pytest.raises(ValueError, match="unknown time zone 'Asia/Pekin'"):
        CallingPolicy().next_allowed(0.0, "Asia/Pekin")


# --- frequency cap -------------------------------------------------------------------------------------


def test_under_the_cap_calls_now():
    policy = CallingPolicy(max_per_number=3, per_seconds=3600)
    assert policy.cap_free_at(10_000.0, []) == 10_000.0
    assert policy.cap_free_at(10_000.0, [9_000.0, 9_500.0]) == 10_000.0
    # Attempts older than the period do not count.
    assert policy.cap_free_at(10_000.0, [1_000.0, 2_000.0, 6_400.0, 9_000.0, 9_500.0]) == 10_000.0


def test_at_the_cap_waits_until_the_oldest_counted_attempt_leaves_the_period():
    policy = CallingPolicy(max_per_number=3, per_seconds=3600)
    assert policy.cap_free_at(10_000.0, [9_500.0, 7_000.0, 9_000.0]) == 7_000.0 + 3600
    # Over the cap (two campaigns raced): as many must leave as are over.
    assert policy.cap_free_at(10_000.0, [7_000.0, 8_000.0, 9_000.0, 9_500.0]) == 8_000.0 + 3600
    assert CallingPolicy(max_per_number=1, per_seconds=60).cap_free_at(100.0, [90.0]) == 150.0


def test_cap_must_allow_at_least_one_call():
    with pytest.raises(ValueError, match="at least 1"):
        CallingPolicy(max_per_number=0)


# --- durations and window specs ----------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "seconds"), [
    ("90", 90.0), ("90s", 90.0), ("30m", 1800.0), ("2h", 7200.0), ("1d", 86400.0), (" 1.5H ", 5400.0), ("0s", 0.0),
])
def test_parse_duration(text, seconds):
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(("text", "message"), [
    ("", "not a duration"), ("soon", "not a duration"), ("5ms", "not a duration"), ("1w", "not a duration"),
    ("-5m", "cannot be negative"), ("nan", "not a duration"), ("inf", "not a duration"), ("1e400s", "not a duration"),
])
def test_parse_duration_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_duration(text)


def test_parse_windows_every_day_and_per_weekday():
    assert parse_windows("09:00-21:00") == WeeklyHours.parse("09:00-21:00")
    weekly = parse_windows("mon-fri=09:00-12:00,13:00-21:00; sat-sun=10:00-18:00;")
    assert weekly.describe() == "mon-fri 09:00-12:00, 13:00-21:00; sat-sun 10:00-18:00"


@pytest.mark.parametrize(("spec", "message"), [
    ("mon-fri 09:00-21:00;sat=10:00-18:00", "expected DAYS=HH:MM-HH:MM"),
    ("mon=09:00-12:00;mon=13:00-18:00", "mon is given twice"),
    ("mon-fri=09:00-21:00;fri=10:00-12:00", "fri is given twice"),
    ("mon-fri=21:00-09:00", "ends before it starts"),
    ("someday=09:00-10:00", "not a weekday"),
])
def test_parse_windows_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_windows(spec)


def test_outcome_sets_are_consistent():
    assert not rules.RETRYABLE_DEFAULT & rules.NEVER_RETRY
    assert rules.INVALID_NUMBER in rules.UNANSWERED and rules.INVALID_NUMBER not in rules.RETRYABLE_DEFAULT
