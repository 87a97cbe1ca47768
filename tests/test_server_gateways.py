"""Whole calls over FreeSWITCH, jambonz and Asterisk websockets, each caller written from its provider's docs.

The clients below follow the providers' own documentation, not our codecs:
- drachtio mod_audio_fork README: subprotocol audio.drachtio.org; `uuid_audio_fork <uuid> start <url> mono 8k
  <metadata>` sends the metadata text frame, then binary L16; the server answers playAudio / killAudio /
  disconnect JSON.
- amigniter mod_audio_stream README: optional metadata text, then binary L16; the server answers streamAudio
  JSON; the module has no hang-up message, so the end of the call is the socket closing.
- jambonz listen verb docs (bidirectionalAudio.streaming): subprotocol audio.jambonz.org; a first JSON frame of
  call attributes plus sampleRate/mixType and the verb's metadata; binary L16 both ways; `mark`, `killAudio`,
  `clearMarks`, `disconnect` commands; DTMF (passDtmf) as {"event":"dtmf","dtmf":"1","duration":"1600"}.
- Asterisk chan_websocket docs: `MEDIA_START ...` text, then binary media of the dialled codec (ulaw 160 bytes
  per 20 ms); the app sends binary media in whole optimal frames of at most 65,500 bytes, `FLUSH_MEDIA` to
  discard queued audio, `HANGUP` to end; Asterisk sends `MEDIA_XOFF`/`MEDIA_XON` around a full queue.
"""

from __future__ import annotations

import asyncio
import base64
import json
import time
from collections import defaultdict
from collections.abc import Callable, Iterable

from conftest import fixture_entry, fixture_path
from test_server import TOKEN, ZH_VARS, Harness
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from voicebot.audio import chunks, duration, read_wav, rms_dbfs, silence, ulaw_decode, ulaw_encode
from voicebot.events import Say, StopPlayback
from voicebot.gateways.asterisk import AsteriskCodec

RATE = 8000
CALLER = "+8613812345678"


class Observed(Harness):
    """The test server, plus an event per prompt the robot says, so a caller can act at a dialog point."""

    def __init__(self, settings, **kwargs) -> None:
        super().__init__(settings, **kwargs)
        self.said: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def _emit(self, event: object) -> None:
        super()._emit(event)
        if isinstance(event, Say):
            self.said[event.prompt_id].set()


class Received:
    """Everything the server sends, in order, read while the caller is still talking (a gateway is duplex)."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[str | bytes] = []
        self._arrived = asyncio.Event()
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self.frames.append(frame)
                self._arrived.set()
        except ConnectionClosed:
            pass
        self._arrived.set()

    async def until(self, wanted: Callable[[str | bytes], bool], limit: float = 10) -> None:
        """Wait for a frame that matches; fails if the socket closes first."""
        async with asyncio.timeout(limit):
            while not any(wanted(f) for f in self.frames):
                assert not self.task.done(), "the server closed the call first"
                self._arrived.clear()
                await self._arrived.wait()

    async def closed(self, limit: float = 20) -> int | None:
        """Wait for the server to close the socket; its close code."""
        await asyncio.wait_for(self.task, limit)
        return self.ws.close_code

    def texts(self) -> list[str]:
        """The text frames."""
        return [f for f in self.frames if isinstance(f, str)]

    def binary(self) -> list[bytes]:
        """The binary frames."""
        return [f for f in self.frames if isinstance(f, bytes)]


def caller_audio(fixture: str, *, lead: float) -> tuple[bytes, str]:
    """`lead` seconds of silence (the caller listening), the fixture's speech, then silence; and its text."""
    speech, rate = read_wav(fixture_path("zh-CN", fixture))
    assert rate == RATE
    return silence(lead, RATE) + speech + silence(1.5, RATE), fixture_entry("zh-CN", fixture)["text"]


async def send_frames(ws: ClientConnection, frames: Iterable[str | bytes]) -> None:
    """Send frames as fast as the socket takes them (the Harness lifts the frame-rate limit)."""
    for frame in frames:
        await ws.send(frame)


