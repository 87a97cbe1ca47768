"""`voicebot serve` as a real process: a live call, metrics, the /asr endpoint, SIGHUP reload, SIGTERM drain."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import sqlite3
import sys
import urllib.request
import wave

import pytest
from conftest import PLANS, REPO, fixture_path
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from voicebot.audio import chunks, read_wav, silence

pytestmark = pytest.mark.vosk
TOKEN = "t0ken-for-tests"


def free_port() -> int:
    """A port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def start_server(tmp_path, plans_dir, port: int, metrics_port: int) -> asyncio.subprocess.Process:
    """Run `voicebot serve` and wait for its 'serving' log line."""
    env = {**os.environ, "HOME": str(tmp_path), "VOICEBOT_CACHE_DIR": str(tmp_path / "cache"),
           "VOICEBOT_DATA_DIR": str(tmp_path / "data"), "VOICEBOT_GATEWAY_TOKENS": TOKEN}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "voicebot", "serve", "--plans", str(plans_dir), "--port", str(port),
        "--metrics-port", str(metrics_port), "--plan", "delivery_ko", cwd=REPO, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE)
    async with asyncio.timeout(60):
        while b"voicebot serving plans" not in (line := await proc.stderr.readline()):
            assert line, "server exited before serving"
    return proc


def scrape(url: str) -> str:
    """GET a URL's text (blocking; run it in a thread)."""
    with urllib.request.urlopen(url, timeout=5) as resp:
        return resp.read().decode()


async def send_paced(ws, pcm: bytes) -> None:
    """Stream 20 ms frames at 150 a second: 3x real time, within the server's 200 frames/s limit."""
    for frame in chunks(pcm, rate=8000, ms=20):
        await ws.send(frame)
        await asyncio.sleep(1 / 150)


async def test_serve_live_call_metrics_asr_reload_and_drain(tmp_path):
    """One server process through its whole life, as an operator runs it."""
    plans_dir = tmp_path / "plans"
    plans_dir.mkdir()
    shutil.copy(PLANS / "delivery_ko.yaml", plans_dir)
    port, metrics_port = free_port(), free_port()
    proc = await start_server(tmp_path, plans_dir, port, metrics_port)
    try:
        # 1. The vosk-server compatible /asr endpoint, driven like vosk-server's own test client.
        async with connect(f"ws://127.0.0.1:{port}/asr?token={TOKEN}") as ws:
            with wave.open(str(fixture_path("ko-KR", "yes")), "rb") as wf:
                await ws.send(json.dumps({"config": {"sample_rate": wf.getframerate(),
                                                     "phrase_list": ["네", "아니요", "상담원"]}}))
                while data := wf.readframes(4000):
                    await ws.send(data)
                    await ws.recv()
            await ws.send('{"eof" : 1}')
            final = json.loads(await ws.recv())
        assert final["text"] == "네"

        # 2. A live call; SIGTERM arrives mid-call and the call is allowed to finish (drain).
        no, _ = read_wav(fixture_path("ko-KR", "no"))
        yes, _ = read_wav(fixture_path("ko-KR", "yes"))
        got = []
        async with connect(f"ws://127.0.0.1:{port}/native", additional_headers={"Authorization": f"Bearer {TOKEN}"}
                           ) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "live-1", "variables": {"customer_name": "김"},
                                      "caller": "13812345678", "audio": {"encoding": "pcm16", "rate": 8000}}))
            await send_paced(ws, silence(8.0, 8000) + no + silence(6.0, 8000))
            # 3. Metrics while the call is live.
            metrics_text = await asyncio.to_thread(scrape, f"http://127.0.0.1:{metrics_port}/metrics")
            # SIGHUP with a broken plan file: the server keeps serving the old version.
            (plans_dir / "delivery_ko.yaml").write_text("plan: [broken\n", encoding="utf-8")
            proc.send_signal(signal.SIGHUP)
            proc.send_signal(signal.SIGTERM)
            await send_paced(ws, yes + silence(1.5, 8000))
            try:
                async for msg in ws:
                    got.append(msg)
            except ConnectionClosed:
                pass
        hangups = [json.loads(m) for m in got if isinstance(m, str) and json.loads(m)["type"] == "hangup"]
        assert hangups and hangups[0]["reason"] == "station_consent"
        assert "voicebot_calls_active" in metrics_text

        async with asyncio.timeout(60):
            rc = await proc.wait()
        assert rc == 0
        stderr = (await proc.stderr.read()).decode()
        assert "failed to load" in stderr and "draining" in stderr
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()

    # 4. The record was flushed to the store before exit.
    with sqlite3.connect(tmp_path / "data" / "calls.db") as db:
        row = db.execute("select outcome, caller from calls where call_id = 'live-1'").fetchone()
    assert row == ("station_consent", "138****5678")
