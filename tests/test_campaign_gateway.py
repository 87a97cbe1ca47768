"""The real gateway dialer: originate by HTTP or MQTT, the answered call's websocket tied back to its contact.

No telephone network runs here, so `FakeTelephonyGateway` (a FAKE, named as such) stands in for FreeSWITCH
or Asterisk: it takes originate requests, answers or not by the number dialled, and connects the answered
call's media over a real websocket with the native protocol, speaking real Korean WAV fixtures. Everything
on our side is real: the HTTP request, the MQTT broker, the server, Vosk, TTS, SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import aiomqtt
import numpy as np
import pytest
import websockets
from conftest import PLANS, fixture_path
from test_bus import broker  # noqa: F401 (the real mosquitto fixture)

from voicebot.audio import chunks, read_wav, resample, silence
from voicebot.campaign import rules
from voicebot.campaign.contacts import Contact
from voicebot.campaign.db import CampaignDB
from voicebot.campaign.gateway import GatewayDialer, HttpOriginator, MqttOriginator
from voicebot.campaign.runner import CampaignRunner, RunOptions
from voicebot.dialog.load import load_plan
from voicebot.gateways.native import NativeCodec
from voicebot.hours import WeeklyHours
from voicebot.server import Route

pytestmark = pytest.mark.vosk
RATE = 8000


BEEP = (np.sin(2 * np.pi * 1000 * np.arange(RATE // 2) / RATE) * 12000).astype("<i2").tobytes()


def _wav(name: str) -> bytes:
    pcm, rate = read_wav(fixture_path("ko-KR", name))
    return resample(pcm, from_rate=rate, to_rate=RATE)


class FakeTelephonyGateway:
    """FAKE telephone network + gateway: numbers ending 1 are busy, others answer and speak their script."""

    def __init__(self, loop: asyncio.AbstractEventLoop, scripts: dict[str, list[str]]) -> None:
        self.loop, self.scripts = loop, scripts
        self.requests: list[dict] = []
        self.calls: set[asyncio.Future] = set()

    def decide(self, request: dict) -> str:
        """Record the request; start the media leg when the callee (or their voicemail) answers."""
        self.requests.append(request)
        if request["to"].endswith("1"):
            return rules.BUSY
        if request["to"].endswith("4"):  # voicemail: a long recorded greeting, then the beep
            greeting, rate = read_wav(fixture_path("zh-CN", "long_speech"))
            opening = resample(greeting, from_rate=rate, to_rate=RATE)[: 4 * RATE * 2] + silence(0.3, RATE) + BEEP
            answers = []
        else:  # a person: a short hello, then waits for us
            opening, answers = _wav("yes") + silence(1.0, RATE), [_wav(n) for n in self.scripts[request["to"]]]
        leg = self.media(request["websocket_url"], opening, answers)
        self.calls.add(asyncio.run_coroutine_threadsafe(leg, self.loop))
        return "answered"

    async def media(self, url: str, opening: bytes, answers: list[bytes]) -> None:
        """Play the callee: the opening audio, then listen to each prompt (silence as long as it) and answer."""
        # The robot's goodbye went out and the server closed the leg: the callee has nothing more to do.
        with contextlib.suppress(websockets.ConnectionClosed):
            await self._media(url, opening, answers)

    async def _media(self, url: str, opening: bytes, answers: list[bytes]) -> None:
        pending = iter(answers)
        robot = sent = 0
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "gw-leg-1", "variables": {"customer_name": "X"},
                                      "audio": {"encoding": "pcm16", "rate": RATE}}))
            for frame in chunks(opening, rate=RATE):
                await ws.send(frame)
            async for message in ws:
                if isinstance(message, bytes):
                    robot += len(message)
                    continue
                body = json.loads(message)
                if body["type"] != "mark":
                    continue
                for frame in chunks(silence((robot - sent) / 2 / RATE + 0.3, RATE), rate=RATE):
                    await ws.send(frame)
                sent = robot
                await ws.send(json.dumps({"type": "mark", "name": body["name"]}))
                answer = next(pending, None)
                if answer is not None:
                    for frame in chunks(answer + silence(1.0, RATE), rate=RATE):
                        await ws.send(frame)


class _Handler(BaseHTTPRequestHandler):
    gateway: FakeTelephonyGateway

    def do_POST(self) -> None:
        request = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        body = json.dumps({"status": self.gateway.decide(request)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


def _contacts(*phones: str) -> list[Contact]:
    return [Contact(contact_id=f"c{i}", row=i + 2, phone=p, timezone="Asia/Shanghai",
                    variables={"customer_name": "김"}) for i, p in enumerate(phones)]


async def _run(tmp_path, settings, originator) -> tuple[dict[str, str], dict]:
    loaded = load_plan(PLANS / "delivery_ko.yaml")
    routes = [Route(NativeCodec.path, NativeCodec, plan="delivery_ko")]
    dialer = GatewayDialer(plan=loaded, settings=settings, originator=originator, routes=routes,
                           public_url="ws://127.0.0.1:0", host="127.0.0.1", port=0, connect_timeout=10)
    options = RunOptions(concurrency=3, calls_per_second=20, retry=rules.RetryPolicy(max_attempts=1),
                         calling=rules.CallingPolicy(windows=WeeklyHours.parse("00:00-24:00")))
    async with CampaignDB(tmp_path / "c.db") as db:
        await db.create(name="gw", plan="delivery_ko", plan_path="", contacts_path="", digest="", options={},
                        contacts=_contacts("13800000001", "13800000002", "13800000003", "13800000004"))
        async with dialer:
            dialer.public_url = f"ws://127.0.0.1:{dialer.server.port}"
            assert await CampaignRunner(db=db, name="gw", dialer=dialer, options=options).run() == "done"
        results = {r.contact_id: r for r in await db.results("gw")}
    return {k: r.outcome for k, r in results.items()}, {k: r.result for k, r in results.items()}


SCRIPTS = {"13800000002": ["yes"], "13800000003": ["no", "yes"]}


async def test_http_originate_ties_each_answered_websocket_to_its_contact(tmp_path, settings):
    gateway = FakeTelephonyGateway(asyncio.get_running_loop(), SCRIPTS)
    _Handler.gateway = gateway
    http = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    threading.Thread(target=http.serve_forever, daemon=True).start()
    try:
        outcomes, results = await _run(tmp_path, settings,
                                       HttpOriginator(f"http://127.0.0.1:{http.server_port}/originate"))
    finally:
        http.shutdown()
    assert outcomes == {"c0": "busy", "c1": "door_delivery", "c2": "station_consent", "c3": "voicemail"}
    # Answering-machine detection ran on the gateway's audio before the robot spoke.
    assert results["c3"]["detail"].startswith("amd machine: long greeting")
    assert results["c1"]["detail"].startswith("amd human: short greeting")
    # The plan, variables and number came from the campaign, not from what the gateway's start said.
    assert results["c1"]["variables"]["customer_name"] == "김"
    assert {r["to"] for r in gateway.requests} == {"13800000001", "13800000002", "13800000003", "13800000004"}
    assert all("token=" in r["websocket_url"] and r["plan"] == "delivery_ko" for r in gateway.requests)
    await asyncio.gather(*(asyncio.wrap_future(f) for f in gateway.calls))


async def test_a_websocket_without_a_live_attempt_is_refused(tmp_path, settings):
    loaded = load_plan(PLANS / "delivery_ko.yaml")
    dialer = GatewayDialer(plan=loaded, settings=settings, originator=HttpOriginator("http://127.0.0.1:9/"),
                           routes=[Route(NativeCodec.path, NativeCodec)], public_url="ws://x", host="127.0.0.1",
                           port=0)
    async with dialer:
        url = dialer.websocket_url("not-an-attempt").replace("ws://x", f"ws://127.0.0.1:{dialer.server.port}")
        async with websockets.connect(url) as ws:
            await ws.send(json.dumps({"type": "start", "call_id": "rogue", "audio": {"encoding": "pcm16",
                                                                                       "rate": RATE}}))
            error = json.loads(await ws.recv())
            assert error["type"] == "error" and "no outbound attempt" in error["message"]
            with pytest.raises(websockets.ConnectionClosed) as info:
                await ws.recv()
            assert info.value.rcvd.code == 1008


async def test_mqtt_originate_through_a_real_broker(tmp_path, settings, broker):  # noqa: F811
    gateway = FakeTelephonyGateway(asyncio.get_running_loop(), SCRIPTS)

    async def serve_gateway() -> None:
        async with aiomqtt.Client("127.0.0.1", broker.port) as client:
            await client.subscribe("pbx/originate", qos=1)
            ready.set()
            async for message in client.messages:
                request = json.loads(message.payload)
                status = await asyncio.to_thread(gateway.decide, request)
                await client.publish(request["reply_to"], json.dumps({"status": status}), qos=1)

    ready = asyncio.Event()
    task = asyncio.create_task(serve_gateway())
    try:
        await asyncio.wait_for(ready.wait(), 10)
        outcomes, _ = await _run(tmp_path, settings, MqttOriginator(f"mqtt://127.0.0.1:{broker.port}",
                                                                     "pbx/originate"))
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
    assert outcomes == {"c0": "busy", "c1": "door_delivery", "c2": "station_consent", "c3": "voicemail"}