def assert_speech(pcm: bytes, *, at_least: float) -> None:
    """Robot audio: whole PCM16 samples, long enough, and not silence."""
    assert len(pcm) % 2 == 0
    assert duration(pcm, RATE) >= at_least
    assert rms_dbfs(pcm) > -40.0


def url(h: Harness, path: str, **query: str) -> str:
    """The server URL a gateway is configured with; the token rides in the query as it does in a dial string."""
    params = "&".join(f"{k}={v}" for k, v in {"token": TOKEN, **query}.items())
    return f"{h.url}{path}?{params}"


# --- FreeSWITCH mod_audio_fork --------------------------------------------------------------------


def fork_metadata(call_id: str) -> str:
    """The <metadata> argument of uuid_audio_fork: free JSON, shaped like the README's callerData example."""
    return json.dumps({"callid": call_id, "from": CALLER, "to": "95338", "variables": ZH_VARS}, ensure_ascii=False)


def play_audio(messages: list[dict]) -> bytes:
    """The PCM of every playAudio, decoded as mod_audio_fork would write it to its .r8 temp file."""
    pcm = b""
    for m in messages:
        if m["type"] == "playAudio":
            assert m["data"]["audioContentType"] == "raw" and m["data"]["sampleRate"] == RATE
            pcm += base64.b64decode(m["data"]["audioContent"])
    return pcm


async def audio_fork_call(h: Harness, call_id: str, audio: bytes) -> tuple[list[dict], int | None]:
    """One mod_audio_fork stream: metadata, then 20 ms L16 frames; the JSON the server sent, and its close code."""
    async with connect(url(h, "/freeswitch", rate=str(RATE)), subprotocols=["audio.drachtio.org"]) as ws:
        assert ws.subprotocol == "audio.drachtio.org"
        got = Received(ws)
        await ws.send(fork_metadata(call_id))
        # FreeSWITCH starts playing the greeting before the caller can talk over it.
        await got.until(lambda f: isinstance(f, str) and json.loads(f)["type"] == "playAudio")
        await send_frames(ws, chunks(audio, rate=RATE, ms=20))
        code = await got.closed()
    assert not got.binary()  # mod_audio_fork only understands JSON text from the server
    return [json.loads(t) for t in got.texts()], code


async def test_audio_fork_call_end_to_end(settings):
    """mod_audio_fork: the greeting as raw L16 in playAudio, the caller's answer, the goodbye, disconnect."""
    audio, text = caller_audio("door", lead=30.0)
    async with Harness(settings, replies=[text]) as h:
        sent, code = await audio_fork_call(h, "fs-fork-1", audio)
    kinds = [m["type"] for m in sent]
    assert kinds[-1] == "disconnect" and kinds.count("disconnect") == 1
    assert set(kinds) == {"playAudio", "disconnect"}
    greeting_then_goodbye = play_audio(sent)
    assert_speech(greeting_then_goodbye, at_least=20.0)
    assert_speech(play_audio(sent[-2:-1]), at_least=1.0)  # the goodbye, just before the disconnect
    assert code == 1000
    (ended,) = h.ended()
    assert ended.call_id == "fs-fork-1" and ended.outcome == "door_delivery"
    assert ended.record.caller == "+86138****5678" and ended.record.ended_by == "robot"


async def test_audio_fork_barge_in_sends_kill_audio(settings):
    """The caller talks 1 s into the greeting: killAudio stops FreeSWITCH's playback, the answer still counts."""
    audio, text = caller_audio("station", lead=1.0)
    async with Harness(settings, replies=[text]) as h:
        sent, code = await audio_fork_call(h, "fs-fork-2", audio)
    kinds = [m["type"] for m in sent]
    assert "killAudio" in kinds
    kill = kinds.index("killAudio")
    assert "playAudio" in kinds[:kill] and "playAudio" in kinds[kill:]  # greeting before, goodbye after
    assert kinds[-1] == "disconnect" and code == 1000
    assert_speech(play_audio(sent[kill:]), at_least=1.0)
    (ended,) = h.ended()
    assert ended.outcome == "station_consent" and ended.record.turns[0].barged_in
    assert any(isinstance(e, StopPlayback) for e in h.events)


