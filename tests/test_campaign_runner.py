"""The campaign runner against real SQLite and the simulator gateway (real TTS, VAD, intents, dialog engine).

The campaign clock is injected (epoch seconds), so calling windows and caps are tested at chosen instants;
pacing, concurrency, pause and stop are measured in real time through a recording dialer.
"""

from __future__ import annotations

import asyncio
import inspect
import io
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable
from datetime import datetime
from pathlib import Path

import pytest
from conftest import PLANS, fixture_path
from rich.console import Console

from voicebot.campaign import rules
from voicebot.campaign.contacts import load_contacts
from voicebot.campaign.db import CampaignDB
from voicebot.campaign.dialer import DialResult, OutboundCall
from voicebot.campaign.progress import ProgressView
from voicebot.campaign.runner import (
    AttemptEnded,
    AttemptStarted,
    CampaignRunner,
    CampaignStarted,
    CampaignStopped,
    CampaignWaiting,
    ContactSkipped,
    RunOptions,
)
from voicebot.campaign.simulator import Persona, SimulatedGateway, load_personas, parse_mix
from voicebot.config import Settings
from voicebot.dialog.load import load_plan
from voicebot.errors import ConfigError, VoicebotError
from voicebot.events import Intent
from voicebot.hours import WeeklyHours, zone
from voicebot.simulate import CallerStep
from voicebot.store import CallStore

LOADED = load_plan(PLANS / "pre_delivery.yaml")
ALL_DAY = WeeklyHours.parse("00:00-24:00")


def epoch(text: str, tz: str = "UTC") -> float:
    return datetime.fromisoformat(text).replace(tzinfo=zone(tz)).timestamp()


# Monday 10:00 in Shanghai and 11:00 in Tokyo is Sunday 21:00 in New York.
INSTANT = epoch("2026-11-23 02:00")
NEW_YORK_OPENS = epoch("2026-11-23 09:00", "America/New_York")


class Clock:
    """The campaign's clock, moved by the test."""

    def __init__(self, now: float = INSTANT) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class RecordingDialer:
    """A real dialer in front of another: notes when each dial starts and ends, and how many are in flight."""

    def __init__(self, inner: SimulatedGateway, *, crash_on: set[str] = frozenset(), fail_on: set[str] = frozenset()):
        self.inner, self.crash_on, self.fail_on = inner, crash_on, fail_on
        self.name = f"recording {inner.name}"
        self.starts: list[float] = []
        self.spans: list[tuple[str, float, float]] = []
        self.in_flight = self.max_in_flight = 0

    async def __aenter__(self) -> RecordingDialer:
        await self.inner.__aenter__()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.inner.__aexit__(*exc)

    async def dial(self, call: OutboundCall, *, emit: Callable[[object], None]) -> DialResult:
        loop = asyncio.get_running_loop()
        start = loop.time()
        self.starts.append(start)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if call.contact_id in self.crash_on:
                raise RuntimeError("gateway adapter bug")
            if call.contact_id in self.fail_on:
                raise VoicebotError("gateway refused the originate request", code="gateway")
            return await self.inner.dial(call, emit=emit)
        finally:
            self.in_flight -= 1
            self.spans.append((call.contact_id, start, loop.time()))


@pytest.fixture(scope="module")
def sim_settings(tmp_path_factory) -> Settings:
    """One prompt cache for the module: every gateway renders the plan's prompts, once."""
    home = tmp_path_factory.mktemp("sim")
    return Settings.from_env({"HOME": str(home)}, cache_dir=home / "cache", data_dir=home / "data")


def gateway(settings: Settings, **kwargs) -> SimulatedGateway:
    return SimulatedGateway(plan=LOADED, settings=settings, **kwargs)


