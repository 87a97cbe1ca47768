"""AudioSocket framing: golden frames from the protocol docs, split and merged reads, pacing, bad input."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import pytest

from voicebot.events import AudioChunk, Dtmf, Hangup, Play, StopPlayback, Transfer
from voicebot.gateways.audiosocket import AudioSocketParser, PacedSender, encode_audio, encode_hangup
from voicebot.gateways.base import (
    CLOSE_BAD_DATA,
    CLOSE_PROTOCOL,
    CLOSE_TOO_BIG,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    ProtocolError,
)

# The example call UUID and the hangup frame `0x00 0x00 0x00` from the protocol definition in
# CyCoreSystems/audiosocket README.md (also docs.asterisk.org/Configuration/Channel-Drivers/AudioSocket).
DOC_UUID = "40325ec2-5efd-4bd3-805f-53576e581d13"
UUID_FRAME = b"\x01\x00\x10" + uuid.UUID(DOC_UUID).bytes
HANGUP_FRAME = b"\x00\x00\x00"


def audio_frame(kind: int, pcm: bytes) -> bytes:
    return bytes([kind]) + len(pcm).to_bytes(2, "big") + pcm


PCM_20MS = bytes(range(256)) + bytes(64)  # 320 bytes: 20 ms of slin at 8 kHz


def test_golden_call_uuid_then_audio_then_hangup():
    parser = AudioSocketParser(plan="delivery")
    assert parser.feed(UUID_FRAME) == []  # the rate is only known at the first audio frame
    assert parser.call_id == DOC_UUID
    got = parser.feed(audio_frame(0x10, PCM_20MS) + b"\x03\x00\x015" + HANGUP_FRAME)
    assert got == [CallStart(call_id=DOC_UUID, rate=8000, plan="delivery", stream_id=DOC_UUID),
                   AudioChunk(PCM_20MS, 8000), Dtmf("5"), CallerHangup("hangup")]


def test_slin16_sets_the_rate_and_held_dtmf_follows_call_start():
    parser = AudioSocketParser()
    parser.feed(UUID_FRAME)
    assert parser.feed(b"\x03\x00\x01#") == []
    got = parser.feed(audio_frame(0x12, bytes(640)))
    assert got == [CallStart(call_id=DOC_UUID, rate=16000, stream_id=DOC_UUID), Dtmf("#"),
                   AudioChunk(bytes(640), 16000)]
    assert parser.rate == 16000


def test_frames_split_across_reads_byte_by_byte():
    stream = UUID_FRAME + audio_frame(0x10, PCM_20MS) + audio_frame(0x10, PCM_20MS[::-1]) + HANGUP_FRAME
    parser = AudioSocketParser()
    got = []
    for i in range(len(stream)):
        got += parser.feed(stream[i:i + 1])
    assert [type(m).__name__ for m in got] == ["CallStart", "AudioChunk", "AudioChunk", "CallerHangup"]
    assert got[2].pcm == PCM_20MS[::-1]


@pytest.mark.parametrize(("code", "reason"), [
    (b"\x01", "hangup"), (b"\x02", "gateway_error:frame_forwarding"),
    (b"\x06", "gateway_error:frame_forwarding,memory"), (b"", "gateway_error"),
])
def test_error_frames_end_the_call(code, reason):
    # Asterisk error codes (README): 0x01 caller hung up, 0x02 frame forwarding error, 0x04 memory error.
    parser = AudioSocketParser()
    parser.feed(UUID_FRAME)
    assert parser.feed(b"\xff" + len(code).to_bytes(2, "big") + code) == [CallerHangup(reason)]


def test_encode_audio_frames_and_round_trip():
    pcm = bytes(range(256)) * 2 + bytes(128)  # 640 bytes = 40 ms at 8 kHz
    frames = encode_audio(pcm + b"\x01\x02", 8000)
    assert [f[:3] for f in frames] == [b"\x10\x01\x40"] * 3  # 0x10, length 320; the tail padded to 20 ms
    parser = AudioSocketParser()
    parser.feed(UUID_FRAME)
    back = b"".join(m.pcm for m in parser.feed(b"".join(frames)) if isinstance(m, AudioChunk))
    assert back[:642] == pcm + b"\x01\x02" and back[642:] == bytes(318)
    assert encode_audio(bytes(640), 16000) == [b"\x12\x02\x80" + bytes(640)]
    assert encode_hangup() == HANGUP_FRAME


def test_encode_messages_follow_the_call_rate():
    parser = AudioSocketParser()
    parser.feed(UUID_FRAME + audio_frame(0x12, bytes(640)))
    frames = parser.encode(Play(bytes(320), 8000, prompt_id="p"))  # resampled to the call's 16 kHz
    assert [(f[:3], len(f)) for f in frames] == [(b"\x12\x02\x80", 643)]
    assert parser.encode(Hangup("bye")) == [HANGUP_FRAME] and parser.encode_hangup() == HANGUP_FRAME
    assert parser.encode(StopPlayback()) == [] and parser.encode(Transfer("agent", "x")) == []


# --- malformed input --------------------------------------------------------------------------


def expect(parser: AudioSocketParser, data: bytes, close_code: int, words: str) -> None:
    with pytest.raises(ProtocolError) as info:
        parser.feed(data)
    assert info.value.close_code == close_code
    assert words in str(info.value)


def test_truncated_header_waits_then_completes():
    parser = AudioSocketParser()
    assert parser.feed(b"\x01\x00") == []  # a truncated header is not an error until more bytes come
    assert parser.feed(b"\x10" + uuid.UUID(DOC_UUID).bytes[:8]) == []
    assert parser.feed(uuid.UUID(DOC_UUID).bytes[8:]) == [] and parser.call_id == DOC_UUID


def test_oversized_length_is_refused_at_the_header():
    parser = AudioSocketParser(max_payload=4000)
    parser.feed(UUID_FRAME)
    expect(parser, b"\x10\x0f\xa2", CLOSE_TOO_BIG, "exceeds 4000")  # 4002 bytes announced, none sent


def test_unknown_type():
    expect(AudioSocketParser(), b"\x02\x00\x00", CLOSE_PROTOCOL, "unknown frame type 0x02")


def test_dtmf_with_bad_digit():
    parser = AudioSocketParser()
    parser.feed(UUID_FRAME)
    expect(parser, b"\x03\x00\x01X", CLOSE_BAD_DATA, "bad DTMF")
    expect(parser, b"\x03\x00\x0212", CLOSE_BAD_DATA, "bad DTMF")


def test_order_and_payload_errors():
    expect(AudioSocketParser(), audio_frame(0x10, PCM_20MS), CLOSE_PROTOCOL, "before the UUID")
    expect(AudioSocketParser(), b"\x01\x00\x04abcd", CLOSE_BAD_DATA, "16 bytes")
    parser = AudioSocketParser()
    parser.feed(UUID_FRAME)
    expect(parser, audio_frame(0x10, bytes(3)), CLOSE_BAD_DATA, "whole samples")
    expect(parser, audio_frame(0x16, bytes(1920)), CLOSE_UNSUPPORTED, "48000 Hz")
    parser.feed(audio_frame(0x10, PCM_20MS))
    expect(parser, audio_frame(0x12, bytes(640)), CLOSE_UNSUPPORTED, "rate changed")
    expect(parser, UUID_FRAME, CLOSE_PROTOCOL, "second UUID")
    parser.feed(HANGUP_FRAME)
    expect(parser, audio_frame(0x10, PCM_20MS), CLOSE_PROTOCOL, "after hangup")
    with pytest.raises(ProtocolError):
        encode_audio(bytes(960), 24000)


# --- pacing over a real loopback TCP connection ----------------------------------------------


@contextlib.asynccontextmanager
async def paced_link(count: int, frame_len: int):
    """A PacedSender writing to a loopback TCP server; yields (sender, future of frame arrival times)."""
    loop = asyncio.get_running_loop()
    done: asyncio.Future = loop.create_future()

    async def handle(reader, peer):
        times = []
        try:
            while len(times) < count:
                await reader.readexactly(frame_len)
                times.append(loop.time())
        except asyncio.IncompleteReadError:
            pass
        finally:
            peer.close()
            done.set_result(times)

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    _reader, writer = await asyncio.open_connection("127.0.0.1", server.sockets[0].getsockname()[1])
    sender = PacedSender(writer)
    task = asyncio.create_task(sender.run())
    try:
        yield sender, done
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        writer.close()
        await writer.wait_closed()
        await asyncio.wait_for(done, 5)
        server.close()
        await server.wait_closed()


async def test_paced_sender_keeps_20ms_without_drift():
    async with paced_link(25, 323) as (sender, done):
        sender.send(encode_audio(bytes(320 * 25), 8000))
        times = await asyncio.wait_for(asyncio.shield(done), 5)
        elapsed = times[-1] - times[0]
        # 24 intervals of 20 ms = 0.48 s; loose bounds since the machine is shared.
        assert 0.45 <= elapsed <= 0.7, elapsed
        assert sender.sent == 25 and sender.pending == 0


async def test_paced_sender_flush_drops_unsent_frames():
    frames = encode_audio(bytes(320 * 50), 8000)
    async with paced_link(50, 323) as (sender, _done):
        sender.send(frames)
        await asyncio.sleep(0.1)
        dropped = sender.flush()
        assert dropped >= 30 and sender.pending == 0
        await asyncio.sleep(0.1)
        sent_before = sender.sent
        sender.send(frames[:2])  # playback resumes after a flush
        await asyncio.sleep(0.1)
        assert sender.sent == sent_before + 2 and sent_before + dropped == 50
        with pytest.raises(ProtocolError, match="frames queued"):
            sender.send(frames * 61)
