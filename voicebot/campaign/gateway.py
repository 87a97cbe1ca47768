"""The real gateway dialer: ask the telephony gateway to originate (HTTP or MQTT), take its media websocket back.

Each attempt gets an unguessable token. The originate request carries the websocket URL with that token;
the gateway dials, and once the callee answers it opens the websocket (any codec route) and the call runs
through the ordinary server and CallSession. The token ties the connection back to the contact: its plan,
variables and language come from the campaign, never from the gateway.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, Protocol
from urllib.parse import urlsplit

import aiomqtt

from ..amd import AmdConfig
from ..asr import VoskEngine
from ..call import SessionConfig
from ..config import Settings
from ..dialog.load import LoadedPlan
from ..errors import VoicebotError
from ..events import AnswerDetected, CallEnded, Say
from ..gateways.base import CLOSE_POLICY, CallStart, ProtocolError
from ..plans import PlanRegistry
from ..record import CallRecord
from ..server import Route, VoiceServer
from ..tts import PromptCache, Pyttsx3Synthesizer, render_prompt
from . import rules
from .dialer import DialResult, OutboundCall

# What a gateway may answer to an originate request.
STATUSES = frozenset({"answered", rules.BUSY, rules.NO_ANSWER, rules.POWERED_OFF, rules.INVALID_NUMBER,
                      rules.FAILED, rules.VOICEMAIL})
MAX_REPLY_BYTES = 64 * 1024
DEFAULT_AMD = AmdConfig()


class OriginateError(VoicebotError):
    """The gateway could not be asked, or answered something we do not understand."""

    code = "originate"


class Originator(Protocol):
    """Asks a gateway to place a call; returns how dialling ended (one of STATUSES)."""

    async def __aenter__(self) -> Originator: ...
    async def __aexit__(self, *exc: object) -> None: ...
    async def originate(self, request: Mapping[str, Any]) -> str: ...


def _status(reply: Any) -> str:
    status = reply.get("status") if isinstance(reply, dict) else None
    if status not in STATUSES:
        # The reply itself is not quoted: a gateway echoing the request would put numbers and tokens in reports.
        shown = repr(status)[:40] if isinstance(status, str) else type(status).__name__
        raise OriginateError(f"gateway reply has no valid status (one of {sorted(STATUSES)}), got {shown}")
    return status


class HttpOriginator:
    """POSTs the request as JSON; the reply `{"status": ...}` comes when the callee answered or dialling failed."""

    def __init__(self, url: str, *, token: str = "", timeout: float = 90.0) -> None:
        if urlsplit(url).scheme not in ("http", "https"):
            raise OriginateError(f"originate URL must be http(s): {url!r}")
        self.url, self.token, self.timeout = url, token, timeout

    async def __aenter__(self) -> HttpOriginator:
        return self

    async def __aexit__(self, *exc: object) -> None:
        return None

    async def originate(self, request: Mapping[str, Any]) -> str:
        """One POST, off the event loop."""
        return _status(await asyncio.to_thread(self._post, dict(request)))

    def _post(self, request: dict[str, Any]) -> Any:
        headers = {"Content-Type": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        req = urllib.request.Request(self.url, data=json.dumps(request).encode(), headers=headers, method="POST")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                body = resp.read(MAX_REPLY_BYTES + 1)
        except (urllib.error.URLError, OSError) as err:
            raise OriginateError(f"originate request to {self.url} failed: {err}") from err
        if len(body) > MAX_REPLY_BYTES:
            raise OriginateError(f"originate reply over {MAX_REPLY_BYTES} bytes")
        try:
            return json.loads(body)
        except ValueError as err:
            raise OriginateError(f"originate reply is not JSON: {body[:100]!r}") from err


class MqttOriginator:
    """Publishes the request on `topic`; the gateway publishes `{"status": ...}` on the request's `reply_to`."""

    def __init__(self, url: str, topic: str, *, timeout: float = 90.0) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "tcp") or not parts.hostname:
            raise OriginateError(f"MQTT URL must look like mqtt://host:1883: {url!r}")
        if not topic or any(c in topic for c in "+#"):
            raise OriginateError(f"originate topic must be a plain topic name: {topic!r}")
        self.host, self.port = parts.hostname, parts.port or 1883
        self.username, self.password = parts.username, parts.password
        self.topic, self.timeout = topic, timeout
        self.reply_base = f"{topic}/status/{secrets.token_hex(4)}"
        self._waiting: dict[str, asyncio.Future[Any]] = {}
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> MqttOriginator:
        self._client = aiomqtt.Client(self.host, self.port, username=self.username, password=self.password)
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.reply_base}/+", qos=1)
        self._reader = asyncio.create_task(self._read(), name="originate-replies")
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        if self._client is not None:
            await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self._client is not None
        async for message in self._client.messages:
            token = str(message.topic).rsplit("/", 1)[-1]
            fut = self._waiting.get(token)
            if fut is None or fut.done():
                continue
            try:
                payload = message.payload
                if not isinstance(payload, bytes | bytearray) or len(payload) > MAX_REPLY_BYTES:
                    raise ValueError("not a bounded byte payload")
                fut.set_result(json.loads(payload))
            except ValueError as err:
                fut.set_exception(OriginateError(f"originate reply on {message.topic} is not JSON: {err}"))

    async def originate(self, request: Mapping[str, Any]) -> str:
        """Publish, then wait for the reply on this attempt's topic."""
        assert self._client is not None
        token = str(request["attempt"])
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._waiting[token] = fut
        try:
            await self._client.publish(self.topic, json.dumps({**request, "reply_to": f"{self.reply_base}/{token}"}),
                                       qos=1)
            async with asyncio.timeout(self.timeout):
                return _status(await fut)
        except TimeoutError as err:
            raise OriginateError(f"no originate reply within {self.timeout:g} s") from err
        except aiomqtt.MqttError as err:
            raise OriginateError(f"originate over MQTT failed: {err}") from err
        finally:
            self._waiting.pop(token, None)


