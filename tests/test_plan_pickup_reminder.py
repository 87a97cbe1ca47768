"""驿站超时取件提醒 (dialplans/pickup_reminder.yaml): every outcome from WAV-fixture conversations."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest
from conftest import PLANS, fixture_entry, prompt_ids, scripted_caller

from voicebot.config import Settings
from voicebot.events import CallStarted, Say, Transfer
from voicebot.simulate import simulate

PLAN = PLANS / "pickup_reminder.yaml"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=timezone(timedelta(hours=8)))
TOMORROW = "2026-11-24"
ZH_VARS = {"customer_name": "李女士", "tracking_tail": "2468", "station_name": "东门菜鸟驿站",
           "pickup_code": "830517", "deadline": "明天晚上八点"}
EN_VARS = {"customer_name": "Mr Brown", "tracking_tail": "1357", "station_name": "the corner shop",
           "pickup_code": "4096", "deadline": "Friday at 8 pm", "company": "Acme Express"}
CODE_SPOKEN = {"zh-CN": "8 3 0 5 1 7", "en-US": "4 0 9 6"}


async def call(settings: Settings, answers: list[str], *, language: str = "zh-CN", events: list | None = None):
    """One reminder call in which the callee gives `answers` (fixture ids, keys:N, say:TEXT, silence) in turn."""
    steps, recognizer = scripted_caller(language, answers)
    return await simulate(plan=PLAN, steps=steps, variables=ZH_VARS if language == "zh-CN" else EN_VARS,
                          settings=settings, emit=(events if events is not None else []).append, language=language,
                          recognizer=recognizer, clock=lambda: NOW)


CASES = [
    # A day is read back, and only a yes (or key 1) makes it a promise.
    ("zh-CN", ["pr_pickup", "yes"], "promised_pickup",
     {"request": "pickup", "pickup_day": {"date": TOMORROW, "time": None}},
     ["reminder", "confirm_day", "confirm_pickup"]),
    ("zh-CN", ["keys:1", "pr_pickup", "keys:1"], "promised_pickup",
     {"request": "pickup", "pickup_day": {"date": TOMORROW, "time": None}},
     ["reminder", "ask_day", "confirm_day", "confirm_pickup"]),
    # A bare day is no promise (review: 今天取不了 / 我明天不在 were recorded as promised_pickup).
    ("zh-CN", ["say:今天取不了", "silence"], "reminded", {"pickup_day": ""},
     ["reminder", "confirm_day", "bye_reminded"]),
    ("zh-CN", ["say:我明天不在", "say:今天天气怎么样"], "reminded", {"pickup_day": ""},
     ["reminder", "confirm_day", "bye_reminded"]),
    ("zh-CN", ["say:我明天不在", "no", "silence", "silence"], "reminded", {"pickup_day": ""},
     ["reminder", "confirm_day", "ask_day_again", "noinput_1", "ask_day_again", "bye_reminded"]),
    ("zh-CN", ["say:今天取不了", "keys:2", "door", "another_time"], "redelivery",
     {"request": "redelivery", "redelivery_at": {"date": TOMORROW, "time": "15:00"}, "pickup_day": ""},
     ["reminder", "confirm_day", "ask_day_again", "ask_redelivery_time", "confirm_redelivery"]),
    ("zh-CN", ["say:后天", "no", "pr_pickup", "yes"], "promised_pickup",
     {"request": "pickup", "pickup_day": {"date": TOMORROW, "time": None}},
     ["reminder", "confirm_day", "ask_day_again", "confirm_day", "confirm_pickup"]),
    ("zh-CN", ["keys:1", "silence", "silence"], "promised_pickup", {"request": "pickup"},
     ["reminder", "ask_day", "noinput_1", "ask_day", "confirm_pickup"]),
    # "明天下午三点再送": redelivery with its time in one breath.
    ("zh-CN", ["another_time"], "redelivery",
     {"request": "redelivery", "redelivery_at": {"date": TOMORROW, "time": "15:00"}},
     ["reminder", "confirm_redelivery"]),
    ("zh-CN", ["door", "another_time"], "redelivery",
     {"request": "redelivery", "redelivery_at": {"date": TOMORROW, "time": "15:00"}},
     ["reminder", "ask_redelivery_time", "confirm_redelivery"]),
    ("zh-CN", ["refuse"], "return_to_sender", {"request": "return"}, ["reminder", "confirm_return"]),
    ("zh-CN", ["repeat", "keys:4"], "already_picked_up", {}, ["reminder", "code_again", "confirm_picked_up"]),
    ("zh-CN", ["wrong_number"], "wrong_number", {}, ["reminder", "wrong_number"]),
    ("zh-CN", ["dnc"], "do_not_call", {"do_not_call": "yes"}, ["reminder", "do_not_call"]),
    ("zh-CN", ["agent"], "transferred", {}, ["reminder", "transfer"]),
    ("zh-CN", ["silence"] * 4, "reminded", {},
     ["reminder", "noinput_1", "reminder", "plan_short", "noinput_1", "plan_short", "bye_reminded"]),
    ("zh-CN", ["not_home", "goodbye"], "reminded", {}, ["reminder", "nomatch_1", "plan_short", "bye_reminded"]),
    ("en-US", ["another_time", "yes"], "promised_pickup",
     {"request": "pickup", "pickup_day": {"date": TOMORROW, "time": "15:00"}},
     ["reminder", "confirm_day", "confirm_pickup"]),
    ("en-US", ["another_time", "no", "keys:3"], "return_to_sender", {"request": "return", "pickup_day": ""},
     ["reminder", "confirm_day", "ask_day_again", "confirm_return"]),
    ("en-US", ["repeat", "door", "another_time"], "redelivery",
     {"request": "redelivery", "redelivery_at": {"date": TOMORROW, "time": "15:00"}},
     ["reminder", "code_again", "ask_redelivery_time", "confirm_redelivery"]),
    ("en-US", ["keys:3"], "return_to_sender", {"request": "return"}, ["reminder", "confirm_return"]),
    ("en-US", ["dnc"], "do_not_call", {"do_not_call": "yes"}, ["reminder", "do_not_call"]),
]


@pytest.mark.parametrize(("language", "answers", "outcome", "recorded", "prompts"), CASES,
                         ids=[f"{c[2]}:{c[0]}:{'+'.join(c[1])}" for c in CASES])
async def test_every_outcome_from_a_conversation(plan_settings, language, answers, outcome, recorded, prompts):
    """Each answer path ends in its outcome, records what the callee asked for, and says the right things."""
    events: list = []
    record = await call(plan_settings, answers, language=language, events=events)
    assert record.outcome == outcome
    for name, value in recorded.items():
        assert record.variables[name] == value
    if "pickup_day" not in recorded:
        assert "pickup_day" not in record.variables
    assert prompt_ids(events) == prompts
    heard = [t.heard for t in record.turns if t.heard and t.source == "speech"]
    assert heard == [a.removeprefix("say:") if a.startswith("say:") else fixture_entry(language, a)["text"]
                     for a in answers if a != "silence" and not a.startswith("keys:")]


async def test_the_day_read_back_says_the_day(plan_settings):
    """The read-back names the captured day, so a yes is a yes to that day."""
    events: list = []
    await call(plan_settings, ["say:后天", "yes"], events=events)
    check = next(e for e in events if isinstance(e, Say) and e.prompt_id == "confirm_day")
    assert "2026-11-25" in check.text and "对吗" in check.text


@pytest.mark.parametrize("language", ["zh-CN", "en-US"])
async def test_pickup_code_is_read_digit_by_digit_and_again_on_request(plan_settings, language):
    """The code is in the reminder one digit at a time, and is read twice more each time the callee asks."""
    events: list = []
    record = await call(plan_settings, ["repeat", "keys:*", "keys:4"], language=language, events=events)
    assert record.outcome == "already_picked_up"
    says = [e for e in events if isinstance(e, Say)]
    assert [s.prompt_id for s in says] == ["reminder", "code_again", "code_again", "confirm_picked_up"]
    code = CODE_SPOKEN[language]
    assert says[0].text.count(code) == 1
    assert all(s.text.count(code) == 2 for s in says[1:3])
    assert [t.intent for t in record.turns if t.intent] == ["repeat", "repeat", "already_picked_up"]


async def test_reminder_names_the_station_and_the_deadline(plan_settings):
    events: list = []
    await call(plan_settings, ["refuse"], events=events)
    reminder = next(e for e in events if isinstance(e, Say))
    assert "李女士" in reminder.text and "2 4 6 8" in reminder.text
    assert "东门菜鸟驿站" in reminder.text and "明天晚上八点前取件" in reminder.text


async def test_pickup_code_is_spoken_but_masked_in_events_and_the_record(plan_settings):
    """pii: the callee hears the code; CallStarted, the record's variables and its prompt texts do not hold it."""
    events: list = []
    record = await call(plan_settings, ["repeat", "agent"], events=events)
    assert any(CODE_SPOKEN["zh-CN"] in e.text for e in events if isinstance(e, Say))
    started = next(e for e in events if isinstance(e, CallStarted))
    assert started.variables["pickup_code"] == record.variables["pickup_code"] == "8*****"
    prompts = " ".join(t.prompt for t in record.turns)
    assert "李**" in prompts and "李女士" not in prompts  # the prompts are there, the name masked (pii) ...
    assert "830517" not in prompts and CODE_SPOKEN["zh-CN"] not in prompts  # ... and without the code
    assert started.variables["customer_name"] == record.variables["customer_name"] == "李**"
    assert any("李女士" in e.text for e in events if isinstance(e, Say))  # while the callee hears the name
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert transfer.target == "station_support" and record.outcome == "transferred"
