"""Prometheus metrics for live calls: a registry of our own, a sink that feeds it, and a /metrics endpoint."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest

from .events import CallEnded, CallStarted, Error, Say, SpeechEnded, StopPlayback, Transcript, TurnCompleted
from .sinks import CallEvent

log = logging.getLogger(__name__)

# Around the ~1 s reply target callers tolerate; finer below it, where tuning happens.
LATENCY_BUCKETS = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
MAX_REQUEST_BYTES = 8192
REQUEST_TIMEOUT = 5.0


class Metrics:
    """The voicebot metrics, all in one explicit registry (never prometheus_client's global one)."""

    def __init__(self, *, namespace: str = "voicebot") -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        r, ns = self.registry, namespace
        self.calls_active = Gauge("calls_active", "Calls in progress", ["route"], namespace=ns, registry=r)
        self.calls_total = Counter("calls", "Calls finished, by outcome", ["route", "outcome"],
                                   namespace=ns, registry=r)
        self.asr_latency = Histogram("asr_latency_seconds", "End of caller speech to final transcript",
                                     namespace=ns, buckets=LATENCY_BUCKETS, registry=r)
        self.tts_latency = Histogram("tts_latency_seconds", "Time to render one prompt",
                                     namespace=ns, buckets=LATENCY_BUCKETS, registry=r)
        self.turn_latency = Histogram("turn_latency_seconds", "Caller's end of speech to the robot's reply",
                                      namespace=ns, buckets=LATENCY_BUCKETS, registry=r)
        self.errors_total = Counter("errors", "Errors reported, by code", ["code"], namespace=ns, registry=r)
        self.barge_ins_total = Counter("barge_ins", "Prompts interrupted by the caller", namespace=ns, registry=r)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)


class MetricsSink:
    """Updates the metrics from call events; `route` labels the calls (default: the call's plan name)."""

    def __init__(self, metrics: Metrics, route: str | None = None) -> None:
        self.metrics = metrics
        self.route = route
        # Per live call: its route and the time of its previous event (latencies are gaps between events).
        self._calls: dict[str, str] = {}
        self._last: dict[str, tuple[object, float]] = {}

    async def handle(self, item: CallEvent) -> None:
        """Account for one event."""
        m, ev, call_id = self.metrics, item.event, item.call_id
        previous = self._last.get(call_id)
        if call_id in self._calls:
            self._last[call_id] = (ev, item.mono)
        match ev:
            case CallStarted():
                if call_id not in self._calls:
                    self._calls[call_id] = self.route or ev.plan
                    self._last[call_id] = (ev, item.mono)
                    m.calls_active.labels(route=self._calls[call_id]).inc()
            case CallEnded():
                route = self._calls.pop(call_id, None)
                self._last.pop(call_id, None)
                if route is not None:
                    m.calls_active.labels(route=route).dec()
                m.calls_total.labels(route=route or self.route or _plan(ev), outcome=ev.outcome).inc()
            case TurnCompleted():
                latency = getattr(ev.turn, "reply_latency", None)
                if latency is not None:
                    m.turn_latency.observe(latency)
            case Transcript(final=True) if previous is not None and isinstance(previous[0], SpeechEnded):
                # The session asks the recogniser for its final result right after the VAD ends the utterance.
                m.asr_latency.observe(max(0.0, item.mono - previous[1]))
            case Say() if previous is not None:
                # A prompt is announced when rendered; the call's previous event came just before rendering began.
                m.tts_latency.observe(max(0.0, item.mono - previous[1]))
            case Error():
                m.errors_total.labels(code=ev.code).inc()
            case StopPlayback(reason="barge_in"):
                m.barge_ins_total.inc()


def _plan(ended: CallEnded) -> str:
    return getattr(ended.record, "plan", "") or "unknown"


class MetricsServer:
    """Serves GET /metrics over plain HTTP on its own port: `async with MetricsServer(metrics, ...) as srv:`."""

    def __init__(self, metrics: Metrics, *, host: str = "127.0.0.1", port: int = 9108) -> None:
        self.metrics = metrics
        self.host = host
        self.port = port
        self._server: asyncio.Server | None = None

    async def __aenter__(self) -> MetricsServer:
        self._server = await asyncio.start_server(self._serve, self.host, self.port,
                                                  limit=MAX_REQUEST_BYTES)
        self.port = self._server.sockets[0].getsockname()[1]  # the real one when asked for port 0
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(REQUEST_TIMEOUT):
                head = await reader.readuntil(b"\r\n\r\n")
                method, target, _ = head.split(b"\r\n", 1)[0].decode("latin-1").split(" ", 2)
                path = target.split("?", 1)[0]
                if method not in ("GET", "HEAD"):
                    status, ctype, body = "405 Method Not Allowed", "text/plain", b"method not allowed\n"
                elif path != "/metrics":
                    status, ctype, body = "404 Not Found", "text/plain", b"try /metrics\n"
                else:
                    status, ctype, body = "200 OK", CONTENT_TYPE_LATEST, self.metrics.exposition()
                header = (f"HTTP/1.1 {status}\r\nContent-Type: {ctype}\r\nContent-Length: {len(body)}\r\n"
                          "Connection: close\r\n\r\n").encode("latin-1")
                writer.write(header if method == "HEAD" else header + body)
                await writer.drain()
        except (TimeoutError, ValueError, ConnectionError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError) as err:
            log.debug("bad metrics request: %s", err)
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def serve_metrics(metrics: Metrics, *, host: str = "127.0.0.1", port: int = 9108) -> None:
    """Serve /metrics until cancelled, then close the port."""
    async with MetricsServer(metrics, host=host, port=port):
        await asyncio.Event().wait()