# --- FreeSWITCH mod_audio_stream -------------------------------------------------------------------


async def test_audio_stream_call_end_to_end(settings):
    """mod_audio_stream: streamAudio JSON back; no hang-up message exists, so the server closes the socket."""
    audio, text = caller_audio("door", lead=30.0)
    # `uuid_audio_stream <uuid> start <url> mono 8k <metadata>`: no subprotocol, metadata first.
    async with (Harness(settings, replies=[text]) as h,
                connect(url(h, "/freeswitch-stream", rate=str(RATE))) as ws):
        got = Received(ws)
        await ws.send(json.dumps({"uuid": "fs-stream-1", "from": CALLER, "variables": ZH_VARS}))
        await send_frames(ws, chunks(audio, rate=RATE, ms=20))
        code = await got.closed()
    assert not got.binary()
    sent = [json.loads(t) for t in got.texts()]
    assert sent and {m["type"] for m in sent} == {"streamAudio"}
    pcm = b""
    for m in sent:
        assert m["data"]["audioDataType"] == "raw" and m["data"]["sampleRate"] == RATE
        pcm += base64.b64decode(m["data"]["audioData"])
    assert_speech(pcm, at_least=20.0)
    assert code == 1000 and ws.close_reason == "call ended"
    (ended,) = h.ended()
    assert ended.call_id == "fs-stream-1" and ended.outcome == "door_delivery"


# --- jambonz listen --------------------------------------------------------------------------------


def jambonz_attributes(call_sid: str) -> str:
    """listen's first frame: the call attributes of a webhook, sampleRate, mixType and the verb's metadata."""
    return json.dumps({
        "callSid": call_sid, "direction": "outbound", "from": CALLER, "to": "95338", "callId": "a1b2c3@10.0.0.1",
        "sipStatus": 200, "callStatus": "in-progress", "accountSid": "acc-1", "applicationSid": "app-1",
        "sampleRate": RATE, "mixType": "mono", "variables": ZH_VARS,
    }, ensure_ascii=False)


async def jambonz_call(h: Harness, call_sid: str, before: bytes, *, dtmf: str = "",
                       after: bytes = b"") -> tuple[Received, int | None]:
    """One listen stream (bidirectionalAudio streaming, passDtmf): audio, an optional key, more audio."""
    async with connect(url(h, "/jambonz"), subprotocols=["audio.jambonz.org"]) as ws:
        assert ws.subprotocol == "audio.jambonz.org"
        got = Received(ws)
        await ws.send(jambonz_attributes(call_sid))
        await send_frames(ws, chunks(before, rate=RATE, ms=20))
        if dtmf:
            await ws.send(json.dumps({"event": "dtmf", "dtmf": dtmf, "duration": "1600"}))
        await send_frames(ws, chunks(after, rate=RATE, ms=20))
        code = await got.closed()
    return got, code


