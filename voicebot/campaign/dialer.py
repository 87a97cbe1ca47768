"""What the campaign runner needs from a dialer: place one call, run its dialog, say how it ended."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..record import CallRecord


@dataclass(frozen=True)
class OutboundCall:
    """One attempt to reach one contact."""

    campaign: str
    attempt_id: int
    attempt: int  # 1 for the first try
    contact_id: str
    phone: str
    language: str  # "" for the plan's first language
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def call_id(self) -> str:
        """A call id that names the attempt, unique within the campaign database."""
        return f"{self.campaign}-{self.attempt_id}"


@dataclass(frozen=True)
class DialResult:
    """How the attempt ended: a network outcome (busy...), `voicemail`, or the dialog's own outcome."""

    outcome: str
    record: CallRecord | None = None
    ring_seconds: float = 0.0
    talk_seconds: float = 0.0
    detail: str = ""  # e.g. why answering-machine detection decided as it did


class Dialer(Protocol):
    """Places calls; used as `async with dialer:` around a whole campaign run."""

    name: str

    async def __aenter__(self) -> Dialer: ...
    async def __aexit__(self, *exc: object) -> None: ...

    async def dial(self, call: OutboundCall, *, emit: Callable[[object], None]) -> DialResult:
        """Ring the contact and, when a person answers, run the plan; `emit` sees every call event."""
        ...