@dataclass
class _Pending:
    call: OutboundCall
    emit: Callable[[object], None]
    connected: asyncio.Event = field(default_factory=asyncio.Event)
    detail: str = ""  # what answering-machine detection said
    ended: asyncio.Future[CallRecord] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class GatewayDialer:
    """Originates through a real gateway and serves the answered calls' websockets itself."""

    name = "gateway"

    def __init__(self, *, plan: LoadedPlan, settings: Settings, originator: Originator, routes: Sequence[Route],
                 public_url: str, host: str = "0.0.0.0", port: int = 8090, gateway_path: str = "/native",
                 connect_timeout: float = 30.0, max_call_seconds: float = 1800.0,
                 answer_detection: AmdConfig | None = DEFAULT_AMD) -> None:
        self.loaded, self.settings, self.originator = plan, settings, originator
        self.routes, self.host, self.port, self.gateway_path = list(routes), host, port, gateway_path
        self.public_url = public_url.rstrip("/")
        self.connect_timeout, self.max_call_seconds = connect_timeout, max_call_seconds
        self.answer_detection = answer_detection  # None: the robot speaks as soon as the media connects
        # The gateway proves itself with this token on the websocket, as with `voicebot serve`.
        self.token = next(iter(sorted(settings.gateway_tokens)), "") or secrets.token_urlsafe(24)
        self._pending: dict[str, _Pending] = {}
        self._by_call: dict[str, _Pending] = {}
        self._stack = contextlib.AsyncExitStack()
        self.server: VoiceServer | None = None

    async def __aenter__(self) -> GatewayDialer:
        stack = self._stack
        plans = PlanRegistry(self.loaded.base_dir)
        await plans.reload()
        vosk = VoskEngine(settings=self.settings)
        stack.push_async_callback(vosk.aclose)
        synth = await stack.enter_async_context(Pyttsx3Synthesizer())
        cache = PromptCache(synth, self.settings.cache_dir)
        await cache.prerender(self.loaded.plan.static_texts(), rate=8000)
        await stack.enter_async_context(self.originator)

        async def recognizer(language: str, rate: int, grammar: Sequence[str] | None):
            return await vosk.recognizer(language=language, rate=rate, grammar=grammar)

        def speak(rate: int, plan: str) -> Callable:
            async def say(prompt: Say) -> bytes:
                return await render_prompt(prompt.parts, language=prompt.language, rate=rate, cache=cache,
                                           base_dir=self.loaded.base_dir)
            return say

        self.server = VoiceServer(routes=self.routes, plans=plans, recognizer=recognizer, speak=speak,
                                  emitter=self._emitter, tokens=frozenset({self.token}), host=self.host,
                                  port=self.port, on_start=self._on_start, session_config=self._session_config)
        await stack.enter_async_context(self.server)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._stack.aclose()

    def _session_config(self, rate: int) -> SessionConfig:
        return SessionConfig(rate=rate, answer_detection=self.answer_detection,
                             max_call_seconds=self.max_call_seconds)

    def websocket_url(self, attempt_token: str) -> str:
        """Where the gateway connects the answered call's media."""
        return f"{self.public_url}{self.gateway_path}?attempt={attempt_token}&token={self.token}"

    def _on_start(self, start: CallStart, query: Mapping[str, str]) -> CallStart:
        """Tie the websocket to its attempt; refuse connections that are not an attempt in progress."""
        pending = self._pending.get(query.get("attempt", ""))
        if pending is None:
            raise ProtocolError("no outbound attempt with this token (unknown, finished or expired)",
                                close_code=CLOSE_POLICY)
        if pending.connected.is_set():
            raise ProtocolError("this attempt is already connected", close_code=CLOSE_POLICY)
        pending.connected.set()
        call = pending.call
        return replace(start, call_id=call.call_id, plan=self.loaded.plan.plan, variables=dict(call.variables),
                       language=call.language or start.language, caller=call.phone)

    def _emitter(self, call_id: str) -> Callable[[object], None]:
        def emit(event: object) -> None:
            pending = self._by_call.get(call_id)
            if pending is None:
                return
            pending.emit(event)
            if isinstance(event, AnswerDetected):
                pending.detail = f"amd {event.verdict}: {event.reason} after {event.after:g} s"
            if isinstance(event, CallEnded) and not pending.ended.done():
                pending.ended.set_result(event.record)
        return emit

    async def dial(self, call: OutboundCall, *, emit: Callable[[object], None]) -> DialResult:
        """Originate, then wait for the answered call's websocket to run the dialog to its end."""
        token = secrets.token_urlsafe(16)
        pending = _Pending(call=call, emit=emit)
        self._pending[token], self._by_call[call.call_id] = pending, pending
        language = call.language or self.loaded.plan.languages[0]
        request = {"attempt": token, "campaign": call.campaign, "contact_id": call.contact_id,
                   "call_id": call.call_id, "to": call.phone, "plan": self.loaded.plan.plan, "language": language,
                   "websocket_url": self.websocket_url(token)}
        try:
            try:
                status = await self.originator.originate(request)
            except OriginateError as err:
                if not pending.connected.is_set():
                    return DialResult(outcome=rules.FAILED, detail=err.message)
                status = "answered"  # the media is already here: the call is live whatever the reply said
            if status != "answered" and not pending.connected.is_set():
                return DialResult(outcome=status, detail="reported by the gateway")
            try:
                async with asyncio.timeout(self.connect_timeout):
                    await pending.connected.wait()
            except TimeoutError:
                return DialResult(outcome=rules.FAILED,
                                  detail=f"answered, but the gateway did not connect within {self.connect_timeout:g} s")
            self._pending.pop(token, None)  # one connection per attempt
            try:
                async with asyncio.timeout(self.max_call_seconds + 60):
                    record = await pending.ended
            except TimeoutError:
                return DialResult(outcome=rules.DROPPED, detail="the call never ended")
            return DialResult(outcome=record.outcome, record=record, talk_seconds=record.duration,
                              detail=pending.detail)
        finally:
            self._pending.pop(token, None)
            self._by_call.pop(call.call_id, None)
