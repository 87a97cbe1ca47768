"""MqttSink: publishes call events as JSON on MQTT topics, for dashboards and agent desktops."""

from __future__ import annotations

import asyncio
import json
import logging
import ssl
from collections.abc import Iterable
from typing import Any
from urllib.parse import unquote, urlsplit

import aiomqtt

from .errors import ConfigError
from .events import (
    CallEnded,
    CallStarted,
    Error,
    Hangup,
    Intent,
    NoInput,
    NoMatch,
    Say,
    StateEntered,
    StopPlayback,
    Transcript,
    Transfer,
    TurnCompleted,
)
from .record import mask_number
from .sinks import CallEvent

log = logging.getLogger(__name__)

QOS1_KINDS = frozenset({"ended", "transfer", "handoff"})  # must arrive: records and human handoffs
MAX_TRACKED_CALLS, Message = 10_000, tuple[str, bytes, int]  # a message is topic, payload, QoS


def _segment(value: str) -> str:
    """A string made safe as one topic level: no separators or wildcards."""
    return "".join("_" if c in "/+#\0" else c for c in value) or "_"


class MqttSink:
    """Publishes each call's events to `{prefix}/calls/{call_id}/{kind}`; use as `async with MqttSink(...)`."""

    def __init__(self, *, hostname: str, port: int = 1883, prefix: str = "voicebot", username: str | None = None,
                 password: str | None = None, tls_context: ssl.SSLContext | None = None, pii: Iterable[str] = (),
                 identifier: str | None = None, min_backoff: float = 0.5, max_backoff: float = 30.0,
                 publish_timeout: float = 10.0, attempts_while_connected: int = 3) -> None:
        if not prefix or any(c in prefix for c in "+#\0"):
            raise ConfigError(f"MQTT topic prefix {prefix!r} is empty or has wildcards")
        self.prefix = prefix.strip("/")
        self.pii = frozenset(pii)
        self._where = f"{hostname}:{port}"  # for logs; never the URL, which may hold a password
        self._client_args: dict[str, Any] = dict(
            hostname=hostname, port=port, username=username, password=password, tls_context=tls_context,
            identifier=identifier, timeout=publish_timeout)
        self._min_backoff, self._max_backoff, self._attempts = min_backoff, max_backoff, attempts_while_connected
        self._conn: tuple[aiomqtt.Client, asyncio.Event] | None = None
        self._ready = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._calls: dict[str, dict[str, Any]] = {}  # last intent and slots per live call, for handoffs
        self.connects = 0

    @classmethod
    def from_url(cls, url: str, **kwargs: Any) -> MqttSink:
        """Build from `mqtt://user:pass@host:port/prefix` (or `mqtts://` for TLS; default port 1883/8883)."""
        parts = urlsplit(url)
        if parts.scheme not in ("mqtt", "mqtts") or not parts.hostname or "?" in url or "#" in url:
            raise ConfigError("MQTT URL must look like mqtt://host:port/prefix or mqtts://...")
        try:
            port = parts.port or (8883 if parts.scheme == "mqtts" else 1883)
        except ValueError as err:
            raise ConfigError(f"MQTT URL has an invalid port: {err}") from err
        if parts.scheme == "mqtts" and kwargs.get("tls_context") is None:
            kwargs["tls_context"] = ssl.create_default_context()
        return cls(hostname=parts.hostname, port=port, prefix=unquote(parts.path).strip("/") or "voicebot",
                   username=unquote(parts.username) if parts.username else None,
                   password=unquote(parts.password) if parts.password else None, **kwargs)

    @property
    def connected(self) -> bool:
        """Whether the broker connection is up now."""
        return self._conn is not None

    async def __aenter__(self) -> MqttSink:
        self._task = asyncio.create_task(self._maintain(), name=f"mqtt-{self._where}")
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None

    async def _maintain(self) -> None:
        """Keep one connection up, reconnecting with exponential backoff when the broker goes away."""
        backoff = self._min_backoff
        while True:
            lost = asyncio.Event()
            try:
                async with aiomqtt.Client(**self._client_args) as client:
                    self._conn, backoff = (client, lost), self._min_backoff
                    self.connects += 1
                    self._ready.set()
                    log.info("MQTT connected to %s", self._where)
                    # Nothing is subscribed: the iterator only ends, with MqttError, when the connection drops.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as err:
                log.warning("MQTT broker %s unavailable (%s); retrying in %.1f s", self._where, err, backoff)
            finally:
                self._ready.clear()
                self._conn = None
                lost.set()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, self._max_backoff)

    async def _publish(self, topic: str, payload: bytes, qos: int) -> None:
        """Publish once the broker is reachable; a publish cut off by a disconnect is retried after reconnecting."""
        failures = 0
        while True:
            await self._ready.wait()
            assert self._conn is not None  # set and cleared together with _ready
            client, lost = self._conn
            pub = asyncio.ensure_future(client.publish(topic, payload, qos=qos))
            gone = asyncio.ensure_future(lost.wait())
            try:
                await asyncio.wait({pub, gone}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                gone.cancel()
                pub.cancel()  # no-op when it already finished
                outcome = (await asyncio.gather(pub, return_exceptions=True))[0]
            if outcome is None:
                return
            err = outcome if isinstance(outcome, Exception) else None
            if not lost.is_set():
                failures += 1
                if failures >= self._attempts:
                    raise aiomqtt.MqttError(f"publishing to {topic} failed {failures} times: {err}") from err
            await asyncio.sleep(self._min_backoff)

    async def handle(self, item: CallEvent) -> None:
        """Publish one event (nothing for events dashboards do not need: audio, VAD, partials, keys)."""
        for topic, payload, qos in self.messages(item):
            await self._publish(topic, payload, qos)

    # --- the wire format ------------------------------------------------------------------------

    def _mask(self, values: dict[str, Any] | None) -> dict[str, Any]:
        """A copy with the values of personal variables masked."""
        return {k: mask_number(str(v)) if k in self.pii and v not in (None, "") else v
                for k, v in (values or {}).items()}

    def _track(self, call_id: str) -> dict[str, Any]:
        if call_id not in self._calls and len(self._calls) >= MAX_TRACKED_CALLS:
            del self._calls[next(iter(self._calls))]  # a call whose end we never saw
        return self._calls.setdefault(call_id, {"intent": None, "slots": {}, "secrets": {}})

    def _remember(self, call_id: str, variables: dict[str, Any] | None) -> None:
        """Note a call's personal values: prompts and transcripts that quote them get masked too."""
        secrets = self._track(call_id)["secrets"]
        for k, v in (variables or {}).items():
            if k in self.pii and len(str(v)) >= 2:
                secrets[str(v)] = mask_number(str(v))

    def _scrub(self, value: Any, secrets: dict[str, str]) -> Any:
        if isinstance(value, str):
            for raw in sorted(secrets, key=len, reverse=True):
                value = value.replace(raw, secrets[raw])
            return value
        if isinstance(value, dict):
            return {k: self._scrub(v, secrets) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._scrub(v, secrets) for v in value]
        return value

    def _fields(self, item: CallEvent) -> tuple[str, dict[str, Any]] | None:
        ev = item.event
        match ev:
            case CallStarted():
                self._remember(item.call_id, ev.variables)
                return "started", {"plan": ev.plan, "language": ev.language, "variables": self._mask(ev.variables),
                                   "direction": ev.direction, "caller": ev.caller}
            case StateEntered():
                return "state", {"state": ev.state, "previous": ev.previous}
            case Transcript(final=True):
                return "transcript", {"text": ev.text, "confidence": ev.confidence, "language": ev.language}
            case Intent():
                tracked = self._track(item.call_id)
                tracked["intent"] = {"name": ev.name, "confidence": ev.confidence, "text": ev.text}
                tracked["slots"].update(ev.slots)
                return "intent", {"name": ev.name, "confidence": ev.confidence, "text": ev.text,
                                  "slots": self._mask(ev.slots), "source": ev.source}
            case NoMatch():
                return "nomatch", {"text": ev.text, "source": ev.source, "best": ev.best, "score": ev.score}
            case NoInput():
                return "noinput", {"waited": ev.waited}
            case Say():
                return "say", {"prompt_id": ev.prompt_id, "text": ev.text, "language": ev.language,
                               "barge_in": ev.barge_in}
            case StopPlayback():
                return "barge_in", {"reason": ev.reason}
            case Transfer():
                ctx = dict(ev.context)
                self._remember(item.call_id, ctx.get("variables"))
                tracked = self._track(item.call_id)
                ctx.pop("intent", None)  # the tracked intent carries its confidence and text too
                tracked["slots"] = {**tracked["slots"], **ctx.pop("slots", {})}
                return "transfer", {
                    "target": ev.target, "reason": ev.reason, "caller": ctx.pop("caller", ""),
                    "transcript": ctx.pop("transcript", []), "intent": tracked["intent"],
                    "slots": self._mask(tracked["slots"]), "plan": ctx.pop("plan", ""),
                    "state": ctx.pop("state", ""), "variables": self._mask(ctx.pop("variables", {})),
                    **self._mask(ctx)}
            case Hangup():
                return "hangup", {"reason": ev.reason}
            case TurnCompleted():
                turn = ev.turn.to_dict()
                turn["slots"] = self._mask(turn.get("slots"))
                return "turn", {"turn": turn}
            case CallEnded():
                record = ev.record.to_dict() if ev.record is not None else None
                if record is not None:
                    self._remember(item.call_id, record.get("variables"))
                    record["variables"] = self._mask(record.get("variables"))
                    for turn in record.get("turns", []):
                        turn["slots"] = self._mask(turn.get("slots"))
                return "ended", {"outcome": ev.outcome, "record": record}
            case Error():
                return "error", {"code": ev.code, "message": ev.message}
        return None

    def messages(self, item: CallEvent) -> list[Message]:
        """The MQTT messages one event becomes (a transfer also goes to `{prefix}/handoff/{target}`)."""
        found = self._fields(item)
        if found is None:
            return []
        kind, fields = found
        body = {"call_id": item.call_id, "ts": item.ts.isoformat(timespec="milliseconds"), "type": kind, **fields}
        tracked = self._calls.pop(item.call_id, None) if kind == "ended" else self._calls.get(item.call_id)
        if tracked and tracked["secrets"]:
            body = self._scrub(body, tracked["secrets"])
        payload = json.dumps(body, ensure_ascii=False, default=str).encode("utf-8")
        call = _segment(item.call_id)
        out = [(f"{self.prefix}/calls/{call}/{kind}", payload, 1 if kind in QOS1_KINDS else 0)]
        if kind == "transfer":
            out.append((f"{self.prefix}/handoff/{_segment(fields['target'])}", payload, 1))
        return out
