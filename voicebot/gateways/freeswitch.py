"""FreeSWITCH over websockets: mod_audio_fork (drachtio) and mod_audio_stream (amigniter).

Both modules are started from FreeSWITCH with
``uuid_audio_fork|uuid_audio_stream <uuid> start <ws-url> mono <8k|16k> <metadata>``.

What we accept (both codecs):
- first frame: the ``<metadata>`` text, which must be a JSON object. We read the call id from
  ``callId``/``callid``/``uuid``/``call_id``, the rate from ``sampleRate``, the dialog plan, the call
  variables, the caller (``caller`` or ``from``), the language and ``mixType`` from keys of the same
  names. Query parameters ``call_id``, ``rate`` (8000 or 16000, default 8000), ``plan``, ``language``,
  ``caller`` and ``mix`` fill in what the metadata leaves out. The modules never send the rate they
  were started with, so ``rate`` must match the ``8k``/``16k`` argument. ``stereo`` is refused.
- then binary frames of L16 little-endian mono at that rate.
- later text frames come only from ``send_text``/``stop <metadata>``, which the READMEs define as
  arbitrary application data: we ignore them, except jambonz's DTMF shape
  ``{"event":"dtmf","dtmf":"5"}`` (what jambonz sends through this same module), which becomes Dtmf.
  Neither module reports DTMF by itself: without that hook, in-band DTMF detection has to hear the keys.
- mod_audio_stream only: its metadata is optional, so audio first is accepted when the URL
  carries ``call_id``.

What we send:
- mod_audio_fork: ``{"type":"playAudio","data":{"audioContentType":"raw","sampleRate":R,
  "audioContent":"<b64>"}}`` per prompt (split above ``max_play_seconds``), ``{"type":"killAudio"}``
  for StopPlayback, ``{"type":"transfer","data":{"exten","reason","handoff"}}`` for Transfer and
  ``{"type":"disconnect"}`` for Hangup. The module only raises FreeSWITCH events for these
  (``mod_audio_fork::play_audio`` with a temp file path, ``::transfer``, ``::disconnect``): the
  dialplan/ESL application must play the file, transfer or hang up.
- mod_audio_stream: ``{"type":"streamAudio","data":{"audioDataType":"raw","sampleRate":R,
  "audioData":"<b64>"}}`` (raises ``mod_audio_stream::play``). It has no flush, transfer or hangup
  message, so those encode to nothing: barge-in cannot cut a file FreeSWITCH is already playing.
"""

from __future__ import annotations

import base64
import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import AudioFormatError
from ..events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from .base import (
    CLOSE_BAD_DATA,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallStart,
    Codec,
    Frame,
    Inbound,
    Outbound,
    ProtocolError,
)

LINE_RATES = (8000, 16000)
# Rates mod_audio_fork/mod_audio_stream accept for raw playback (they map them to .r8 … .r64 files).
PLAYBACK_RATES = (8000, 16000, 24000, 32000, 48000, 64000)
DTMF_DIGITS = frozenset("0123456789*#ABCD")


# --- shared helpers (jambonz listen runs on mod_audio_fork too) ----------------------------------


def check_size(codec: Codec, frame: Frame) -> None:
    """Refuse a frame above the codec's max_frame_bytes."""
    size = len(frame) if isinstance(frame, bytes | bytearray) else len(frame.encode("utf-8"))
    if size > codec.max_frame_bytes:
        raise ProtocolError(
            f"{codec.name}: frame of {size} bytes exceeds {codec.max_frame_bytes}", close_code=CLOSE_TOO_BIG
        )


def parse_object(codec: Codec, text: str, what: str) -> dict[str, Any]:
    """Parse a text frame that must hold one JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise ProtocolError(f"{codec.name}: {what} is not valid JSON: {err}", close_code=CLOSE_BAD_DATA) from err
    if not isinstance(value, dict):
        raise ProtocolError(f"{codec.name}: {what} must be a JSON object", close_code=CLOSE_BAD_DATA)
    return value


def invalid(codec: Codec, what: str, err: ValidationError) -> ProtocolError:
    """A CLOSE_BAD_DATA error naming the first field pydantic rejected."""
    first = err.errors()[0]
    where = ".".join(str(part) for part in first["loc"]) or "message"
    return ProtocolError(f"{codec.name}: {what}: {where}: {first['msg']}", close_code=CLOSE_BAD_DATA)


def line_rate(codec: Codec, value: object) -> int:
    """The call's rate from metadata or query; 8000 or 16000, else CLOSE_UNSUPPORTED."""
    try:
        rate = int(str(value).strip())
    except ValueError as err:
        raise ProtocolError(f"{codec.name}: sample rate {value!r} is not a number", close_code=CLOSE_BAD_DATA) from err
    if rate not in LINE_RATES:
        raise ProtocolError(
            f"{codec.name}: sample rate {rate} unsupported; use one of {LINE_RATES}", close_code=CLOSE_UNSUPPORTED
        )
    return rate


