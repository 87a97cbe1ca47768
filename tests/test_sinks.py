"""EventHub fan-out, back-pressure and failure isolation; StoreSink against a real SQLite file."""

from __future__ import annotations

import asyncio
import logging

import pytest
from conftest import PLANS

from voicebot.asr import TranscriptReplayRecognizer
from voicebot.events import CallEnded, CallStarted, Intent, Say, SpeechStarted, StateEntered, Transcript, TurnCompleted
from voicebot.record import CallRecord, Turn
from voicebot.simulate import CallerStep, simulate
from voicebot.sinks import CallEvent, EventHub, StoreSink
from voicebot.store import CallStore

VARIABLES = {"customer_name": "王先生", "tracking_tail": "1234"}


class ListSink:
    """Collects what it is given; optionally waits at a gate before each event."""

    def __init__(self, gate: asyncio.Event | None = None) -> None:
        self.items: list[CallEvent] = []
        self.gate = gate

    async def handle(self, item: CallEvent) -> None:
        if self.gate is not None:
            await self.gate.wait()
        self.items.append(item)

    @property
    def events(self) -> list[object]:
        return [i.event for i in self.items]


class BrokenSink:
    """Fails on every event, as a sink with a dead backend would."""

    async def handle(self, item: CallEvent) -> None:
        raise RuntimeError(f"backend down for {item.call_id}")


def _record(call_id: str = "c1", outcome: str = "done") -> CallRecord:
    return CallRecord(call_id=call_id, plan="p", plan_version="1", language="zh-CN", outcome=outcome,
                      started_at="2024-05-01T10:00:00+00:00", turns=[Turn(index=0, state="s", heard="好")])


async def test_fans_out_in_order_with_call_ids() -> None:
    a, b = ListSink(), ListSink()
    async with EventHub([a, b]) as hub:
        emit = hub.emitter()  # learns the call id from CallStarted, like a CallSession's emit
        emit(CallStarted(call_id="c1", plan="p", language="zh-CN"))
        emit(Transcript(text="你好", final=True))
        hub.emitter("c2")(Say(prompt_id="x", parts=(), language="zh-CN"))
        emit(CallEnded(call_id="c1", outcome="done"))
    for sink in (a, b):
        assert [type(e).__name__ for e in sink.events] == ["CallStarted", "Transcript", "Say", "CallEnded"]
        assert [i.call_id for i in sink.items] == ["c1", "c1", "c2", "c1"]
        assert [i.mono for i in sink.items] == sorted(i.mono for i in sink.items)
    assert hub.stats["ListSink"].handled == 4 and hub.stats["ListSink#2"].handled == 4


async def test_slow_sink_drops_noise_first_and_never_essentials() -> None:
    gate = asyncio.Event()
    slow, fast = ListSink(gate), ListSink()
    async with EventHub([slow, fast], maxsize=5) as hub:
        emit = hub.emitter("c1")

        async def send(event: object) -> None:
            emit(event)
            await asyncio.sleep(0)  # let consumers run: the fast sink keeps up, the slow one is stuck

        await send(CallStarted(call_id="c1", plan="p", language="zh-CN"))
        await send(Intent(name="station", confidence=1.0))
        for i in range(20):
            await send(Transcript(text=f"partial {i}", final=False))
            await send(SpeechStarted(at=float(i)))
        await send(TurnCompleted(call_id="c1", turn=Turn(index=0, state="s")))
        await send(StateEntered(call_id="c1", state="next"))
        await send(CallEnded(call_id="c1", outcome="done", record=_record()))
        gate.set()
    kinds = [type(e).__name__ for e in slow.events]
    # The intent outlived 40 noise events, only the newest noise survived, every essential event arrived.
    assert kinds == ["CallStarted", "Intent", "SpeechStarted", "TurnCompleted", "StateEntered", "CallEnded"]
    assert slow.events[2] == SpeechStarted(at=19.0)
    stats = hub.stats["ListSink"]
    assert stats.dropped == 45 - len(slow.events)  # 45 emitted
    assert stats.lost_essential == 0
    assert len(fast.events) == 45 and hub.stats["ListSink#2"].dropped == 0


