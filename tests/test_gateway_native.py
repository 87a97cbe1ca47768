"""voicebot's native gateway protocol: start, audio in three encodings, controls, encode shapes, bad input."""

from __future__ import annotations

import asyncio
import json
from datetime import date

import pytest
from conftest import fixture_path
from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve

from voicebot.audio import alaw_decode, alaw_encode, read_wav, resample, ulaw_decode, ulaw_encode
from voicebot.errors import AudioFormatError
from voicebot.events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from voicebot.gateways.base import (
    CLOSE_BAD_DATA,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    MarkReached,
    ProtocolError,
    mark_name,
    prompt_of_mark,
)
from voicebot.gateways.native import NativeCodec


def start_frame(encoding: str = "pcm16", rate: int = 8000, **fields: object) -> str:
    """A start frame with the given audio format and extra fields."""
    return json.dumps({"type": "start", "call_id": "call-1", "audio": {"encoding": encoding, "rate": rate},
                       **fields})


def started(encoding: str = "pcm16", rate: int = 8000) -> NativeCodec:
    """A codec that has accepted a start frame."""
    codec = NativeCodec()
    codec.decode(start_frame(encoding, rate))
    return codec


def speech(rate: int = 8000) -> bytes:
    """A real recorded utterance as PCM16."""
    pcm, got = read_wav(fixture_path("zh-CN", "door", rate))
    assert got == rate
    return pcm


# --- inbound -------------------------------------------------------------------------------------------


def test_start_with_every_field() -> None:
    codec = NativeCodec()
    frame = start_frame("mulaw", 8000, plan="pre_delivery", caller="+8613800138000", language="zh-CN",
                        variables={"order_id": "SF123", "attempt": 2, "vip": True, "note": None})
    call_id = "CA.1:x-y_z"
    (start,) = codec.decode(frame.replace("call-1", call_id))
    assert start == CallStart(call_id=call_id, rate=8000, plan="pre_delivery",
                              variables={"order_id": "SF123", "attempt": 2, "vip": True, "note": None},
                              caller="+8613800138000", language="zh-CN")
    assert codec.encoding == "mulaw" and codec.started is start


def test_plan_from_query_only_when_start_names_none() -> None:
    (start,) = NativeCodec(query={"plan": "survey"}).decode(start_frame())
    assert start.plan == "survey"
    (start,) = NativeCodec(query={"plan": "survey"}).decode(start_frame(plan="pre_delivery"))
    assert start.plan == "pre_delivery"


