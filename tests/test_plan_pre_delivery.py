"""派前电联 (dialplans/pre_delivery.yaml): every outcome from WAV-fixture conversations, and consent with its time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest
from conftest import PLANS, fixture_entry, prompt_ids, scripted_caller

from voicebot.config import Settings
from voicebot.dialog.engine import DialogEngine
from voicebot.dialog.load import load_plan, parse_plan
from voicebot.errors import DialogError, PlanError
from voicebot.events import Intent, Say, Transfer
from voicebot.simulate import simulate

PLAN = PLANS / "pre_delivery.yaml"
CST = timezone(timedelta(hours=8))
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=CST)
STAMP = "2026-11-23T10:00:00+08:00"
ZH_VARS = {"customer_name": "王先生", "tracking_tail": "5678", "station_name": "东门驿站"}
EN_VARS = {"customer_name": "Ms Smith", "tracking_tail": "4321", "company": "Acme Express",
           "station_name": "the corner shop"}


async def call(settings: Settings, answers: list[str], *, language: str = "zh-CN", events: list | None = None,
               clock=lambda: NOW):
    """One pre-delivery call in which the callee gives `answers` (fixture ids, keys:N, silence) in turn."""
    steps, recognizer = scripted_caller(language, answers)
    return await simulate(plan=PLAN, steps=steps, variables=ZH_VARS if language == "zh-CN" else EN_VARS,
                          settings=settings, emit=(events if events is not None else []).append, language=language,
                          recognizer=recognizer, clock=clock)


CONSENTED = {"station_consent": "station", "locker_consent": "locker", "leave_with_someone": "leave_with_someone"}


CASES = [
    ("zh-CN", ["door"], "door_delivery", "door", ["greeting", "confirm_door"]),
    ("zh-CN", ["station"], "station_consent", "station", ["greeting", "confirm_station"]),
    ("zh-CN", ["locker"], "locker_consent", "locker", ["greeting", "confirm_locker"]),
    ("zh-CN", ["keys:5"], "leave_with_someone", "leave_with_someone", ["greeting", "confirm_reception"]),
    ("zh-CN", ["not_home", "pd_neighbor"], "leave_with_someone", "leave_with_someone",
     ["greeting", "not_home", "greeting_short", "confirm_neighbor"]),
    ("zh-CN", ["not_home", "locker"], "locker_consent", "locker",
     ["greeting", "not_home", "greeting_short", "confirm_locker"]),
    ("zh-CN", ["another_time"], "rescheduled", "another_time", ["greeting", "confirm_time"]),
    ("zh-CN", ["not_home", "not_home", "another_time"], "rescheduled", "another_time",
     ["greeting", "not_home", "greeting_short", "not_home_time", "ask_time", "confirm_time"]),
    ("zh-CN", ["what_parcel", "station"], "station_consent", "station",
     ["greeting", "parcel_info", "greeting_short", "confirm_station"]),
    ("zh-CN", ["refuse"], "refused", "refuse", ["greeting", "refused"]),
    ("zh-CN", ["wrong_number"], "wrong_number", None, ["greeting", "wrong_number"]),
    ("zh-CN", ["dnc"], "do_not_call", "door", ["greeting", "do_not_call"]),
    ("zh-CN", ["agent"], "transferred", None, ["greeting", "transfer"]),
    ("zh-CN", ["goodbye"], "default_door", "door", ["greeting", "goodbye"]),
    ("zh-CN", ["not_home", "silence", "silence"], "default_door", "door",
     ["greeting", "not_home", "greeting_short", "noinput_1", "greeting_short", "sorry_default"]),
    ("en-US", ["door"], "door_delivery", "door", ["greeting", "confirm_door"]),
    ("en-US", ["station"], "station_consent", "station", ["greeting", "confirm_station"]),
    ("en-US", ["keys:5"], "leave_with_someone", "leave_with_someone", ["greeting", "confirm_reception"]),
    ("en-US", ["weather", "another_time"], "rescheduled", "another_time",
     ["greeting", "nomatch_1", "greeting_short", "confirm_time"]),
]


@pytest.mark.parametrize(("language", "answers", "outcome", "choice", "prompts"), CASES,
                         ids=[f"{c[2]}:{c[0]}:{'+'.join(c[1])}" for c in CASES])
async def test_every_outcome_from_a_conversation(plan_settings, language, answers, outcome, choice, prompts):
    """Each answer path ends in its outcome, with the choice, the consent (and when) and the prompts spoken."""
    events: list = []
    record = await call(plan_settings, answers, language=language, events=events)
    assert record.outcome == outcome
    assert record.variables.get("choice") == choice
    assert prompt_ids(events) == prompts
    heard = [t.heard for t in record.turns if t.heard and t.source == "speech"]
    assert heard == [fixture_entry(language, a)["text"] for a in answers if a != "silence" and ":" not in a]
    if outcome in CONSENTED:
        assert record.variables["consent"] == CONSENTED[outcome]
        assert record.variables["consent_at"] == STAMP
    else:
        assert "consent" not in record.variables and "consent_at" not in record.variables


@pytest.mark.parametrize(("answers", "who", "prompt"), [
    (["keys:5"], "reception", "confirm_reception"),
    (["not_home", "pd_neighbor"], "neighbor", "confirm_neighbor"),
])
async def test_leave_with_someone_records_who(plan_settings, answers, who, prompt):
    """Leaving the parcel with someone records with whom; the callee hears the same back."""
    events: list = []
    record = await call(plan_settings, answers, events=events)
    assert record.variables["leave_with"] == who
    confirm = next(e for e in events if isinstance(e, Say) and e.prompt_id == prompt)
    assert ("门卫" if who == "reception" else "邻居") in confirm.text


async def test_consent_time_is_when_the_callee_answered(plan_settings):
    """With a clock that moves, consent_at is the moment of the answer: after the call began, before it ended."""
    ticks = iter(range(10_000))
    record = await call(plan_settings, ["not_home", "station"], clock=lambda: NOW + timedelta(seconds=next(ticks)))
    assert record.outcome == "station_consent"
    consent_at = datetime.fromisoformat(record.variables["consent_at"])
    assert consent_at.utcoffset() == timedelta(hours=8)
    assert datetime.fromisoformat(record.started_at) < consent_at < datetime.fromisoformat(record.ended_at)


async def test_greeting_reads_the_tracking_tail_and_offers_every_choice(plan_settings):
    events: list = []
    await call(plan_settings, ["door"], events=events)
    greeting = next(e for e in events if isinstance(e, Say))
    assert "王先生" in greeting.text and "5 6 7 8" in greeting.text and "东门驿站" in greeting.text
    assert all(f"按{k}" in greeting.text for k in "12345")


async def test_agent_gets_the_conversation(plan_settings):
    events: list = []
    record = await call(plan_settings, ["what_parcel", "agent"], events=events)
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert transfer.target == "delivery_support" and record.outcome == "transferred"
    assert "什么快递" in [line["text"] for line in transfer.context["transcript"]]


# --- the engine's `now`, which consent_at is made of ------------------------------------------------------


@pytest.fixture(scope="module")
def engine() -> DialogEngine:
    return DialogEngine(load_plan(PLAN))


def test_engine_puts_now_into_the_variables_before_sets(engine):
    """start() and step() take the time from their caller; a `set:` of "{now}" renders it."""
    later = NOW + timedelta(minutes=1, seconds=30)
    state, _ = engine.start(variables=ZH_VARS, now=NOW)
    assert state.variables["now"] == STAMP
    state, _ = engine.step(state, Intent(name="leave_family", confidence=1.0), now=later)
    assert state.outcome == "leave_with_someone" and state.variables["leave_with"] == "family"
    assert state.variables["consent_at"] == state.variables["now"] == "2026-11-23T10:01:30+08:00"


def test_engine_without_now_keeps_no_stale_caller_value(engine):
    """Without `now` the variable is absent: a contact column called `now` is not taken for the time."""
    state, _ = engine.start(variables={**ZH_VARS, "now": "yesterday"})
    assert "now" not in state.variables
    state, _ = engine.step(state, Intent(name="station", confidence=1.0))
    assert state.variables["consent_at"] == ""


def test_engine_refuses_a_naive_time(engine):
    with pytest.raises(DialogError) as info:
        engine.start(variables=ZH_VARS, now=datetime(2026, 11, 23, 10, 0))
    assert info.value.code == "naive_time"
    state, _ = engine.start(variables=ZH_VARS, now=NOW)
    with pytest.raises(DialogError):
        engine.step(state, Intent(name="door", confidence=1.0), now=datetime(2026, 11, 23, 10, 1))


BARE = """
plan: t
languages: [en-US]
{variables}
intents: {{go: {{phrases: {{en-US: [go]}}}}}}
prompts: {{q: {{en-US: "Go? It is {{now}}."}}}}
start: ask
states:
  ask:
    say: q
    expect: [go]
    on: {{go: {{set: {{{target}: "{{now}}"}}, hangup: true, outcome: went}}}}
    noinput: [{{hangup: true, outcome: gone}}]
    nomatch: [{{hangup: true, outcome: gone}}]
