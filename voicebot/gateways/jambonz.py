"""jambonz ``listen`` verb with bidirectional streaming audio (subprotocol ``audio.jambonz.org``).

The jambonz application must run the verb like this (streaming mode, same rate both ways)::

    {"verb": "listen", "url": "wss://bot.example/jambonz?plan=delivery", "sampleRate": 8000,
     "mixType": "mono", "passDtmf": true,
     "bidirectionalAudio": {"enabled": true, "streaming": true, "sampleRate": 8000},
     "metadata": {"plan": "delivery", "language": "zh-CN", "variables": {"order": "A1"}}}

What we accept:
- first frame: text JSON with the call attributes (``callSid``, ``from``, ``to``, ``direction`` …),
  ``sampleRate`` (8000 or 16000; jambonz also allows 24000/48000/64000, which we refuse) and
  ``mixType`` (``stereo`` refused). jambonz merges the verb's ``metadata`` into this object
  (feature-server ``lib/tasks/listen.js``), so ``plan``, ``language``, ``caller`` and ``variables``
  are read at its top level; query parameters ``plan``, ``language``, ``caller`` and ``call_id``
  fill in what it leaves out. The caller defaults to ``from``.
- then binary L16 little-endian mono frames at ``sampleRate``.
- text JSON: ``{"event":"dtmf","dtmf":"5","duration":…}`` (needs ``passDtmf``) → Dtmf;
  ``{"type":"mark","data":{"name":…,"event":"playout"}}`` → MarkReached (``"cleared"`` marks were
  never heard and are dropped); ``playDone`` and any other type are ignored, as jambonz's own SDK does.
  Text that is not a JSON object is a protocol error.

What we send (streaming mode): each prompt as binary L16 frames of ``chunk_ms`` at the call's rate,
then ``{"type":"mark","data":{"name":"<prompt_id>"}}``; StopPlayback → ``{"type":"killAudio"}`` and
``{"type":"clearMarks"}``; Hangup → ``{"type":"disconnect"}`` (ends the listen verb: its actionHook
decides the call's fate). jambonz documents no transfer message on this socket, so Transfer encodes to
nothing: transfer from the listen verb's actionHook instead.
"""

from __future__ import annotations

import json
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from ..errors import AudioFormatError
from ..events import Dtmf, Hangup, Play, StopPlayback, Transfer
from .base import CLOSE_BAD_DATA, CallStart, Codec, Frame, Inbound, MarkReached, Outbound, ProtocolError
from .freeswitch import (
    DTMF_DIGITS,
    DtmfText,
    check_mix,
    check_pcm,
    check_size,
    first_of,
    invalid,
    l16_chunk,
    line_rate,
    parse_object,
)


class ListenStart(BaseModel):
    """The first text frame: call attributes, audio format and the verb's merged metadata."""

    model_config = ConfigDict(extra="allow", populate_by_name=True)

    callSid: str | None = None
    sampleRate: int | str | None = None
    mixType: str | None = None
    direction: str | None = None
    from_: str | None = Field(default=None, alias="from")
    to: str | None = None
    plan: str | None = None
    language: str | None = None
    caller: str | None = None
    variables: dict[str, Any] | None = None


class MarkData(BaseModel):
    """A mark's name and whether its audio played out or was cleared."""

    model_config = ConfigDict(extra="allow")

    name: str
    event: Literal["playout", "cleared"] = "playout"


class MarkEvent(BaseModel):
    """jambonz → us: audio queued before the mark has played (or was cleared)."""

    model_config = ConfigDict(extra="allow")

    type: Literal["mark"]
    data: MarkData


class MarkCommand(BaseModel):
    """Us → jambonz: tell us when the audio sent so far has played."""

    type: Literal["mark"] = "mark"
    data: dict[str, str]


class Command(BaseModel):
    """Us → jambonz: a bare command (killAudio, clearMarks, disconnect)."""

    type: Literal["killAudio", "clearMarks", "disconnect"]


class JambonzCodec(Codec):
    """jambonz listen: call attributes then L16 in; L16 + marks, killAudio, disconnect out."""

    name: ClassVar[str] = "jambonz"
    path: ClassVar[str] = "/jambonz"
    subprotocols: ClassVar[tuple[str, ...]] = ("audio.jambonz.org",)
    max_frame_bytes: ClassVar[int] = 1 << 16  # 2 s of 16 kHz L16; jambonz sends 20 ms frames
    chunk_ms: ClassVar[int] = 20

    def decode(self, frame: Frame) -> list[Inbound]:
        """Call attributes first, then binary L16 and JSON events (dtmf, mark)."""
        check_size(self, frame)
        if isinstance(frame, bytes | bytearray):
            return l16_chunk(self, bytes(frame))  # raises when audio comes before the attributes
        value = parse_object(self, frame, "text frame")
        if self.started is None:
            return [self._start(value)]
        return self._event(value)

    def _start(self, raw: dict[str, Any]) -> CallStart:
        try:
            meta = ListenStart.model_validate(raw)
        except ValidationError as err:
            raise invalid(self, "bad call attributes", err) from err
        q = self.query
        call_id = first_of(meta.callSid, q.get("call_id"))
        if not call_id:
            raise ProtocolError("jambonz: first text frame has no callSid")
        check_mix(self, meta.mixType)
        self.started = CallStart(
            call_id=call_id,
            rate=line_rate(self, first_of(meta.sampleRate, 8000)),  # jambonz's default rate
            plan=first_of(meta.plan, q.get("plan")),
            variables=dict(meta.variables or {}),
            caller=first_of(meta.caller, meta.from_, q.get("caller")),
            language=first_of(meta.language, q.get("language")),
        )
        return self.started

    def _event(self, value: dict[str, Any]) -> list[Inbound]:
        try:
            if value.get("event") == "dtmf":
                digit = DtmfText.model_validate(value).dtmf
                if digit not in DTMF_DIGITS:
                    raise ProtocolError(f"jambonz: unknown DTMF digit {digit!r}", close_code=CLOSE_BAD_DATA)
                return [Dtmf(digit=digit)]
            if value.get("type") == "mark":
                mark = MarkEvent.model_validate(value).data
                return [MarkReached(name=mark.name)] if mark.event == "playout" else []
        except ValidationError as err:
            raise invalid(self, "malformed event", err) from err
        return []  # playDone and events we have no use for

    def encode(self, message: Outbound) -> list[Frame]:
        """Binary L16 chunks plus a mark per prompt; killAudio+clearMarks; disconnect; no transfer."""
        if isinstance(message, Play):
            return self._play(message)
        if isinstance(message, StopPlayback):
            return [_dump(Command(type="killAudio")), _dump(Command(type="clearMarks"))]
        if isinstance(message, Hangup):
            return [_dump(Command(type="disconnect"))]
        if isinstance(message, Transfer):
            return []
        raise TypeError(f"jambonz: cannot encode {type(message).__name__}")

    def _play(self, play: Play) -> list[Frame]:
        check_pcm(play)
        if self.started is not None and play.rate != self.started.rate:
            raise AudioFormatError(f"jambonz: prompt at {play.rate} Hz on a {self.started.rate} Hz stream")
        size = play.rate * self.chunk_ms // 1000 * 2
        frames: list[Frame] = [play.pcm[i:i + size] for i in range(0, len(play.pcm), size)]
        if play.prompt_id:
            frames.append(_dump(MarkCommand(data={"name": play.prompt_id})))
        return frames


def _dump(message: BaseModel) -> str:
    return json.dumps(message.model_dump(), separators=(",", ":"))
