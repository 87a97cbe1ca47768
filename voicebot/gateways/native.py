"""voicebot's own gateway protocol (path /native, optional subprotocol `voicebot.v1`).

Full reference: docs/native-protocol.md. In short:

Client -> server: text JSON control frames discriminated by `type`:
`start` (must come first: `call_id`, optional `plan`, `variables`, `caller`, `language`, required
`audio: {"encoding": "pcm16"|"mulaw"|"alaw", "rate": 8000|16000}`), `dtmf` (`digit`), `mark` (`name`:
everything we sent before our mark of that name has played) and `hangup` (`reason`). Binary frames are
caller audio in the declared encoding, at most 1 s each; pcm16 is little-endian and of even length.
Unknown fields are refused (it is our protocol: a typo should fail loudly, not be ignored).

Server -> client: binary robot audio in the call's encoding and rate, one frame per 20 ms (the last of a
prompt may be shorter), then `{"type":"mark","name":"<prompt_id>#<n>"}` with n counting prompts on the
connection from 1; `{"type":"clear"}` (flush queued audio: barge-in), `{"type":"transfer",...}`,
`{"type":"hangup",...}` and, before the server closes on an error, `{"type":"error","code","message"}`.

Query parameters read: `plan` (used when the start frame names no plan).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError

from ..audio import alaw_decode, alaw_encode, resample, ulaw_decode, ulaw_encode
from ..dialog.plan import LANGUAGE, NAME
from ..errors import VoicebotError
from ..events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from .base import (
    CLOSE_BAD_DATA,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    Codec,
    Frame,
    Inbound,
    MarkReached,
    Outbound,
    ProtocolError,
    mark_name,
)

ENCODINGS = ("pcm16", "mulaw", "alaw")
RATES = (8000, 16000)
FRAME_MS = 20  # robot audio frame length we send
MAX_AUDIO_SECONDS = 1  # longest caller audio frame we accept
CALL_ID = r"^[A-Za-z0-9._:-]{1,128}$"
DTMF_DIGIT = r"^[0-9*#A-D]$"


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Audio(_Msg):
    # Checked by hand after parsing so an unsupported format gets its own close code.
    encoding: str
    rate: int


class _Start(_Msg):
    type: Literal["start"]
    call_id: str = Field(pattern=CALL_ID)
    plan: str = Field(default="", pattern=r"^$|" + NAME)
    variables: dict[Annotated[str, Field(pattern=NAME)], str | int | float | bool | None] = Field(
        default_factory=dict, max_length=256
    )
    caller: str = Field(default="", max_length=64)
    language: str = Field(default="", pattern=r"^$|" + LANGUAGE)
    audio: _Audio


class _Dtmf(_Msg):
    type: Literal["dtmf"]
    digit: str = Field(pattern=DTMF_DIGIT)


class _Mark(_Msg):
    type: Literal["mark"]
    name: str = Field(min_length=1, max_length=256)


class _Hangup(_Msg):
    type: Literal["hangup"]
    reason: str = Field(default="hangup", max_length=256)


_Control = Annotated[_Start | _Dtmf | _Mark | _Hangup, Field(discriminator="type")]


class NativeCodec(Codec):
    """voicebot's own websocket protocol: JSON control frames plus binary audio in the declared encoding."""

    name: ClassVar[str] = "native"
    path: ClassVar[str] = "/native"
    subprotocols: ClassVar[tuple[str, ...]] = ("voicebot.v1",)
    max_frame_bytes: ClassVar[int] = 64 * 1024

    _control: ClassVar[TypeAdapter[Any]] = TypeAdapter(_Control)

    def __init__(self, *, query: Mapping[str, str] | None = None) -> None:
        super().__init__(query=query)
        self.encoding = ""
        self.ended = False
        self._marks = 0

    # --- inbound ----------------------------------------------------------------------------------

    def decode(self, frame: Frame) -> list[Inbound]:
        """Parse one client frame into typed messages; raise ProtocolError when it breaks the protocol."""
        if isinstance(frame, str):
            if len(frame.encode()) > self.max_frame_bytes:
                raise ProtocolError(f"native: control frame over {self.max_frame_bytes} bytes",
                                    close_code=CLOSE_TOO_BIG)
            return self._decode_control(frame)
        if isinstance(frame, (bytes, bytearray, memoryview)):
            return self._decode_audio(bytes(frame))
        raise ProtocolError(f"native: frame must be str or bytes, not {type(frame).__name__}")

    def _decode_control(self, text: str) -> list[Inbound]:
        try:
            msg = self._control.validate_json(text)
        except ValidationError as err:
            raise ProtocolError(f"native: bad control frame: {describe(err)}", close_code=close_code_for(err)) from err
        if self.ended:
            return []  # frames racing the client's own hangup carry nothing we can act on
        if isinstance(msg, _Start):
            return [self._start(msg)]
        self.require_started()
        if isinstance(msg, _Dtmf):
            return [Dtmf(msg.digit)]
        if isinstance(msg, _Mark):
            return [MarkReached(msg.name)]
        self.ended = True
        return [CallerHangup(msg.reason)]

    def _start(self, msg: _Start) -> CallStart:
        if self.started is not None:
            raise ProtocolError("native: a second start frame on one connection")
        if msg.audio.encoding not in ENCODINGS or msg.audio.rate not in RATES:
            raise ProtocolError(
                f"native: unsupported audio {msg.audio.encoding}/{msg.audio.rate}; "
                f"encodings {ENCODINGS}, rates {RATES}",
                close_code=CLOSE_UNSUPPORTED,
            )
        self.encoding = msg.audio.encoding
        self.started = CallStart(
            call_id=msg.call_id,
            rate=msg.audio.rate,
            plan=msg.plan or self.query.get("plan", ""),
            variables=dict(msg.variables),
            caller=msg.caller,
            language=msg.language,
        )
        return self.started

    def _decode_audio(self, data: bytes) -> list[Inbound]:
        if self.ended:
            return []
        start = self.require_started()
        width = 2 if self.encoding == "pcm16" else 1
        limit = start.rate * width * MAX_AUDIO_SECONDS
        if len(data) > limit:
            raise ProtocolError(f"native: audio frame of {len(data)} bytes is over 1 s ({limit} bytes)",
                                close_code=CLOSE_TOO_BIG)
        if width == 2 and len(data) % 2:
            raise ProtocolError(f"native: pcm16 frame of odd length {len(data)}", close_code=CLOSE_BAD_DATA)
        if not data:
            return []
        if self.encoding == "mulaw":
            data = ulaw_decode(data)
        elif self.encoding == "alaw":
            data = alaw_decode(data)
        return [AudioChunk(pcm=data, rate=start.rate)]

    # --- outbound ---------------------------------------------------------------------------------

    def encode(self, message: Outbound) -> list[Frame]:
        """Frames carrying one of our actions to the client."""
        if isinstance(message, Play):
            return self._play(message)
        if isinstance(message, StopPlayback):
            return [_json({"type": "clear"})]
        if isinstance(message, Transfer):
            return [_json({"type": "transfer", "target": message.target, "reason": message.reason,
                           "context": message.context})]
        if isinstance(message, Hangup):
            return [_json({"type": "hangup", "reason": message.reason})]
        raise TypeError(f"native: cannot encode {type(message).__name__}")

    def _play(self, play: Play) -> list[Frame]:
        start = self.require_started()
        pcm = play.pcm if play.rate == start.rate else resample(play.pcm, from_rate=play.rate, to_rate=start.rate)
        if self.encoding == "mulaw":
            data, step = ulaw_encode(pcm), start.rate * FRAME_MS // 1000
        elif self.encoding == "alaw":
            data, step = alaw_encode(pcm), start.rate * FRAME_MS // 1000
        else:
            data, step = pcm, start.rate * FRAME_MS // 1000 * 2
        frames: list[Frame] = [data[i:i + step] for i in range(0, len(data), step)]
        self._marks += 1
        frames.append(_json({"type": "mark", "name": mark_name(play.prompt_id, self._marks)}))
        return frames

    @staticmethod
    def error_frame(err: VoicebotError) -> str:
        """The text frame that tells the client why the server is about to close."""
        return _json({"type": "error", "code": err.code, "message": err.message})


def _json(obj: dict[str, Any]) -> str:
    # default=str: a transfer context may hold dates or paths; the agent wants them readable, not a crash.
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), default=str)


def describe(err: ValidationError) -> str:
    """The first validation problem in one line (pydantic's own text is long and multi-line)."""
    first = err.errors(include_url=False)[0]
    where = ".".join(str(p) for p in first["loc"]) or "frame"
    return f"{where}: {first['msg']}"


def close_code_for(err: ValidationError) -> int:
    """Unknown message types break the protocol (1002); anything else is bad data (1007)."""
    kinds = {e["type"] for e in err.errors(include_url=False)}
    return CLOSE_PROTOCOL if kinds & {"union_tag_invalid", "union_tag_not_found"} else CLOSE_BAD_DATA
