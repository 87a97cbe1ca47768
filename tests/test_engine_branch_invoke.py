"""Branch states, service calls (invoke) and business hours: engine steps, load errors, lint, diagram, schema."""

from __future__ import annotations

import re

import pytest

from voicebot.dialog.diagram import dot, mermaid
from voicebot.dialog.engine import DialogEngine
from voicebot.dialog.lint import lint
from voicebot.dialog.load import parse_plan
from voicebot.dialog.schema import json_schema
from voicebot.errors import DialogError, PlanError
from voicebot.events import Hangup, Intent, Invoke, Listen, Say, ServiceResult, Transfer

PLAN = """
plan: flow
languages: [en-US]
variables:
  tier: {required: false, default: ""}
  vip: {required: false, default: ""}
  code: {required: false, default: ""}
intents:
  go: {phrases: {en-US: [go]}}
prompts:
  gold: {en-US: "gold"}
  plain: {en-US: "plain"}
  wait: {en-US: "one moment"}
  found: {en-US: "status {parcel_status}, at {parcel_where}"}
  missing: {en-US: "not found"}
  broken: {en-US: "broken"}
  ask: {en-US: "ask"}
  n: {en-US: "again"}
start: route
states:
  route:
    branch:
      - {when: {tier: gold, vip: "true"}, goto: gold}
      - {when: {tier: gold}, goto: plain}
      - {goto: ask}
  gold: {say: gold, next: lookup}
  plain: {say: plain, end: hangup, outcome: plain}
  ask:
    say: ask
    expect: [go]
    on: {go: lookup}
    noinput: [{say: n, reprompt: true}]
    nomatch: [{say: n, reprompt: true}]
  lookup:
    say: wait
    invoke:
      service: parcels.lookup
      args: {tracking_number: "{code}", fixed: "x"}
      into: parcel
      timeout: 2.5
    on:
      ok: {say: found, hangup: true, outcome: found}
      not_found: {say: missing, hangup: true, outcome: missing}
      error: {say: broken, transfer: support, reason: service_error, outcome: transferred}
"""


def engine(text: str = PLAN) -> DialogEngine:
    return DialogEngine(parse_plan(text, source="flow.yaml"))


def test_branch_first_match_wins_and_booleans_compare_as_true():
    eng = engine()
    state, actions = eng.start(variables={"tier": "gold", "vip": True, "code": "SF1"})
    # gold, then straight on into the invoke: the engine asks for the service and waits.
    assert [type(a) for a in actions] == [Say, Say, Invoke]
    assert state.state == "lookup"
    assert actions[-1] == Invoke(service="parcels.lookup", args={"tracking_number": "SF1", "fixed": "x"},
                                 into="parcel", timeout=2.5)


@pytest.mark.parametrize(("variables", "first"), [({"tier": "gold"}, "plain"), ({}, "ask"),
                                                  ({"tier": "silver", "vip": "true"}, "ask")])
def test_branch_falls_through_to_later_cases(variables, first):
    _, actions = engine().start(variables=variables)
    assert actions[0].prompt_id == first


def test_service_result_values_land_under_into_and_select_the_handler():
    eng = engine()
    state, _ = eng.start(variables={"tier": "gold", "vip": "true", "code": "SF1"})
    result = ServiceResult(service="parcels.lookup", status="ok",
                           values={"status": "delivered", "where": "Shanghai", "bad key!": "ignored"})
    state, actions = eng.step(state, result)
    assert actions[0].text == "status delivered, at Shanghai"
    assert actions[-1] == Hangup(reason="found")
    assert state.outcome == "found" and state.variables["parcel_status"] == "delivered"
    assert not any("bad" in k for k in state.variables)


def test_not_found_and_error_results():
    eng = engine()
    start, _ = eng.start(variables={"tier": "gold", "vip": "true"})
    state, actions = eng.step(start, ServiceResult(service="parcels.lookup", status="not_found"))
    assert state.outcome == "missing" and actions[0].prompt_id == "missing"
    state, actions = eng.step(start, ServiceResult(service="parcels.lookup", status="error", detail="timeout"))
    assert isinstance(actions[-1], Transfer) and actions[-1].reason == "service_error"
    # A status the engine does not know is treated as an error, never a crash.
    state, actions = eng.step(start, ServiceResult(service="parcels.lookup", status="weird"))
    assert state.outcome == "transferred"


def test_not_found_without_its_own_handler_runs_error():
    eng = engine(PLAN.replace("      not_found: {say: missing, hangup: true, outcome: missing}\n", ""))
    start, _ = eng.start(variables={"tier": "gold", "vip": "true"})
    state, _ = eng.step(start, ServiceResult(service="parcels.lookup", status="not_found"))
    assert state.outcome == "transferred"


def test_service_result_outside_an_invoke_state_and_intents_inside_one_are_refused():
    eng = engine()
    asking, actions = eng.start(variables={})
    assert isinstance(actions[-1], Listen)
    with pytest.raises(DialogError) as info:
        eng.step(asking, ServiceResult(service="parcels.lookup", status="ok"))
    assert info.value.code == "not_invoking"
    waiting, _ = eng.step(asking, Intent(name="go", confidence=1.0))
    with pytest.raises(DialogError) as info:
        eng.step(waiting, Intent(name="go", confidence=1.0))
    assert info.value.code == "not_listening"


