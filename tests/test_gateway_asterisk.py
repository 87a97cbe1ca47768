"""Asterisk chan_websocket codec: golden messages from Asterisk's docs and source, round trips, bad input."""

from __future__ import annotations

import json

import numpy as np
import pytest

from voicebot.audio import as_array, from_array, ulaw_encode
from voicebot.events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from voicebot.gateways.asterisk import MAX_MESSAGE_BYTES, AsteriskCodec, tokenize
from voicebot.gateways.base import (
    CLOSE_BAD_DATA,
    CLOSE_POLICY,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    FlowControl,
    MarkReached,
    ProtocolError,
)

# Example from docs.asterisk.org/Configuration/Channel-Drivers/WebSocket ("Notifications" section,
# asterisk/documentation docs/Configuration/Channel-Drivers/WebSocket.md).
DOCS_MEDIA_START = ("MEDIA_START connection_id:e226e283-c90a-4ea9-9e37-389000b9ef47 "
                    "channel:WebSocket/connectionid format:ulaw optimal_frame_size:160")
DOCS_STATUS = "STATUS queue_length:43 xon_level:800 xoff_level:900 queue_full:false bulk_media:true media_paused:false"
# The plain-text MEDIA_START as asterisk/asterisk channels/chan_websocket.c prints it
# ("%s %s:%s %s:%s %s:%s %s:%s %s:%d %s:%d"), filled with the values of the JSON example below.
SOURCE_MEDIA_START = ("MEDIA_START connection_id:media_connection1 channel:WebSocket/media_connection1/0x5140001a0040 "
                      "channel_id:1761245643.1 format:ulaw optimal_frame_size:160 ptime:20")
# The JSON MEDIA_START from the Asterisk commit "chan_websocket: Add capability for JSON control messages
# and events" (Resolves asterisk/asterisk#1546).
JSON_MEDIA_START = """{
  "event": "MEDIA_START",
  "connection_id": "media_connection1",
  "channel": "WebSocket/media_connection1/0x5140001a0040",
  "channel_id": "1761245643.1",
  "format": "ulaw",
  "optimal_frame_size": 160,
  "ptime": 20,
  "channel_variables": {
    "DIALEDPEERNUMBER": "media_connection1/c(ulaw)",
    "MEDIA_WEBSOCKET_CONNECTION_ID": "media_connection1",
    "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": "160"
  }
}"""


def started(text: str = SOURCE_MEDIA_START, **query: str) -> AsteriskCodec:
    codec = AsteriskCodec(query=query)
    codec.decode(text)
    return codec


def tone(seconds: float, rate: int) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return from_array(0.4 * np.sin(2 * np.pi * 440 * t))


# --- golden inbound ---------------------------------------------------------------------------


def test_docs_media_start_becomes_call_start_with_query_plan_and_variables():
    codec = AsteriskCodec(query={"plan": "delivery", "caller": "13800138000", "order": "A17", "token": "s3cret"})
    [start] = codec.decode(DOCS_MEDIA_START)
    assert start == CallStart(call_id="e226e283-c90a-4ea9-9e37-389000b9ef47", rate=8000, plan="delivery",
                              variables={"order": "A17"}, caller="13800138000",
                              stream_id="e226e283-c90a-4ea9-9e37-389000b9ef47")
    assert codec.started is start and not codec.json_control


def test_source_media_start_uses_channel_id_as_call_id():
    [start] = AsteriskCodec().decode(SOURCE_MEDIA_START)
    assert (start.call_id, start.stream_id, start.rate) == ("1761245643.1", "media_connection1", 8000)


def test_json_media_start_switches_commands_to_json():
    codec = AsteriskCodec(query={"answer": "1"})
    [start] = codec.decode(JSON_MEDIA_START)
    assert start.call_id == "1761245643.1" and codec.json_control
    assert codec.channel_variables["MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE"] == "160"
    assert codec.greeting_frames() == ['{"command":"ANSWER"}']
    assert json.loads(codec.encode(StopPlayback())[0]) == {"command": "FLUSH_MEDIA"}
    assert json.loads(codec.encode(Hangup("done"))[0]) == {"command": "HANGUP"}


