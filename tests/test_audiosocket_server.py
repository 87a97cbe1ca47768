"""Asterisk AudioSocket over real TCP on loopback: a whole call, paced robot audio, hang-up frame."""

from __future__ import annotations

import asyncio
import struct
import time
import uuid

from conftest import fixture_entry, fixture_path
from test_server import Harness

from voicebot.audio import chunks, read_wav, silence
from voicebot.audiosocket_server import serve_audiosocket

SHORT_PLAN = """
plan: short_door
languages: [zh-CN]
intents:
  door: {phrases: {zh-CN: [送货上门]}, dtmf: ["1"]}
prompts:
  ask: {zh-CN: "送货上门吗"}
  ok: {zh-CN: "好的"}
  sorry: {zh-CN: "请再说"}
start: ask
states:
  ask:
    say: ask
    expect: [door]
    on: {door: done}
    noinput: [{say: [sorry], reprompt: true}]
    nomatch: [{say: [sorry], reprompt: true}]
  done: {say: ok, end: hangup, outcome: door_delivery}
"""


def frame(kind: int, payload: bytes) -> bytes:
    """One AudioSocket frame: type, big-endian length, payload."""
    return struct.pack(">BH", kind, len(payload)) + payload


async def test_audiosocket_call_end_to_end(settings, tmp_path):
    """UUID, slin audio in; paced slin audio and a hang-up frame out; the call's record says door."""
    (tmp_path / "short.yaml").write_text(SHORT_PLAN, encoding="utf-8")
    door, _ = read_wav(fixture_path("zh-CN", "door"))
    call_id = uuid.uuid4()
    async with Harness(settings, replies=[fixture_entry("zh-CN", "door")["text"]], plans=tmp_path) as h:
        tcp = await serve_audiosocket(h.server, host="127.0.0.1", port=0, plan="short_door")
        port = tcp.sockets[0].getsockname()[1]
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(frame(0x01, call_id.bytes))
        for pcm in chunks(silence(3.0, 8000) + door + silence(1.5, 8000), rate=8000, ms=20):
            writer.write(frame(0x10, pcm))
        await writer.drain()
        received: list[tuple[int, int, float]] = []
        started = time.monotonic()
        while True:
            header = await asyncio.wait_for(reader.readexactly(3), 20)
            kind, length = struct.unpack(">BH", header)
            await reader.readexactly(length)
            received.append((kind, length, time.monotonic() - started))
            if kind == 0x00:
                break
        writer.close()
        tcp.close()
        await tcp.wait_closed()
    audio = [r for r in received if r[0] == 0x10]
    assert audio and all(length == 320 for _, length, _ in audio)  # 20 ms of slin at 8 kHz
    # Paced: frames leave about 20 ms apart, not in one burst.
    span = audio[-1][2] - audio[0][2]
    assert span >= 0.02 * (len(audio) - 1) * 0.8
    (ended,) = h.ended()
    assert ended.call_id == str(call_id) and ended.outcome == "door_delivery"
