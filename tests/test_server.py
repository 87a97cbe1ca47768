"""The websocket server end to end: real connections on loopback, real codecs, real sessions."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import Callable

import pytest
from conftest import PLANS, fixture_entry, fixture_path
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from voicebot.asr import TranscriptReplayRecognizer, VoskEngine
from voicebot.audio import chunks, read_wav, silence, ulaw_encode
from voicebot.events import CallEnded, CallStarted, Say, StopPlayback
from voicebot.gateways.asterisk import AsteriskCodec
from voicebot.gateways.freeswitch import AudioForkCodec, AudioStreamCodec
from voicebot.gateways.jambonz import JambonzCodec
from voicebot.gateways.native import NativeCodec
from voicebot.gateways.twilio import TwilioCodec
from voicebot.plans import PlanRegistry
from voicebot.server import Route, ServerLimits, VoiceServer
from voicebot.tts import PromptCache, Pyttsx3Synthesizer, render_prompt

TOKEN = "s3cret-gateway-token"
ZH_VARS = {"customer_name": "王先生", "tracking_tail": "5678"}
CODECS = (NativeCodec, TwilioCodec, AudioForkCodec, AudioStreamCodec, JambonzCodec, AsteriskCodec)


class Harness:
    """A running VoiceServer with the shipped plans, espeak-ng TTS and a recogniser per language."""

    def __init__(self, settings, *, replies: list[str] | None = None, max_calls: int = 10, tls=None,
                 twilio_auth_token: str = "", public_url: str = "",
                 limits: ServerLimits | None = None, vosk: VoskEngine | None = None, plans=PLANS) -> None:
        self.settings, self.replies, self.vosk, self.plan_dir = settings, list(replies or []), vosk, plans
        self.events: list = []
        self.call_started = asyncio.Event()
        self.tls, self.twilio = tls, (twilio_auth_token, public_url)
        self.max_calls, self.limits = max_calls, limits or ServerLimits(max_frames_per_second=100_000,
                                                                        drain_timeout=5)

    async def recognizer(self, language: str, rate: int, grammar=None):
        if language == "ko-KR" and self.vosk is not None:
            return await self.vosk.recognizer(language=language, rate=rate, grammar=grammar)
        # FAKE for zh-CN/en-US (no Vosk model installs here): replays the fixtures' texts in order.
        return TranscriptReplayRecognizer(self.replies, rate=rate, language=language)

    def speak(self, rate: int, plan: str) -> Callable:
        base_dir = self.plans.get(plan).loaded.base_dir

        async def speak(say: Say) -> bytes:
            return await render_prompt(say.parts, language=say.language, rate=rate, cache=self.cache,
                                       base_dir=base_dir)
        return speak

    async def __aenter__(self) -> Harness:
        self.synth = Pyttsx3Synthesizer()
        await self.synth.start()
        self.cache = PromptCache(self.synth, self.settings.cache_dir)
        self.plans = PlanRegistry(self.plan_dir)
        await self.plans.reload()
        routes = [Route(codec.path, codec, plan="pre_delivery", max_calls=self.max_calls) for codec in CODECS]
        self.server = VoiceServer(routes=routes, plans=self.plans, recognizer=self.recognizer, speak=self.speak,
                                  emitter=lambda call_id: self._emit, tokens=frozenset({TOKEN}), limits=self.limits,
                                  port=0, tls=self.tls, twilio_auth_token=self.twilio[0], public_url=self.twilio[1])
        await self.server.__aenter__()
        self.url = f"{'wss' if self.tls else 'ws'}://127.0.0.1:{self.server.port}"
        return self

    def _emit(self, event: object) -> None:
        self.events.append(event)
        if isinstance(event, CallStarted):
            self.call_started.set()

    async def __aexit__(self, *exc) -> None:
        await self.server.__aexit__(*exc)
        await self.synth.aclose()

    def ended(self) -> list[CallEnded]:
        return [e for e in self.events if isinstance(e, CallEnded)]


def start_frame(call_id: str, plan: str = "pre_delivery", rate: int = 8000, variables=None, language=None) -> str:
    frame = {"type": "start", "call_id": call_id, "plan": plan, "variables": variables or ZH_VARS,
             "caller": "+8613812345678", "audio": {"encoding": "pcm16", "rate": rate}}
    if language:
        frame["language"] = language
    return json.dumps(frame, ensure_ascii=False)


async def native_call(url: str, frames_after_greeting: bytes, *, start: str, rate: int = 8000) -> list:
    """Play a caller on /native: wait for the greeting's mark, then stream audio; collect what comes back."""
    got: list = []
    async with connect(f"{url}/native", additional_headers={"Authorization": f"Bearer {TOKEN}"},
                       subprotocols=["voicebot.v1"]) as ws:
        await ws.send(start)
        while True:  # the greeting: audio frames, then its mark
            msg = await asyncio.wait_for(ws.recv(), 10)
            got.append(msg)
            if isinstance(msg, str) and json.loads(msg)["type"] == "mark":
                break
        for frame in chunks(frames_after_greeting, rate=rate, ms=20):
            await ws.send(frame)
        try:
            async for msg in ws:
                got.append(msg)
        except ConnectionClosed:
            pass
    return got


