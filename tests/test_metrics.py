"""Metrics from real call events, scraped over real HTTP on 127.0.0.1 and parsed as Prometheus text."""

from __future__ import annotations

import asyncio
import socket
import urllib.error
import urllib.request

import pytest
from conftest import PLANS
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from voicebot.asr import TranscriptReplayRecognizer
from voicebot.events import CallEnded, CallStarted, Error, SpeechEnded, StopPlayback, Transcript, TurnCompleted
from voicebot.metrics import Metrics, MetricsServer, MetricsSink, serve_metrics
from voicebot.record import Turn
from voicebot.simulate import CallerStep, simulate
from voicebot.sinks import EventHub

VARIABLES = {"customer_name": "王先生", "tracking_tail": "1234"}


def _get(url: str) -> tuple[int, str, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, resp.headers["Content-Type"], resp.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.headers["Content-Type"], err.read().decode()


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample by (name, sorted labels)."""
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


async def _scrape(port: int, path: str = "/metrics") -> tuple[int, str, str]:
    return await asyncio.to_thread(_get, f"http://127.0.0.1:{port}{path}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_metrics_from_simulated_and_synthetic_calls(settings) -> None:
    metrics = Metrics()
    async with MetricsServer(metrics, host="127.0.0.1", port=0) as server:
        async with EventHub([MetricsSink(metrics, route="outbound")]) as hub:
            for steps in ([CallerStep("say", "放驿站")], [CallerStep("say", "转人工")], []):
                await simulate(plan=PLANS / "pre_delivery.yaml", steps=steps, variables=VARIABLES,
                               settings=settings, emit=hub.emitter(), recognizer=TranscriptReplayRecognizer([]))
            # A live call in progress with an error, a barge-in, a recognised utterance and a measured turn.
            emit = hub.emitter()
            emit(CallStarted(call_id="live", plan="pre_delivery", language="zh-CN"))
            emit(StopPlayback(reason="barge_in"))
            emit(SpeechEnded(at=3.0, duration=1.0))
            emit(Transcript(text="放驿站", final=True))
            emit(TurnCompleted(call_id="live", turn=Turn(index=0, state="ask", reply_latency=0.42)))
            emit(Error(code="asr", message="recogniser failed"))
        status, ctype, body = await _scrape(server.port)
    assert status == 200 and ctype.startswith("text/plain")
    s = _samples(body)
    assert s[("voicebot_calls_active", (("route", "outbound"),))] == 1.0  # only "live" is still going
    for outcome in ("station_consent", "transferred", "dropped"):
        assert s[("voicebot_calls_total", (("outcome", outcome), ("route", "outbound")))] == 1.0
    assert s[("voicebot_errors_total", (("code", "asr"),))] == 1.0
    assert s[("voicebot_barge_ins_total", ())] == 1.0
    assert s[("voicebot_asr_latency_seconds_count", ())] == 1.0
    # Each simulated call rendered its greeting, two of them a reply too; the reply latencies were measured.
    assert s[("voicebot_tts_latency_seconds_count", ())] == 5.0
    assert s[("voicebot_turn_latency_seconds_count", ())] == 3.0  # two simulated replies + the live turn
    assert s[("voicebot_turn_latency_seconds_bucket", (("le", "0.5"),))] >= 1.0


async def test_route_defaults_to_plan_and_registries_are_separate() -> None:
    first, second = Metrics(), Metrics()  # a global registry would refuse the second set of names
    sink = MetricsSink(first)
    async with EventHub([sink]) as hub:
        hub.emit(CallStarted(call_id="a", plan="pre_delivery", language="zh-CN"))
        hub.emit(CallEnded(call_id="b", outcome="dropped"))  # never seen starting: not taken off the gauge
    s = _samples(first.exposition().decode())
    assert s[("voicebot_calls_active", (("route", "pre_delivery"),))] == 1.0
    assert s[("voicebot_calls_total", (("outcome", "dropped"), ("route", "unknown")))] == 1.0
    assert not [key for key in _samples(second.exposition().decode()) if key[0] == "voicebot_calls_active"]
    assert not any(name.startswith("voicebot_") for name in REGISTRY._names_to_collectors)


async def test_http_errors_and_bad_requests() -> None:
    metrics = Metrics()
    async with MetricsServer(metrics, port=0) as server:
        status, _, body = await _scrape(server.port, "/")
        assert status == 404 and "/metrics" in body
        # Garbage and a half-sent request get closed without killing the server.
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(b"\x00\x01garbage\r\n\r\n")
        await writer.drain()
        assert await reader.read() == b""
        writer.close()
        status, _, body = await _scrape(server.port)
        assert status == 200 and "voicebot_barge_ins_total" in body


async def test_serve_metrics_until_cancelled_then_port_closes() -> None:
    port = _free_port()
    task = asyncio.create_task(serve_metrics(Metrics(), host="127.0.0.1", port=port))
    for _ in range(100):
        try:
            status, _, _ = await _scrape(port)
            break
        except urllib.error.URLError:
            await asyncio.sleep(0.02)  # the task has not bound the port yet
    assert status == 200
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    with pytest.raises(urllib.error.URLError):
        await _scrape(port)