@pytest.mark.parametrize(("fmt", "size", "rate"), [("alaw", 160, 8000), ("slin", 320, 8000), ("slin16", 640, 16000)])
def test_other_formats_set_the_line_rate(fmt, size, rate):
    [start] = AsteriskCodec().decode(f"MEDIA_START connection_id:c1 channel:WebSocket/c1/0x1 format:{fmt} "
                                      f"optimal_frame_size:{size} ptime:20")
    assert start.rate == rate


def test_dtmf_plain_and_json():
    # Plain form per chan_websocket.c: "DTMF_END digit:%c channel_id:%s"; docs: "DTMF_END digit:n".
    codec = started()
    assert codec.decode("DTMF_END digit:5") == [Dtmf("5")]
    assert codec.decode("DTMF_END digit:# channel_id:1761245643.1") == [Dtmf("#")]
    assert codec.decode('{"event":"DTMF_END","channel_id":"1761245643.1","digit":"*"}') == [Dtmf("*")]


def test_flow_control_tracks_paused():
    codec = started()
    assert codec.decode("MEDIA_XOFF") == [FlowControl(paused=True)] and codec.paused
    assert codec.decode('{"event":"MEDIA_XON","channel_id":"1761245643.1"}') == [FlowControl(paused=False)]
    assert not codec.paused


def test_marks_echoed_by_asterisk_become_mark_reached():
    codec = started()
    frames = codec.encode(Play(tone(0.1, 8000), 8000, prompt_id="greet"))
    assert frames[-1] == "MARK_MEDIA greet#1"
    # chan_websocket.c prints "MEDIA_MARK_PROCESSED <id>" (JSON: correlation_id).
    assert codec.decode("MEDIA_MARK_PROCESSED greet#1") == [MarkReached("greet#1")]
    assert codec.decode('{"event":"MEDIA_MARK_PROCESSED","channel_id":"1","correlation_id":"x#2"}') == \
        [MarkReached("x#2")]


def test_informational_notifications_are_ignored():
    codec = started()
    assert codec.decode(DOCS_STATUS) == []
    assert codec.decode("QUEUE_DRAINED") == []
    assert codec.decode("MEDIA_BUFFERING_COMPLETED id42") == []
    # ERROR as chan_websocket.c prints it: the text after error_text: runs to the end of the line.
    assert codec.decode("ERROR channel_id:1761245643.1 error_text:FLUSH_MEDIA not supported in passthrough mode") == []
    assert codec.last_error == "FLUSH_MEDIA not supported in passthrough mode"


def test_hangup_notice():
    assert started().decode("HANGUP") == [CallerHangup("hangup")]


def test_tokenizer_fields():
    assert tokenize(DOCS_STATUS) == {"event": "STATUS", "queue_length": "43", "xon_level": "800",
                                     "xoff_level": "900", "queue_full": "false", "bulk_media": "true",
                                     "media_paused": "false"}
    assert tokenize("MEDIA_MARK_PROCESSED a b") == {"event": "MEDIA_MARK_PROCESSED", "correlation_id": "a b"}


# --- media both ways --------------------------------------------------------------------------


def test_binary_media_decodes_to_pcm():
    codec = started()
    pcm = tone(0.02, 8000)
    [chunk] = codec.decode(ulaw_encode(pcm))
    assert isinstance(chunk, AudioChunk) and chunk.rate == 8000 and len(chunk.pcm) == 320
    err = np.abs(as_array(chunk.pcm).astype(int) - as_array(pcm).astype(int))
    assert err.max() <= 0.04 * 32768


def test_play_frames_are_whole_optimal_frames_and_round_trip():
    codec = started()
    pcm = tone(1.03, 8000)  # 8240 samples: not a whole number of 160-sample frames
    frames = codec.encode(Play(pcm, 8000, prompt_id="p"))
    media = frames[:-1]
    assert all(isinstance(f, bytes) and len(f) % 160 == 0 and len(f) <= MAX_MESSAGE_BYTES for f in media)
    assert sum(map(len, media)) == 8320  # padded up to 52 frames
    back = b"".join(c.pcm for f in media for c in codec.decode(f))
    err = np.abs(as_array(back[: len(pcm)]).astype(int) - as_array(pcm).astype(int))
    assert err.max() <= 0.04 * 32768
    assert not any(as_array(back[len(pcm):]))  # the padding is silence


def test_long_prompt_is_split_under_asterisk_max_message():
    codec = started()
    frames = codec.encode(Play(tone(10.0, 8000), 8000, prompt_id="long"))
    media = frames[:-1]
    assert len(media) == 2 and all(len(f) <= MAX_MESSAGE_BYTES and len(f) % 160 == 0 for f in media)
    assert sum(map(len, media)) == 80000