async def test_essential_overflow_is_bounded() -> None:
    gate = asyncio.Event()
    stuck = ListSink(gate)
    async with EventHub([stuck], maxsize=3, drain_timeout=0.2) as hub:
        for i in range(10):
            hub.emit(CallEnded(call_id=f"c{i}", outcome="done"))
        await asyncio.sleep(0)
        assert len(hub._runners[0].queue) <= 6  # twice the soft limit, not unbounded
    assert hub.stats["ListSink"].lost_essential == 4
    assert stuck.events == []


async def test_failing_sink_is_logged_and_others_keep_going(caplog: pytest.LogCaptureFixture) -> None:
    good = ListSink()
    with caplog.at_level(logging.ERROR, logger="voicebot.sinks"):
        async with EventHub([BrokenSink(), good]) as hub:
            for i in range(3):
                hub.emit(CallStarted(call_id=f"c{i}", plan="p", language="zh-CN"))
    assert len(good.events) == 3
    assert hub.stats["BrokenSink"].failed == 3
    assert "backend down for c2" in caplog.text


async def test_exit_waits_for_drain_but_not_forever() -> None:
    gate = asyncio.Event()
    slow = ListSink(gate)
    hub = EventHub([slow], drain_timeout=0.2)
    async with hub:
        for i in range(3):
            hub.emit(CallEnded(call_id=f"c{i}", outcome="done"))
    # Nothing could be handled before the deadline; the hub still closed and says what it abandoned.
    assert slow.events == []
    assert hub.stats["ListSink"].abandoned == 2  # the third was in the sink's hands when cancelled


async def test_emit_on_closed_hub_is_counted_not_raised() -> None:
    sink = ListSink()
    hub = EventHub([sink])
    hub.emit(CallStarted(call_id="c1", plan="p", language="zh-CN"))
    assert hub.stats["ListSink"].dropped == 1 and sink.events == []
    with pytest.raises(ValueError, match="maxsize"):
        EventHub([sink], maxsize=0)


async def test_store_sink_saves_simulated_calls(tmp_path, settings) -> None:
    db = tmp_path / "calls.sqlite"
    async with CallStore(db) as store, EventHub([StoreSink(store)]) as hub:
        answered = await simulate(plan=PLANS / "pre_delivery.yaml", steps=[CallerStep("say", "放驿站")],
                                  variables=VARIABLES, settings=settings, emit=hub.emitter(),
                                  recognizer=TranscriptReplayRecognizer([]))
        dropped = await simulate(plan=PLANS / "pre_delivery.yaml", steps=[], variables=VARIABLES,
                                 settings=settings, emit=hub.emitter(),
                                 recognizer=TranscriptReplayRecognizer([]))
    # A fresh connection to the same file sees both calls: the sink wrote them for real.
    async with CallStore(db) as store:
        saved = await store.get(answered.call_id)
        assert saved is not None and saved.outcome == "station_consent"
        assert saved.turns[0].heard == "放驿站" and saved.turns[0].intent == "station"
        lost = await store.get(dropped.call_id)
        assert lost is not None and lost.outcome == "dropped"
        assert await store.outcome_counts() == {"station_consent": 1, "dropped": 1}


async def test_store_sink_failure_does_not_stop_the_hub(tmp_path) -> None:
    store = CallStore(tmp_path / "calls.sqlite")  # never opened: every save fails with StoreError
    other = ListSink()
    async with EventHub([StoreSink(store), other]) as hub:
        hub.emit(CallEnded(call_id="c1", outcome="done", record=_record()))
        hub.emit(CallEnded(call_id="c2", outcome="done", record=_record("c2")))
    assert hub.stats["StoreSink"].failed == 2
    assert [e.call_id for e in other.events] == ["c1", "c2"]
