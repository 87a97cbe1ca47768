"""Twilio Media Streams codec: Twilio's own example messages, a real captured call, μ-law, signatures, bad input."""

from __future__ import annotations

import base64
import json

import numpy as np
import pytest
from conftest import fixture_path

from voicebot.audio import as_array, read_wav, resample, ulaw_decode, ulaw_encode
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
    prompt_of_mark,
)
from voicebot.gateways.twilio import TwilioCodec, twilio_signature, valid_twilio_signature

# --- Twilio's documented examples, verbatim ------------------------------------------------------
# Source: https://www.twilio.com/docs/voice/media-streams/websocket-messages (the docs' media payloads are
# abbreviated there, "no+JhoaJjpz...", so they are not valid base64; see the tests that use them).

DOC_CONNECTED = """{
  "event": "connected",
  "protocol": "Call",
  "version": "1.0.0"
}"""

DOC_START = """{
  "event": "start",
  "sequenceNumber": "1",
  "start": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "tracks": ["inbound"],
    "mediaFormat": {
      "encoding": "audio/x-mulaw",
      "sampleRate": 8000,
      "channels": 1
    },
    "customParameters": {
      "FirstName": "Jane",
      "LastName": "Doe",
      "RemoteParty": "Bob"
    }
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

DOC_MEDIA_OUTBOUND = """{
  "event": "media",
  "sequenceNumber": "3",
  "media": {
    "track": "outbound",
    "chunk": "1",
    "timestamp": "5",
    "payload": "no+JhoaJjpz..."
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

DOC_MEDIA_INBOUND = """{
  "event": "media",
  "sequenceNumber": "4",
  "media": {
    "track": "inbound",
    "chunk": "2",
    "timestamp": "5",
    "payload": "no+JhoaJjpzS..."
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

DOC_STOP = """{
  "event": "stop",
  "sequenceNumber": "5",
  "stop": {
    "accountSid": "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    "callSid": "CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
  },
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"
}"""

DOC_DTMF = """{
  "event": "dtmf",
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "sequenceNumber": "5",
  "dtmf": {
    "track": "inbound_track",
    "digit": "1"
  }
}"""

DOC_MARK = """{
  "event": "mark",
  "sequenceNumber": "4",
  "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
  "mark": {
    "name": "my label"
  }
}"""

# What the docs say our server sends (section "Send WebSocket Messages to Twilio").
DOC_SEND_MARK = {"event": "mark", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "mark": {"name": "my label"}}
DOC_SEND_CLEAR = {"event": "clear", "streamSid": "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"}

# --- a real call, as Twilio sent it ------------------------------------------------------------------
# Source: github.com/twilio/media-streams, node/connect-basic/output.txt (a logged <Connect><Stream> call);
# printed there as JS objects, re-quoted here as JSON with the same fields and values.
SID = "9e7ee906-377b-408f-a852-eebfb834422a"
REAL_PAYLOAD = (
    "6/jk2NbZ3uXj5Oz+bmhiYnD07+XWy8bIzdjg6mpNPzk3Nzc2Njg/UXXl2s7Cu7u+xcnLzdr7aGp98/94++PTztXc3NfV3PRnYGNh"
    "XVtfe9vMxcXJzM/X81JAOjY0MjEwMzlDVX3dzsK6tre8wsfK0OxdVFtx/nZw89fMzNLb3NPS3v5kYXZvXl5q3snBvb3BxsrYakY3"
    "Ly0sKysrLjZCZA=="
)
REAL_CALL = [
    {"event": "connected", "protocol": "Call", "version": "1.0.0"},
    {
        "event": "start",
        "sequenceNumber": "1",
        "start": {
            "accountSid": "AC18fbd524d33614fba208030751dffdca",
            "streamSid": SID,
            "callSid": "CA3c95a2a6bba5fde93a5dea01e388e8fb",
            "tracks": ["inbound"],
            "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
            "customParameters": {"aCutomParameter": "aCustomValue that was set in TwiML"},
        },
        "streamSid": SID,
    },
    {
        "event": "media",
        "sequenceNumber": "2",
        "media": {"track": "inbound", "chunk": "1", "timestamp": "52", "payload": REAL_PAYLOAD},
        "streamSid": SID,
    },
    {"event": "mark", "sequenceNumber": "103", "streamSid": SID, "mark": {"name": "Repeat message 0"}},
]


def started(start: str = DOC_START) -> TwilioCodec:
    """A codec that has seen Twilio's documented connected and start messages."""
    codec = TwilioCodec()
    assert codec.decode(DOC_CONNECTED) == []
    codec.decode(start)
    return codec


def with_params(**params: str) -> str:
    """The documented start message with other customParameters."""
    msg = json.loads(DOC_START)
    msg["start"]["customParameters"] = params
    return json.dumps(msg)


def media(payload: str, *, seq: int = 2, sid: str = "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", track: str = "inbound") -> str:
    """An inbound media message shaped like the documented one."""
    return json.dumps({"event": "media", "sequenceNumber": str(seq), "streamSid": sid,
                       "media": {"track": track, "chunk": "1", "timestamp": "5", "payload": payload}})


# --- golden: each documented message ---------------------------------------------------------------


def test_documented_connected_then_start() -> None:
    codec = TwilioCodec()
    assert codec.decode(DOC_CONNECTED) == []
    (start,) = codec.decode(DOC_START)
    assert start == CallStart(
        call_id="CAXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        rate=8000,
        variables={"FirstName": "Jane", "LastName": "Doe", "RemoteParty": "Bob"},
        stream_id="MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
    )
    assert codec.started is start


def test_plan_caller_and_language_come_from_custom_parameters() -> None:
    codec = TwilioCodec()
    (start,) = codec.decode(with_params(plan="pre_delivery", caller="+8613800138000", language="zh-CN",
                                        order_id="SF123"))
    assert (start.plan, start.caller, start.language) == ("pre_delivery", "+8613800138000", "zh-CN")
    assert start.variables == {"order_id": "SF123"}


def test_documented_outbound_media_is_not_caller_audio() -> None:
    # Our own audio echoed on the outbound track is skipped before its (abbreviated) payload is read.
    assert started().decode(DOC_MEDIA_OUTBOUND) == []


def test_documented_inbound_media_with_abbreviated_payload_is_bad_base64() -> None:
    with pytest.raises(ProtocolError, match="base64") as err:
        started().decode(DOC_MEDIA_INBOUND)
    assert err.value.close_code == CLOSE_BAD_DATA


def test_documented_dtmf_mark_and_stop() -> None:
    assert started().decode(DOC_DTMF) == [Dtmf("1")]
    assert started().decode(DOC_MARK) == [MarkReached("my label")]
    codec = started()
    assert codec.decode(DOC_STOP) == [CallerHangup("stop")]
    assert codec.decode(DOC_DTMF) == []  # nothing after stop reaches the session


# --- a whole call in order -------------------------------------------------------------------------


def test_real_call_decodes_in_order_and_marks_round_trip() -> None:
    codec = TwilioCodec()
    out = [m for frame in REAL_CALL for m in codec.decode(json.dumps(frame))]
    start, chunk, mark = out
    assert isinstance(start, CallStart)
    assert (start.call_id, start.stream_id) == ("CA3c95a2a6bba5fde93a5dea01e388e8fb", SID)
    assert start.variables == {"aCutomParameter": "aCustomValue that was set in TwiML"}
    raw = base64.b64decode(REAL_PAYLOAD)
    assert len(raw) == 160  # Twilio sends 20 ms per message
    assert chunk == AudioChunk(pcm=ulaw_decode(raw), rate=8000)
    assert mark == MarkReached("Repeat message 0")

    # Our prompt goes out; Twilio echoes our mark once it has played; the caller presses 5 and hangs up.
    frames = codec.encode(Play(pcm=bytes(1600), rate=8000, prompt_id="welcome"))
    ours = json.loads(frames[-1])["mark"]["name"]
    echo = {"event": "mark", "sequenceNumber": "150", "streamSid": SID, "mark": {"name": ours}}
    dtmf = {"event": "dtmf", "streamSid": SID, "sequenceNumber": "151",
            "dtmf": {"track": "inbound_track", "digit": "5"}}
    stop = {"event": "stop", "sequenceNumber": "152", "streamSid": SID,
            "stop": {"accountSid": "AC18fbd524d33614fba208030751dffdca", "callSid": start.call_id}}
    tail = [m for frame in (echo, dtmf, stop) for m in codec.decode(json.dumps(frame))]
    assert tail == [MarkReached(ours), Dtmf("5"), CallerHangup("stop")]
    assert prompt_of_mark(ours) == "welcome"


# --- encode ----------------------------------------------------------------------------------------


def test_encode_play_is_20ms_media_then_a_mark_as_twilio_documents() -> None:
    codec = started()
    pcm = bytes(range(256)) * 13  # 3328 bytes = 1664 samples = 208 ms
    frames = [json.loads(f) for f in codec.encode(Play(pcm=pcm, rate=8000, prompt_id="greet"))]
    *media_msgs, mark = frames
    assert len(media_msgs) == 11  # 10 full 20 ms frames and a 64-sample tail
    for msg in media_msgs:
        assert msg.keys() == {"event", "streamSid", "media"} and msg["media"].keys() == {"payload"}
        assert (msg["event"], msg["streamSid"]) == ("media", "MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX")
    sizes = [len(base64.b64decode(m["media"]["payload"])) for m in media_msgs]
    assert sizes == [160] * 10 + [64]
    assert b"".join(base64.b64decode(m["media"]["payload"]) for m in media_msgs) == ulaw_encode(pcm)
    assert mark == {**DOC_SEND_MARK, "mark": {"name": "greet#1"}}
    second = json.loads(codec.encode(Play(pcm=bytes(320), rate=8000, prompt_id="greet"))[-1])
    assert second["mark"]["name"] == "greet#2"  # the same prompt again is told apart


def test_encode_clear_transfer_and_hangup() -> None:
    codec = started()
    assert [json.loads(f) for f in codec.encode(StopPlayback())] == [DOC_SEND_CLEAR]
    # Twilio has no in-stream transfer or hangup: the server closes the socket instead.
    assert codec.encode(Transfer(target="agent", reason="asked", context={"intent": "agent"})) == []
    assert codec.encode(Hangup(reason="done")) == []


def test_encode_before_start_is_refused() -> None:
    with pytest.raises(ProtocolError):
        TwilioCodec().encode(Play(pcm=bytes(320), rate=8000))


def test_mulaw_round_trip_of_real_speech() -> None:
    pcm, rate = read_wav(fixture_path("zh-CN", "door", 8000))
    codec = started()
    frames = codec.encode(Play(pcm=pcm, rate=rate, prompt_id="door"))
    # Feed our own media back as if it were the caller's: the PCM survives within μ-law precision.
    back = b"".join(
        chunk.pcm
        for i, f in enumerate(frames[:-1])
        for chunk in codec.decode(media(json.loads(f)["media"]["payload"], seq=2 + i))
    )
    assert back == ulaw_decode(ulaw_encode(pcm))
    x, y = as_array(pcm).astype(np.float64), as_array(back).astype(np.float64)
    snr = 10 * np.log10(np.sum(x**2) / np.sum((x - y) ** 2))
    assert snr > 30, snr  # G.711 gives about 38 dB on speech


def test_play_at_16k_is_resampled_to_twilios_8k() -> None:
    pcm, rate = read_wav(fixture_path("zh-CN", "door", 16000))
    frames = started().encode(Play(pcm=pcm, rate=rate, prompt_id="door"))
    sent = b"".join(base64.b64decode(json.loads(f)["media"]["payload"]) for f in frames[:-1])
    assert sent == ulaw_encode(resample(pcm, from_rate=16000, to_rate=8000))


# --- bad input ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("frame", "close_code", "words"),
    [
        ("{not json", CLOSE_BAD_DATA, "bad message"),
        ("[]", CLOSE_BAD_DATA, "bad message"),
        ('{"event": "dance", "streamSid": "MZ1", "sequenceNumber": "2"}', CLOSE_PROTOCOL, "event"),
        ('{"streamSid": "MZ1"}', CLOSE_PROTOCOL, "event"),
        (b"\xff" * 160, CLOSE_UNSUPPORTED, "binary"),
        ('{"event": "connected", "pad": "' + "x" * 70_000 + '"}', CLOSE_TOO_BIG, "over"),
    ],
)
def test_malformed_frames(frame: str | bytes, close_code: int, words: str) -> None:
    with pytest.raises(ProtocolError, match=words) as err:
        TwilioCodec().decode(frame)
    assert err.value.close_code == close_code
    assert err.value.code == "protocol"


def test_media_before_start() -> None:
    with pytest.raises(ProtocolError, match="before the call started") as err:
        TwilioCodec().decode(media(REAL_PAYLOAD))
    assert err.value.close_code == CLOSE_PROTOCOL


@pytest.mark.parametrize(
    ("fmt", "shown"),
    [
        ({"encoding": "audio/x-l16", "sampleRate": 16000, "channels": 1}, "audio/x-l16/16000/1"),
        ({"encoding": "audio/x-mulaw", "sampleRate": 16000, "channels": 1}, "audio/x-mulaw/16000/1"),
        ({"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 2}, "audio/x-mulaw/8000/2"),
    ],
)
def test_wrong_media_format_is_unsupported(fmt: dict, shown: str) -> None:
    msg = json.loads(DOC_START)
    msg["start"]["mediaFormat"] = fmt
    with pytest.raises(ProtocolError, match=shown) as err:
        TwilioCodec().decode(json.dumps(msg))
    assert err.value.close_code == CLOSE_UNSUPPORTED


def test_oversized_payload_is_too_big_and_one_second_is_fine() -> None:
    codec = started()
    (chunk,) = codec.decode(media(base64.b64encode(b"\xff" * 8000).decode(), seq=2))
    assert len(chunk.pcm) == 16000
    with pytest.raises(ProtocolError, match="over 8000 bytes") as err:
        codec.decode(media(base64.b64encode(b"\xff" * 8001).decode(), seq=3))
    assert err.value.close_code == CLOSE_TOO_BIG


@pytest.mark.parametrize("payload", ["@@@@", "AAA", "AA=A", "////\n////"])
def test_bad_base64_is_bad_data(payload: str) -> None:
    with pytest.raises(ProtocolError, match="base64") as err:
        started().decode(media(payload))
    assert err.value.close_code == CLOSE_BAD_DATA


@pytest.mark.parametrize(
    ("change", "words"),
    [
        ({"media": {"track": "inbound"}}, "payload"),
        ({"media": {"track": "inbound", "payload": 12}}, "payload"),
        ({"sequenceNumber": 2}, "sequenceNumber"),
        ({"sequenceNumber": "two"}, "sequenceNumber"),
    ],
)
def test_malformed_media_fields(change: dict, words: str) -> None:
    msg = {**json.loads(media(REAL_PAYLOAD)), **change}
    with pytest.raises(ProtocolError, match=words) as err:
        started().decode(json.dumps(msg))
    assert err.value.close_code == CLOSE_BAD_DATA


def test_sequence_numbers_may_skip_but_not_repeat_or_go_back() -> None:
    codec = started()
    assert len(codec.decode(media(REAL_PAYLOAD, seq=2))) == 1
    assert len(codec.decode(media(REAL_PAYLOAD, seq=40))) == 1  # a gap is fine
    for seq in (40, 39):
        with pytest.raises(ProtocolError, match="sequenceNumber") as err:
            codec.decode(media(REAL_PAYLOAD, seq=seq))
        assert err.value.close_code == CLOSE_PROTOCOL
    # A message without one (some Twilio-compatible gateways omit it) is accepted.
    assert codec.decode('{"event":"mark","streamSid":"MZXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX","mark":{"name":"a"}}') == [
        MarkReached("a")
    ]


def test_other_stream_second_start_and_late_connected_are_refused() -> None:
    with pytest.raises(ProtocolError, match="stream"):
        started().decode(media(REAL_PAYLOAD, sid="MZother"))
    with pytest.raises(ProtocolError, match="second start"):
        started().decode(DOC_START.replace('"1"', '"9"'))
    with pytest.raises(ProtocolError, match="connected after start"):
        started().decode(DOC_CONNECTED)


def test_bad_dtmf_digit() -> None:
    with pytest.raises(ProtocolError, match="digit") as err:
        started().decode(DOC_DTMF.replace('"digit": "1"', '"digit": "12"'))
    assert err.value.close_code == CLOSE_BAD_DATA


def test_a_rejected_frame_loses_nothing_after_it() -> None:
    codec = started()
    with pytest.raises(ProtocolError):
        codec.decode("{not json")
    assert codec.decode(media(REAL_PAYLOAD, seq=2)) == [AudioChunk(ulaw_decode(base64.b64decode(REAL_PAYLOAD)), 8000)]


# --- request signatures ------------------------------------------------------------------------------
# Twilio's documented example (https://www.twilio.com/docs/usage/security, as used in Twilio's own library
# tests: github.com/twilio/twilio-python tests/unit/test_request_validator.py, and the twilio-php docs
# "Validate Incoming Requests"): auth token 12345, this URL and these POST params.
SIG_TOKEN = "12345"
SIG_URL = "https://mycompany.com/myapp.php?foo=1&bar=2"
SIG_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+14158675309",
    "Digits": "1234",
    "From": "+14158675309",
    "To": "+18005551212",
}
SIG_EXPECTED = "RSOYDt4T1cUTdK1PDd93/VVr8B8="
SIG_EXPECTED_443 = "kvajT1Ptam85bY51eRf/AJRuM3w="  # same, signed over https://mycompany.com:443/... (twilio-python)


def test_signature_matches_twilios_documented_example() -> None:
    assert twilio_signature(SIG_TOKEN, SIG_URL, SIG_PARAMS) == SIG_EXPECTED
    assert twilio_signature(SIG_TOKEN, SIG_URL, dict(reversed(SIG_PARAMS.items()))) == SIG_EXPECTED  # sorted
    assert valid_twilio_signature(SIG_TOKEN, SIG_URL, SIG_PARAMS, SIG_EXPECTED)


def test_signature_tolerates_default_and_proxy_ports_like_twilios_helpers() -> None:
    assert valid_twilio_signature(SIG_TOKEN, SIG_URL, SIG_PARAMS, SIG_EXPECTED_443)
    assert valid_twilio_signature(SIG_TOKEN, SIG_URL.replace(".com", ".com:1234"), SIG_PARAMS, SIG_EXPECTED)


@pytest.mark.parametrize(
    ("token", "url", "params", "signature"),
    [
        ("54321", SIG_URL, SIG_PARAMS, SIG_EXPECTED),
        (SIG_TOKEN, SIG_URL + "&baz=3", SIG_PARAMS, SIG_EXPECTED),
        (SIG_TOKEN, SIG_URL, {**SIG_PARAMS, "Digits": "1235"}, SIG_EXPECTED),
        (SIG_TOKEN, SIG_URL, SIG_PARAMS, SIG_EXPECTED.lower()),
        (SIG_TOKEN, SIG_URL, SIG_PARAMS, ""),
        ("", SIG_URL, SIG_PARAMS, SIG_EXPECTED),
    ],
)
def test_signature_rejects_any_change(token: str, url: str, params: dict, signature: str) -> None:
    assert not valid_twilio_signature(token, url, params, signature)


def test_websocket_upgrade_is_signed_over_the_url_alone() -> None:
    url = "wss://voicebot.example.com/twilio"
    sig = twilio_signature(SIG_TOKEN, url)
    assert sig == twilio_signature(SIG_TOKEN, url, {})
    assert valid_twilio_signature(SIG_TOKEN, url, {}, sig)
    assert valid_twilio_signature(SIG_TOKEN, "wss://voicebot.example.com:443/twilio", {}, sig)
    assert not valid_twilio_signature(SIG_TOKEN, "wss://voicebot.example.com/native", {}, sig)
