"""Asterisk AudioSocket over TCP: `[type:1][length:2 big-endian][payload]` frames, paced by us.

Protocol: docs.asterisk.org "AudioSocket" and the CyCoreSystems/audiosocket README. Types:
0x00 hangup (either direction), 0x01 the call's UUID (16 bytes, first frame from Asterisk),
0x03 one ASCII DTMF digit, 0x10-0x18 signed-linear 16-bit little-endian mono audio at
8, 12, 16, 24, 32, 44.1, 48, 96, 192 kHz, 0xff error (optional payload; Asterisk's own codes are
bit flags: 0x01 calling party hung up, 0x02 frame forwarding error, 0x04 memory error).

Rule for the call's rate: the UUID frame does not carry one, so `CallStart` is emitted with the first
audio frame and takes that frame's rate; DTMF keyed before it is held and delivered right after it.
Calls run at 8 or 16 kHz (0x10 / 0x12); other rates, a rate change mid-call, unknown types, a wrong
UUID length, a bad digit or odd-length audio raise ProtocolError. The payload length is bounded by
`max_payload` (the format's own limit is 65,535) and checked as soon as the header arrives.

Unlike chan_websocket, Asterisk plays AudioSocket audio as it arrives, so the app must pace its
output: `encode_audio` cuts 20 ms frames and `PacedSender` writes one every 20 ms against
`loop.time()` deadlines; StopPlayback means `PacedSender.flush()` (there is no flush on the wire).
There is no transfer on AudioSocket either: Transfer encodes to nothing.
"""

from __future__ import annotations

import asyncio
import uuid
from collections import deque
from collections.abc import Iterable
from typing import Protocol

from ..audio import as_array, frame_bytes, resample
from ..events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from .base import (
    CLOSE_BAD_DATA,
    CLOSE_POLICY,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    Inbound,
    Outbound,
    ProtocolError,
)

KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR = 0x00, 0x01, 0x03, 0xFF
AUDIO_KINDS = {0x10: 8000, 0x11: 12000, 0x12: 16000, 0x13: 24000, 0x14: 32000,
               0x15: 44100, 0x16: 48000, 0x17: 96000, 0x18: 192000}
KIND_FOR_RATE = {rate: kind for kind, rate in AUDIO_KINDS.items()}
CALL_RATES = (8000, 16000)
HEADER_BYTES = 3
MAX_PAYLOAD = 0xFFFF
FRAME_MS = 20
DTMF_DIGITS = frozenset("0123456789*#ABCD")
ERROR_FLAGS = {0x01: "caller_hangup", 0x02: "frame_forwarding", 0x04: "memory"}
_MAX_HELD_DTMF = 32


def _frame(kind: int, payload: bytes = b"") -> bytes:
    return bytes((kind,)) + len(payload).to_bytes(2, "big") + payload


def encode_hangup() -> bytes:
    """The hangup frame: 0x00 with an empty payload."""
    return _frame(KIND_HANGUP)


def encode_audio(pcm: bytes, rate: int) -> list[bytes]:
    """Cut PCM16 into 20 ms AudioSocket audio frames of the type for `rate` (the tail padded with silence)."""
    kind = KIND_FOR_RATE.get(rate)
    if kind is None or rate not in CALL_RATES:
        raise ProtocolError(f"audiosocket: cannot send audio at {rate} Hz; calls run at {CALL_RATES}",
                            close_code=CLOSE_UNSUPPORTED)
    as_array(pcm)
    size = frame_bytes(rate, FRAME_MS)
    data = bytes(pcm) + bytes(-len(pcm) % size)
    return [_frame(kind, data[i:i + size]) for i in range(0, len(data), size)]