def check_mix(codec: Codec, mix: object) -> None:
    """Refuse two-channel audio: we listen to one caller."""
    if mix not in (None, "", "mono", "mixed"):
        raise ProtocolError(f"{codec.name}: mixType {mix!r} unsupported; use mono", close_code=CLOSE_UNSUPPORTED)


def l16_chunk(codec: Codec, frame: bytes) -> list[Inbound]:
    """One binary frame of caller audio at the call's rate; odd lengths are truncated samples."""
    start = codec.require_started()
    if len(frame) % 2:
        raise ProtocolError(f"{codec.name}: L16 frame of odd length {len(frame)}", close_code=CLOSE_BAD_DATA)
    return [AudioChunk(pcm=bytes(frame), rate=start.rate)] if frame else []


def check_pcm(play: Play) -> None:
    """Our own prompt audio must be whole PCM16 samples."""
    if len(play.pcm) % 2:
        raise AudioFormatError(f"prompt {play.prompt_id!r}: PCM16 needs an even number of bytes")


def pcm_slices(pcm: bytes, *, rate: int, seconds: float) -> list[bytes]:
    """Split PCM16 into pieces of at most `seconds` (whole samples)."""
    size = max(2, int(rate * seconds) * 2)
    return [pcm[i:i + size] for i in range(0, len(pcm), size)]


def b64(pcm: bytes) -> str:
    """Base64 text of audio bytes."""
    return base64.b64encode(pcm).decode("ascii")


def dumps(message: BaseModel) -> str:
    """Compact JSON of an outbound message (context values that JSON lacks become strings)."""
    return json.dumps(message.model_dump(by_alias=True, exclude_none=True), ensure_ascii=False, default=str)


# --- wire models ---------------------------------------------------------------------------------


