"""The websocket server: accepts gateway connections, picks the codec by path, runs a CallSession each."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import ssl
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Protocol
from urllib.parse import parse_qsl, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from .asr import Recognizer
from .call import CallSession, Incoming, SessionConfig
from .errors import VoicebotError
from .events import AudioChunk, Dtmf, Error, Hangup, Play, Say, StopPlayback, Transfer
from .gateways.base import (
    CLOSE_POLICY,
    CLOSE_UNSUPPORTED,
    CallerHangup,
    CallStart,
    Codec,
    FlowControl,
    Frame,
    MarkReached,
    ProtocolError,
)
from .gateways.twilio import valid_twilio_signature
from .plans import PlanRegistry
from .services import Services

log = logging.getLogger(__name__)

# (language, rate, first grammar) -> recogniser; building it with a grammar is ~100x cheaper for Vosk.
RecognizerFactory = Callable[[str, int, Sequence[str] | None], Awaitable[Recognizer]]
SpeakFactory = Callable[[int, str], Callable[[Say], Awaitable[bytes]]]  # (line rate, plan) -> speak
LINE_RATES = (8000, 16000)
BURST_SECONDS = 5  # a gateway may catch up this many seconds' worth of frames at once


@dataclass(frozen=True)
class Route:
    """A URL path served by one codec, with its default plan and its share of capacity."""

    path: str
    codec: Callable[..., Codec]
    plan: str = ""
    max_calls: int = 100


@dataclass(frozen=True)
class ServerLimits:
    """Bounds that keep one bad gateway from hurting the other calls."""

    max_message_bytes: int = 1 << 20
    max_frames_per_second: int = 200  # 20 ms audio is 50/s; bursts after a network hiccup are allowed
    idle_timeout: float = 30.0  # seconds without any frame before the call is given up
    drain_timeout: float = 60.0  # on shutdown, how long live calls may go on
    ping_interval: float = 20.0


class VoiceServer:
    """Serves calls over websockets while inside `async with`; `drain()` ends it gracefully."""

    def __init__(
        self,
        *,
        routes: list[Route],
        plans: PlanRegistry,
        recognizer: RecognizerFactory,
        speak: SpeakFactory,
        emitter: Callable[[str], Callable[[object], None]],
        tokens: frozenset[str] = frozenset(),
        require_auth: bool = True,
        limits: ServerLimits | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        tls: ssl.SSLContext | None = None,
        session_config: Callable[[int], SessionConfig] | None = None,
        raw_routes: Mapping[str, Callable[[ServerConnection], Awaitable[None]]] | None = None,
        twilio_auth_token: str = "",
        public_url: str = "",
        services: Services | None = None,
        on_start: Callable[[CallStart, Mapping[str, str]], CallStart] | None = None,
    ) -> None:
        if require_auth and not tokens and not twilio_auth_token:
            raise VoicebotError("refusing to serve without gateway tokens (give --token, or --no-auth for tests)",
                                code="no_auth")
        self.routes = {r.path: r for r in routes}
        self.raw_routes = dict(raw_routes or {})  # paths handled whole by another protocol (e.g. /asr)
        self.plans, self.recognizer, self.speak, self.emitter = plans, recognizer, speak, emitter
        self.tokens, self.require_auth = tokens, require_auth
        # Twilio signs its websocket request (X-Twilio-Signature) over the URL it was given: our public one.
        self.twilio_auth_token, self.public_url = twilio_auth_token, public_url.rstrip("/")
        self.limits = limits or ServerLimits()
        self.host, self.port, self.tls = host, port, tls
        self.session_config = session_config or (lambda rate: SessionConfig(rate=rate))
        self.services = services  # what plans' `invoke:` states call; None = every invoke is an error
        # Completes or refuses a call's start from its URL query (e.g. an outbound attempt's token).
        self.on_start = on_start
        self.active: dict[str, int] = {}  # live calls per route
        self._server: Server | None = None
        self._calls: set[asyncio.Task] = set()

    # --- lifetime -------------------------------------------------------------------------------

    async def __aenter__(self) -> VoiceServer:
        subprotocols = sorted({p for r in self.routes.values() for p in getattr(r.codec, "subprotocols", ())})
        self._server = await serve(
            self._handle, self.host, self.port, ssl=self.tls, process_request=self._admit,
            select_subprotocol=lambda conn, offered: next((p for p in offered if p in subprotocols), None),
            max_size=self.limits.max_message_bytes, ping_interval=self.limits.ping_interval,
            compression=None,  # audio does not compress; deflating every frame only costs CPU
        )
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("serving %s on %s:%d", ", ".join(self.routes), self.host, self.port)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.drain()

    async def drain(self) -> None:
        """Stop accepting calls, let live ones finish up to the drain deadline, then end the rest."""
        if self._server is None:
            return
        self._server.close(close_connections=False)
        live = set(self._calls)
        if live:
            log.info("draining %d live calls (up to %.0f s)", len(live), self.limits.drain_timeout)
            _, pending = await asyncio.wait(live, timeout=self.limits.drain_timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        self._server.close()
        await self._server.wait_closed()
        self._server = None

    # --- admission ------------------------------------------------------------------------------

    def _authorized(self, request: Request, query: Mapping[str, str], route: Route | None) -> bool:
        if not self.require_auth:
            return True
        signature = request.headers.get("X-Twilio-Signature", "")
        if route is not None and route.codec.name == "twilio" and self.twilio_auth_token and signature:
            return valid_twilio_signature(self.twilio_auth_token, self.public_url + request.path, {}, signature)
        offered = query.get("token", "")
        header = request.headers.get("Authorization", "")
        if header.lower().startswith("bearer "):
            offered = header[7:].strip()
        return any(hmac.compare_digest(offered.encode(), t.encode()) for t in self.tokens)

    def _admit(self, connection: ServerConnection, request: Request) -> Response | None:
        """Refuse at the handshake, with a reason: unknown path, no token, route full."""
        url = urlsplit(request.path)
        route = self.routes.get(url.path)
        if route is None and url.path not in self.raw_routes:
            known = ", ".join([*self.routes, *self.raw_routes])
            return connection.respond(HTTPStatus.NOT_FOUND, f"no route {url.path}; try {known}\n")
        if not self._authorized(request, dict(parse_qsl(url.query)), route):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "missing or wrong gateway token\n")
        if route is None:
            return None
        if not self.has_room(route):
            return connection.respond(HTTPStatus.SERVICE_UNAVAILABLE, f"{route.path} is at its limit of "
                                      f"{route.max_calls} concurrent calls\n")
        return None

    # --- one connection -------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        url = urlsplit(ws.request.path)
        if (raw := self.raw_routes.get(url.path)) is not None:
            await raw(ws)
            return
        route = self.routes[url.path]
        await self.run_call(WebsocketLink(ws), route, route.codec(query=dict(parse_qsl(url.query))))

    def has_room(self, route: Route) -> bool:
        """Whether the route can take another call."""
        return self.active.get(route.path, 0) < route.max_calls

    async def run_call(self, link: Link, route: Route, codec: Codec) -> None:
        """Serve one call over any link (websocket, TCP); counted, drained on shutdown."""
        self.active[route.path] = self.active.get(route.path, 0) + 1
        task = asyncio.current_task()
        self._calls.add(task)
        try:
            await _Connection(self, link, route, codec).run()
        finally:
            self._calls.discard(task)
            self.active[route.path] -= 1


class LinkClosed(Exception):
    """The gateway's connection is gone."""


