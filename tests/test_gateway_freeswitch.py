"""FreeSWITCH codecs: mod_audio_fork (drachtio) and mod_audio_stream (amigniter), golden and malformed input."""

from __future__ import annotations

import base64
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
    ProtocolError,
)
from voicebot.gateways.freeswitch import AudioForkCodec, AudioStreamCodec

# drachtio/drachtio-freeswitch-modules modules/mod_audio_fork/README.md, "Usage":
#   const callerData = {to: '6173333456', from: '2061236666', callid: req.get('Call-Id')};
#   ep.api('uuid_audio_fork', `${ep.uuid} start ${url} mono 8k ${JSON.stringify(callerData)}`);
README_METADATA = json.dumps({"to": "6173333456", "from": "2061236666", "callid": "a84b4c76e66710@pc33.example.com"})

# Same README, "audio" section: the server's playAudio message (textContent is optional).
README_PLAY_AUDIO = {
    "type": "playAudio",
    "data": {
        "audioContentType": "raw",
        "sampleRate": 8000,
        "audioContent": "base64 encoded raw audio..",
        "textContent": "Hi there!  How can we help?",
    },
}
# Same README: {"type": "killAudio"} and {"type": "disconnect"}; transfer is {"type": "transfer", "data": {...}}.

# amigniter/mod_audio_stream README.md, "play" event: the message the server must send.
README_STREAM_AUDIO = {
    "type": "streamAudio",
    "data": {"audioDataType": "raw", "sampleRate": 8000, "audioData": "base64 encoded audio"},
}