async def test_native_call_end_to_end(settings):
    """A whole call over /native: greeting audio and mark, the answer, the goodbye, hang-up, record."""
    door, _ = read_wav(fixture_path("zh-CN", "door"))
    async with Harness(settings, replies=[fixture_entry("zh-CN", "door")["text"]]) as h:
        # The session runs on the audio clock: silence long enough for the greeting to "play".
        got = await native_call(h.url, silence(30.0, 8000) + door + silence(1.5, 8000), start=start_frame("n1"))
    texts = [json.loads(m) for m in got if isinstance(m, str)]
    assert [t["type"] for t in texts] == ["mark", "mark", "hangup"]
    assert texts[-1]["reason"] == "door_delivery"
    audio = [m for m in got if isinstance(m, bytes)]
    assert len(audio) > 100 and all(len(a) <= 320 for a in audio)  # 20 ms frames of PCM16 at 8 kHz
    (ended,) = h.ended()
    assert ended.call_id == "n1" and ended.outcome == "door_delivery"
    assert ended.record.caller == "+86138****5678"  # masked before it reaches any sink


async def test_twilio_call_with_barge_in(settings):
    """A Twilio Media Streams client (messages as Twilio documents them) barges in and is understood."""
    station, _ = read_wav(fixture_path("zh-CN", "station"))
    async with Harness(settings, replies=[fixture_entry("zh-CN", "station")["text"]]) as h:
        sent: list[dict] = []
        async with connect(f"{h.url}/twilio?token={TOKEN}") as ws:
            seq = 0

            async def send(event: dict) -> None:
                nonlocal seq
                seq += 1
                await ws.send(json.dumps({**event, "sequenceNumber": str(seq)}))

            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await send({"event": "start", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "start": {
                "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "accountSid": "AC123", "callSid": "CA123",
                "tracks": ["inbound"], "customParameters": {**ZH_VARS, "caller": "+8613812345678"},
                "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}})
            # The caller talks 1 s into the greeting (barge-in), in 20 ms μ-law frames.
            for i, frame in enumerate(chunks(silence(1.0, 8000) + station + silence(1.5, 8000), rate=8000, ms=20)):
                await send({"event": "media", "streamSid": "MZ18ad3ab5a668481ce02b83e7395059f0", "media": {
                    "track": "inbound", "chunk": str(i + 1), "timestamp": str(i * 20),
                    "payload": base64.b64encode(ulaw_encode(frame)).decode()}})
            try:
                async for msg in ws:
                    sent.append(json.loads(msg))
            except ConnectionClosed:
                pass
    kinds = [m["event"] for m in sent]
    assert "clear" in kinds  # the gateway was told to flush the greeting
    assert kinds.index("clear") < len(kinds) - 1
    assert all(m["streamSid"] == "MZ18ad3ab5a668481ce02b83e7395059f0" for m in sent)
    (ended,) = h.ended()
    assert ended.outcome == "station_consent" and ended.record.turns[0].barged_in
    assert any(isinstance(e, StopPlayback) for e in h.events)


async def test_refusals_at_the_handshake(settings):
    """Unknown path, missing or wrong token, and a full route are refused with a reason, not a crash."""
    async with Harness(settings, max_calls=1) as h:
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{h.url}/nope?token={TOKEN}"):
                pass
        assert info.value.response.status_code == 404
        for url in (f"{h.url}/native", f"{h.url}/native?token=wrong"):
            with pytest.raises(InvalidStatus) as info:
                async with connect(url):
                    pass
            assert info.value.response.status_code == 401
        async with connect(f"{h.url}/native?token={TOKEN}") as first:
            await first.send(start_frame("busy1"))
            await asyncio.wait_for(first.recv(), 10)
            with pytest.raises(InvalidStatus) as info:
                async with connect(f"{h.url}/native?token={TOKEN}"):
                    pass
            assert info.value.response.status_code == 503
            assert b"limit of 1" in info.value.response.body


async def test_gateway_disconnect_mid_call_leaves_a_dropped_record(settings):
    """Killing the client mid-call: the record is complete and marked dropped."""
    async with Harness(settings) as h:
        async with connect(f"{h.url}/native?token={TOKEN}") as ws:
            await ws.send(start_frame("gone1"))
            await asyncio.wait_for(ws.recv(), 10)
            for frame in chunks(silence(2.0, 8000), rate=8000, ms=20):
                await ws.send(frame)
        for _ in range(100):
            if h.ended():
                break
            await asyncio.sleep(0.05)
    (ended,) = h.ended()
    assert ended.outcome == "dropped" and ended.record.ended_by == "caller"
    assert ended.record.turns and ended.record.turns[0].prompt.startswith("您好")


async def test_malformed_frames_close_one_call_and_spare_the_other(settings):
    """Bad JSON gets an error frame and close code 1007; a concurrent call carries on to its end."""
    door, _ = read_wav(fixture_path("zh-CN", "door"))
    async with Harness(settings, replies=[fixture_entry("zh-CN", "door")["text"]]) as h:
        good = asyncio.create_task(native_call(h.url, silence(30.0, 8000) + door + silence(1.5, 8000),
                                               start=start_frame("good1")))
        async with connect(f"{h.url}/native?token={TOKEN}") as bad:
            await bad.send(start_frame("bad1"))
            await bad.send("{not json")
            replies = []
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    replies.append(await asyncio.wait_for(bad.recv(), 10))
        assert closed.value.rcvd.code == 1007
        errors = [json.loads(r) for r in replies if isinstance(r, str) and json.loads(r)["type"] == "error"]
        assert errors and errors[0]["code"] == "protocol"
        await asyncio.wait_for(good, 30)
    outcomes = {e.call_id: e.outcome for e in h.ended()}
    assert outcomes == {"good1": "door_delivery", "bad1": "dropped"}


async def test_unknown_plan_and_unsupported_rate_are_refused(settings):
    """A start naming a plan the server does not have, or a rate it cannot run, closes with a reason."""
    async with Harness(settings) as h:
        for frame, code in ((start_frame("x1", plan="no_such_plan"), 1008),
                            (json.dumps({"type": "start", "call_id": "x2", "audio": {"encoding": "pcm16",
                                                                                     "rate": 11025}}), None)):
            async with connect(f"{h.url}/native?token={TOKEN}") as ws:
                await ws.send(frame)
                with pytest.raises(ConnectionClosed) as closed:
                    while True:
                        await asyncio.wait_for(ws.recv(), 10)
                assert closed.value.rcvd.code != 1000
                if code:
                    assert closed.value.rcvd.code == code


async def test_drain_lets_a_live_call_finish(settings):
    """Shutdown stops new calls but the live one completes and its record is emitted."""
    door, _ = read_wav(fixture_path("zh-CN", "door"))
    async with Harness(settings, replies=[fixture_entry("zh-CN", "door")["text"]]) as h:
        call = asyncio.create_task(native_call(h.url, silence(30.0, 8000) + door + silence(1.5, 8000),
                                               start=start_frame("drain1")))
        await asyncio.wait_for(h.call_started.wait(), 10)
        drained = asyncio.create_task(h.server.drain())
        await asyncio.wait_for(call, 30)
        await asyncio.wait_for(drained, 30)
    (ended,) = h.ended()
    assert ended.outcome == "door_delivery"


@pytest.mark.vosk
async def test_korean_call_through_real_vosk_over_native(settings):
    """The whole chain live: websocket audio → VAD → real Vosk (grammar) → engine → TTS → websocket."""
    no, _ = read_wav(fixture_path("ko-KR", "no"))
    yes, _ = read_wav(fixture_path("ko-KR", "yes"))
    async with VoskEngine(settings=settings) as vosk, Harness(settings, vosk=vosk) as h:
        got = await native_call(h.url, silence(8.0, 8000) + no + silence(6.0, 8000) + yes + silence(1.5, 8000),
                                start=start_frame("ko1", plan="delivery_ko", variables={"customer_name": "김"}))
    assert json.loads(got[-1])["type"] == "hangup"
    (ended,) = h.ended()
    assert ended.outcome == "station_consent"
    assert [t.heard for t in ended.record.turns if t.heard] == ["아니요", "네"]


async def test_marks_record_what_the_caller_heard(settings):
    """Marks echoed for played prompts land in the turn as heard in full."""
    door, _ = read_wav(fixture_path("zh-CN", "door"))
    harness = Harness(settings, replies=[fixture_entry("zh-CN", "door")["text"]])
    async with harness as h, connect(f"{h.url}/native?token={TOKEN}") as ws:
        await ws.send(start_frame("m1"))
        while True:
            msg = await asyncio.wait_for(ws.recv(), 10)
            if isinstance(msg, str) and json.loads(msg)["type"] == "mark":
                greeting_mark = json.loads(msg)["name"]
                break
        # A client that played the greeting to its end echoes the mark, then answers.
        await ws.send(json.dumps({"type": "mark", "name": greeting_mark}))
        for frame in chunks(silence(30.0, 8000) + door + silence(1.5, 8000), rate=8000, ms=20):
            await ws.send(frame)
        with pytest.raises(ConnectionClosed):
            while True:
                await asyncio.wait_for(ws.recv(), 10)
    (ended,) = h.ended()
    assert greeting_mark.startswith("greeting#")
    assert ended.record.turns[0].played == ["greeting"]


async def test_frame_rate_limit_allows_a_catch_up_burst_but_not_a_flood(settings):
    """A gateway catching up after a stall (a burst) is fine; a sustained flood is refused with 1008."""
    limits = ServerLimits(max_frames_per_second=100, drain_timeout=5)
    async with Harness(settings, limits=limits) as h:
        async with connect(f"{h.url}/native?token={TOKEN}") as ok:
            await ok.send(start_frame("burst1"))
            for frame in chunks(silence(8.0, 8000), rate=8000, ms=20):  # 400 frames at once: within 5 s of burst
                await ok.send(frame)
            await ok.send(json.dumps({"type": "hangup", "reason": "done"}))
            with pytest.raises(ConnectionClosed) as closed:
                while True:
                    await asyncio.wait_for(ok.recv(), 10)
            assert closed.value.rcvd.code == 1000
        async with connect(f"{h.url}/native?token={TOKEN}") as flood:
            await flood.send(start_frame("flood1"))
            with pytest.raises(ConnectionClosed) as closed:
                for frame in chunks(silence(60.0, 8000), rate=8000, ms=20):  # 3000 frames, as fast as possible
                    await flood.send(frame)
                while True:
                    await asyncio.wait_for(flood.recv(), 10)
            assert closed.value.rcvd.code == 1008


async def test_twilio_signature_admits_twilio_without_a_token(settings):
    """/twilio accepts Twilio's signed upgrade request (X-Twilio-Signature) and refuses a forged one."""
    from voicebot.gateways.twilio import twilio_signature

    public = "wss://voicebot.example.com"
    async with Harness(settings, twilio_auth_token="twilio-secret", public_url=public) as h:
        good = twilio_signature("twilio-secret", f"{public}/twilio", {})
        async with connect(f"{h.url}/twilio", additional_headers={"X-Twilio-Signature": good}) as ws:
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{h.url}/twilio", additional_headers={"X-Twilio-Signature": good[:-2] + "x="}):
                pass
        assert info.value.response.status_code == 401
        # A signature only opens /twilio: other routes still need the gateway token.
        with pytest.raises(InvalidStatus) as info:
            async with connect(f"{h.url}/native", additional_headers={"X-Twilio-Signature": good}):
                pass
        assert info.value.response.status_code == 401


async def test_tls_serves_wss(settings, tmp_path):
    """Given a certificate, the server speaks wss:// and a client trusting it runs a call start."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    await asyncio.to_thread(
        subprocess.run, ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out",
                         str(cert), "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True, timeout=60)
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_ctx.load_cert_chain(cert, key)
    client_ctx = ssl.create_default_context(cafile=str(cert))
    async with Harness(settings, tls=server_ctx) as h:
        assert h.url.startswith("wss://")
        async with connect(f"{h.url}/native?token={TOKEN}", ssl=client_ctx) as ws:
            await ws.send(start_frame("tls1"))
            first = await asyncio.wait_for(ws.recv(), 10)
        assert isinstance(first, bytes)  # the greeting's audio, over TLS
        with pytest.raises(ssl.SSLCertVerificationError):
            async with connect(f"{h.url}/native?token={TOKEN}", ssl=ssl.create_default_context()):
                pass