def options(**kwargs) -> RunOptions:
    """Fast defaults: open all day, no pacing to speak of, retries at once, quick polling."""
    calling = rules.CallingPolicy(windows=kwargs.pop("windows", ALL_DAY),
                                  max_per_number=kwargs.pop("max_per_number", 100),
                                  per_seconds=kwargs.pop("per_seconds", 86400.0))
    retry = rules.RetryPolicy(max_attempts=kwargs.pop("max_attempts", 3), delay=kwargs.pop("delay", 0.0))
    base = {"concurrency": 10, "calls_per_second": 1000.0, "poll_interval": 0.05}
    return RunOptions(retry=retry, calling=calling, **{**base, **kwargs})


def contacts_file(tmp_path: Path, phones: list[str], *, name: str = "contacts", timezones: list[str] | None = None,
                  ids: list[str] | None = None) -> Path:
    path = tmp_path / f"{name}.csv"
    rows = ["id,phone,customer_name,tracking_tail,timezone"]
    for i, phone in enumerate(phones):
        tz = timezones[i] if timezones else ""
        rows.append(f"{ids[i] if ids else f'c{i:02d}'},{phone},王先生,{1000 + i},{tz}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")
    return path


def numbers(count: int, start: int = 0) -> list[str]:
    return [f"1381234{n:04d}" for n in range(start, start + count)]


async def create(db: CampaignDB, name: str, path: Path) -> None:
    contacts = load_contacts(path, plan=LOADED.plan)
    await db.create(name=name, plan=LOADED.plan.plan, plan_path=str(PLANS / "pre_delivery.yaml"),
                    contacts_path=str(path), digest=name, options={}, contacts=contacts)


