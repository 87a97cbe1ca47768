"""jambonz listen codec (bidirectional streaming): golden messages, round trips and malformed input."""

from __future__ import annotations

import json

import numpy as np
import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from voicebot.errors import AudioFormatError
from voicebot.events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from voicebot.gateways.base import (
    CLOSE_BAD_DATA,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallStart,
    MarkReached,
    ProtocolError,
)
from voicebot.gateways.jambonz import JambonzCodec

# A captured first text frame (RasaHQ/rasa tests/core/channels/voice_stream/test_jambonz.py, fixture
# call_metadata). jambonz builds it as Object.assign({sampleRate, mixType}, callInfo, verb.metadata)
# (jambonz/jambonz-feature-server lib/tasks/listen.js, _startListening).
PREAMBLE = {
    "sampleRate": 16000,
    "mixType": "mono",
    "callSid": "d5d1dffb-36fc-4314-81ef-054d41f06b8b",
    "direction": "inbound",
    "from": "+491234567890",
    "to": "+13234866320",
    "callId": "cf85413f-c6ed-123e-64b4-021b968ebcc3",
    "sbcCallid": "09ff53ed-2b3d-4e48-82b7-b0f8af80dd8d",
    "sipStatus": 200,
    "sipReason": "OK",
    "callStatus": "in-progress",
    "accountSid": "d88c9c57-3365-451c-98ae-a6a3cfdb8165",
    "traceId": "5322da038c1a38997eaa7f437c9f451c",
    "applicationSid": "3d1d5ceb-d371-4b2f-8e0e-35536e22c422",
    "fsSipAddress": "10.0.45.157:5070",
    "originatingSipIp": "99.77.253.45",
    "originatingSipTrunkName": "AWS Connect",
    "apiBaseUrl": "http://52.10.150.71/v1",
}
# jambonz-feature-server lib/tasks/listen.js _onDtmf: {event: 'dtmf', dtmf: evt.dtmf, duration: evt.duration}
DTMF = {"event": "dtmf", "dtmf": "5", "duration": "1600"}
# jambonz/node-sdk typescript/src/websocket/audio-stream.ts: mark events {type:'mark', data:{name, event}},
# sendMark -> {type:'mark', data:{name}}, killAudio -> {type:'killAudio'}, clearMarks -> {type:'clearMarks'},
# disconnect -> {type:'disconnect'}; listen docs (jambonz/next-static-site markdown/docs/webhooks/listen.md):
# {"type": "playDone"} after a non-streaming playAudio.
MARK_PLAYOUT = {"type": "mark", "data": {"name": "greet", "event": "playout"}}
MARK_CLEARED = {"type": "mark", "data": {"name": "greet", "event": "cleared"}}
PLAY_DONE = {"type": "playDone"}


