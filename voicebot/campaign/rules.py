"""Outbound compliance and retry rules: pure decisions over times and outcomes, no I/O."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from ..hours import WeeklyHours, zone

# What the network says when a call is not answered; the dialer reports these as the attempt's outcome.
BUSY, NO_ANSWER, POWERED_OFF, INVALID_NUMBER, FAILED = "busy", "no_answer", "powered_off", "invalid_number", "failed"
# Answered, but no conversation with the callee reached an outcome.
VOICEMAIL, DROPPED = "voicemail", "dropped"
# Set by the runner itself.
DNC_SKIPPED, INTERRUPTED, CANCELLED, NO_WINDOW = "dnc_skipped", "interrupted", "cancelled", "no_calling_window"
DO_NOT_CALL = "do_not_call"
UNANSWERED = frozenset({BUSY, NO_ANSWER, POWERED_OFF, INVALID_NUMBER, FAILED})
# Retry only what says nothing about the callee's wishes. Refusal, wrong number, do-not-call and every
# outcome the plan reached in conversation are final.
RETRYABLE_DEFAULT = frozenset({BUSY, NO_ANSWER, POWERED_OFF, FAILED, DROPPED, VOICEMAIL})
NEVER_RETRY = frozenset({INVALID_NUMBER, DNC_SKIPPED, DO_NOT_CALL, "refused", "wrong_number", CANCELLED})


def parse_duration(text: str) -> float:
    """'90', '90s', '30m', '2h', '1d' → seconds; ValueError otherwise."""
    text = text.strip().lower()
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    scale = units.get(text[-1:])
    number = text[:-1] if scale else text
    try:
        value = float(number) * (scale or 1)
    except ValueError:
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h") from None
    if not math.isfinite(value):  # 'nan' and 'inf' parse as floats; stored as next_at they break every comparison
        raise ValueError(f"{text!r} is not a duration like 90s, 30m, 2h")
    if value < 0:
        raise ValueError(f"{text!r}: a duration cannot be negative")
    return value


@dataclass(frozen=True)
class RetryPolicy:
    """Which outcomes get another attempt, after how long, up to how many attempts in all."""

    max_attempts: int = 3
    delay: float = 1800.0  # seconds between attempts
    retryable: frozenset[str] = RETRYABLE_DEFAULT

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max attempts must be at least 1")
        if forbidden := sorted(self.retryable & NEVER_RETRY):
            raise ValueError(f"these outcomes are never retried: {', '.join(forbidden)}")

    def retry_at(self, outcome: str, attempts: int, now: float) -> float | None:
        """When to try again (epoch seconds), or None when the contact is finished."""
        if outcome not in self.retryable or attempts >= self.max_attempts:
            return None
        return now + self.delay


@dataclass(frozen=True)
class CallingPolicy:
    """When a callee may be called: weekly windows in their own time zone, and a cap per number."""

    windows: WeeklyHours = field(default_factory=lambda: WeeklyHours.parse("09:00-21:00"))
    max_per_number: int = 3  # attempts to one number, over all campaigns in the database...
    per_seconds: float = 86400.0  # ...within this rolling period

    def __post_init__(self) -> None:
        if self.max_per_number < 1:  # 0 would leave no attempt ever allowed (and no sensible "free at")
            raise ValueError("max calls per number must be at least 1")
        if not 0 <= self.per_seconds < math.inf:
            raise ValueError("the frequency cap's period must be a finite, non-negative duration")

    def next_allowed(self, now: float, timezone: str) -> float | None:
        """`now` if it is inside the callee's window, else the start of the next one; None if never."""
        tz = zone(timezone)
        local = datetime.fromtimestamp(now, UTC).astimezone(tz)
        opening = self.windows.next_open(local)
        return None if opening is None else max(now, opening.timestamp())

    def cap_free_at(self, now: float, recent: list[float]) -> float:
        """`now` if the number is under its cap, else when its oldest counted attempt leaves the period."""
        counted = sorted(t for t in recent if t > now - self.per_seconds)
        if len(counted) < self.max_per_number:
            return now
        return counted[len(counted) - self.max_per_number] + self.per_seconds


def local_time(now: float, timezone: str) -> str:
    """Epoch seconds as the callee's wall-clock time, for status displays."""
    return datetime.fromtimestamp(now, UTC).astimezone(zone(timezone)).strftime("%a %H:%M")


def window_hint(windows: WeeklyHours, now: float, timezone: str) -> str:
    """Why nothing is being dialled: when the window opens next."""
    at = CallingPolicy(windows=windows).next_allowed(now, timezone)
    if at is None:
        return "the calling windows are never open"
    delta = timedelta(seconds=round(at - now))
    return f"calling window opens in {delta} ({local_time(at, timezone)} {timezone})"