def tone(seconds: float, rate: int) -> bytes:
    """A 440 Hz tone as PCM16 bytes."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * 440 * t) * 12000).astype("<i2").tobytes()


def started(codec_cls=AudioForkCodec, rate: int = 8000, **meta) -> AudioForkCodec:
    """A codec that has seen a metadata frame."""
    codec = codec_cls(query={"rate": str(rate)})
    codec.decode(json.dumps({"callId": "c-1", **meta}))
    return codec


def test_readme_metadata_starts_the_call_with_query_defaults():
    codec = AudioForkCodec(query={"rate": "16000", "plan": "delivery", "language": "zh-CN"})
    [start] = codec.decode(README_METADATA)
    assert start == CallStart(
        call_id="a84b4c76e66710@pc33.example.com", rate=16000, plan="delivery", caller="2061236666", language="zh-CN"
    )
    assert codec.started is start


def test_metadata_keys_win_over_query():
    codec = AudioForkCodec(query={"rate": "8000", "plan": "from-url", "call_id": "url-id"})
    [start] = codec.decode(
        json.dumps(
            {
                "uuid": "7dd5e34e-5db4-4edb-a166-757e5d29b941",
                "sampleRate": 16000,
                "plan": "survey",
                "variables": {"name": "张三", "order": 42},
                "caller": "+8613800000000",
                "language": "en-US",
                "mixType": "mono",
                "anything": ["else", "is", "kept", "out"],
            }
        )
    )
    assert start.call_id == "7dd5e34e-5db4-4edb-a166-757e5d29b941"
    assert start.stream_id == "7dd5e34e-5db4-4edb-a166-757e5d29b941"
    assert (start.rate, start.plan, start.caller, start.language) == (16000, "survey", "+8613800000000", "en-US")
    assert start.variables == {"name": "张三", "order": 42}


def test_call_id_from_query_and_default_rate():
    codec = AudioForkCodec(query={"call_id": "q-9"})
    [start] = codec.decode("{}")
    assert (start.call_id, start.rate) == ("q-9", 8000)


def test_binary_audio_after_metadata_is_passed_through_unchanged():
    codec = started(rate=16000)
    pcm = tone(0.02, 16000)
    assert codec.decode(pcm) == [AudioChunk(pcm=pcm, rate=16000)]
    assert codec.decode(b"") == []


def test_play_matches_readme_shape_and_round_trips_audio():
    codec = started()
    pcm = tone(1.0, 8000)
    [frame] = codec.encode(Play(pcm=pcm, rate=8000, prompt_id="greet"))
    sent = json.loads(frame)
    assert sent["type"] == README_PLAY_AUDIO["type"]
    assert set(sent["data"]) <= set(README_PLAY_AUDIO["data"])
    assert sent["data"]["audioContentType"] == "raw"
    assert sent["data"]["sampleRate"] == 8000 and isinstance(sent["data"]["sampleRate"], int)
    assert base64.b64decode(sent["data"]["audioContent"]) == pcm


def test_long_prompt_is_split_into_bounded_messages_without_losing_audio():
    codec = started(rate=16000)
    pcm = tone(45.0, 16000)
    frames = codec.encode(Play(pcm=pcm, rate=16000, prompt_id="long"))
    assert len(frames) == 3
    assert all(len(f) < 1_000_000 for f in frames)
    joined = b"".join(base64.b64decode(json.loads(f)["data"]["audioContent"]) for f in frames)
    assert joined == pcm


def test_control_messages_match_the_readme():
    codec = started()
    assert [json.loads(f) for f in codec.encode(StopPlayback())] == [{"type": "killAudio"}]
    assert [json.loads(f) for f in codec.encode(Hangup(reason="done"))] == [{"type": "disconnect"}]
    [transfer] = codec.encode(Transfer(target="8001", reason="asked", context={"intent": "agent", "slots": {"a": 1}}))
    assert json.loads(transfer) == {
        "type": "transfer",
        "data": {"exten": "8001", "reason": "asked", "handoff": {"intent": "agent", "slots": {"a": 1}}},
    }


def test_later_text_frames_are_app_data_except_jambonz_dtmf():
    codec = started()
    assert codec.decode("goodbye, plain text from uuid_audio_fork stop") == []
    assert codec.decode(json.dumps({"note": "send_text payload"})) == []
    # jambonz feature-server lib/tasks/listen.js sends DTMF through mod_audio_fork's send_text like this:
    assert codec.decode(json.dumps({"event": "dtmf", "dtmf": "5", "duration": "1600"})) == [Dtmf(digit="5")]
    pcm = tone(0.02, 8000)
    assert codec.decode(pcm) == [AudioChunk(pcm=pcm, rate=8000)]  # nothing lost after ignored text


def test_bad_dtmf_digit_is_refused():
    codec = started()
    with pytest.raises(ProtocolError) as err:
        codec.decode(json.dumps({"event": "dtmf", "dtmf": "x"}))
    assert err.value.close_code == CLOSE_BAD_DATA


@pytest.mark.parametrize(
    ("frames", "close_code", "words"),
    [
        ([b"\x00\x01" * 160], CLOSE_PROTOCOL, "before the metadata"),
        (["{not json"], CLOSE_BAD_DATA, "not valid JSON"),
        (["[1, 2]"], CLOSE_BAD_DATA, "JSON object"),
        (['{"to": "1"}'], CLOSE_PROTOCOL, "no callId"),
        (['{"callId": "c", "sampleRate": 44100}'], CLOSE_UNSUPPORTED, "44100 unsupported"),
        (['{"callId": "c", "sampleRate": "fast"}'], CLOSE_BAD_DATA, "not a number"),
        (['{"callId": "c", "mixType": "stereo"}'], CLOSE_UNSUPPORTED, "stereo"),
        (['{"callId": "c", "variables": [1]}'], CLOSE_BAD_DATA, "variables"),
        (['{"callId": "c"}', b"\x00\x01\x02"], CLOSE_BAD_DATA, "odd length 3"),
        (['{"callId": "c"}', b"\x00" * (65536 + 2)], CLOSE_TOO_BIG, "exceeds"),
        (['{"callId": "' + "x" * 70000 + '"}'], CLOSE_TOO_BIG, "exceeds"),
    ],
)
def test_malformed_input_is_refused_with_a_fitting_close_code(frames, close_code, words):
    codec = AudioForkCodec()
    with pytest.raises(ProtocolError) as err:
        for frame in frames:
            codec.decode(frame)
    assert err.value.close_code == close_code
    assert words in str(err.value)
    assert err.value.code == "protocol"


def test_query_rate_is_checked_too():
    with pytest.raises(ProtocolError) as err:
        AudioForkCodec(query={"rate": "24000", "call_id": "c"}).decode("{}")
    assert err.value.close_code == CLOSE_UNSUPPORTED


def test_bad_prompt_audio_is_our_error_not_the_gateways():
    codec = started()
    with pytest.raises(AudioFormatError):
        codec.encode(Play(pcm=b"\x00\x01\x02", rate=8000))
    with pytest.raises(AudioFormatError):
        codec.encode(Play(pcm=b"\x00\x01", rate=11025))


# --- mod_audio_stream ---------------------------------------------------------------------------


def test_stream_play_matches_readme_shape_and_round_trips_audio():
    codec = started(AudioStreamCodec)
    pcm = tone(0.5, 8000)
    [frame] = codec.encode(Play(pcm=pcm, rate=8000, prompt_id="p"))
    sent = json.loads(frame)
    assert sent["type"] == README_STREAM_AUDIO["type"]
    assert set(sent["data"]) == set(README_STREAM_AUDIO["data"])
    assert (sent["data"]["audioDataType"], sent["data"]["sampleRate"]) == ("raw", 8000)
    assert base64.b64decode(sent["data"]["audioData"]) == pcm


def test_stream_has_no_flush_transfer_or_hangup_message():
    codec = started(AudioStreamCodec)
    assert codec.encode(StopPlayback()) == []
    assert codec.encode(Transfer(target="8001", reason="x")) == []
    assert codec.encode(Hangup(reason="x")) == []


def test_stream_metadata_is_optional_when_the_url_names_the_call():
    codec = AudioStreamCodec(query={"call_id": "fs-uuid", "rate": "16000", "plan": "p"})
    pcm = tone(0.02, 16000)
    start, chunk = codec.decode(pcm)
    assert start == CallStart(call_id="fs-uuid", rate=16000, plan="p")
    assert chunk == AudioChunk(pcm=pcm, rate=16000)
    with pytest.raises(ProtocolError) as err:
        AudioStreamCodec().decode(pcm)
    assert err.value.close_code == CLOSE_PROTOCOL


def test_codec_identity():
    assert (AudioForkCodec.name, AudioForkCodec.path, AudioForkCodec.subprotocols) == (
        "freeswitch",
        "/freeswitch",
        ("audio.drachtio.org",),
    )
    assert (AudioStreamCodec.name, AudioStreamCodec.path, AudioStreamCodec.subprotocols) == (
        "freeswitch_stream",
        "/freeswitch-stream",
        (),
    )


async def test_frames_survive_a_real_websocket_on_loopback():
    """mod_audio_fork's side as a websocket client; our codec behind a loopback server."""
    seen: list = []
    pcm = tone(0.1, 8000)

    async def handler(ws):
        codec = AudioForkCodec(query={"rate": "8000"})
        async for frame in ws:
            seen.extend(codec.decode(frame))
            if len(seen) == 2:
                for out in codec.encode(Play(pcm=pcm, rate=8000, prompt_id="hi")) + codec.encode(StopPlayback()):
                    await ws.send(out)

    async with serve(handler, "127.0.0.1", 0, subprotocols=["audio.drachtio.org"]) as server:
        port = server.sockets[0].getsockname()[1]
        async with connect(f"ws://127.0.0.1:{port}/freeswitch", subprotocols=["audio.drachtio.org"]) as ws:
            assert ws.subprotocol == "audio.drachtio.org"
            await ws.send(README_METADATA)
            await ws.send(pcm[:320])
            play, kill = json.loads(await ws.recv()), json.loads(await ws.recv())
    assert isinstance(seen[0], CallStart) and seen[1] == AudioChunk(pcm=pcm[:320], rate=8000)
    assert base64.b64decode(play["data"]["audioContent"]) == pcm
    assert kill == {"type": "killAudio"}