class AudioSocketParser:
    """Incremental AudioSocket reader and writer for one TCP connection (pure: no sockets, no clock)."""

    def __init__(self, *, plan: str = "", variables: dict[str, str] | None = None,
                 max_payload: int = MAX_PAYLOAD) -> None:
        if not 0 < max_payload <= MAX_PAYLOAD:
            raise ValueError(f"max_payload must be in 1..{MAX_PAYLOAD}, got {max_payload}")
        self.plan = plan
        self.variables = dict(variables or {})
        self.max_payload = max_payload
        self.call_id = ""
        self.started: CallStart | None = None
        self.ended = False
        self._buffer = bytearray()  # never more than one header plus max_payload
        self._held: list[Inbound] = []

    @property
    def rate(self) -> int:
        """The call's rate, or 0 until the first audio frame has arrived."""
        return self.started.rate if self.started else 0

    def feed(self, data: bytes) -> list[Inbound]:
        """Take the next bytes read from the socket; return the messages completed by them."""
        self._buffer += data
        out: list[Inbound] = []
        while len(self._buffer) >= HEADER_BYTES:
            kind = self._buffer[0]
            length = int.from_bytes(self._buffer[1:3], "big")
            self._check_header(kind, length)
            if len(self._buffer) < HEADER_BYTES + length:
                break
            payload = bytes(self._buffer[HEADER_BYTES:HEADER_BYTES + length])
            del self._buffer[:HEADER_BYTES + length]
            out.extend(self._message(kind, payload))
        return out

    def _check_header(self, kind: int, length: int) -> None:
        # Refuse at the header so a bad peer cannot make us buffer a payload we will reject.
        if kind not in AUDIO_KINDS and kind not in (KIND_HANGUP, KIND_UUID, KIND_DTMF, KIND_ERROR):
            raise ProtocolError(f"audiosocket: unknown frame type 0x{kind:02x}")
        if length > self.max_payload:
            raise ProtocolError(f"audiosocket: payload of {length} bytes exceeds {self.max_payload}",
                                close_code=CLOSE_TOO_BIG)
        if self.ended:
            raise ProtocolError(f"audiosocket: frame 0x{kind:02x} after hangup")

    def _message(self, kind: int, payload: bytes) -> list[Inbound]:
        if kind == KIND_UUID:
            return self._uuid(payload)
        if kind in (KIND_HANGUP, KIND_ERROR):
            self.ended = True
            return [CallerHangup(self._reason(kind, payload))]
        if not self.call_id:
            raise ProtocolError(f"audiosocket: frame 0x{kind:02x} before the UUID frame")
        if kind == KIND_DTMF:
            digit = payload.decode("ascii", errors="replace") if len(payload) == 1 else ""
            if digit not in DTMF_DIGITS:
                raise ProtocolError(f"audiosocket: bad DTMF payload {payload!r}", close_code=CLOSE_BAD_DATA)
            if self.started is not None:
                return [Dtmf(digit)]
            if len(self._held) >= _MAX_HELD_DTMF:
                raise ProtocolError("audiosocket: too many DTMF digits before any audio", close_code=CLOSE_POLICY)
            self._held.append(Dtmf(digit))
            return []
        return self._audio(AUDIO_KINDS[kind], payload)

    def _uuid(self, payload: bytes) -> list[Inbound]:
        if self.call_id:
            raise ProtocolError("audiosocket: second UUID frame on one connection")
        if len(payload) != 16:
            raise ProtocolError(f"audiosocket: UUID payload must be 16 bytes, got {len(payload)}",
                                close_code=CLOSE_BAD_DATA)
        self.call_id = str(uuid.UUID(bytes=payload))
        return []

    def _audio(self, rate: int, payload: bytes) -> list[Inbound]:
        if len(payload) % 2:
            raise ProtocolError(f"audiosocket: audio payload of {len(payload)} bytes is not whole samples",
                                close_code=CLOSE_BAD_DATA)
        out: list[Inbound] = []
        if self.started is None:
            if rate not in CALL_RATES:
                raise ProtocolError(f"audiosocket: {rate} Hz audio is not supported; use slin (8 kHz) or "
                                    "slin16 (16 kHz)", close_code=CLOSE_UNSUPPORTED)
            self.started = CallStart(call_id=self.call_id, rate=rate, plan=self.plan,
                                     variables=dict(self.variables), stream_id=self.call_id)
            out.append(self.started)
            out.extend(self._held)
            self._held.clear()
        elif rate != self.started.rate:
            raise ProtocolError(f"audiosocket: audio rate changed from {self.started.rate} to {rate} Hz",
                                close_code=CLOSE_UNSUPPORTED)
        if payload:
            out.append(AudioChunk(payload, rate))
        return out

    @staticmethod
    def _reason(kind: int, payload: bytes) -> str:
        if kind == KIND_HANGUP:
            return "hangup"
        if not payload:
            return "gateway_error"
        code = payload[0]
        if code == 0x01:
            return "hangup"
        names = [name for bit, name in ERROR_FLAGS.items() if code & bit] or [f"0x{code:02x}"]
        return "gateway_error:" + ",".join(names)

    def encode_audio(self, pcm: bytes, rate: int) -> list[bytes]:
        """20 ms audio frames for `pcm` at `rate` (resampled to the call's rate once it is known)."""
        if self.started is not None and rate != self.started.rate:
            pcm, rate = resample(pcm, from_rate=rate, to_rate=self.started.rate), self.started.rate
        return encode_audio(pcm, rate)

    def encode_hangup(self) -> bytes:
        """The hangup frame."""
        return encode_hangup()

    def encode(self, message: Outbound) -> list[bytes]:
        """Frames for one of our actions; StopPlayback and Transfer have none (flush the PacedSender instead)."""
        if isinstance(message, Play):
            return self.encode_audio(message.pcm, message.rate)
        if isinstance(message, Hangup):
            return [encode_hangup()]
        if isinstance(message, (StopPlayback, Transfer)):
            return []
        raise TypeError(f"audiosocket: cannot encode {type(message).__name__}")


class _Writer(Protocol):
    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...


class PacedSender:
    """Writes queued frames one per `interval` against loop.time() deadlines, so timing never drifts."""

    def __init__(self, writer: _Writer, *, interval: float = FRAME_MS / 1000, max_pending: int = 3000,
                 max_late: float = 0.1) -> None:
        self._writer = writer
        self._interval = interval
        self._max_pending = max_pending  # 3000 frames = one minute of audio
        self._max_late = max_late
        self._pending: deque[bytes] = deque()
        self._ready = asyncio.Event()
        self.sent = 0

    @property
    def pending(self) -> int:
        """Frames queued but not yet written."""
        return len(self._pending)

    def send(self, frames: Iterable[bytes]) -> None:
        """Queue frames behind those already waiting."""
        batch = list(frames)
        if len(self._pending) + len(batch) > self._max_pending:
            raise ProtocolError(f"audiosocket: more than {self._max_pending} frames queued", close_code=CLOSE_POLICY)
        self._pending.extend(batch)
        if batch:
            self._ready.set()

    def flush(self) -> int:
        """Drop every frame not yet written (barge-in); returns how many were dropped."""
        dropped = len(self._pending)
        self._pending.clear()
        return dropped

    async def run(self) -> None:
        """Write frames as their deadlines come, until cancelled."""
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            if not self._pending:
                self._ready.clear()
                await self._ready.wait()
                # After a pause start now, but never closer than one interval to the last frame.
                deadline = max(deadline, loop.time())
            delay = deadline - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
            elif -delay > self._max_late:
                deadline = loop.time()  # the loop stalled: resume the cadence instead of bursting
            if not self._pending:
                continue  # flushed while we slept
            self._writer.write(self._pending.popleft())
            await self._writer.drain()
            self.sent += 1
            deadline += self._interval
