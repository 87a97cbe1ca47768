"""MqttSink against a real mosquitto started per test on a free port, including a broker restart mid-call."""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import signal
import socket
import ssl
import subprocess
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import aiomqtt
import pytest
from conftest import PLANS

from voicebot.asr import TranscriptReplayRecognizer
from voicebot.bus import MqttSink
from voicebot.errors import ConfigError
from voicebot.events import CallEnded, CallStarted, Hangup, Intent, Say, Transcript, Transfer, TurnCompleted
from voicebot.record import CallRecord, Turn
from voicebot.simulate import CallerStep, simulate
from voicebot.sinks import CallEvent, EventHub

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
VARIABLES = {"customer_name": "王先生", "tracking_tail": "1234"}
WAIT = 10.0  # seconds; generous, the machine is shared
Received = list[tuple[str, dict, int]]  # topic, payload, QoS


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Broker:
    """A private mosquitto on a free port; persistent, so a restart keeps the subscriber's session."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        workdir.mkdir()
        self.conf = workdir / "mosquitto.conf"
        self.conf.write_text(
            f"listener {self.port} 127.0.0.1\nallow_anonymous true\npersistence true\n"
            f"persistence_location {workdir}/\nqueue_qos0_messages true\n"
            # As root mosquitto would switch to its own user, which cannot write the test's folder.
            f"user {pwd.getpwuid(os.getuid()).pw_name}\n")
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.workdir / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=log, stderr=log)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.workdir / "mosquitto.log").read_text())
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=0.2).close()
                return
            except OSError:
                time.sleep(0.02)
        raise RuntimeError("mosquitto did not start listening")

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # SIGTERM: mosquitto saves its sessions, as in a service restart
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    if not Path(MOSQUITTO).exists():
        pytest.skip("mosquitto is not installed")
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        yield b
    finally:
        b.stop()


def _subscriber(broker: Broker) -> aiomqtt.Client:
    # A persistent session: messages published while it is offline are kept for it.
    return aiomqtt.Client("127.0.0.1", broker.port, identifier="voicebot-test-sub", clean_session=False)


async def _collect(client: aiomqtt.Client, into: Received, done: Callable[[Received], bool]) -> Received:
    async def read() -> None:
        async for msg in client.messages:
            into.append((str(msg.topic), json.loads(msg.payload), msg.qos))
            if done(into):
                return

    if not done(into):
        await asyncio.wait_for(read(), WAIT)
    return into


def _has(topic: str) -> Callable[[Received], bool]:
    return lambda got: any(t == topic for t, _, _ in got)


async def _until(pred: Callable[[], bool]) -> None:
    deadline = time.monotonic() + WAIT
    while not pred():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_simulated_calls_publish_every_topic(broker: Broker, settings) -> None:
    got: Received = []
    async with _subscriber(broker) as sub:
        await sub.subscribe("vb/#", qos=1)
        sink = MqttSink.from_url(f"mqtt://127.0.0.1:{broker.port}/vb", pii={"customer_name"})
        async with sink, EventHub([sink]) as hub:
            station, agent = [
                await simulate(plan=PLANS / "pre_delivery.yaml", steps=[CallerStep("say", said)],
                               variables=VARIABLES, settings=settings, emit=hub.emitter(),
                               recognizer=TranscriptReplayRecognizer([]))
                for said in ("放驿站", "转人工")]
        await _collect(sub, got, lambda g: _has(f"vb/calls/{station.call_id}/ended")(g)
                       and _has(f"vb/calls/{agent.call_id}/ended")(g))
    first = [(t, p) for t, p, _ in got if t.startswith(f"vb/calls/{station.call_id}/")]
    assert [t.rsplit("/", 1)[1] for t, _ in first] == [
        "started", "state", "say", "transcript", "intent", "state", "say", "hangup", "turn", "ended"]
    by_type = {p["type"]: p for _, p in first}
    assert all(p["call_id"] == station.call_id and datetime.fromisoformat(p["ts"]).tzinfo for _, p in first)
    assert by_type["started"]["variables"] == {"customer_name": "***", "tracking_tail": "1234"}
    assert by_type["intent"]["name"] == "station" and by_type["transcript"]["text"] == "放驿站"
    assert by_type["ended"]["outcome"] == "station_consent"
    assert by_type["ended"]["record"]["turns"][0]["heard"] == "放驿站"
    assert by_type["ended"]["record"]["variables"]["customer_name"] == "***"
    # The name was spoken in the greeting; it is masked there too (prompts, turns, handoff transcript).
    everything = json.dumps([p for _, p, _ in got], ensure_ascii=False)
    assert "王先生" not in everything and "您好，***" in next(p["text"] for _, p in first if p["type"] == "say")
    qos = {t.rsplit("/", 1)[1]: q for t, _, q in got}
    assert qos["ended"] == 1 and qos["say"] == 0 and qos["transfer"] == 1
    # The agent desktop gets the handoff on its own topic, with the whole context.
    handoffs = [p for t, p, _ in got if t == "vb/handoff/delivery_support"]
    assert len(handoffs) == 1
    hand = handoffs[0]
    assert hand["call_id"] == agent.call_id and hand["reason"] == "caller_request"
    assert hand["intent"]["name"] == "agent" and hand["variables"]["customer_name"] == "***"
    assert {"speaker": "caller", "text": "转人工", "intent": "agent"} in hand["transcript"]
    assert hand["transcript"][0]["speaker"] == "robot"


async def test_broker_restart_loses_no_ended_event(broker: Broker) -> None:
    got: Received = []
    sink = MqttSink(hostname="127.0.0.1", port=broker.port, prefix="vb", min_backoff=0.05, max_backoff=0.3,
                    publish_timeout=2.0)
    async with sink, EventHub([sink]) as hub:
        a = hub.emitter("call-a")
        async with _subscriber(broker) as sub:
            await sub.subscribe("vb/#", qos=1)
            a(CallStarted(call_id="call-a", plan="p", language="zh-CN"))
            a(Say(prompt_id="hello", parts=(), language="zh-CN"))
            await _collect(sub, got, _has("vb/calls/call-a/say"))
        # The subscriber has left; its session stays on the broker, saved to disk (SIGUSR1) to survive a crash.
        break_at = len(got)
        broker.signal(signal.SIGUSR1)
        await _until(lambda: (broker.workdir / "mosquitto.db").exists())
        # The broker hangs, then dies, with the end of call A in flight.
        broker.signal(signal.SIGSTOP)
        a(Hangup(reason="done"))
        a(CallEnded(call_id="call-a", outcome="done", record=CallRecord(
            call_id="call-a", plan="p", plan_version="1", language="zh-CN", outcome="done")))
        await _until(lambda: not hub._runners[0].queue)
        await asyncio.sleep(0.2)  # nothing to wait on: let the sink write both to the frozen broker's socket
        broker.signal(signal.SIGKILL)
        await asyncio.to_thread(broker.stop)
        await _until(lambda: not sink.connected)
        b = hub.emitter("call-b")
        b(CallStarted(call_id="call-b", plan="p", language="zh-CN"))  # queued during the outage
        await asyncio.to_thread(broker.start)
        await _until(lambda: sink.connected)
        b(Intent(name="station", confidence=0.9, slots={"when": "明天"}))
        b(CallEnded(call_id="call-b", outcome="done"))
    assert sink.connects == 2
    async with _subscriber(broker) as sub:
        await _collect(sub, got, lambda g: _has("vb/calls/call-a/ended")(g) and _has("vb/calls/call-b/ended")(g))
    after = [t for t, _, _ in got[break_at:]]
    assert "vb/calls/call-a/ended" in after
    assert [t for t in after if "call-b" in t] == [
        "vb/calls/call-b/started", "vb/calls/call-b/intent", "vb/calls/call-b/ended"]
    ended_a = next(p for t, p, _ in got if t == "vb/calls/call-a/ended")
    assert ended_a["record"]["outcome"] == "done"


def _item(event: object, call_id: str = "c1") -> CallEvent:
    return CallEvent(call_id=call_id, event=event, ts=datetime(2024, 5, 1, 10, 0, tzinfo=UTC), mono=0.0)


def test_payloads_mask_personal_data_and_keep_topics_safe() -> None:
    sink = MqttSink(hostname="localhost", prefix="vb", pii={"phone", "customer_name"})
    intent = Intent(name="callback", confidence=1.0, slots={"phone": "13812345678"})
    assert sink.messages(_item(intent, call_id="a/b+c"))
    transfer = Transfer(target="sales/#1", reason="caller_request", context={
        "caller": "138****5678", "transcript": [], "plan": "p", "state": "s",
        "variables": {"customer_name": "王先生", "tracking_tail": "1234"}})
    msgs = sink.messages(_item(transfer, call_id="a/b+c"))
    assert [(t, q) for t, _, q in msgs] == [("vb/calls/a_b_c/transfer", 1), ("vb/handoff/sales__1", 1)]
    body = json.loads(msgs[0][1])
    assert body["slots"] == {"phone": "138****5678"} and body["intent"]["name"] == "callback"
    assert body["variables"] == {"customer_name": "***", "tracking_tail": "1234"}
    assert body["ts"] == "2024-05-01T10:00:00.000+00:00" and body["type"] == "transfer"
    turn = Turn(index=0, state="s", slots={"phone": "13812345678"})
    assert json.loads(sink.messages(_item(TurnCompleted(call_id="c1", turn=turn)))[0][1])["turn"]["slots"] == {
        "phone": "138****5678"}
    # Partials, keys and VAD events are not for the bus.
    assert sink.messages(_item(Transcript(text="放", final=False))) == []


def test_from_url() -> None:
    sink = MqttSink.from_url("mqtts://bot:p%40ss@broker.example:9883/site/a")
    assert sink.prefix == "site/a" and sink._client_args["port"] == 9883
    assert sink._client_args["password"] == "p@ss" and isinstance(sink._client_args["tls_context"], ssl.SSLContext)
    plain = MqttSink.from_url("mqtt://localhost")
    assert plain.prefix == "voicebot" and plain._client_args["port"] == 1883
    assert plain._client_args["tls_context"] is None
    for bad in ("http://localhost", "mqtt://", "mqtt://host:99999", "mqtt://host/a/#", "mqtt://host/a/+", "mqtt://host/a?x=1"):
        with pytest.raises(ConfigError):
            MqttSink.from_url(bad)
