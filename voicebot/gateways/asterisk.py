"""Asterisk chan_websocket (20.16+/21.11+/22.6+/23): raw codec media in binary frames, text control lines.

Asterisk connects to us (dial string `WebSocket/<client>/c(ulaw)v(plan=...)`), or we are dialled
through ARI externalMedia. Source of truth: docs.asterisk.org "WebSocket" channel driver page and
channels/chan_websocket.c in asterisk/asterisk.

We accept, as TEXT frames, either the plain-text form (`MEDIA_START connection_id:.. channel:..
channel_id:.. format:ulaw optimal_frame_size:160 ptime:20`) or the JSON form
(`{"event":"MEDIA_START",...,"channel_variables":{...}}`, chan_websocket.conf
`control_message_format = json` or the `f(json)` dial option, 20.18+/22.8+/23.2+). Both are tokenised
into fields and validated by one pydantic model per event. Mapping:

- MEDIA_START -> CallStart (call_id = channel_id, else connection_id; stream_id = connection_id;
  rate 8000 for ulaw/alaw/slin, 16000 for slin16; other formats are refused as unsupported).
- DTMF_END -> Dtmf; MEDIA_XOFF/MEDIA_XON -> FlowControl(True/False) and `codec.paused`;
  MEDIA_MARK_PROCESSED <name> -> MarkReached(name); HANGUP -> CallerHangup (current Asterisk signals
  hang-up by closing the websocket instead; the server maps the close).
- STATUS, QUEUE_DRAINED, MEDIA_BUFFERING_COMPLETED and ERROR are documented notifications we never
  ask for or cannot act on: ignored (ERROR text is kept in `codec.last_error`). Anything else is a
  ProtocolError.
- BINARY frames -> AudioChunk (PCM16 at the line rate). slin/slin16 are taken as little-endian,
  which is what Asterisk emits on x86 and ARM hosts.

We send the control format Asterisk used for MEDIA_START: Play -> binary frames of the negotiated
format, each a whole number of `optimal_frame_size` frames (the tail padded with silence, since
Asterisk drops partial frames outside media buffering) and at most 65,500 bytes (Asterisk closes
the socket on larger messages), then `MARK_MEDIA <prompt_id>#<n>` (n counts prompts; Asterisk
echoes it when the audio before it has left the queue; FLUSH_MEDIA discards it unechoed);
StopPlayback -> FLUSH_MEDIA; Hangup -> HANGUP. chan_websocket has no transfer: Transfer -> [] (redirect
the channel through ARI or the dialplan). The server must stop sending media while `codec.paused`.

Query parameters (dial string `v(...)`): plan, caller, language, answer (1/true: the channel was
dialled with `n`, so `greeting_frames()` returns ANSWER for the server to send right after
MEDIA_START); every other parameter except token/auth becomes a call variable.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..audio import alaw_decode, alaw_encode, as_array, resample, ulaw_decode, ulaw_encode
from ..events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from .base import (
    CLOSE_BAD_DATA,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    Codec,
    FlowControl,
    Frame,
    Inbound,
    MarkReached,
    Outbound,
    ProtocolError,
    mark_name,
)

MAX_MESSAGE_BYTES = 65_500  # Asterisk's websocket layer closes the call on anything larger
MAX_COMMAND_BYTES = 128  # chan_websocket ignores longer TEXT commands (MAX_TEXT_MESSAGE_LEN)
_RESERVED_QUERY = frozenset({"plan", "caller", "language", "answer", "token", "auth"})
_TRUE, _FALSE = frozenset({"1", "true", "yes"}), frozenset({"", "0", "false", "no"})


class _Format:
    """One negotiated Asterisk format: its line rate, bytes per sample and PCM16 converters."""

    def __init__(self, rate: int, width: int, to_pcm: Callable[[bytes], bytes],
                 from_pcm: Callable[[bytes], bytes]) -> None:
        self.rate, self.width, self.to_pcm, self.from_pcm = rate, width, to_pcm, from_pcm


def _same(data: bytes) -> bytes:
    return bytes(data)


_FORMATS = {
    "ulaw": _Format(8000, 1, ulaw_decode, ulaw_encode),
    "alaw": _Format(8000, 1, alaw_decode, alaw_encode),
    "slin": _Format(8000, 2, _same, _same),
    "slin16": _Format(16000, 2, _same, _same),
}

# --- events Asterisk sends, one model each; extra fields allowed for newer Asterisk versions ----


class _Event(BaseModel):
    model_config = ConfigDict(extra="allow")

    channel_id: str = ""


class MediaStart(_Event):
    """MEDIA_START: the websocket is bound to a channel; format and frame size are fixed."""

    event: Literal["MEDIA_START"]
    connection_id: str = Field(min_length=1)
    channel: str = ""
    format: str
    optimal_frame_size: int = Field(gt=0, le=MAX_MESSAGE_BYTES)
    ptime: int = Field(default=20, gt=0)
    channel_variables: dict[str, Any] = Field(default_factory=dict)


class DtmfEnd(_Event):
    """DTMF_END: the caller released a key."""

    event: Literal["DTMF_END"]
    digit: str = Field(pattern=r"^[0-9*#A-D]$")


class Notice(_Event):
    """Notifications without fields we use."""

    event: Literal["MEDIA_XOFF", "MEDIA_XON", "HANGUP", "QUEUE_DRAINED", "STATUS"]


class Correlated(_Event):
    """Notifications that echo an id we sent (a mark name or a buffering id)."""

    event: Literal["MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"]
    correlation_id: str = ""


class ErrorEvent(_Event):
    """ERROR: Asterisk refused one of our commands."""

    event: Literal["ERROR"]
    error_text: str = ""


AsteriskEvent = Annotated[MediaStart | DtmfEnd | Notice | Correlated | ErrorEvent, Field(discriminator="event")]
_EVENTS: TypeAdapter[Any] = TypeAdapter(AsteriskEvent)
_KNOWN = frozenset({"MEDIA_START", "DTMF_END", "MEDIA_XOFF", "MEDIA_XON", "HANGUP", "QUEUE_DRAINED",
                    "STATUS", "MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED", "ERROR"})

# --- the plain-text tokenizer ---------------------------------------------------------------------

_NAME = re.compile(r"([A-Z][A-Z_]*)(?:\s+|$)")
_FIELD = re.compile(r"([A-Za-z_][A-Za-z0-9_]*):(\S*)(?:\s+|$)")
_TAIL_FIELD = {"ERROR": "error_text"}  # free text: runs to the end of the line
_ID_EVENTS = frozenset({"MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"})  # `EVENT <id>`


def tokenize(line: str) -> dict[str, str]:
    """Split a plain-text control line (`EVENT key:value ...`) into fields, `event` included."""
    text = line.strip()
    head = _NAME.match(text)
    if head is None:
        raise ProtocolError(f"asterisk: control line does not start with an event name: {text[:60]!r}")
    fields = {"event": head.group(1)}
    rest = text[head.end():]
    if fields["event"] in _ID_EVENTS:
        if rest:
            fields["correlation_id"] = rest
        return fields
    tail = _TAIL_FIELD.get(fields["event"])
    pos = 0
    while pos < len(rest):
        match = _FIELD.match(rest, pos)
        if match is None:
            raise ProtocolError(f"asterisk: expected key:value in {fields['event']}, got {rest[pos:pos + 40]!r}")
        key = match.group(1)
        if key in fields:
            raise ProtocolError(f"asterisk: {fields['event']} repeats field {key!r}")
        if key == tail:
            fields[key] = rest[match.start(2):]
            break
        fields[key] = match.group(2)
        pos = match.end()
    return fields


def _flag(query: dict[str, str], key: str) -> bool:
    raw = query.get(key, "").strip().lower()
    if raw in _TRUE or raw in _FALSE:
        return raw in _TRUE
    raise ProtocolError(f"asterisk: query parameter {key}={raw!r} is not a boolean", close_code=CLOSE_POLICY)


class AsteriskCodec(Codec):
    """Asterisk chan_websocket: raw media in binary frames, plain-text or JSON control messages."""

    name: ClassVar[str] = "asterisk"
    path: ClassVar[str] = "/asterisk"
    max_frame_bytes: ClassVar[int] = MAX_MESSAGE_BYTES
    # chan_websocket queues at most 1000 frames (20 s) and drops whole messages beyond: stay well inside.
    max_ahead_seconds: ClassVar[float | None] = 15.0

    def __init__(self, *, query: Mapping[str, str] | None = None) -> None:
        super().__init__(query=query)
        self.json_control = False  # answer in the format Asterisk used for MEDIA_START
        self.paused = False
        self.last_error = ""
        self.channel_variables: dict[str, Any] = {}
        self._format: _Format | None = None
        self._frame_size = 0
        self._answer = False
        self._marks = 0

    # --- inbound ------------------------------------------------------------------------------

    def decode(self, frame: Frame) -> list[Inbound]:
        """Parse one websocket frame from Asterisk into typed messages."""
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return self._media(bytes(frame))
        if not isinstance(frame, str):
            raise ProtocolError(f"asterisk: frame must be text or bytes, not {type(frame).__name__}")
        if len(frame.encode()) > self.max_frame_bytes:
            raise ProtocolError("asterisk: control message too large", close_code=CLOSE_TOO_BIG)
        event = self._parse(frame)
        if isinstance(event, MediaStart):
            return [self._start(event)]
        self.require_started()
        if isinstance(event, DtmfEnd):
            return [Dtmf(event.digit)]
        if isinstance(event, Correlated):
            if event.event == "MEDIA_MARK_PROCESSED" and event.correlation_id:
                return [MarkReached(event.correlation_id)]
            return []
        if isinstance(event, ErrorEvent):
            self.last_error = event.error_text
            return []
        if event.event in ("MEDIA_XOFF", "MEDIA_XON"):
            self.paused = event.event == "MEDIA_XOFF"
            return [FlowControl(paused=self.paused)]
        if event.event == "HANGUP":
            return [CallerHangup("hangup")]
        return []  # STATUS, QUEUE_DRAINED: informational

    def _parse(self, text: str) -> Any:
        stripped = text.strip()
        if not stripped:
            raise ProtocolError("asterisk: empty control message")
        if stripped.startswith("{"):
            try:
                fields = json.loads(stripped)
            except ValueError as err:
                raise ProtocolError(f"asterisk: invalid JSON control message: {err}",
                                    close_code=CLOSE_BAD_DATA) from err
            if not isinstance(fields, dict):
                raise ProtocolError("asterisk: JSON control message is not an object")
        else:
            fields = tokenize(stripped)
        name = fields.get("event")
        if name not in _KNOWN:
            raise ProtocolError(f"asterisk: unknown control message {name!r}")
        try:
            event = _EVENTS.validate_python(fields)
        except ValidationError as err:
            problems = "; ".join(f"{'.'.join(map(str, e['loc'][1:]))}: {e['msg']}" for e in err.errors())
            raise ProtocolError(f"asterisk: bad {name}: {problems}") from err
        if isinstance(event, MediaStart):
            self.json_control = stripped.startswith("{")
        return event

    def _start(self, event: MediaStart) -> CallStart:
        if self.started is not None:
            raise ProtocolError("asterisk: second MEDIA_START on one connection")
        fmt = _FORMATS.get(event.format)
        if fmt is None:
            raise ProtocolError(f"asterisk: unsupported format {event.format!r}; dial with c(ulaw), c(alaw), "
                                "c(slin) or c(slin16)", close_code=CLOSE_UNSUPPORTED)
        if event.optimal_frame_size % fmt.width:
            raise ProtocolError(f"asterisk: optimal_frame_size {event.optimal_frame_size} is not whole "
                                f"{event.format} samples", close_code=CLOSE_BAD_DATA)
        self._answer = _flag(self.query, "answer")
        self._format, self._frame_size = fmt, event.optimal_frame_size
        self.channel_variables = dict(event.channel_variables)
        self.started = CallStart(
            call_id=event.channel_id or event.connection_id,
            rate=fmt.rate,
            plan=self.query.get("plan", ""),
            variables={k: v for k, v in self.query.items() if k not in _RESERVED_QUERY},
            caller=self.query.get("caller", ""),
            language=self.query.get("language", ""),
            stream_id=event.connection_id,
        )
        return self.started

    def _media(self, data: bytes) -> list[Inbound]:
        if len(data) > self.max_frame_bytes:
            raise ProtocolError(f"asterisk: media frame of {len(data)} bytes exceeds {self.max_frame_bytes}",
                                close_code=CLOSE_TOO_BIG)
        start = self.require_started()
        assert self._format is not None
        if len(data) % self._format.width:
            raise ProtocolError(f"asterisk: media frame of {len(data)} bytes is not whole samples",
                                close_code=CLOSE_BAD_DATA)
        if not data:
            return []
        return [AudioChunk(self._format.to_pcm(data), start.rate)]

    # --- outbound -----------------------------------------------------------------------------

    def greeting_frames(self) -> list[Frame]:
        """Frames to send right after MEDIA_START: ANSWER when the dial string asked for it (`answer=1`)."""
        return [self._command("ANSWER")] if self.started is not None and self._answer else []

    def encode(self, message: Outbound) -> list[Frame]:
        """Frames that carry one of our actions to Asterisk."""
        if isinstance(message, Play):
            return self._play(message)
        if isinstance(message, StopPlayback):
            return [self._command("FLUSH_MEDIA")]
        if isinstance(message, Hangup):
            return [self._command("HANGUP")]
        if isinstance(message, Transfer):
            return []  # chan_websocket cannot transfer: redirect the channel via ARI or the dialplan
        raise TypeError(f"asterisk: cannot encode {type(message).__name__}")

    def _play(self, play: Play) -> list[Frame]:
        start = self.require_started()
        assert self._format is not None
        pcm = play.pcm if play.rate == start.rate else resample(play.pcm, from_rate=play.rate, to_rate=start.rate)
        samples = as_array(pcm).size
        per_frame = self._frame_size // self._format.width
        pad = -samples % per_frame
        native = self._format.from_pcm(bytes(pcm) + bytes(2 * pad))
        step = MAX_MESSAGE_BYTES // self._frame_size * self._frame_size
        frames: list[Frame] = [native[i:i + step] for i in range(0, len(native), step)]
        self._marks += 1
        frames.append(self._command("MARK_MEDIA", correlation_id=mark_name(play.prompt_id, self._marks)))
        return frames

    def _command(self, command: str, *, correlation_id: str = "") -> str:
        if correlation_id and (correlation_id != correlation_id.strip() or not correlation_id.isprintable()):
            raise ProtocolError(f"asterisk: mark name {correlation_id!r} must be printable without outer spaces",
                                close_code=CLOSE_POLICY)
        if self.json_control:
            body: dict[str, str] = {"command": command}
            if correlation_id:
                body["correlation_id"] = correlation_id
            text = json.dumps(body, ensure_ascii=False, separators=(",", ":"))
        else:
            text = f"{command} {correlation_id}" if correlation_id else command
        if len(text.encode()) > MAX_COMMAND_BYTES:
            raise ProtocolError(f"asterisk: command {text[:40]!r}... exceeds {MAX_COMMAND_BYTES} bytes",
                                close_code=CLOSE_POLICY)
        return text