class Link(Protocol):
    """A gateway connection as the call sees it: frames in, frames out, close."""

    async def recv(self) -> Frame: ...
    async def send(self, frame: Frame) -> None: ...
    def flush(self) -> None: ...
    async def close(self, code: int, reason: str) -> None: ...


class WebsocketLink:
    """A websocket connection; the gateway paces and flushes playback itself."""

    def __init__(self, ws: ServerConnection) -> None:
        self.ws = ws

    async def recv(self) -> Frame:
        """The next frame."""
        try:
            return await self.ws.recv()
        except ConnectionClosed as err:
            raise LinkClosed from err

    async def send(self, frame: Frame) -> None:
        """Send one frame."""
        try:
            await self.ws.send(frame)
        except ConnectionClosed as err:
            raise LinkClosed from err

    def flush(self) -> None:
        """Nothing queued on our side: the codec's flush message does it."""

    async def close(self, code: int, reason: str) -> None:
        """Close with a websocket close code and reason."""
        await self.ws.close(code, reason)


class _Connection:
    """One gateway connection: frames in → codec → session → codec → frames out."""

    def __init__(self, server: VoiceServer, link: Link, route: Route, codec: Codec) -> None:
        self.server, self.link, self.route, self.codec = server, link, route, codec
        self.inbox: asyncio.Queue[Incoming | None] = asyncio.Queue(maxsize=500)
        self.resumed = asyncio.Event()
        self.resumed.set()
        self.session_task: asyncio.Task | None = None
        self.outbox: asyncio.Queue[tuple[Frame, float] | None] = asyncio.Queue()
        self.call_id = ""
        self.emit: Callable[[object], None] = server.emitter("")
        self._window = time.monotonic()
        self._tokens = float(server.limits.max_frames_per_second * BURST_SECONDS)

    async def run(self) -> None:
        """Receive until the gateway or the dialog ends the call; always leaves a record."""
        close_code, reason = 1000, "call ended"
        try:
            await self._receive()
        except ProtocolError as err:
            # A close reason is at most 123 bytes of UTF-8.
            close_code, reason = err.close_code, err.message.encode()[:120].decode(errors="ignore")
            self.emit(Error(code=err.code, message=err.message, call_id=self.call_id))
            log.warning("%s: protocol error: %s", self.route.path, err.message)
            if (frame := self.codec.error_frame(err)) is not None:
                with contextlib.suppress(LinkClosed):
                    await self.link.send(frame)
        except TimeoutError:
            close_code, reason = 1001, "idle timeout"
        except LinkClosed:
            pass
        finally:
            await self._end_session()
            with contextlib.suppress(LinkClosed):
                await self.link.close(close_code, reason)

    def _check_rate(self) -> None:
        """Token bucket: a sustained rate above the limit is refused, a burst after a stall is not."""
        rate = self.server.limits.max_frames_per_second
        now = time.monotonic()
        self._tokens = min(rate * BURST_SECONDS, self._tokens + (now - self._window) * rate)
        self._window = now
        self._tokens -= 1
        if self._tokens < 0:
            raise ProtocolError(f"more than {rate} frames per second, sustained", close_code=CLOSE_POLICY)

    async def _receive(self) -> None:
        while True:
            async with asyncio.timeout(self.server.limits.idle_timeout):
                frame = await self.link.recv()
            self._check_rate()
            for message in self.codec.decode(frame):
                if isinstance(message, CallStart):
                    await self._start(message)
                elif isinstance(message, AudioChunk | Dtmf | MarkReached):
                    if self.session_task is None:
                        raise ProtocolError(f"{self.codec.name}: media before the call started")
                    await self.inbox.put(message)
                elif isinstance(message, FlowControl):
                    (self.resumed.clear if message.paused else self.resumed.set)()
                elif isinstance(message, CallerHangup):
                    return
            if self.session_task is not None and self.session_task.done():
                return

    async def _start(self, start: CallStart) -> None:
        if self.session_task is not None:
            raise ProtocolError(f"{self.codec.name}: a second start on one connection")
        if self.server.on_start is not None:
            start = self.server.on_start(start, self.codec.query)
        if start.rate not in LINE_RATES:
            raise ProtocolError(f"line rate {start.rate} Hz is not supported; use 8000 or 16000",
                                close_code=CLOSE_UNSUPPORTED)
        name = start.plan or self.route.plan
        version = self.server.plans.get(name)
        if version is None:
            raise ProtocolError(f"unknown plan {name!r}; serving {self.server.plans.names}", close_code=CLOSE_POLICY)
        language = start.language or version.loaded.plan.languages[0]
        self.call_id = start.call_id
        self.emit = self.server.emitter(start.call_id)
        try:
            recognizer = await self.server.recognizer(language, start.rate, version.engine.first_grammar(language))
            session = CallSession(
                call_id=start.call_id, engine=version.engine, recognizer=recognizer,
                speak=self.server.speak(start.rate, name), emit=self.emit, variables=dict(start.variables),
                language=language, caller=start.caller, config=self.server.session_config(start.rate),
                services=self.server.services,
            )
        except VoicebotError as err:
            raise ProtocolError(f"cannot start the call: {err.message}", close_code=1011) from err
        for frame in self.codec.greeting_frames():
            await self.link.send(frame)
        self.session_task = asyncio.create_task(self._play(session, recognizer), name=f"call-{start.call_id}")

    async def _incoming(self) -> AsyncIterator[Incoming]:
        while (item := await self.inbox.get()) is not None:
            yield item

    def _queue(self, out: object) -> None:
        """Queue one action's frames for the sender; audio frames carry their share of the prompt's length."""
        frames = self.codec.encode(out)
        seconds = len(out.pcm) / 2 / out.rate if isinstance(out, Play) else 0.0
        audio_bytes = sum(len(f) for f in frames if isinstance(f, bytes)) or 1
        for frame in frames:
            share = seconds * len(frame) / audio_bytes if isinstance(frame, bytes) else 0.0
            self.outbox.put_nowait((frame, share))

    async def _send(self) -> None:
        """Send queued frames in order, never more than the codec's playback budget ahead of real time."""
        budget = self.codec.max_ahead_seconds
        loop = asyncio.get_running_loop()
        played_until = 0.0  # loop time at which the gateway will have played all audio sent so far
        while (item := await self.outbox.get()) is not None:
            frame, seconds = item
            if seconds:
                await self.resumed.wait()  # the gateway asked us to hold our audio (flow control)
                ahead = max(0.0, played_until - loop.time())
                if budget is not None and ahead + seconds > budget:
                    await asyncio.sleep(ahead + seconds - budget)  # real time passing is what we wait for
                played_until = max(played_until, loop.time()) + seconds
            await self.link.send(frame)

    async def _play(self, session: CallSession, recognizer: Recognizer) -> None:
        """Run the session, handing what it says to the sender; close the socket when the dialog ends."""
        sender = asyncio.create_task(self._send(), name="sender")
        try:
            async for out in session.run(self._incoming()):
                if isinstance(out, StopPlayback):
                    while not self.outbox.empty():  # barge-in: what we have not sent yet is dropped too
                        self.outbox.get_nowait()
                    self.link.flush()
                self._queue(out)
                if isinstance(out, Hangup | Transfer):
                    break
            self.outbox.put_nowait(None)
            await sender  # the goodbye goes out before the socket closes
        except LinkClosed:
            pass
        finally:
            sender.cancel()
            await asyncio.gather(sender, return_exceptions=True)
            await recognizer.aclose()
        if session.ended:
            with contextlib.suppress(LinkClosed):
                await self.link.close(1000, "call ended")

    async def _end_session(self) -> None:
        """The gateway is gone or done: let the session finish its record (outcome dropped if mid-call)."""
        task = self.session_task
        if task is None:
            return
        self.resumed.set()  # a session held by flow control must be able to finish
        try:
            if not task.done():
                await asyncio.wait_for(self.inbox.put(None), timeout=5)
            await asyncio.wait_for(asyncio.shield(task), timeout=10)
        except TimeoutError:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        except (VoicebotError, LinkClosed):
            pass