@pytest.mark.parametrize("encoding", ["pcm16", "mulaw", "alaw"])
@pytest.mark.parametrize("rate", [8000, 16000])
def test_caller_audio_arrives_as_pcm16_at_the_declared_rate(encoding: str, rate: int) -> None:
    pcm = speech(rate)[: rate * 2 // 2]  # half a second
    wire = {"pcm16": pcm, "mulaw": ulaw_encode(pcm), "alaw": alaw_encode(pcm)}[encoding]
    expected = {"pcm16": pcm, "mulaw": ulaw_decode(wire), "alaw": alaw_decode(wire)}[encoding]
    assert started(encoding, rate).decode(wire) == [AudioChunk(pcm=expected, rate=rate)]


def test_dtmf_mark_hangup_and_silence_after_hangup() -> None:
    codec = started()
    assert codec.decode('{"type":"dtmf","digit":"#"}') == [Dtmf("#")]
    assert codec.decode('{"type":"mark","name":"greet#1"}') == [MarkReached("greet#1")]
    assert codec.decode(b"") == []
    assert codec.decode('{"type":"hangup","reason":"caller_done"}') == [CallerHangup("caller_done")]
    assert codec.decode(bytes(320)) == []  # audio racing the hangup is dropped
    assert codec.decode('{"type":"dtmf","digit":"1"}') == []
    assert started().decode('{"type":"hangup"}') == [CallerHangup("hangup")]


def test_one_second_of_audio_is_the_largest_frame() -> None:
    assert len(started("pcm16", 16000).decode(bytes(32000))[0].pcm) == 32000
    assert len(started("mulaw", 8000).decode(bytes(8000))[0].pcm) == 16000
    for encoding, rate, size in (("pcm16", 16000, 32002), ("pcm16", 8000, 16002), ("alaw", 8000, 8001)):
        with pytest.raises(ProtocolError, match="over 1 s") as err:
            started(encoding, rate).decode(bytes(size))
        assert err.value.close_code == CLOSE_TOO_BIG


# --- outbound ------------------------------------------------------------------------------------------


def test_play_pcm16_goes_out_in_20ms_frames_then_a_numbered_mark() -> None:
    codec = started("pcm16", 16000)
    pcm = speech(16000)
    frames = codec.encode(Play(pcm=pcm, rate=16000, prompt_id="greet"))
    *audio, mark = frames
    assert all(isinstance(f, bytes) for f in audio)
    assert all(len(f) == 640 for f in audio[:-1]) and 0 < len(audio[-1]) <= 640
    assert b"".join(audio) == pcm
    assert json.loads(mark) == {"type": "mark", "name": "greet#1"}
    assert json.loads(codec.encode(Play(pcm=b"", rate=16000, prompt_id="bye"))[-1])["name"] == "bye#2"


@pytest.mark.parametrize(("encoding", "enc", "dec"), [("mulaw", ulaw_encode, ulaw_decode),
                                                      ("alaw", alaw_encode, alaw_decode)])
def test_g711_round_trip_through_encode_and_decode(encoding: str, enc, dec) -> None:
    codec = started(encoding, 8000)
    pcm = speech(8000)
    *audio, _mark = codec.encode(Play(pcm=pcm, rate=8000, prompt_id="p"))
    assert all(len(f) == 160 for f in audio[:-1])
    # The client plays our frames back to us as caller audio: same bytes, within G.711 precision.
    back = b"".join(c.pcm for f in audio for c in codec.decode(f))
    assert back == dec(enc(pcm))


def test_play_at_another_rate_is_resampled_to_the_call_rate() -> None:
    codec = started("pcm16", 8000)
    pcm16k = speech(16000)
    *audio, _ = codec.encode(Play(pcm=pcm16k, rate=16000, prompt_id="p"))
    assert b"".join(audio) == resample(pcm16k, from_rate=16000, to_rate=8000)


def test_play_with_odd_pcm_is_our_bug_not_the_clients() -> None:
    with pytest.raises(AudioFormatError):
        started("mulaw").encode(Play(pcm=b"\x00", rate=8000))


def test_control_frames_out() -> None:
    codec = NativeCodec()  # clear, transfer and hangup need no start: the server may end a call early
    assert [json.loads(f) for f in codec.encode(StopPlayback())] == [{"type": "clear"}]
    transfer = Transfer(target="agent", reason="asked", context={"intent": "agent", "since": date(2025, 11, 11),
                                                                  "转": "人工"})
    assert [json.loads(f) for f in codec.encode(transfer)] == [{
        "type": "transfer", "target": "agent", "reason": "asked",
        "context": {"intent": "agent", "since": "2025-11-11", "转": "人工"},
    }]
    assert [json.loads(f) for f in codec.encode(Hangup(reason="done"))] == [{"type": "hangup", "reason": "done"}]
    with pytest.raises(ProtocolError, match="before the call started"):
        codec.encode(Play(pcm=bytes(320), rate=8000))


def test_error_frame() -> None:
    frame = NativeCodec.error_frame(ProtocolError("native: no", close_code=CLOSE_BAD_DATA))
    assert json.loads(frame) == {"type": "error", "code": "protocol", "message": "native: no"}


def test_mark_names_carry_the_prompt() -> None:
    assert mark_name("confirm_door", 3) == "confirm_door#3"
    assert prompt_of_mark("confirm_door#3") == "confirm_door"
    assert prompt_of_mark("a#b#12") == "a#b"
    assert prompt_of_mark("my label") == "" and prompt_of_mark("x#") == ""


# --- bad input -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "close_code", "words"),
    [
        ("{nope", CLOSE_BAD_DATA, "bad control frame"),
        ('{"type":"dance"}', CLOSE_PROTOCOL, "type"),
        ('{"call_id":"x"}', CLOSE_PROTOCOL, "type"),
        ("[1,2]", CLOSE_BAD_DATA, "bad control frame"),
        (start_frame().replace("call-1", "has space"), CLOSE_BAD_DATA, "call_id"),
        (start_frame().replace("call-1", "x" * 129), CLOSE_BAD_DATA, "call_id"),
        (start_frame().replace("call-1", ""), CLOSE_BAD_DATA, "call_id"),
        ('{"type":"start","call_id":"c"}', CLOSE_BAD_DATA, "audio"),
        (start_frame(rate="8000"), CLOSE_BAD_DATA, "rate"),
        (start_frame(extra=1), CLOSE_BAD_DATA, "extra"),
        (start_frame(variables={"bad key": 1}), CLOSE_BAD_DATA, "variables"),
        (start_frame(variables={"nested": {"a": 1}}), CLOSE_BAD_DATA, "variables"),
        (start_frame(language="Chinese"), CLOSE_BAD_DATA, "language"),
        (start_frame("opus", 8000), CLOSE_UNSUPPORTED, "unsupported audio"),
        (start_frame("pcm16", 44100), CLOSE_UNSUPPORTED, "unsupported audio"),
        ('{"type":"hangup","reason":"' + "x" * 70_000 + '"}', CLOSE_TOO_BIG, "over"),
    ],
)
def test_malformed_control_frames(frame: str, close_code: int, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as err:
        NativeCodec().decode(frame)
    assert err.value.close_code == close_code


@pytest.mark.parametrize("frame", [b"\x00\x00", '{"type":"dtmf","digit":"1"}', '{"type":"mark","name":"a"}',
                                   '{"type":"hangup"}'])
def test_nothing_but_start_comes_first(frame: str | bytes) -> None:
    with pytest.raises(ProtocolError, match="before the call started") as err:
        NativeCodec().decode(frame)
    assert err.value.close_code == CLOSE_PROTOCOL


def test_odd_pcm16_bad_digit_and_second_start() -> None:
    codec = started("pcm16")
    with pytest.raises(ProtocolError, match="odd length") as err:
        codec.decode(bytes(321))
    assert err.value.close_code == CLOSE_BAD_DATA
    for digit in ("12", "x", ""):
        with pytest.raises(ProtocolError, match="digit"):
            codec.decode(json.dumps({"type": "dtmf", "digit": digit}))
    with pytest.raises(ProtocolError, match="second start"):
        codec.decode(start_frame())
    # None of that broke the connection's state: audio still flows.
    assert codec.decode(bytes(320)) == [AudioChunk(bytes(320), 8000)]


# --- over a real websocket on loopback ----------------------------------------------------------------


async def test_native_protocol_over_a_loopback_websocket() -> None:
    got: list[object] = []

    async def handler(ws: ServerConnection) -> None:
        codec = NativeCodec()
        async for frame in ws:
            for msg in codec.decode(frame):
                got.append(msg)
                if isinstance(msg, CallStart):
                    for out in codec.encode(Play(pcm=bytes(3200), rate=8000, prompt_id="hello")):
                        await ws.send(out)
                if isinstance(msg, CallerHangup):
                    await ws.close()

    async with serve(handler, "127.0.0.1", 0, subprotocols=["voicebot.v1"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/native", subprotocols=["voicebot.v1"]) as ws:
            assert ws.subprotocol == "voicebot.v1"
            await ws.send(start_frame("mulaw", 8000))
            frames = [await asyncio.wait_for(ws.recv(), 5) for _ in range(11)]
            await ws.send(bytes([0xFF]) * 160)
            await ws.send(json.dumps({"type": "mark", "name": json.loads(frames[-1])["name"]}))
            await ws.send('{"type":"hangup","reason":"done"}')
            await ws.wait_closed()
    assert [len(f) for f in frames[:-1]] == [160] * 10 and all(isinstance(f, bytes) for f in frames[:-1])
    assert json.loads(frames[-1]) == {"type": "mark", "name": "hello#1"}
    assert [type(m).__name__ for m in got] == ["CallStart", "AudioChunk", "MarkReached", "CallerHangup"]
    assert got[1] == AudioChunk(pcm=bytes(320), rate=8000)  # μ-law 0xFF is digital silence
