"""The dialog engine, pure: start and step over real plans, no I/O."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from voicebot.dialog.engine import DialogEngine, DialogState, render_text
from voicebot.dialog.load import load_plan, parse_plan
from voicebot.errors import DialogError, PlanError
from voicebot.events import Hangup, Intent, Listen, NoInput, NoMatch, Say, Transfer

REPO = Path(__file__).resolve().parents[1]
MINIMAL = REPO / "tests" / "plans" / "minimal.yaml"
PRE_DELIVERY = REPO / "dialplans" / "pre_delivery.yaml"
CALLEE = {"customer_name": "王先生", "tracking_tail": "5678"}

# A plan built to exercise counters, globals and escalation; every prompt says its own id.
COUNTERS = """
plan: counters
languages: [en-US]
defaults: {timeout: 3}
intents:
  go: {phrases: {en-US: [go]}}
  agent: {phrases: {en-US: [agent]}, dtmf: ["0"]}
  repeat: {phrases: {en-US: [repeat]}}
  stop: {phrases: {en-US: [stop calling]}}
prompts:
  a: {en-US: "prompt a"}
  b: {en-US: "prompt b"}
  n1: {en-US: "noinput one"}
  n2: {en-US: "noinput two"}
  m1: {en-US: "nomatch one"}
  m2: {en-US: "nomatch two"}
  end: {en-US: "the end"}
global:
  agent: {transfer: support, reason: caller_request}
  repeat: {repeat: true}
  stop: {hangup: true, outcome: do_not_call}
start: a
states:
  a:
    say: a
    timeout: 9
    expect: [go]
    on: {go: b}
    noinput: [{say: n1, reprompt: true}, {say: n2}]
    nomatch: [{say: m1}, {say: m2, reprompt: true}]
  b:
    say: b
    expect: [go]
    globals: false
    on: {go: done}
    noinput: [{say: n1}, {say: n2}]
    nomatch: [{say: m1}]
  done:
    say: end
    end: hangup
    outcome: finished
"""

# No noinput/nomatch handlers at all: the engine's own default (reprompt twice, then hang up).
BARE = """
plan: bare
languages: [en-US]
intents:
  go: {phrases: {en-US: [go]}}
prompts:
  q: {en-US: "question"}
start: q
states:
  q:
    say: q
    expect: [go]
    on: {go: {hangup: true, outcome: went}}
"""

LOOP = """
plan: loop
languages: [en-US]
prompts:
  p: {en-US: "again"}
start: one
states:
  one: {say: p, next: two}
  two: {say: p, next: one}
"""

ESCALATE = """
plan: escalate
languages: [en-US]
defaults:
  max_failures: 3
  escalate: {say: [sorry], transfer: humans, reason: too_many_failures}
intents:
  go: {phrases: {en-US: [go]}}
prompts:
  q: {en-US: "question"}
  sorry: {en-US: "let me find someone"}
start: q
states:
  q:
    say: q
    expect: [go]
    on: {go: {hangup: true, outcome: went}}
    noinput: [{reprompt: true}]
    nomatch: [{reprompt: true}]
