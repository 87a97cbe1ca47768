"""What every gateway codec speaks: typed messages in, frames out, and a protocol error to close with."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

from ..errors import VoicebotError
from ..events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer

# Websocket close codes (RFC 6455) a codec may ask for.
CLOSE_PROTOCOL = 1002
CLOSE_UNSUPPORTED = 1003
CLOSE_BAD_DATA = 1007
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009


class ProtocolError(VoicebotError):
    """A gateway broke its protocol: bad JSON, unknown or out-of-order messages, bad sizes."""

    code = "protocol"

    def __init__(self, message: str, *, close_code: int = CLOSE_PROTOCOL) -> None:
        super().__init__(message)
        self.close_code = close_code


@dataclass(frozen=True, slots=True)
class CallStart:
    """The gateway's start of a call: who, which plan, which variables, what audio."""

    call_id: str
    rate: int
    plan: str = ""  # empty: the route's default plan
    variables: dict[str, Any] = field(default_factory=dict)
    caller: str = ""
    language: str = ""
    stream_id: str = ""  # the gateway's own id for the media stream, echoed on every frame it needs


@dataclass(frozen=True, slots=True)
class MarkReached:
    """The gateway played everything queued before mark `name`."""

    name: str


@dataclass(frozen=True, slots=True)
class FlowControl:
    """The gateway asks us to pause (True) or resume (False) sending audio."""

    paused: bool


@dataclass(frozen=True, slots=True)
class CallerHangup:
    """The gateway says the call ended on its side."""

    reason: str = "hangup"


def mark_name(prompt_id: str, n: int) -> str:
    """The mark we send after prompt `prompt_id`, the n-th prompt of the call (codecs and session agree)."""
    return f"{prompt_id}#{n}"


def prompt_of_mark(name: str) -> str:
    """The prompt id inside a mark name made by `mark_name` ("" when it is not one of ours)."""
    prompt, sep, n = name.rpartition("#")
    return prompt if sep and n.isdigit() else ""


Inbound = CallStart | AudioChunk | Dtmf | MarkReached | FlowControl | CallerHangup
Outbound = Play | StopPlayback | Transfer | Hangup
Frame = str | bytes


class Codec(ABC):
    """One connection's wire format: decode frames into typed messages, encode our actions as frames."""

    name: ClassVar[str]
    path: ClassVar[str]  # the URL path the server serves this codec on
    subprotocols: ClassVar[tuple[str, ...]] = ()
    max_frame_bytes: ClassVar[int] = 1 << 20
    # How far ahead of real time our audio may be sent; None: the gateway queues whatever we send.
    max_ahead_seconds: ClassVar[float | None] = None

    def __init__(self, *, query: Mapping[str, str] | None = None) -> None:
        self.query = dict(query or {})
        self.started: CallStart | None = None

    @abstractmethod
    def decode(self, frame: Frame) -> list[Inbound]:
        """Parse one frame; raise ProtocolError when it breaks the protocol."""

    @abstractmethod
    def encode(self, message: Outbound) -> list[Frame]:
        """Frames that carry one of our actions to the gateway (may be none)."""

    def greeting_frames(self) -> list[Frame]:
        """Frames to send right after the call starts (e.g. Asterisk's ANSWER); most protocols need none."""
        return []

    def error_frame(self, err: VoicebotError) -> Frame | None:
        """A frame telling the gateway why we are closing, where the protocol has one."""
        return None

    def require_started(self) -> CallStart:
        """The call's start, or a ProtocolError when media arrives before it."""
        if self.started is None:
            raise ProtocolError(f"{self.name}: media or control before the call started")
        return self.started
