"""Twilio Media Streams (path /twilio), per https://www.twilio.com/docs/voice/media-streams/websocket-messages.

In (JSON text frames, discriminated by `event`; fields Twilio may add are ignored):
`connected` (first; ignored), `start` (`start.callSid` -> call id, `start.streamSid`,
`start.customParameters` -> variables, except `plan`, `caller` and `language`, which fill their own fields;
`start.mediaFormat` must be audio/x-mulaw, 8000 Hz, 1 channel, else close 1003), `media` (`media.payload`
base64 μ-law, at most 1 s per message; only track `inbound` is caller audio, `outbound` media is ignored),
`dtmf` (`dtmf.digit`), `mark` (`mark.name` -> MarkReached), `stop` -> CallerHangup. Frames after `stop`
are ignored. Every message but `connected` names the stream: a different `streamSid` is refused.

Ordering (tolerant, documented): `sequenceNumber` is a decimal string; gaps are accepted (the docs' own
examples skip numbers) and a missing one is accepted (some Twilio-compatible gateways omit it), but a
repeat or a decrease closes the connection: a websocket is an ordered, reliable stream, so that can only be
a broken or replaying peer.

Out: `media` messages of 20 ms (160 bytes μ-law, the last of a prompt may be shorter), then a `mark`
named `<prompt_id>#<n>` (n counts prompts on the connection). Twilio echoes the mark when the audio before
it has played, and also when a `clear` drops it, so a mark is "played or flushed". StopPlayback -> `clear`.
Twilio has no in-stream transfer or hangup: encode(Transfer) and encode(Hangup) return [], and the server
then closes the websocket; a real deployment would redirect the call with Twilio's REST API (TwiML <Dial>),
which is out of scope here.

Query parameters: none (Twilio does not pass query strings on <Stream> URLs; use <Parameter> instead).
The websocket upgrade request carries X-Twilio-Signature: check it with `valid_twilio_signature`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
from collections.abc import Mapping
from types import MappingProxyType
from typing import Annotated, Any, ClassVar, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, TypeAdapter, ValidationError

from ..audio import resample, ulaw_decode, ulaw_encode
from ..events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from .base import (
    CLOSE_BAD_DATA,
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
from .native import DTMF_DIGIT, close_code_for, describe

RATE = 8000
FRAME_BYTES = 160  # 20 ms of μ-law at 8 kHz, the size Twilio itself sends
MAX_PAYLOAD_BYTES = RATE  # 1 s of μ-law per media message
_MAX_PAYLOAD_B64 = 4 * -(-MAX_PAYLOAD_BYTES // 3)
_SPECIAL_KEYS = ("plan", "caller", "language")
_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
_DEFAULT_PORTS = {"https": 443, "wss": 443, "http": 80, "ws": 80}


class _Msg(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class _Connected(_Msg):
    event: Literal["connected"]


class _Streamed(_Msg):
    streamSid: StrictStr = Field(min_length=1, max_length=128)
    sequenceNumber: StrictStr | None = Field(default=None, pattern=r"^[0-9]{1,18}$")


class _MediaFormat(_Msg):
    # Values checked by hand so an unsupported format gets close code 1003.
    encoding: StrictStr
    sampleRate: StrictInt
    channels: StrictInt = 1


class _StartBody(_Msg):
    streamSid: StrictStr = Field(min_length=1, max_length=128)
    callSid: StrictStr = Field(min_length=1, max_length=128)
    accountSid: StrictStr = ""
    tracks: list[StrictStr] = Field(default_factory=list)
    mediaFormat: _MediaFormat
    customParameters: dict[StrictStr, StrictStr] = Field(default_factory=dict, max_length=256)


class _Start(_Streamed):
    event: Literal["start"]
    start: _StartBody


class _MediaBody(_Msg):
    track: StrictStr = "inbound"
    payload: StrictStr


class _Media(_Streamed):
    event: Literal["media"]
    media: _MediaBody


class _DtmfBody(_Msg):
    digit: StrictStr = Field(pattern=DTMF_DIGIT)


class _Dtmf(_Streamed):
    event: Literal["dtmf"]
    dtmf: _DtmfBody


class _MarkBody(_Msg):
    name: StrictStr = Field(min_length=1, max_length=256)


class _Mark(_Streamed):
    event: Literal["mark"]
    mark: _MarkBody


class _Stop(_Streamed):
    event: Literal["stop"]


_Event = Annotated[_Connected | _Start | _Media | _Dtmf | _Mark | _Stop, Field(discriminator="event")]


class TwilioCodec(Codec):
    """Twilio Media Streams: JSON text frames with base64 μ-law audio at 8 kHz."""

    name: ClassVar[str] = "twilio"
    path: ClassVar[str] = "/twilio"
    max_frame_bytes: ClassVar[int] = 64 * 1024

    _events: ClassVar[TypeAdapter[Any]] = TypeAdapter(_Event)

    def __init__(self, *, query: Mapping[str, str] | None = None) -> None:
        super().__init__(query=query)
        self.ended = False
        self._seq = -1
        self._marks = 0

    # --- inbound ----------------------------------------------------------------------------------

    def decode(self, frame: Frame) -> list[Inbound]:
        """Parse one Twilio message into typed messages; raise ProtocolError when it breaks the protocol."""
        if not isinstance(frame, str):
            raise ProtocolError("twilio: binary frame; Media Streams sends JSON text only",
                                close_code=CLOSE_UNSUPPORTED)
        if len(frame.encode()) > self.max_frame_bytes:
            raise ProtocolError(f"twilio: message over {self.max_frame_bytes} bytes", close_code=CLOSE_TOO_BIG)
        try:
            msg = self._events.validate_json(frame)
        except ValidationError as err:
            raise ProtocolError(f"twilio: bad message: {describe(err)}", close_code=close_code_for(err)) from err
        if self.ended:
            return []  # Twilio closes after stop; anything racing it carries nothing to act on
        if isinstance(msg, _Connected):
            if self.started is not None:
                raise ProtocolError("twilio: connected after start")
            return []
        self._check_order(msg)
        if isinstance(msg, _Start):
            return [self._start(msg)]
        start = self.require_started()
        if msg.streamSid != start.stream_id:
            raise ProtocolError(f"twilio: message for stream {msg.streamSid!r}, this is {start.stream_id!r}")
        if isinstance(msg, _Media):
            return self._media(msg.media)
        if isinstance(msg, _Dtmf):
            return [Dtmf(msg.dtmf.digit)]
        if isinstance(msg, _Mark):
            return [MarkReached(msg.mark.name)]
        self.ended = True
        return [CallerHangup("stop")]

    def _check_order(self, msg: _Streamed) -> None:
        if msg.sequenceNumber is None:
            return
        seq = int(msg.sequenceNumber)
        if seq <= self._seq:
            raise ProtocolError(f"twilio: sequenceNumber {seq} after {self._seq} (repeated or out of order)")
        self._seq = seq

    def _start(self, msg: _Start) -> CallStart:
        if self.started is not None:
            raise ProtocolError("twilio: a second start message on one connection")
        body = msg.start
        fmt = body.mediaFormat
        if (fmt.encoding, fmt.sampleRate, fmt.channels) != ("audio/x-mulaw", RATE, 1):
            raise ProtocolError(
                f"twilio: unsupported mediaFormat {fmt.encoding}/{fmt.sampleRate}/{fmt.channels}; "
                "expected audio/x-mulaw/8000/1",
                close_code=CLOSE_UNSUPPORTED,
            )
        if body.streamSid != msg.streamSid:
            raise ProtocolError(f"twilio: start names stream {body.streamSid!r} inside, {msg.streamSid!r} outside")
        params = dict(body.customParameters)
        special = {key: params.pop(key, "") for key in _SPECIAL_KEYS}
        self.started = CallStart(
            call_id=body.callSid,
            rate=RATE,
            plan=special["plan"],
            variables=params,
            caller=special["caller"],
            language=special["language"],
            stream_id=body.streamSid,
        )
        return self.started

    def _media(self, media: _MediaBody) -> list[Inbound]:
        if media.track != "inbound":
            return []  # our own audio echoed back (tracks="both_tracks"): not the caller
        if len(media.payload) > _MAX_PAYLOAD_B64:
            raise ProtocolError(f"twilio: media payload over {MAX_PAYLOAD_BYTES} bytes", close_code=CLOSE_TOO_BIG)
        try:
            data = base64.b64decode(media.payload, validate=True)
        except binascii.Error as err:
            raise ProtocolError(f"twilio: media payload is not base64: {err}", close_code=CLOSE_BAD_DATA) from err
        if len(data) > MAX_PAYLOAD_BYTES:  # base64 rounds up to 3 bytes: the text check alone lets 2 more in
            raise ProtocolError(f"twilio: media payload over {MAX_PAYLOAD_BYTES} bytes", close_code=CLOSE_TOO_BIG)
        if not data:
            return []
        return [AudioChunk(pcm=ulaw_decode(data), rate=RATE)]

    # --- outbound ---------------------------------------------------------------------------------

    def encode(self, message: Outbound) -> list[Frame]:
        """Twilio messages carrying one of our actions (none for Transfer and Hangup: see module doc)."""
        if isinstance(message, (Transfer, Hangup)):
            return []
        sid = self.require_started().stream_id
        if isinstance(message, StopPlayback):
            return [_json({"event": "clear", "streamSid": sid})]
        if isinstance(message, Play):
            pcm = message.pcm if message.rate == RATE else resample(message.pcm, from_rate=message.rate, to_rate=RATE)
            data = ulaw_encode(pcm)
            frames: list[Frame] = [
                _json({"event": "media", "streamSid": sid,
                       "media": {"payload": base64.b64encode(data[i:i + FRAME_BYTES]).decode("ascii")}})
                for i in range(0, len(data), FRAME_BYTES)
            ]
            self._marks += 1
            frames.append(_json({"event": "mark", "streamSid": sid,
                                 "mark": {"name": mark_name(message.prompt_id, self._marks)}}))
            return frames
        raise TypeError(f"twilio: cannot encode {type(message).__name__}")


def _json(obj: dict[str, Any]) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


# --- request signatures -------------------------------------------------------------------------


def twilio_signature(auth_token: str, url: str, params: Mapping[str, str] = _NO_PARAMS) -> str:
    """Twilio's X-Twilio-Signature: base64 HMAC-SHA1 of the URL plus the sorted POST params as key+value."""
    data = url + "".join(key + params[key] for key in sorted(params))
    digest = hmac.new(auth_token.encode(), data.encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def valid_twilio_signature(auth_token: str, url: str, params: Mapping[str, str], signature: str) -> bool:
    """True when `signature` is Twilio's for this URL and params (constant-time; tolerant of default ports)."""
    if not auth_token or not signature:
        return False
    given = signature.encode()
    # Twilio's own helpers accept the URL with and without its port, since proxies add or drop it.
    ok = False
    for candidate in _port_variants(url):
        # No early exit: the work done does not depend on which candidate matched.
        ok |= hmac.compare_digest(twilio_signature(auth_token, candidate, params).encode(), given)
    return ok


def _port_variants(url: str) -> list[str]:
    """The URL as given, without its port, and with the scheme's default port."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        return [url]
    netloc = parts.netloc
    if port is not None:
        return [url, urlunsplit(parts._replace(netloc=netloc[: netloc.rfind(":")]))]
    if parts.scheme in _DEFAULT_PORTS and netloc:
        return [url, urlunsplit(parts._replace(netloc=f"{netloc}:{_DEFAULT_PORTS[parts.scheme]}"))]
    return [url]
