"""EventHub: fans each call's events out to slow subscribers (MQTT, store, metrics) without blocking calls."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from .events import (
    CallEnded,
    CallStarted,
    Error,
    Hangup,
    SpeechEnded,
    SpeechStarted,
    Transcript,
    Transfer,
    TurnCompleted,
)
from .store import CallStore

log = logging.getLogger(__name__)

DEFAULT_MAXSIZE = 10_000
# Events a subscriber must see even when it falls behind: losing one corrupts records, counters or handoffs.
ESSENTIAL = (CallStarted, CallEnded, TurnCompleted, Transfer, Hangup, Error)


@dataclass(frozen=True, slots=True)
class CallEvent:
    """One event of one call, stamped when it was emitted (wall clock `ts`, monotonic `mono`)."""

    call_id: str
    event: object
    ts: datetime
    mono: float


class Sink(Protocol):
    """A subscriber of the hub: handles one stamped event at a time, in emission order."""

    async def handle(self, item: CallEvent) -> None:
        """Deal with one event; exceptions are logged by the hub and never reach the call."""


def is_noise(event: object) -> bool:
    """Partial hypotheses and VAD events: the first to go when a subscriber falls behind."""
    return isinstance(event, SpeechStarted | SpeechEnded) or (isinstance(event, Transcript) and not event.final)


@dataclass
class SinkStats:
    """What happened to one subscriber's events."""

    handled: int = 0
    failed: int = 0
    dropped: int = 0  # non-essential events dropped because the subscriber fell behind
    lost_essential: int = 0  # essential events dropped at the hard limit (the subscriber is stuck)
    abandoned: int = 0  # left in the queue when the drain deadline passed


class _Runner:
    """One subscriber's bounded queue and the task that feeds it."""

    def __init__(self, sink: Sink, maxsize: int) -> None:
        self.sink = sink
        self.maxsize = maxsize
        # Essential events may overflow the soft limit up to here; beyond it the subscriber is stuck.
        self.hard_limit = maxsize * 2
        self.queue: deque[CallEvent] = deque()
        self.wakeup = asyncio.Event()
        self.idle = asyncio.Event()
        self.idle.set()
        self.stats = SinkStats()
        self.task: asyncio.Task[None] | None = None

    def put(self, item: CallEvent) -> None:
        q = self.queue
        if len(q) >= self.maxsize and not self._make_room(item.event):
            if not isinstance(item.event, ESSENTIAL):
                self.stats.dropped += 1
                return
            if len(q) >= self.hard_limit:
                q.popleft()
                self.stats.lost_essential += 1
                log.error("event sink %s is stuck: an essential event was lost", type(self.sink).__name__)
        q.append(item)
        self.idle.clear()
        self.wakeup.set()

    def _make_room(self, incoming: object) -> bool:
        """Drop the oldest noise event, else the oldest non-essential one; False if nothing may go."""
        first_plain = None
        for i, queued in enumerate(self.queue):
            if is_noise(queued.event):
                victim = i
                break
            if first_plain is None and not isinstance(queued.event, ESSENTIAL):
                first_plain = i
        else:
            if first_plain is None or is_noise(incoming):
                return False  # nothing may go, or the incoming noise is the least valuable event
            victim = first_plain
        del self.queue[victim]
        self.stats.dropped += 1
        return True

    async def run(self) -> None:
        name = type(self.sink).__name__
        while True:
            while not self.queue:
                self.idle.set()
                self.wakeup.clear()
                await self.wakeup.wait()
            item = self.queue.popleft()
            try:
                await self.sink.handle(item)
                self.stats.handled += 1
            except Exception:
                # A broken subscriber must never take calls down with it.
                self.stats.failed += 1
                log.exception("event sink %s failed on %s of call %s", name, type(item.event).__name__, item.call_id)


class EventHub:
    """Fans events out to sinks, each with its own bounded queue and task: `async with EventHub(sinks) as hub:`."""

    def __init__(self, sinks: Iterable[Sink], *, maxsize: int = DEFAULT_MAXSIZE, drain_timeout: float = 5.0) -> None:
        if maxsize < 1:
            raise ValueError(f"maxsize must be at least 1, got {maxsize}")
        self._runners = [_Runner(sink, maxsize) for sink in sinks]
        self._drain_timeout = drain_timeout
        self._open = False

    async def __aenter__(self) -> EventHub:
        for runner in self._runners:
            runner.task = asyncio.create_task(runner.run(), name=f"sink-{type(runner.sink).__name__}")
        self._open = True
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._open = False
        try:
            await asyncio.wait_for(self.drain(), self._drain_timeout)
        except TimeoutError:
            log.warning("event sinks not drained within %.1f s; dropping the rest", self._drain_timeout)
        finally:
            for runner in self._runners:
                if runner.task is not None:
                    runner.task.cancel()
            for runner in self._runners:
                if runner.task is not None:
                    await asyncio.gather(runner.task, return_exceptions=True)
                    runner.task = None
                runner.stats.abandoned += len(runner.queue)
                runner.queue.clear()

    async def drain(self) -> None:
        """Wait until every sink has handled everything emitted so far."""
        for runner in self._runners:
            await runner.idle.wait()

    def emit(self, event: object, *, call_id: str = "") -> None:
        """Queue one event for every sink; never blocks. `call_id` defaults to the event's own."""
        call_id = call_id or getattr(event, "call_id", "")
        item = CallEvent(call_id=call_id, event=event, ts=datetime.now(UTC), mono=time.monotonic())
        if not self._open:
            for runner in self._runners:
                runner.stats.dropped += 1
            log.warning("event %s of call %s emitted while the hub is closed", type(event).__name__, call_id)
            return
        for runner in self._runners:
            runner.put(item)

    def emitter(self, call_id: str | None = None) -> Callable[[object], None]:
        """An `emit` for one CallSession; without `call_id` it takes the id of the first event that has one."""
        bound = [call_id or ""]

        def emit(event: object) -> None:
            if not bound[0]:
                bound[0] = getattr(event, "call_id", "")
            self.emit(event, call_id=bound[0])

        return emit

    @property
    def stats(self) -> dict[str, SinkStats]:
        """Per-sink counters, keyed by sink class name (numbered when a class appears twice)."""
        out: dict[str, SinkStats] = {}
        for runner in self._runners:
            name = type(runner.sink).__name__
            key, n = name, 1
            while key in out:
                n += 1
                key = f"{name}#{n}"
            out[key] = runner.stats
        return out


class StoreSink:
    """Saves each call's record to the call store when the call ends (dropped and failed calls too)."""

    def __init__(self, store: CallStore) -> None:
        self.store = store

    async def handle(self, item: CallEvent) -> None:
        """Persist the record carried by CallEnded."""
        event = item.event
        if isinstance(event, CallEnded) and event.record is not None:
            await self.store.save(event.record)