def test_business_hours_are_validated_and_make_in_business_hours_known():
    text = PLAN.replace("start: route", 'business_hours: {timezone: Asia/Shanghai, hours: {mon-fri: "09:00-18:00"}}\n'
                        "start: route").replace("{tier: gold}, goto: plain", "{in_business_hours: 'no'}, goto: plain")
    loaded = parse_plan(text, source="flow.yaml")
    assert lint(loaded) == []
    assert loaded.plan.business_hours.hours == {"mon-fri": "09:00-18:00"}


def _errors(text: str) -> list[str]:
    with pytest.raises(PlanError) as info:
        parse_plan(text, source="flow.yaml")
    return info.value.message.splitlines()


def _line(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


def test_branch_without_a_fallback_is_a_located_error():
    text = PLAN.replace("      - {goto: ask}\n", "")
    [error] = _errors(text)
    assert error.startswith(f"flow.yaml:{_line(text, '    branch:')}:")
    assert "the last `branch` case must have no `when:`" in error


def test_unknown_targets_of_branch_and_invoke_are_located():
    text = PLAN.replace("{goto: ask}", "{goto: nowhere}").replace("not_found: {say: missing, hangup: true, "
                                                                   "outcome: missing}", "not_found: limbo")
    errors = _errors(text)
    assert any(e.startswith(f"flow.yaml:{_line(text, 'goto: nowhere')}:") and "goto 'nowhere': no such state" in e
               for e in errors)
    assert any(e.startswith(f"flow.yaml:{_line(text, 'not_found: limbo')}:") and "'limbo': no such state" in e
               for e in errors)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("  gold: {say: gold, next: lookup}", "  gold: {say: gold, next: lookup, branch: [{goto: ask}]}",
         "it has next, branch"),
        ("      error: {say: broken, transfer: support, reason: service_error, outcome: transferred}\n", "",
         "no `on: error:` handler"),
        ("      ok: {say: found, hangup: true, outcome: found}", "      ok: {say: found}",
         "`on: ok` needs goto, transfer or hangup"),
        ("      ok: {say: found, hangup: true, outcome: found}", "      go: {hangup: true}",
         "handles only ok, not_found, error"),
        ("service: parcels.lookup", "service: Parcels Lookup", "String should match pattern"),
        ("start: route", "business_hours: {timezone: Mars/Olympus, hours: 09:00-18:00}\nstart: route",
         "unknown time zone 'Mars/Olympus'"),
        ("start: route", "business_hours: {timezone: UTC, hours: {mon-fri: 18:00-09:00}}\nstart: route",
         "ends before it starts"),
        ("  gold: {say: gold, next: lookup}", "  gold: {say: gold, next: route}", "can lead back to 'route'"),
    ],
)
def test_bad_branch_invoke_and_hours_blocks_fail_to_load(old, new, message):
    assert old in PLAN
    errors = _errors(PLAN.replace(old, new))
    assert any(message in e and re.match(r"flow\.yaml:\d+:\d+: error: ", e) for e in errors), errors


def test_undefined_variables_in_conditions_and_arguments_are_errors():
    text = PLAN.replace("{tier: gold}, goto: plain", "{tierr: gold}, goto: plain").replace(
        '"{code}"', '"{cod}"')
    errors = _errors(text)
    assert errors[0].startswith(f"flow.yaml:{_line(text, 'tierr')}:")
    assert "states.route.branch.1.when.tierr: 'tierr' is never declared" in errors[0]
    assert "states.lookup.invoke.args.tracking_number: {cod} is never declared" in errors[1]
    # in_business_hours is known only to a plan with business hours.
    hours = PLAN.replace("{tier: gold}, goto: plain", "{in_business_hours: 'yes'}, goto: plain")
    assert "'in_business_hours' is never declared" in _errors(hours)[0]


def test_diagram_draws_branch_cases_and_service_results():
    plan = parse_plan(PLAN, source="flow.yaml").plan
    chart = mermaid(plan)
    assert 's0{"route"}' in chart
    assert '"tier=gold, vip=true"' in chart and '-- "else" -->' in chart
    assert '[("lookup")]' in chart and '-- "not_found" -->' in chart
    assert "shape=diamond" in dot(plan) and "shape=cylinder" in dot(plan)


def test_schema_describes_branch_invoke_and_business_hours():
    schema = json_schema()
    state = schema["$defs"]["State"]["properties"]
    assert {"branch", "invoke"} <= set(state)
    assert "business_hours" in schema["properties"]


def test_free_text_slot_takes_what_was_said_but_a_strong_intent_still_wins():
    from voicebot.intent import Expectation, IntentSpec, SlotSpec, grammar, match
    from voicebot.slots import extract

    assert extract("text", "  三天了   还没到 ") == "三天了 还没到"
    assert extract("text", "呃 那个") is None and extract("text", "x" * 400) == "x" * 300
    expectation = Expectation(intents=(IntentSpec("agent", ("转人工",)),), capture=SlotSpec("details", "text"))
    assert match("快递员态度很差", expectation).slots == {"details": "快递员态度很差"}
    assert match("转人工", expectation).name == "agent"
    assert grammar(expectation) == ()  # free decoding: a description is not in any phrase list
