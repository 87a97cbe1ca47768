"""The call record: every turn of a call and how it ended, as the store keeps it."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

_DIGITS = re.compile(r"\d")


def mask_number(number: str) -> str:
    """Hide the identifying middle of a phone number: 13812345678 -> 138****5678, +8613812345678 -> +86138****5678."""
    count = len(_DIGITS.findall(number))
    if count < 7:
        return "*" * len(number)
    # Mobile-length numbers (with any country code) keep their prefix; shorter ones only the last four.
    keep_head, keep_tail = (count - 8 if count >= 11 else 0), 4
    out, seen = [], 0
    for ch in number:
        if ch.isdigit():
            seen += 1
            out.append(ch if seen <= keep_head or seen > count - keep_tail else "*")
        else:
            out.append(ch)
    return "".join(out)


def subscriber_key(number: str) -> str:
    """A phone number as lookups compare it: its last 10 digits, so +86 138..., 0086 138... and 138... agree.

    Ten digits identify a subscriber in China (11-digit mobiles all start with 1) and North America.
    """
    return "".join(_DIGITS.findall(number))[-10:]


def mask_value(value: object) -> str:
    """Mask a personal value for events and records: numbers as by mask_number, text keeps its first character."""
    text = "" if value is None else str(value)
    if sum(ch.isdigit() for ch in text) >= 7:
        return mask_number(text)
    return text[:1] + "*" * (len(text) - 1) if text else ""


@dataclass
class Turn:
    """One exchange: the prompt we played in a state and what the caller answered."""

    index: int
    state: str
    prompt_id: str = ""
    prompt: str = ""
    heard: str = ""
    confidence: float = 0.0
    source: str = ""  # "speech", "dtmf", "" when nothing came (no-input)
    intent: str = ""  # intent name, "nomatch" or "noinput"
    intent_confidence: float = 0.0
    slots: dict[str, Any] = field(default_factory=dict)
    next_state: str = ""
    started_at: float = 0.0  # seconds since the call began
    speech_ended_at: float | None = None
    # Caller's end of speech -> our reply's audio ready, in seconds: the VAD's end-silence wait, the ASR's
    # final result, the dialog step and TTS. (Keys and typed text: from the input to the reply.)
    reply_latency: float | None = None
    barged_in: bool = False
    heard_prompt_until: float | None = None  # seconds of the prompt played before barge-in
    # Prompts the gateway confirmed it played in full (marks), where its protocol has marks.
    played: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form."""
        return asdict(self)


@dataclass
class CallRecord:
    """Everything that happened on one call; `outcome` is set when it ends."""

    call_id: str
    plan: str
    plan_version: str
    language: str
    direction: str = "inbound"
    caller: str = ""  # always masked
    variables: dict[str, Any] = field(default_factory=dict)
    started_at: str = ""  # ISO-8601 wall-clock time
    ended_at: str = ""
    duration: float = 0.0
    outcome: str = ""
    ended_by: str = ""  # "robot", "caller", "transfer", "error"
    transfer: dict[str, Any] | None = None
    turns: list[Turn] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready form (asdict converts the turns too)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CallRecord:
        """Inverse of to_dict."""
        fields = dict(data)
        turns = [Turn(**t) for t in fields.pop("turns", [])]
        return cls(**fields, turns=turns)