"""


def engine_of(text: str) -> DialogEngine:
    return DialogEngine(parse_plan(text, source="test.yaml"))


@pytest.fixture(scope="module")
def minimal() -> DialogEngine:
    return DialogEngine(load_plan(MINIMAL))


@pytest.fixture(scope="module")
def pre() -> DialogEngine:
    return DialogEngine(load_plan(PRE_DELIVERY))


def intent(name: str, **slots: object) -> Intent:
    return Intent(name=name, confidence=0.95, text=name, slots=dict(slots))


def says(actions: list) -> list[str]:
    return [a.prompt_id for a in actions if isinstance(a, Say)]


def kinds(actions: list) -> list[str]:
    return [type(a).__name__ for a in actions]


# --- start ----------------------------------------------------------------------------------------


def test_start_says_greeting_with_variables_then_listens(minimal: DialogEngine) -> None:
    state, actions = minimal.start(variables={"name": "Ann", "code": "4 821"})
    assert kinds(actions) == ["Say", "Listen"]
    say, listen = actions
    assert say.text == "Hello Ann, your code is 4 8 2 1. Is that right?"
    assert say.language == "en-US"
    assert listen.state == "ask"
    assert listen.timeout == 4  # from the plan's defaults
    assert {"yes", "sure", "no", "[unk]"} <= set(listen.grammar)
    assert state.state == "ask" and not state.ended
    assert state.last_say == say


def test_optional_variable_takes_its_default(minimal: DialogEngine) -> None:
    _, actions = minimal.start(variables={"name": "Ann"})
    assert "your code is 0 0 0 0." in actions[0].text


@pytest.mark.parametrize("variables", [{}, {"name": ""}, {"name": None}, {"code": "1"}])
def test_missing_required_variables(minimal: DialogEngine, variables: dict) -> None:
    with pytest.raises(DialogError) as info:
        minimal.start(variables=variables)
    assert info.value.code == "missing_variables"
    assert "name" in info.value.message


def test_unsupported_language(minimal: DialogEngine) -> None:
    with pytest.raises(DialogError) as info:
        minimal.start(variables={"name": "Ann"}, language="fr-FR")
    assert info.value.code == "unsupported_language"


def test_language_selects_prompts_and_phrases(pre: DialogEngine) -> None:
    state, actions = pre.start(variables=CALLEE, language="en-US")
    assert actions[0].text.startswith("Hello 王先生, this is 顺丰速运. Your parcel ending in 5 6 7 8")
    assert "deliver to my door" in actions[1].grammar
    assert "送货上门" not in actions[1].grammar
    assert state.language == "en-US"


def test_state_timeout_overrides_default() -> None:
    eng = engine_of(COUNTERS)
    _, actions = eng.start(variables={})
    assert actions[-1] == Listen(state="a", grammar=actions[-1].grammar, timeout=9, barge_in=True)
    _, actions = eng.step(eng.start(variables={})[0], intent("go"))
    assert actions[-1].state == "b" and actions[-1].timeout == 3


def test_grammar_includes_global_intents_unless_disabled() -> None:
    eng = engine_of(COUNTERS)
    state, actions = eng.start(variables={})
    assert {"go", "agent", "repeat", "stop calling"} <= set(actions[-1].grammar)
    _, actions = eng.step(state, intent("go"))
    assert "agent" not in actions[-1].grammar and "go" in actions[-1].grammar


# --- intents ----------------------------------------------------------------------------------------


def test_intent_transitions_and_sets_variables(minimal: DialogEngine) -> None:
    state, _ = minimal.start(variables={"name": "Ann"})
    new, actions = minimal.step(state, intent("yes"))
    assert kinds(actions) == ["Say", "Hangup"]
    assert actions[0].text == "Thank you."
    assert actions[1] == Hangup(reason="confirmed")
    assert new.variables["answer"] == "yes"
    assert new.ended and new.outcome == "confirmed" and new.state == "done"


def test_intent_slots_are_merged_into_variables(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    new, _ = pre.step(state, intent("door", extra="kept"))
    assert new.variables["extra"] == "kept"
    assert new.variables["customer_name"] == "王先生"


def test_unhandled_intent_counts_as_nomatch(minimal: DialogEngine) -> None:
    state, _ = minimal.start(variables={"name": "Ann"})
    new, actions = minimal.step(state, intent("agent"))
    assert (new.state, new.nomatch, new.failures) == ("ask", 1, 1)
    assert says(actions) == ["sorry", "ask"]
    assert isinstance(actions[-1], Listen)


def test_state_is_immutable(minimal: DialogEngine) -> None:
    state, _ = minimal.start(variables={"name": "Ann"})
    fields, values = dict(vars(state)), dict(state.variables)
    minimal.step(state, NoInput(waited=4))
    minimal.step(state, intent("no"))
    assert vars(state) == fields
    assert dict(state.variables) == values
    with pytest.raises(dataclasses.FrozenInstanceError):
        state.state = "done"  # type: ignore[misc]
    with pytest.raises(TypeError):
        state.variables["name"] = "Bob"  # type: ignore[index]


def test_stepping_after_the_end(minimal: DialogEngine) -> None:
    state, _ = minimal.start(variables={"name": "Ann"})
    ended, _ = minimal.step(state, intent("yes"))
    for event in (intent("yes"), NoInput(waited=1), NoMatch(text="x")):
        with pytest.raises(DialogError) as info:
            minimal.step(ended, event)
        assert info.value.code == "dialog_ended"


def test_stepping_a_state_that_does_not_listen(minimal: DialogEngine) -> None:
    with pytest.raises(DialogError) as info:
        minimal.step(DialogState(state="done", language="en-US"), NoInput(waited=1))
    assert info.value.code == "not_listening"


# --- noinput / nomatch counters ------------------------------------------------------------------------


def test_noinput_handlers_by_count_and_the_last_repeats() -> None:
    eng = engine_of(COUNTERS)
    state, _ = eng.start(variables={})
    seen = []
    for _ in range(4):
        state, actions = eng.step(state, NoInput(waited=9))
        seen.append(says(actions))
        assert isinstance(actions[-1], Listen)
    assert seen == [["n1", "a"], ["n2"], ["n2"], ["n2"]]
    assert (state.noinput, state.nomatch, state.failures) == (4, 0, 4)


def test_nomatch_handlers_by_count() -> None:
    eng = engine_of(COUNTERS)
    state, _ = eng.start(variables={})
    seen = []
    for _ in range(3):
        state, actions = eng.step(state, NoMatch(text="banana"))
        seen.append(says(actions))
    assert seen == [["m1"], ["m2", "a"], ["m2", "a"]]
    assert state.nomatch == 3 and state.noinput == 0


def test_counters_reset_on_entering_a_new_state() -> None:
    eng = engine_of(COUNTERS)
    state, _ = eng.start(variables={})
    state, _ = eng.step(state, NoInput(waited=9))
    state, _ = eng.step(state, NoMatch(text="x"))
    state, _ = eng.step(state, intent("go"))
    assert (state.state, state.noinput, state.nomatch, state.failures) == ("b", 0, 0, 2)
    state, actions = eng.step(state, NoInput(waited=3))
    assert says(actions) == ["n1"]  # the first handler again, not the second
    state, actions = eng.step(state, NoMatch(text="x"))
    assert says(actions) == ["m1"]


@pytest.mark.parametrize(("event", "outcome"), [(NoInput(waited=6), "noinput_exhausted"),
                                                (NoMatch(text="huh"), "nomatch_exhausted")])
def test_without_handlers_reprompt_twice_then_hang_up(event, outcome: str) -> None:
    eng = engine_of(BARE)
    state, _ = eng.start(variables={})
    for _ in range(2):
        state, actions = eng.step(state, event)
        assert says(actions) == ["q"]
        assert isinstance(actions[-1], Listen)
    state, actions = eng.step(state, event)
    assert actions == [Hangup(reason=outcome)]
    assert state.ended and state.outcome == outcome


def test_max_failures_escalates() -> None:
    eng = engine_of(ESCALATE)
    state, _ = eng.start(variables={})
    state, _ = eng.step(state, NoInput(waited=6))
    state, _ = eng.step(state, NoMatch(text="x"))
    assert not state.ended
    state, actions = eng.step(state, NoInput(waited=6))
    assert says(actions) == ["sorry"]
    assert isinstance(actions[-1], Transfer)
    assert actions[-1].target == "humans" and actions[-1].reason == "too_many_failures"
    assert state.ended and state.outcome == "transferred"


# --- global intents ------------------------------------------------------------------------------------


def test_global_agent_transfers_with_context(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    state, _ = pre.step(state, intent("what_parcel"))
    new, actions = pre.step(state, intent("agent"))
    assert says(actions) == ["transfer"]
    transfer = actions[-1]
    assert isinstance(transfer, Transfer)
    assert (transfer.target, transfer.reason) == ("delivery_support", "caller_request")
    assert transfer.context["plan"] == "pre_delivery"
    assert transfer.context["state"] == "ask_choice_again"
    assert transfer.context["variables"]["tracking_tail"] == "5678"
    assert new.ended and new.outcome == "transferred"


def test_global_repeat_says_the_last_prompt_again(pre: DialogEngine) -> None:
    state, first = pre.start(variables=CALLEE)
    new, actions = pre.step(state, intent("repeat"))
    assert actions == [first[0], first[1]]
    assert new.state == "ask_choice" and not new.ended
    assert (new.noinput, new.nomatch, new.failures) == (0, 0, 0)


def test_global_do_not_call(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    new, actions = pre.step(state, intent("do_not_call"))
    assert says(actions) == ["do_not_call"]
    assert actions[-1] == Hangup(reason="do_not_call")
    assert new.outcome == "do_not_call"
    assert new.variables["do_not_call"] == "yes" and new.variables["choice"] == "door"


def test_state_with_globals_off_treats_global_intent_as_nomatch() -> None:
    eng = engine_of(COUNTERS)
    state, _ = eng.start(variables={})
    state, _ = eng.step(state, intent("go"))
    new, actions = eng.step(state, intent("agent"))
    assert not new.ended
    assert (new.nomatch, new.failures) == (1, 1)
    assert says(actions) == ["m1"]
    assert not any(isinstance(a, Transfer) for a in actions)


# --- chains and form filling --------------------------------------------------------------------------


def test_next_loop_is_refused_when_the_plan_loads() -> None:
    """A `next:` cycle would spin without waiting for the caller: the loader refuses it, located."""
    with pytest.raises(PlanError) as info:
        engine_of(LOOP)
    assert "[next_loop]" in info.value.message


def test_next_chain_speaks_each_state_in_order() -> None:
    text = COUNTERS.replace("  done:\n    say: end\n", "  done:\n    say: end\n    next: after\n"
                            "  after:\n    say: a\n").replace("    end: hangup\n    outcome: finished\n", "") + \
        "    end: hangup\n    outcome: finished\n"
    eng = engine_of(text)
    state, _ = eng.start(variables={})
    state, _ = eng.step(state, intent("go"))
    state, actions = eng.step(state, intent("go"))
    assert says(actions) == ["end", "a"]
    assert actions[-1] == Hangup(reason="finished")
    assert state.state == "after"


def test_capture_skipped_when_slot_already_given(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    new, actions = pre.step(state, intent("another_time", when="2025-06-01T15:00"))
    assert says(actions) == ["confirm_time"]  # ask_time is not asked
    assert actions[-1] == Hangup(reason="rescheduled")
    assert new.variables["when"] == "2025-06-01T15:00"
    assert new.variables["choice"] == "another_time"
    assert new.outcome == "rescheduled"


def test_capture_asked_when_slot_missing(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    state, actions = pre.step(state, intent("another_time"))
    assert says(actions) == ["ask_time"]
    assert actions[-1].state == "ask_time"
    assert "明天" in actions[-1].grammar and "下午" in actions[-1].grammar
    state, actions = pre.step(state, intent("captured", when="2025-06-02T10:00"))
    assert actions[-1] == Hangup(reason="rescheduled")
    assert state.variables["when"] == "2025-06-02T10:00"


# --- pre_delivery, every outcome --------------------------------------------------------------------


@pytest.mark.parametrize(("name", "outcome", "choice", "prompt"), [
    ("door", "door_delivery", "door", "confirm_door"),
    ("station", "station_consent", "station", "confirm_station"),
    ("locker", "locker_consent", "locker", "confirm_locker"),
    ("refuse", "refused", "refuse", "refused"),
    ("wrong_number", "wrong_number", None, "wrong_number"),
    ("goodbye", "default_door", "door", "goodbye"),
])
def test_pre_delivery_one_answer_outcomes(pre: DialogEngine, name, outcome, choice, prompt) -> None:
    state, _ = pre.start(variables=CALLEE)
    new, actions = pre.step(state, intent(name))
    assert says(actions) == [prompt]
    assert actions[-1] == Hangup(reason=outcome)
    assert new.ended and new.outcome == outcome
    assert new.variables.get("choice") == choice


def test_pre_delivery_station_names_the_station(pre: DialogEngine) -> None:
    state, _ = pre.start(variables={**CALLEE, "station_name": "东门驿站"})
    _, actions = pre.step(state, intent("station"))
    assert "东门驿站" in actions[0].text


def test_pre_delivery_not_home_then_locker(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    state, actions = pre.step(state, intent("not_home"))
    assert says(actions) == ["not_home", "greeting_short"]
    state, actions = pre.step(state, intent("locker"))
    assert state.outcome == "locker_consent"


def test_pre_delivery_silence_ends_at_door_delivery(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    trail = []
    while not state.ended:
        state, actions = pre.step(state, NoInput(waited=6))
        trail.append((state.state, says(actions)))
    assert trail == [
        ("ask_choice", ["noinput_1", "greeting"]),
        ("ask_choice_again", ["noinput_1", "greeting_short"]),
        ("ask_choice_again", ["noinput_1", "greeting_short"]),
        ("ask_choice_again", ["sorry_default"]),
    ]
    assert state.outcome == "default_door" and state.variables["choice"] == "door"


def test_pre_delivery_max_failures_defaults_to_door(pre: DialogEngine) -> None:
    state, _ = pre.start(variables=CALLEE)
    state, _ = pre.step(state, NoMatch(text="嗯"))  # 1 -> ask_choice_again
    state, _ = pre.step(state, intent("another_time"))  # -> ask_time
    state, _ = pre.step(state, NoInput(waited=6))  # 2: noinput and nomatch count apart
    state, _ = pre.step(state, NoMatch(text="嗯"))  # 3
    assert not state.ended
    state, _ = pre.step(state, NoInput(waited=6))  # 4: ask_time's second noinput handler ends the call
    assert state.ended and state.outcome == "default_door" and state.failures == 4

    state, _ = pre.start(variables=CALLEE)
    for event in (NoInput(waited=6), NoInput(waited=6), NoMatch(text="嗯")):  # 3 failures, two states
        state, _ = pre.step(state, event)
    state, _ = pre.step(state, intent("another_time"))
    state, _ = pre.step(state, NoInput(waited=6))  # 4
    assert not state.ended
    state, actions = pre.step(state, NoMatch(text="嗯"))  # 5 = max_failures: escalate
    assert says(actions) == ["sorry_default"]
    assert actions[-1] == Hangup(reason="default_door")
    assert state.failures == 5 and state.variables["choice"] == "door"


# --- templates ------------------------------------------------------------------------------------------


def test_render_text_filters_and_literal_values() -> None:
    values = {"a": "12 34", "p": "13812345678", "s": "abc", "t": "{a}"}
    assert render_text("{a|digits}", values) == "1 2 3 4"
    assert render_text("{p|masked}", values) == "138****5678"
    assert render_text("{s|upper}", values) == "ABC"
    assert render_text("{t} {missing}!", values) == "{a} !"  # values are not re-parsed


def test_final_words_are_not_interruptible(pre: DialogEngine) -> None:
    state, actions = pre.start(variables=CALLEE)
    assert actions[0].barge_in is True  # the question may be interrupted
    _, actions = pre.step(state, intent("door"))  # a state that ends
    assert actions[0].barge_in is False
    _, actions = pre.step(state, intent("do_not_call"))  # a handler that hangs up
    assert actions[0].barge_in is False
    _, actions = pre.step(state, intent("agent"))  # a handler that transfers
    assert actions[0].barge_in is False
    _, actions = pre.step(state, NoInput(waited=6))  # a reprompt stays interruptible
    assert all(a.barge_in for a in actions)


def test_state_that_ends_in_a_transfer() -> None:
    text = BARE.replace("on: {go: {hangup: true, outcome: went}}", "on: {go: human}") + (
        "  human:\n    say: q\n    end: transfer\n    transfer: vip\n    reason: asked\n")
    eng = engine_of(text)
    state, _ = eng.start(variables={})
    state, actions = eng.step(state, intent("go"))
    assert kinds(actions) == ["Say", "Transfer"]
    assert (actions[-1].target, actions[-1].reason) == ("vip", "asked")
    assert actions[-1].context["state"] == "human"
    assert state.ended and state.outcome == "transferred"


def test_first_grammar_is_the_first_listening_states() -> None:
    """Servers build each call's recogniser with this grammar up front (cheap for Vosk)."""
    from voicebot.dialog.load import load_plan

    eng = DialogEngine(load_plan(Path(__file__).resolve().parents[1] / "dialplans" / "pre_delivery.yaml"))
    grammar = eng.first_grammar("zh-CN")
    assert grammar is not None and "送货上门" in grammar and "转人工" in grammar
