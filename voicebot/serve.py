"""`voicebot serve`: plans, ASR, TTS, store, MQTT and metrics composed around the websocket server."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import signal
import ssl
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from .asr import VoskEngine
from .audiosocket_server import serve_audiosocket
from .bus import MqttSink
from .config import Settings
from .events import Say
from .gateways.asterisk import AsteriskCodec
from .gateways.freeswitch import AudioForkCodec, AudioStreamCodec
from .gateways.jambonz import JambonzCodec
from .gateways.native import NativeCodec
from .gateways.twilio import TwilioCodec
from .gateways.vosk_asr import serve_asr
from .metrics import Metrics, MetricsServer, MetricsSink
from .plans import PlanRegistry
from .server import Route, ServerLimits, VoiceServer
from .services import SqliteServices
from .sinks import EventHub, StoreSink
from .store import CallStore
from .tts import PromptCache, Pyttsx3Synthesizer, render_prompt

log = logging.getLogger(__name__)
CODECS = (NativeCodec, TwilioCodec, AudioForkCodec, AudioStreamCodec, AsteriskCodec, JambonzCodec)


@dataclass(frozen=True)
class ServeOptions:
    """What `voicebot serve` was asked to do."""

    plans_dir: Path
    host: str = "127.0.0.1"
    port: int = 8080
    default_plan: str = ""
    route_plans: dict[str, str] = field(default_factory=dict)  # codec name -> plan
    tokens: frozenset[str] = frozenset()
    require_auth: bool = True
    max_calls: int = 100
    tls_cert: Path | None = None
    tls_key: Path | None = None
    audiosocket_port: int | None = None
    metrics_port: int | None = None
    asr_language: str = "ko-KR"  # language of the vosk-server compatible /asr endpoint
    db: Path | None = None
    services_db: Path | None = None  # built-in services (parcels, tickets, bookings); None with no parcels = none
    parcels: Path | None = None
    limits: ServerLimits = field(default_factory=ServerLimits)


def _tls(options: ServeOptions) -> ssl.SSLContext | None:
    if options.tls_cert is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(options.tls_cert, options.tls_key)
    return context


def _log_reload(task: asyncio.Task) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("plan reload failed: %s", task.exception())


def _pii(plans: PlanRegistry) -> set[str]:
    return {name for plan in plans.names for name, spec in plans.get(plan).loaded.plan.variables.items() if spec.pii}


async def run_server(options: ServeOptions, settings: Settings, *, ready: Callable[[VoiceServer], None] | None = None,
                     stop: asyncio.Event | None = None) -> None:
    """Serve until SIGTERM/SIGINT (or `stop`), then drain live calls and flush every record."""
    plans = PlanRegistry(options.plans_dir)
    await plans.reload()
    if not plans.names:
        raise SystemExit(f"no loadable plans in {options.plans_dir}: {plans.errors}")
    stop = stop or asyncio.Event()
    vosk = VoskEngine(settings=settings)
    metrics = Metrics()
    async with contextlib.AsyncExitStack() as stack:
        stack.push_async_callback(vosk.aclose)
        synth = await stack.enter_async_context(Pyttsx3Synthesizer())
        cache = PromptCache(synth, settings.cache_dir)
        for name in plans.names:  # static prompts rendered before the first call
            await cache.prerender(plans.get(name).loaded.plan.static_texts(), rate=8000)
        store = await stack.enter_async_context(CallStore(options.db or settings.data_dir / "calls.db"))
        services = None
        if options.services_db or options.parcels:
            services = await stack.enter_async_context(SqliteServices(
                options.services_db or settings.data_dir / "services.db", parcels=options.parcels))
        sinks: list = [StoreSink(store), MetricsSink(metrics)]
        if settings.mqtt_url:
            mqtt = await stack.enter_async_context(MqttSink.from_url(settings.mqtt_url, pii=_pii(plans)))
            sinks.append(mqtt)
        hub = await stack.enter_async_context(EventHub(sinks))
        if options.metrics_port is not None:
            await stack.enter_async_context(MetricsServer(metrics, host=options.host, port=options.metrics_port))

        async def recognizer(language: str, rate: int, grammar: Sequence[str] | None):
            return await vosk.recognizer(language=language, rate=rate, grammar=grammar)

        def speak(rate: int, plan: str) -> Callable:
            base_dir = plans.get(plan).loaded.base_dir

            async def say(prompt: Say) -> bytes:
                return await render_prompt(prompt.parts, language=prompt.language, rate=rate, cache=cache,
                                           base_dir=base_dir)
            return say

        routes = [Route(codec.path, codec, plan=options.route_plans.get(codec.name, options.default_plan),
                        max_calls=options.max_calls) for codec in CODECS]

        async def asr(ws) -> None:
            await serve_asr(ws, engine=vosk, language=options.asr_language)

        server = VoiceServer(routes=routes, plans=plans, recognizer=recognizer, speak=speak, emitter=hub.emitter,
                             tokens=options.tokens, require_auth=options.require_auth, limits=options.limits,
                             host=options.host, port=options.port, tls=_tls(options), raw_routes={"/asr": asr},
                             twilio_auth_token=settings.twilio_auth_token, public_url=settings.public_url,
                             services=services)
        await stack.enter_async_context(server)
        if options.audiosocket_port is not None:
            tcp = await serve_audiosocket(server, host=options.host, port=options.audiosocket_port,
                                          plan=options.route_plans.get("audiosocket", options.default_plan),
                                          max_calls=options.max_calls)
            stack.callback(tcp.close)
        watcher = asyncio.create_task(plans.watch(), name="plan-watcher")
        stack.callback(watcher.cancel)
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
            stack.callback(loop.remove_signal_handler, sig)
        reloads: set[asyncio.Task] = set()

        def reload() -> None:  # SIGHUP: reload now, and say so if it fails
            task = loop.create_task(plans.reload(), name="plan-reload")
            reloads.add(task)
            task.add_done_callback(_log_reload)
            task.add_done_callback(reloads.discard)

        loop.add_signal_handler(signal.SIGHUP, reload)
        stack.callback(loop.remove_signal_handler, signal.SIGHUP)
        # Everything loaded so far lives for the whole process: keep the garbage collector from rescanning it.
        gc.freeze()
        log.info("voicebot serving plans %s on %s:%d", ", ".join(plans.names), options.host, server.port)
        if ready is not None:
            ready(server)
        await stop.wait()
        log.info("stopping: draining live calls")
        await server.drain()