def tone(seconds: float, rate: int) -> bytes:
    """A 440 Hz tone as PCM16 bytes."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2").tobytes()


def started(**extra) -> JambonzCodec:
    """A codec that has seen the preamble (8 kHz unless extra says otherwise)."""
    codec = JambonzCodec()
    codec.decode(json.dumps({**PREAMBLE, "sampleRate": 8000, **extra}))
    return codec


def test_preamble_starts_the_call():
    codec = JambonzCodec(query={"plan": "delivery"})
    [start] = codec.decode(json.dumps(PREAMBLE))
    assert start == CallStart(
        call_id="d5d1dffb-36fc-4314-81ef-054d41f06b8b", rate=16000, plan="delivery", caller="+491234567890"
    )


def test_listen_metadata_merged_at_top_level_wins_over_query():
    codec = JambonzCodec(query={"plan": "url-plan", "language": "en-US"})
    meta = {"plan": "survey", "language": "zh-CN", "caller": "13800000000", "variables": {"order": "A1"}}
    [start] = codec.decode(json.dumps({**PREAMBLE, **meta}))
    assert (start.plan, start.language, start.caller, start.variables) == (
        "survey",
        "zh-CN",
        "13800000000",
        {"order": "A1"},
    )


def test_sample_rate_defaults_to_8000_like_jambonz():
    [start] = JambonzCodec().decode(json.dumps({"callSid": "c-1"}))
    assert start.rate == 8000


def test_audio_dtmf_and_marks_decode():
    codec = started()
    pcm = tone(0.02, 8000)
    assert codec.decode(pcm) == [AudioChunk(pcm=pcm, rate=8000)]
    assert codec.decode(json.dumps(DTMF)) == [Dtmf(digit="5")]
    assert codec.decode(json.dumps(MARK_PLAYOUT)) == [MarkReached(name="greet")]
    assert codec.decode(json.dumps({"type": "mark", "data": {"name": "bare"}})) == [MarkReached(name="bare")]
    assert codec.decode(json.dumps(MARK_CLEARED)) == []  # cleared audio was never heard
    assert codec.decode(json.dumps(PLAY_DONE)) == []
    assert codec.decode(json.dumps({"type": "somethingNew", "data": {}})) == []


def test_play_streams_binary_chunks_then_a_mark_and_round_trips():
    codec = started()
    pcm = tone(0.105, 8000)  # 840 samples: 5 full 20 ms chunks and a short one
    frames = codec.encode(Play(pcm=pcm, rate=8000, prompt_id="greet"))
    *audio, mark = frames
    assert [len(f) for f in audio] == [320] * 5 + [80]
    assert all(isinstance(f, bytes) for f in audio)
    assert b"".join(audio) == pcm
    assert json.loads(mark) == {"type": "mark", "data": {"name": "greet"}}
    # The mark jambonz echoes back resolves to the prompt we sent.
    echoed = {"type": "mark", "data": {**json.loads(mark)["data"], "event": "playout"}}
    assert codec.decode(json.dumps(echoed)) == [MarkReached(name="greet")]


def test_prompt_without_id_gets_no_mark():
    codec = started()
    frames = codec.encode(Play(pcm=tone(0.02, 8000), rate=8000))
    assert all(isinstance(f, bytes) for f in frames)


def test_control_messages():
    codec = started()
    assert [json.loads(f) for f in codec.encode(StopPlayback())] == [{"type": "killAudio"}, {"type": "clearMarks"}]
    assert [json.loads(f) for f in codec.encode(Hangup(reason="done"))] == [{"type": "disconnect"}]
    assert codec.encode(Transfer(target="8001", reason="asked")) == []


def test_prompt_at_the_wrong_rate_or_odd_length_is_refused():
    codec = started()
    with pytest.raises(AudioFormatError):
        codec.encode(Play(pcm=tone(0.02, 16000), rate=16000))
    with pytest.raises(AudioFormatError):
        codec.encode(Play(pcm=b"\x01\x02\x03", rate=8000))


@pytest.mark.parametrize(
    ("frames", "close_code", "words"),
    [
        ([b"\x00\x01" * 160], CLOSE_PROTOCOL, "before the call started"),
        (["{oops"], CLOSE_BAD_DATA, "not valid JSON"),
        (['"just a string"'], CLOSE_BAD_DATA, "JSON object"),
        (['{"from": "+1"}'], CLOSE_PROTOCOL, "no callSid"),
        (['{"callSid": "c", "sampleRate": 24000}'], CLOSE_UNSUPPORTED, "24000 unsupported"),
        (['{"callSid": "c", "mixType": "stereo"}'], CLOSE_UNSUPPORTED, "stereo"),
        (['{"callSid": "c", "variables": "x"}'], CLOSE_BAD_DATA, "variables"),
        (['{"callSid": "c"}', b"\x00"], CLOSE_BAD_DATA, "odd length 1"),
        (['{"callSid": "c"}', b"\x00" * 65538], CLOSE_TOO_BIG, "exceeds"),
        (['{"callSid": "c"}', "not json after start"], CLOSE_BAD_DATA, "not valid JSON"),
        (['{"callSid": "c"}', '{"event": "dtmf"}'], CLOSE_BAD_DATA, "dtmf"),
        (['{"callSid": "c"}', '{"event": "dtmf", "dtmf": "Z"}'], CLOSE_BAD_DATA, "unknown DTMF digit"),
        (['{"callSid": "c"}', '{"type": "mark", "data": {}}'], CLOSE_BAD_DATA, "data.name"),
        (['{"callSid": "c"}', '{"type": "mark", "data": {"name": "m", "event": "??"}}'], CLOSE_BAD_DATA, "event"),
    ],
)
def test_malformed_input_is_refused_with_a_fitting_close_code(frames, close_code, words):
    codec = JambonzCodec()
    with pytest.raises(ProtocolError) as err:
        for frame in frames:
            codec.decode(frame)
    assert err.value.close_code == close_code
    assert words in str(err.value)


def test_codec_identity():
    assert (JambonzCodec.name, JambonzCodec.path, JambonzCodec.subprotocols) == (
        "jambonz",
        "/jambonz",
        ("audio.jambonz.org",),
    )


async def test_frames_survive_a_real_websocket_on_loopback():
    """jambonz's side as a websocket client; our codec behind a loopback server."""
    seen: list = []
    pcm = tone(0.06, 8000)

    async def handler(ws):
        codec = JambonzCodec()
        async for frame in ws:
            seen.extend(codec.decode(frame))
            if len(seen) == 2:
                for out in codec.encode(Play(pcm=pcm, rate=8000, prompt_id="hi")):
                    await ws.send(out)

    async with serve(handler, "127.0.0.1", 0, subprotocols=["audio.jambonz.org"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/jambonz", subprotocols=["audio.jambonz.org"]) as ws:
            assert ws.subprotocol == "audio.jambonz.org"
            await ws.send(json.dumps({**PREAMBLE, "sampleRate": 8000}))
            await ws.send(pcm[:320])
            received = [await ws.recv() for _ in range(4)]
    assert isinstance(seen[0], CallStart) and seen[1] == AudioChunk(pcm=pcm[:320], rate=8000)
    assert b"".join(received[:3]) == pcm
    assert json.loads(received[3]) == {"type": "mark", "data": {"name": "hi"}}