async def test_jambonz_call_answered_with_a_key(settings):
    """jambonz listen: L16 and marks back, the caller presses 1 (door) instead of speaking, then disconnect."""
    async with Harness(settings) as h:
        got, code = await jambonz_call(h, "jb-1", silence(30.0, RATE), dtmf="1", after=silence(0.5, RATE))
    commands = [json.loads(t) for t in got.texts()]
    assert commands[-1] == {"type": "disconnect"}
    marks = [c["data"]["name"] for c in commands if c["type"] == "mark"]
    assert [m.split("#")[0] for m in marks] == ["greeting", "confirm_door"]
    assert not [c for c in commands if c["type"] == "killAudio"]  # the key came after the greeting
    # Streaming mode: each prompt is binary L16, then its mark.
    greeting_mark = next(i for i, f in enumerate(got.frames) if isinstance(f, str))
    assert json.loads(got.frames[greeting_mark])["data"]["name"] == marks[0]
    greeting, goodbye = got.frames[:greeting_mark], got.frames[greeting_mark + 1:-2]
    assert all(isinstance(f, bytes) and len(f) % 2 == 0 for f in greeting + goodbye)
    assert_speech(b"".join(greeting), at_least=20.0)
    assert_speech(b"".join(goodbye), at_least=1.0)
    assert code == 1000
    (ended,) = h.ended()
    assert ended.call_id == "jb-1" and ended.outcome == "door_delivery"
    assert ended.record.turns[0].heard == "1" and ended.record.turns[0].source == "dtmf"


async def test_jambonz_barge_in_kills_buffered_audio(settings):
    """Speech over the greeting on jambonz: killAudio (and clearMarks) flush the streamed greeting."""
    audio, text = caller_audio("station", lead=1.0)
    async with Harness(settings, replies=[text]) as h:
        got, code = await jambonz_call(h, "jb-2", audio)
    kinds = [json.loads(t)["type"] for t in got.texts()]
    assert kinds[-1] == "disconnect" and code == 1000
    kill = kinds.index("killAudio")
    assert kinds[kill + 1] == "clearMarks"
    (ended,) = h.ended()
    assert ended.outcome == "station_consent" and ended.record.turns[0].barged_in


# --- Asterisk chan_websocket -----------------------------------------------------------------------


MEDIA_START = ("MEDIA_START connection_id:{cid} channel:WebSocket/connection1/0x7f3a2c00 channel_id:{chan} "
               "format:ulaw optimal_frame_size:160 ptime:20")


def asterisk_url(h: Harness) -> str:
    """Dial(WebSocket/connection1/c(ulaw)v(token=..,customer_name=..,tracking_tail=..,caller=..))."""
    return url(h, "/asterisk", caller=CALLER.replace("+", "%2B"), customer_name="%E7%8E%8B%E5%85%88%E7%94%9F",
               tracking_tail="5678")


def assert_asterisk_media(frames: list[bytes], *, at_least: float) -> None:
    """Binary media the way chan_websocket wants it: whole 160-byte ulaw frames, under 65,500 bytes a message."""
    assert frames and all(len(f) % 160 == 0 and len(f) <= 65_500 for f in frames)
    assert_speech(ulaw_decode(b"".join(frames)), at_least=at_least)


def ulaw_frames(pcm: bytes) -> Iterable[bytes]:
    """The caller's audio as Asterisk sends it: 160 bytes of ulaw every 20 ms."""
    return (ulaw_encode(c) for c in chunks(pcm, rate=RATE, ms=20))


async def test_asterisk_call_with_flow_control(settings, monkeypatch):
    """Asterisk: ulaw back, MEDIA_XOFF holds the goodbye until MEDIA_XON, then HANGUP and the socket closes."""
    # This test is about XOFF/XON: let the whole greeting go out at once instead of at real-time pace.
    monkeypatch.setattr(AsteriskCodec, "max_ahead_seconds", None)
    audio, text = caller_audio("door", lead=30.0)
    async with Observed(settings, replies=[text]) as h, connect(asterisk_url(h)) as ws:
        got = Received(ws)
        await ws.send(MEDIA_START.format(cid="c0ffee-1", chan="1761245643.1"))
        await got.until(lambda f: isinstance(f, str) and f.startswith("MARK_MEDIA greeting"))
        greeting = got.binary()
        assert_asterisk_media(greeting, at_least=20.0)
        # Asterisk's queue is full: it asks us to stop sending media while the caller answers.
        await ws.send("MEDIA_XOFF")
        with_xoff = len(got.frames)
        await send_frames(ws, ulaw_frames(audio))
        await asyncio.wait_for(h.said["confirm_door"].wait(), 10)
        await asyncio.sleep(0.5)  # nothing may arrive while paused: the goodbye is ready but held
        assert len(got.frames) == with_xoff and not [f for f in got.texts() if f == "HANGUP"]
        await ws.send("MEDIA_XON")
        code = await got.closed()
    after = got.frames[with_xoff:]
    assert_asterisk_media([f for f in after if isinstance(f, bytes)], at_least=1.0)
    assert [f for f in after if isinstance(f, str)] == ["MARK_MEDIA confirm_door#2", "HANGUP"]
    assert code == 1000
    (ended,) = h.ended()
    assert ended.call_id == "1761245643.1" and ended.outcome == "door_delivery"
    assert ended.record.caller == "+86138****5678"