class ForkMetadata(BaseModel):
    """The metadata text frame: arbitrary JSON in which we look for a few keys."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    callId: str | None = None
    callid: str | None = None  # the drachtio README's own example spells it so
    uuid: str | None = None
    call_id: str | None = None
    sampleRate: int | str | None = None
    mixType: str | None = None
    plan: str | None = None
    variables: dict[str, Any] | None = None
    caller: str | None = None
    from_: str | None = Field(default=None, alias="from")
    language: str | None = None


class DtmfText(BaseModel):
    """jambonz's DTMF text frame, sent through mod_audio_fork's send_text."""

    model_config = ConfigDict(extra="allow")

    event: Literal["dtmf"]
    dtmf: str
    duration: int | str | None = None


class _Typed(BaseModel):
    """A server → FreeSWITCH message: a type and optional data."""

    model_config = ConfigDict(extra="forbid")


class RawAudio(BaseModel):
    """mod_audio_fork playAudio data."""

    audioContentType: Literal["raw", "wave", "wav"]
    sampleRate: int | None = None
    audioContent: str


class PlayAudio(_Typed):
    """mod_audio_fork: write this audio to a temp file and raise mod_audio_fork::play_audio."""

    type: Literal["playAudio"] = "playAudio"
    data: RawAudio


class KillAudio(_Typed):
    """Stop what the channel is playing (sets CF_BREAK)."""

    type: Literal["killAudio"] = "killAudio"


class TransferData(BaseModel):
    """Free-form transfer data (the README leaves its shape to the application)."""

    exten: str
    reason: str = ""
    handoff: dict[str, Any] = {}


class TransferMessage(_Typed):
    """mod_audio_fork: raise mod_audio_fork::transfer with `data`."""

    type: Literal["transfer"] = "transfer"
    data: TransferData


class Disconnect(_Typed):
    """mod_audio_fork: raise mod_audio_fork::disconnect (the application ends the call)."""

    type: Literal["disconnect"] = "disconnect"


class StreamData(BaseModel):
    """mod_audio_stream streamAudio data."""

    audioDataType: Literal["raw", "wav", "mp3", "ogg"]
    sampleRate: int | None = None
    audioData: str


class StreamAudio(_Typed):
    """mod_audio_stream: write this audio to a temp file and raise mod_audio_stream::play."""

    type: Literal["streamAudio"] = "streamAudio"
    data: StreamData


# --- codecs --------------------------------------------------------------------------------------


def first_of(*values: object) -> str:
    """The first non-empty value as a string."""
    for value in values:
        if value not in (None, ""):
            return str(value)
    return ""


class _ForkCodec(Codec):
    """What mod_audio_fork and mod_audio_stream share: metadata, then L16; ignorable text later."""

    max_frame_bytes: ClassVar[int] = 1 << 16  # 2 s of 16 kHz L16; the modules send 20-500 ms
    max_play_seconds: ClassVar[float] = 20.0  # keeps one JSON message under ~1 MB at 16 kHz

    def decode(self, frame: Frame) -> list[Inbound]:
        """Metadata first, then binary L16; later text is app data (jambonz DTMF understood)."""
        check_size(self, frame)
        if self.started is None:
            if isinstance(frame, bytes | bytearray):
                return self._audiofirst_of(bytes(frame))
            return [self._start(parse_object(self, frame, "metadata"))]
        if isinstance(frame, bytes | bytearray):
            return l16_chunk(self, bytes(frame))
        return self._text(frame)

    def _audiofirst_of(self, frame: bytes) -> list[Inbound]:
        raise ProtocolError(f"{self.name}: binary audio before the metadata text frame", close_code=CLOSE_PROTOCOL)

    def _start(self, raw: dict[str, Any]) -> CallStart:
        try:
            meta = ForkMetadata.model_validate(raw)
        except ValidationError as err:
            raise invalid(self, "bad metadata", err) from err
        q = self.query
        call_id = first_of(meta.callId, meta.callid, meta.uuid, meta.call_id, q.get("call_id"))
        if not call_id:
            raise ProtocolError(f"{self.name}: metadata has no callId/uuid and the URL no call_id")
        check_mix(self, first_of(meta.mixType, q.get("mix")))
        self.started = CallStart(
            call_id=call_id,
            rate=line_rate(self, first_of(meta.sampleRate, q.get("rate"), 8000)),
            plan=first_of(meta.plan, q.get("plan")),
            variables=dict(meta.variables or {}),
            caller=first_of(meta.caller, meta.from_, q.get("caller")),
            language=first_of(meta.language, q.get("language")),
            stream_id=first_of(meta.uuid),
        )
        return self.started

    def _text(self, text: str) -> list[Inbound]:
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            return []  # send_text/stop carry arbitrary application text
        if isinstance(value, dict) and value.get("event") == "dtmf":
            try:
                digit = DtmfText.model_validate(value).dtmf
            except ValidationError as err:
                raise invalid(self, "bad dtmf message", err) from err
            if digit not in DTMF_DIGITS:
                raise ProtocolError(f"{self.name}: unknown DTMF digit {digit!r}", close_code=CLOSE_BAD_DATA)
            return [Dtmf(digit=digit)]
        return []

    def _slices(self, play: Play) -> list[bytes]:
        check_pcm(play)
        if play.rate not in PLAYBACK_RATES:
            raise AudioFormatError(f"{self.name}: cannot play raw audio at {play.rate} Hz")
        return pcm_slices(play.pcm, rate=play.rate, seconds=self.max_play_seconds)


class AudioForkCodec(_ForkCodec):
    """drachtio mod_audio_fork: metadata then L16 in; playAudio/killAudio/transfer/disconnect out."""

    name: ClassVar[str] = "freeswitch"
    path: ClassVar[str] = "/freeswitch"
    subprotocols: ClassVar[tuple[str, ...]] = ("audio.drachtio.org",)

    def encode(self, message: Outbound) -> list[Frame]:
        """One playAudio per prompt slice; killAudio; transfer; disconnect."""
        if isinstance(message, Play):
            return [
                dumps(PlayAudio(data=RawAudio(audioContentType="raw", sampleRate=message.rate, audioContent=b64(s))))
                for s in self._slices(message)
            ]
        if isinstance(message, StopPlayback):
            return [dumps(KillAudio())]
        if isinstance(message, Transfer):
            data = TransferData(exten=message.target, reason=message.reason, handoff=dict(message.context))
            return [dumps(TransferMessage(data=data))]
        if isinstance(message, Hangup):
            return [dumps(Disconnect())]
        raise TypeError(f"{self.name}: cannot encode {type(message).__name__}")


class AudioStreamCodec(_ForkCodec):
    """amigniter mod_audio_stream: (optional) metadata then L16 in; streamAudio out, nothing else."""

    name: ClassVar[str] = "freeswitch_stream"
    path: ClassVar[str] = "/freeswitch-stream"

    def _audiofirst_of(self, frame: bytes) -> list[Inbound]:
        # Its README makes metadata optional: with call_id in the URL, audio may come first.
        if not self.query.get("call_id"):
            super()._audiofirst_of(frame)
        start = self._start({})
        return [start, *l16_chunk(self, frame)]

    def encode(self, message: Outbound) -> list[Frame]:
        """streamAudio per prompt slice; the module has no flush, transfer or hangup message."""
        if isinstance(message, Play):
            return [
                dumps(StreamAudio(data=StreamData(audioDataType="raw", sampleRate=message.rate, audioData=b64(s))))
                for s in self._slices(message)
            ]
        if isinstance(message, StopPlayback | Transfer | Hangup):
            return []
        raise TypeError(f"{self.name}: cannot encode {type(message).__name__}")