"""


def test_now_is_a_known_variable_in_prompts_and_sets():
    loaded = parse_plan(BARE.format(variables="", target="went_at"))
    assert loaded.plan.states["ask"].on["go"].set == {"went_at": "{now}"}


@pytest.mark.parametrize(("variables", "target", "where"), [
    ("variables: {now: {required: false}}", "went_at", "variables.now"),
    ("", "now", "states.ask.on.go.set.now"),
])
def test_a_plan_may_not_declare_or_set_now(variables, target, where):
    with pytest.raises(PlanError) as info:
        parse_plan(BARE.format(variables=variables, target=target))
    assert "reserved_variable" in info.value.message and where in info.value.message


@pytest.mark.parametrize(("language", "said", "outcome"), [
    ("zh-CN", "放驿站吧再见", "station_consent"),
    ("zh-CN", "送货上门吧，拜拜", "door_delivery"),
    ("en-US", "the station please, bye", "station_consent"),
])
def test_a_choice_said_with_goodbye_is_the_choice(engine, language, said, outcome):
    """The sign-off yields: the callee who chose and said bye has chosen (not a no-match, not a retry)."""
    from voicebot.intent import match

    state, _ = engine.start(variables={"customer_name": "王", "tracking_tail": "1234"}, language=language,
                            now=datetime(2026, 11, 23, 10, tzinfo=UTC))
    heard = match(said, engine.expectation(state))
    assert isinstance(heard, Intent)
    state, _ = engine.step(state, heard, now=datetime(2026, 11, 23, 10, tzinfo=UTC))
    assert state.ended and state.outcome == outcome