async def test_asterisk_barge_in_sends_flush_media(settings):
    """Speech 1 s into the greeting: FLUSH_MEDIA discards Asterisk's queued greeting; the answer is taken."""
    audio, text = caller_audio("station", lead=1.0)
    async with Harness(settings, replies=[text]) as h, connect(asterisk_url(h)) as ws:
        got = Received(ws)
        await ws.send(MEDIA_START.format(cid="c0ffee-2", chan="1761245643.2"))
        await got.until(lambda f: isinstance(f, bytes))  # the greeting is playing when the caller talks
        await send_frames(ws, ulaw_frames(audio))
        code = await got.closed()
    texts = got.texts()
    assert texts.count("FLUSH_MEDIA") == 1 and texts[-1] == "HANGUP" and code == 1000
    flush = got.frames.index("FLUSH_MEDIA")
    # The server keeps at most 15 s of audio queued in Asterisk; the caller interrupts before more is sent.
    assert_asterisk_media([f for f in got.frames[:flush] if isinstance(f, bytes)], at_least=14.0)
    assert_asterisk_media([f for f in got.frames[flush:] if isinstance(f, bytes)], at_least=1.0)
    (ended,) = h.ended()
    assert ended.outcome == "station_consent" and ended.record.turns[0].barged_in


class AsteriskQueue:
    """chan_websocket's queue for media from the app (channels/chan_websocket.c), drained at 50 frames/s.

    A binary message that arrives while 1000 frames are queued is dropped whole; MEDIA_XOFF goes out when
    the queue reaches 900 frames and MEDIA_XON when it falls below 800.
    """

    def __init__(self) -> None:
        self.length, self.at, self.full, self.dropped = 0.0, time.monotonic(), False, 0

    def _drain(self) -> None:
        now = time.monotonic()
        self.length, self.at = max(0.0, self.length - (now - self.at) * 50), now

    def media(self, data: bytes) -> str | None:
        """Queue one binary message; the notification Asterisk would send, if any."""
        self._drain()
        if self.length >= 1000:
            self.dropped += len(data)
            return None
        self.length += len(data) // 160
        if not self.full and self.length >= 900:
            self.full = True
            return "MEDIA_XOFF"
        return None

    def tick(self) -> str | None:
        """MEDIA_XON once playback has drained the queue below 800 frames."""
        self._drain()
        if self.full and self.length < 800:
            self.full = False
            return "MEDIA_XON"
        return None


async def test_asterisk_long_greeting_fits_the_channel_queue(settings):
    """A 27 s greeting against Asterisk's real queue limits: no media may be dropped."""
    queue = AsteriskQueue()
    async with Harness(settings) as h, connect(asterisk_url(h)) as ws:
        await ws.send(MEDIA_START.format(cid="c0ffee-3", chan="1761245643.3"))
        async with asyncio.timeout(40):
            while True:
                try:
                    frame = await asyncio.wait_for(ws.recv(), 0.1)
                except TimeoutError:
                    frame = None
                notice = queue.media(frame) if isinstance(frame, bytes) else queue.tick()
                if notice:
                    await ws.send(notice)
                if isinstance(frame, str) and frame.startswith("MARK_MEDIA greeting"):
                    break
    assert queue.dropped == 0