def test_slin16_round_trip_is_exact_and_resamples_other_rates():
    codec = started("MEDIA_START connection_id:c1 channel:WebSocket/c1/0x1 format:slin16 optimal_frame_size:640")
    pcm = tone(0.04, 16000)
    frames = codec.encode(Play(pcm, 16000, prompt_id="s"))
    assert frames[0] == pcm and codec.decode(frames[0]) == [AudioChunk(pcm, 16000)]
    resampled = codec.encode(Play(tone(0.04, 8000), 8000, prompt_id="s"))
    assert len(resampled[0]) == 1280


def test_commands_and_transfer():
    codec = started()
    assert codec.greeting_frames() == []  # Asterisk auto-answers unless dialled with n (and answer=1)
    assert codec.encode(StopPlayback()) == ["FLUSH_MEDIA"]
    assert codec.encode(Hangup("bye")) == ["HANGUP"]
    assert codec.encode(Transfer("agent", "request")) == []
    assert started(answer="true").greeting_frames() == ["ANSWER"]


# --- malformed input --------------------------------------------------------------------------


def expect(codec: AsteriskCodec, frame, close_code: int, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        codec.decode(frame)
    assert info.value.close_code == close_code
    assert words in str(info.value)


def test_unknown_control_command():
    expect(started(), "MEDIA_EXPLODE now:1", CLOSE_PROTOCOL, "unknown control message 'MEDIA_EXPLODE'")
    expect(started(), '{"event":"NOPE"}', CLOSE_PROTOCOL, "unknown control message 'NOPE'")
    expect(started(), "media_start x:1", CLOSE_PROTOCOL, "event name")


def test_media_or_control_before_media_start():
    expect(AsteriskCodec(), bytes(160), CLOSE_PROTOCOL, "before the call started")
    expect(AsteriskCodec(), "DTMF_END digit:5", CLOSE_PROTOCOL, "before the call started")


def test_bad_format_name():
    expect(AsteriskCodec(), DOCS_MEDIA_START.replace("ulaw", "opus"), CLOSE_UNSUPPORTED, "unsupported format 'opus'")


def test_oversized_binary_and_odd_slin():
    expect(started(), bytes(MAX_MESSAGE_BYTES + 1), CLOSE_TOO_BIG, "exceeds")
    slin = started("MEDIA_START connection_id:c1 channel:c format:slin optimal_frame_size:320")
    expect(slin, bytes(321), CLOSE_BAD_DATA, "whole samples")


def test_bad_fields():
    expect(AsteriskCodec(), "MEDIA_START connection_id:c1 format:ulaw optimal_frame_size:lots", CLOSE_PROTOCOL,
           "optimal_frame_size")
    expect(AsteriskCodec(), "MEDIA_START connection_id:c1 format:ulaw", CLOSE_PROTOCOL, "optimal_frame_size")
    expect(AsteriskCodec(), "MEDIA_START connection_id:c1 connection_id:c2 format:ulaw optimal_frame_size:160",
           CLOSE_PROTOCOL, "repeats")
    expect(AsteriskCodec(), "MEDIA_START connection_id:c1 stray format:ulaw", CLOSE_PROTOCOL, "key:value")
    expect(started(), "DTMF_END digit:55", CLOSE_PROTOCOL, "digit")
    expect(started(), SOURCE_MEDIA_START, CLOSE_PROTOCOL, "second MEDIA_START")
    expect(AsteriskCodec(), "{not json", CLOSE_BAD_DATA, "invalid JSON")
    expect(AsteriskCodec(), "", CLOSE_PROTOCOL, "empty")
    expect(AsteriskCodec(query={"answer": "maybe"}), SOURCE_MEDIA_START, CLOSE_POLICY, "answer")


def test_a_bad_frame_leaves_the_call_usable():
    codec = started()
    expect(codec, "DTMF_END digit:X", CLOSE_PROTOCOL, "digit")
    assert codec.decode("DTMF_END digit:1") == [Dtmf("1")]


def test_mark_names_asterisk_cannot_carry_are_refused():
    codec = started()
    with pytest.raises(ProtocolError, match="exceeds 128 bytes"):
        codec.encode(Play(bytes(320), 8000, prompt_id="x" * 200))