async def wait_for(check: Callable[[], Awaitable[bool] | bool], *, limit: float = 10.0) -> None:
    """Poll `check` (plain or async) until it holds; fail after `limit` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    while not (await done if inspect.isawaitable(done := check()) else done):
        assert loop.time() < deadline, "timed out waiting for the campaign"
        await asyncio.sleep(0.01)


def by_contact(attempts: list[tuple]) -> dict[str, list[tuple]]:
    out: dict[str, list[tuple]] = defaultdict(list)
    for attempt in attempts:
        out[attempt[0]].append(attempt)
    return out


async def run_campaign(db: CampaignDB, name: str, dialer, opts: RunOptions, *, clock: Clock | None = None,
                       events: list | None = None, **kwargs) -> str:
    runner = CampaignRunner(db=db, name=name, dialer=dialer, options=opts, clock=clock or Clock(),
                            emit=(events.append if events is not None else lambda e: None), **kwargs)
    return await runner.run()


# --- every contact finishes, retries only after retryable outcomes ---------------------------------------


async def test_every_contact_finishes_and_only_retryable_outcomes_are_retried(tmp_path, sim_settings):
    events: list = []
    call_events: list = []
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(20)))
        store = CallStore(tmp_path / "calls.db")
        await store.open()
        try:
            async with gateway(sim_settings, seed=3) as sim:
                status = await run_campaign(db, "c", sim, options(max_attempts=3), events=events,
                                            call_emit=call_events.append, store=store)
            saved = await store.outcome_counts()
        finally:
            await store.aclose()
        assert status == "done" and (await db.require("c")).status == "done"
        results = {r.contact_id: r for r in await db.results("c")}
        attempts = await db.attempts("c")
    assert len(results) == 20 and all(r.state == "done" for r in results.values())
    per_contact = by_contact(attempts)
    retried = 0
    for contact_id, tries in per_contact.items():
        result = results[contact_id]
        assert [t[1] for t in tries] == list(range(1, len(tries) + 1))  # attempt numbers 1, 2, ...
        assert len(tries) == result.attempts <= 3
        assert all(t[3] is not None and t[3] >= t[2] for t in tries)  # every attempt ended
        # Each attempt before the last was retryable; the last is the contact's outcome.
        assert all(t[4] in rules.RETRYABLE_DEFAULT for t in tries[:-1]), tries
        assert tries[-1][4] == result.outcome
        if result.outcome in rules.RETRYABLE_DEFAULT:
            assert len(tries) == 3  # a retryable outcome only ends the contact on its last attempt
        retried += len(tries) > 1
    assert set(per_contact) == set(results)
    assert retried >= 2, "the seed should give some busy or unanswered first attempts"
    outcomes = Counter(r.outcome for r in results.values())
    assert len(outcomes) >= 4  # the default mix: several plan outcomes and network ones
    # The watchers saw the same story as the database.
    assert isinstance(events[0], CampaignStarted) and events[0].total == 20 and events[0].done == 0
    assert events[-1] == CampaignStopped(status="done")
    assert sum(isinstance(e, AttemptStarted) for e in events) == len(attempts)
    ended = [e for e in events if isinstance(e, AttemptEnded)]
    assert len(ended) == len(attempts) and sum(e.final for e in ended) == 20
    assert all("****" in e.phone_masked for e in events if isinstance(e, AttemptStarted))
    # Answered calls ran the plan: their records reached the call store and the call events the watcher.
    answered = sum(1 for t in attempts if t[4] not in rules.UNANSWERED | {rules.VOICEMAIL})
    assert sum(saved.values()) == answered > 0
    assert any(isinstance(e, Intent) for e in call_events)
    with_result = [r for r in results.values() if r.outcome == "station_consent"]
    for r in with_result:
        assert r.result["variables"]["consent"] == "station" and r.result["variables"]["consent_at"]


async def test_the_same_seed_gives_the_same_campaign(tmp_path, sim_settings):
    phones = numbers(8, start=100)

    async def outcomes(seed: int, db_name: str) -> list[tuple]:
        async with CampaignDB(tmp_path / db_name) as db:
            await create(db, "c", contacts_file(tmp_path, phones))
            async with gateway(sim_settings, seed=seed) as sim:
                assert await run_campaign(db, "c", sim, options(concurrency=4)) == "done"
            attempts = sorted((a[0], a[1], a[4]) for a in await db.attempts("c"))
            return attempts + [(r.contact_id, r.outcome) for r in await db.results("c")]

    first = await outcomes(7, "a.db")
    assert await outcomes(7, "b.db") == first
    assert await outcomes(8, "c.db") != first


async def test_mix_weights_apply_busy_only_means_every_attempt_busy(tmp_path, sim_settings):
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(10)))
        async with gateway(sim_settings, mix={"busy": 1}) as sim:
            assert await run_campaign(db, "c", sim, options(max_attempts=2)) == "done"
        attempts = await db.attempts("c")
        results = await db.results("c")
    assert len(attempts) == 20 and {a[4] for a in attempts} == {"busy"}
    assert all(a[5] == 0 for a in attempts)  # nobody talked
    assert all((r.state, r.outcome, r.attempts) == ("done", "busy", 2) for r in results)
    assert all(r.result["ring_seconds"] >= 1 for r in results)


async def test_final_outcomes_are_not_retried_even_with_attempts_left(tmp_path, sim_settings):
    personas = [Persona(name="wrong", weight=1, steps=(CallerStep("say", "打错了"),))]
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(4)))
        async with gateway(sim_settings, mix={"answer": 1}, personas=personas) as sim:
            assert await run_campaign(db, "c", sim, options(max_attempts=5)) == "done"
        attempts = await db.attempts("c")
    assert [(a[1], a[4]) for a in attempts] == [(1, "wrong_number")] * 4


# --- do not call -----------------------------------------------------------------------------------


async def test_numbers_on_the_dnc_list_are_never_dialled_however_written(tmp_path, sim_settings):
    events: list = []
    phones = numbers(6)
    # On the list with and without the country code; the contacts file writes them the other way round.
    phones[1], phones[4] = "+86 138 1234 0001", "13812340004"
    async with CampaignDB(tmp_path / "c.db") as db:
        assert await db.add_dnc(["13812340001", "+8613812340004"], source="file dnc.txt") == 2
        await create(db, "c", contacts_file(tmp_path, phones))
        async with gateway(sim_settings, mix={"no_answer": 1}) as sim:
            assert await run_campaign(db, "c", sim, options(max_attempts=1), events=events) == "done"
        results = {r.contact_id: r for r in await db.results("c")}
        dialled = {a[0] for a in await db.attempts("c")}
    assert dialled == {"c00", "c02", "c03", "c05"}
    for skipped in ("c01", "c04"):
        assert (results[skipped].state, results[skipped].outcome, results[skipped].attempts) == (
            "done", "dnc_skipped", 0)
    assert {e.contact_id for e in events if isinstance(e, ContactSkipped)} == {"c01", "c04"}
    assert all(e.reason == "dnc_skipped" and e.until is None for e in events if isinstance(e, ContactSkipped))


async def test_a_callee_who_says_stop_calling_goes_on_the_list_during_the_call(tmp_path, sim_settings):
    script = tmp_path / "callees.yaml"
    script.write_text("callees:\n  - name: stop calling\n    steps:\n      - say: 不要再打了\n", encoding="utf-8")
    personas = load_personas(script)
    assert personas == [Persona(name="stop calling", weight=1.0, steps=(CallerStep("say", "不要再打了"),))]
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "first", contacts_file(tmp_path, numbers(3), name="first"))
        async with gateway(sim_settings, mix={"answer": 1}, personas=personas) as sim:
            assert await run_campaign(db, "first", sim, options(max_attempts=3)) == "done"
        results = await db.results("first")
        attempts = await db.attempts("first")
        assert [(r.outcome, r.attempts) for r in results] == [("do_not_call", 1)] * 3
        assert all(r.result["variables"]["do_not_call"] == "yes" for r in results)
        entries = await db.dnc_entries()
        assert sorted(masked for masked, _, _ in entries) == ["138****0000", "138****0001", "138****0002"]
        # Added while the call was live (from the intent), named by the call that heard it.
        assert all(source.startswith("asked on call first-") for _, source, _ in entries)
        assert len(attempts) == 3

        # A later campaign in the same database skips that number, written with the country code this time.
        await create(db, "second", contacts_file(tmp_path, ["+86 138-1234-0001", "13812349999"], name="second"))
        async with gateway(sim_settings, mix={"busy": 1}) as sim:
            assert await run_campaign(db, "second", sim, options(max_attempts=1)) == "done"
        second = {r.contact_id: r for r in await db.results("second")}
        assert (second["c00"].outcome, second["c00"].attempts) == ("dnc_skipped", 0)
        assert (second["c01"].outcome, second["c01"].attempts) == ("busy", 1)


# --- calling windows and frequency caps ---------------------------------------------------------------


async def test_calling_window_in_each_callees_time_zone(tmp_path, sim_settings):
    clock = Clock(INSTANT)
    events: list = []
    zones = ["Asia/Shanghai", "America/New_York", "Asia/Tokyo", "America/New_York", ""]  # "" → Asia/Shanghai
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(5), timezones=zones))
        async with gateway(sim_settings, mix={"no_answer": 1}) as sim:
            runner = CampaignRunner(db=db, name="c", dialer=sim, clock=clock, emit=events.append,
                                    options=options(windows=WeeklyHours.parse("09:00-21:00"), max_attempts=1))
            task = asyncio.create_task(runner.run())

            async def inside_ones_done() -> bool:
                return sum(r.state == "done" for r in await db.results("c")) == 3

            await wait_for(inside_ones_done)
            await asyncio.sleep(0.2)  # several polls: New York stays untouched while its night lasts
            results = {r.contact_id: r for r in await db.results("c")}
            assert {a[0] for a in await db.attempts("c")} == {"c00", "c02", "c04"}
            for ny in ("c01", "c03"):
                assert (results[ny].state, results[ny].attempts) == ("pending", 0)
                assert results[ny].next_at == NEW_YORK_OPENS  # postponed to 09:00 in New York
            skipped = [e for e in events if isinstance(e, ContactSkipped)]
            assert {e.contact_id for e in skipped} == {"c01", "c03"}
            assert {(e.reason, e.until) for e in skipped} == {("outside calling window", NEW_YORK_OPENS)}
            assert any(isinstance(e, CampaignWaiting) and e.until == NEW_YORK_OPENS for e in events)
            assert not task.done()

            clock.now = NEW_YORK_OPENS  # morning in New York
            assert await asyncio.wait_for(task, 10) == "done"
        attempts = await db.attempts("c")
    starts = {a[0]: a[2] for a in attempts}
    assert starts == {"c00": INSTANT, "c02": INSTANT, "c04": INSTANT, "c01": NEW_YORK_OPENS, "c03": NEW_YORK_OPENS}


async def test_frequency_cap_counts_attempts_from_every_campaign(tmp_path, sim_settings):
    clock = Clock(INSTANT)
    opts = options(max_per_number=2, per_seconds=86400.0, max_attempts=2)
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "a", contacts_file(tmp_path, ["13812340001"], name="a"))
        await create(db, "b", contacts_file(tmp_path, ["+8613812340001", "13812340002"], name="b"))
        async with gateway(sim_settings, mix={"busy": 1}) as sim:
            assert await run_campaign(db, "a", sim, opts, clock=clock) == "done"
            assert [a[4] for a in await db.attempts("a")] == ["busy", "busy"]

            clock.now = INSTANT + 3600  # an hour later the other campaign reaches the same number
            runner = CampaignRunner(db=db, name="b", dialer=sim, options=opts, clock=clock)
            task = asyncio.create_task(runner.run())

            async def other_number_done() -> bool:
                return any(r.contact_id == "c01" and r.state == "done" for r in await db.results("b"))

            await wait_for(other_number_done)
            capped = next(r for r in await db.results("b") if r.contact_id == "c00")
            assert (capped.state, capped.attempts) == ("pending", 0)
            assert capped.next_at == INSTANT + 86400  # when the first of the two attempts leaves the day
            assert {a[0] for a in await db.attempts("b")} == {"c01"}

            clock.now = INSTANT + 86400
            assert await asyncio.wait_for(task, 10) == "done"
        capped_attempts = [a for a in await db.attempts("b") if a[0] == "c00"]
    assert [a[2] for a in capped_attempts] == [INSTANT + 86400, INSTANT + 86400]  # the cap allows two again


# --- pacing, concurrency, pause, cancel, stop ----------------------------------------------------------------


async def test_concurrency_cap_holds(tmp_path, sim_settings):
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(12)))
        # Busy after 1-3 simulated seconds of ringing, at a tenth of real time: calls overlap.
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}, time_scale=0.1))
        async with dialer:
            assert await run_campaign(db, "c", dialer, options(concurrency=3, max_attempts=1)) == "done"
    assert len(dialer.starts) == 12
    assert dialer.max_in_flight == 3  # reached, never passed
    # Counted from the recorded spans too, not only from the counter.
    moments = sorted([(s, 1) for _, s, _ in dialer.spans] + [(e, -1) for _, _, e in dialer.spans],
                     key=lambda m: (m[0], m[1]))
    live = peak = 0
    for _, step in moments:
        live += step
        peak = max(peak, live)
    assert peak <= 3


async def test_calls_per_second_spaces_the_dials(tmp_path, sim_settings):
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(6)))
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}))
        async with dialer:
            opts = options(concurrency=10, calls_per_second=8.0, max_attempts=1)
            assert await run_campaign(db, "c", dialer, opts) == "done"
    gaps = [b - a for a, b in zip(dialer.starts, dialer.starts[1:], strict=False)]
    # Each dial has its slot 1/8 s after the last one's; a task may start a little late in its slot.
    assert len(gaps) == 5 and min(gaps) >= 1 / 8 - 0.03, gaps
    assert 5 / 8 - 0.03 <= dialer.starts[-1] - dialer.starts[0] < 5 / 8 + 0.5  # paced, not stalled


async def test_pause_then_resume_from_another_connection(tmp_path, sim_settings):
    events: list = []
    path = tmp_path / "c.db"
    async with CampaignDB(path) as db:
        await create(db, "c", contacts_file(tmp_path, numbers(10)))
        # Long calls (busy after 1-3 s, at half speed) and a slow dial rate: a batch takes a while to dial.
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}, time_scale=0.5))
        async with dialer:
            opts = options(concurrency=6, calls_per_second=5.0, max_attempts=1, poll_interval=0.1)
            runner = CampaignRunner(db=db, name="c", dialer=dialer, options=opts, clock=Clock(), emit=events.append)
            task = asyncio.create_task(runner.run())
            loop = asyncio.get_running_loop()
            await wait_for(lambda: len(dialer.starts) >= 2)
            async with CampaignDB(path) as other:  # as `voicebot campaign pause` would, from another process
                await other.set_status("c", "paused")
                paused_at = loop.time()
                await wait_for(lambda: dialer.in_flight == 0)  # the calls already placed finish...
                await asyncio.sleep(0.8)  # ...and for many polls after, nobody new is rung
                # (A dial that read "running" just before the pause may still start a moment after it.)
                started_while_paused = [s for s in dialer.starts if s > paused_at + 0.25]
                assert started_while_paused == []
                assert len(dialer.starts) < 10
                assert all(r.state in ("pending", "done") for r in await other.results("c"))
                assert any(isinstance(e, CampaignWaiting) and e.reason == "paused" for e in events)
                assert not task.done()
                await other.set_status("c", "running")
                resumed_at = loop.time()
            assert await asyncio.wait_for(task, 15) == "done"
        results = await db.results("c")
    assert all((r.state, r.attempts) == ("done", 1) for r in results)
    assert len(dialer.starts) == 10
    assert min(s for s in dialer.starts if s > paused_at) >= resumed_at


async def test_cancel_from_another_connection_drains_and_cancels_the_rest(tmp_path, sim_settings):
    path = tmp_path / "c.db"
    async with CampaignDB(path) as db:
        await create(db, "c", contacts_file(tmp_path, numbers(12)))
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}, time_scale=0.2))
        async with dialer:
            opts = options(concurrency=3, calls_per_second=20.0, max_attempts=3, poll_interval=0.05)
            runner = CampaignRunner(db=db, name="c", dialer=dialer, options=opts, clock=Clock())
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: len(dialer.starts) >= 3)
            async with CampaignDB(path) as other:
                await other.set_status("c", "cancelled")
            assert await asyncio.wait_for(task, 10) == "cancelled"
        results = await db.results("c")
        attempts = await db.attempts("c")
        assert (await db.require("c")).status == "cancelled"
    assert all(r.state == "done" for r in results)
    assert all(a[3] is not None and a[4] == "busy" for a in attempts)  # the live calls were stored
    outcomes = Counter(r.outcome for r in results)
    assert outcomes["cancelled"] >= 6 and set(outcomes) <= {"cancelled"}  # busy ones had retries left
    assert {r.contact_id for r in results if r.attempts == 0} <= {r.contact_id for r in results
                                                                 if r.outcome == "cancelled"}
    assert len(dialer.starts) == len(attempts) < 12


async def test_stop_drains_live_calls_and_a_new_run_finishes_the_rest(tmp_path, sim_settings):
    events: list = []
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(10)))
        dialer = RecordingDialer(gateway(sim_settings, mix={"no_answer": 1}, time_scale=0.02))  # 0.6 s each
        async with dialer:
            opts = options(concurrency=3, calls_per_second=50.0, max_attempts=1)
            runner = CampaignRunner(db=db, name="c", dialer=dialer, options=opts, clock=Clock(), emit=events.append)
            task = asyncio.create_task(runner.run())
            await wait_for(lambda: dialer.in_flight >= 3)
            runner.stop()
            assert await asyncio.wait_for(task, 10) == "stopped"
            assert events[-1] == CampaignStopped(status="stopped")
            first = await db.results("c")
            first_attempts = await db.attempts("c")
            assert (await db.require("c")).status == "running"  # stopped, not finished: run it again
            assert len(first_attempts) == 3 and all(a[3] is not None and a[4] == "no_answer" for a in first_attempts)
            assert Counter(r.state for r in first) == {"done": 3, "pending": 7}

            again = await run_campaign(db, "c", dialer, opts)
        results = await db.results("c")
    assert again == "done"
    assert all((r.state, r.attempts, r.outcome) == ("done", 1, "no_answer") for r in results)
    assert len(dialer.starts) == 10  # nobody rung twice


async def test_a_crashing_dialer_fails_the_attempt_instead_of_leaving_it_open(tmp_path, sim_settings, caplog):
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(4)))
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}), crash_on={"c01"}, fail_on={"c02"})
        async with dialer:
            assert await run_campaign(db, "c", dialer, options(max_attempts=2)) == "done"
        results = {r.contact_id: r for r in await db.results("c")}
        attempts = await db.attempts("c")
    assert all(a[3] is not None for a in attempts)  # no attempt left open
    assert (results["c01"].outcome, results["c01"].attempts) == ("failed", 2)  # failed is retryable
    assert "dialer error: RuntimeError: gateway adapter bug" in results["c01"].result["detail"]
    assert (results["c02"].outcome, results["c02"].attempts) == ("failed", 2)
    assert "gateway refused the originate request" in results["c02"].result["detail"]
    assert results["c00"].outcome == "busy"
    assert "the dialer crashed" in caplog.text


async def test_a_finished_or_cancelled_campaign_does_not_dial(tmp_path, sim_settings):
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(2)))
        await db.set_status("c", "cancelled")
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}))
        async with dialer:
            assert await run_campaign(db, "c", dialer, options()) == "cancelled"
        assert dialer.starts == []
        with pytest.raises(VoicebotError, match=r"no campaign 'nope'.*known: c"):
            await run_campaign(db, "nope", dialer, options())


async def test_one_person_listed_twice_is_never_rung_twice_at_once(tmp_path, sim_settings):
    # Two parcels for the same callee, the number written two ways: two calls, one after the other.
    phones = ["13812340001", "13812340002", "+86 138 1234 0001", "13812340003"]
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, phones))
        dialer = RecordingDialer(gateway(sim_settings, mix={"busy": 1}, time_scale=0.1))
        async with dialer:
            assert await run_campaign(db, "c", dialer, options(concurrency=4, max_attempts=1)) == "done"
        results = await db.results("c")
    assert all((r.state, r.attempts) == ("done", 1) for r in results)
    spans = {contact: (start, end) for contact, start, end in dialer.spans}
    assert spans["c02"][0] >= spans["c00"][1] or spans["c00"][0] >= spans["c02"][1]
    assert dialer.max_in_flight == 3  # the others were dialled alongside


@pytest.mark.parametrize(("text", "message"), [
    ("answer=70,bored=3", "FATE=WEIGHT with FATE one of answer, busy"),
    ("answer", "FATE=WEIGHT"),
    ("busy=lots", "the weight must be a number"),
    ("busy=-1", "cannot be negative"),
    ("busy=0,answer=0", "needs a positive weight"),
])
def test_parse_mix_errors(text, message):
    with pytest.raises(ValueError, match=message):
        parse_mix(text)


def test_parse_mix_keeps_only_named_fates():
    assert parse_mix(" answer=3, busy=1 ,") == {"answer": 3.0, "busy": 1.0}


@pytest.mark.parametrize(("yaml", "message"), [
    ("callees: []\n", "not a callee script"),
    ("callees:\n  - steps: [{say: hi, keys: '1'}]\n", "exactly one of say, wav, keys, silence"),
    ("callees:\n  - steps: [{keys: 'x'}]\n", "not a callee script"),
    ("callees:\n  - steps: [{wav: nowhere.wav}]\n", "no such WAV"),
    ("callees: [unclosed\n", "not a callee script"),
])
def test_load_personas_errors(tmp_path, yaml, message):
    path = tmp_path / "callees.yaml"
    path.write_text(yaml, encoding="utf-8")
    with pytest.raises(ConfigError, match=message):
        load_personas(path)


def test_load_personas_resolves_wavs_beside_the_script(tmp_path):
    wav = fixture_path("zh-CN", "yes")
    path = tmp_path / "callees.yaml"
    path.write_text(f"callees:\n  - weight: 3\n    steps: [{{wav: '{wav}'}}, {{silence: true}}, {{keys: '1#'}}]\n"
                    "  - name: quiet\n    steps: [{silence: true}]\n", encoding="utf-8")
    first, second = load_personas(path)
    assert first == Persona(name="callee 1", weight=3.0, steps=(CallerStep("wav", str(wav)), CallerStep("silence"),
                                                                  CallerStep("keys", "1#")))
    assert second.name == "quiet" and second.weight == 1.0


def test_progress_view_counts_what_the_runner_reports():
    out = io.StringIO()
    view = ProgressView(Console(file=out, width=120), enabled=False)
    for event in (CampaignStarted(name="c", total=4, done=1, recovered=2),
                  AttemptStarted(contact_id="a", attempt=1, phone_masked="138****0001"),
                  AttemptStarted(contact_id="b", attempt=2, phone_masked="138****0002"),
                  AttemptEnded(contact_id="a", attempt=1, outcome="busy", final=False, answered=False, talk_seconds=0),
                  AttemptEnded(contact_id="b", attempt=2, outcome="door_delivery", final=True, answered=True,
                               talk_seconds=30),
                  ContactSkipped(contact_id="d", reason="dnc_skipped", until=None),
                  ContactSkipped(contact_id="e", reason="outside calling window", until=1.0)):
        view(event)
    counts = (view.total, view.finished, view.attempts, view.dialled, view.answered, view.live_calls)
    assert counts == (4, 3, 2, 1, 1, 0)
    assert view.outcomes == Counter({"door_delivery": 1, "dnc_skipped": 1})
    assert "2 call(s) cut off by an earlier run" in view.note
    view(CampaignStopped(status="done"))
    assert view.note == "stopped: done"
    Console(file=out, width=120).print(view._render())
    assert "3/4" in out.getvalue() and "door_delivery" in out.getvalue()


async def test_a_failing_call_store_copy_loses_no_campaign_result(tmp_path, sim_settings):
    """The call store is an extra copy: when it refuses a record, the campaign's own result is still stored."""
    async with CampaignDB(tmp_path / "c.db") as db:
        await create(db, "c", contacts_file(tmp_path, numbers(4)))
        store = CallStore(tmp_path / "calls.db", max_record_bytes=200)  # every record is too big for it
        await store.open()
        try:
            async with gateway(sim_settings, seed=3) as sim:
                status = await run_campaign(db, "c", sim, options(max_attempts=1), store=store)
        finally:
            await store.aclose()
        results = await db.results("c")
        attempts = await db.attempts("c")
    assert status == "done"
    assert all(r.state == "done" and r.outcome for r in results)
    assert all(a[3] is not None and a[4] for a in attempts)  # every attempt ended, with its outcome
