"""Diagrams of a plan: Mermaid text, Graphviz DOT, and SVG rendered by the real `dot`."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from voicebot.dialog import diagram
from voicebot.dialog.load import load_plan, parse_plan

REPO = Path(__file__).resolve().parents[1]
SHIPPED = sorted((REPO / "dialplans").glob("*.yaml"))
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")


def _node_names(text: str) -> dict[str, str]:
    """Mermaid node id -> label."""
    return {m[1]: m[2] for m in re.finditer(r'^\s+(\w+)[\[({]+"([^"]*)"', text, re.M)}


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_mermaid_has_every_state_and_intent_edge(path: Path) -> None:
    plan = load_plan(path).plan
    text = diagram.mermaid(plan)
    assert text.startswith("flowchart TD\n")
    names = _node_names(text)
    assert set(plan.states) <= set(names.values())
    edges = {(names[a], label, names[b]) for a, label, b in
             re.findall(r'^\s+(\w+) -- "([^"]*)" --> (\w+)$', text, re.M)}
    for sname, state in plan.states.items():
        for intent, handler in state.on.items():
            if handler.goto:
                assert (sname, intent, handler.goto) in edges
    for intent, handler in plan.global_.items():
        if not (handler.goto or handler.transfer or handler.hangup):
            continue  # `repeat` stays in the state: no edge to draw
        assert any(a == "(any state)" and label == intent for a, label, _ in edges)


def test_mermaid_of_pre_delivery_shows_ends_and_escalation() -> None:
    text = diagram.mermaid(load_plan(REPO / "dialplans" / "pre_delivery.yaml").plan)
    for node in ("hangup:door_delivery", "hangup:refused", "transfer:delivery_support", "hangup:default_door"):
        assert f'"{node}"' in text
    assert '-- "5 failures" -->' in text
    assert '-- "noinput 2" -->' in text


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_dot_names_every_state(path: Path) -> None:
    plan = load_plan(path).plan
    text = diagram.dot(plan)
    assert text.startswith(f'digraph "{plan.plan}" {{') and text.rstrip().endswith("}")
    for sname in plan.states:
        assert f'label="{sname}"' in text


@needs_dot
@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_svg_renders_with_graphviz(path: Path) -> None:
    plan = load_plan(path).plan
    svg = diagram.svg(plan)
    assert svg.lstrip().startswith(("<svg", "<?xml"))
    assert "</svg>" in svg
    assert f">{plan.start}</text>" in svg


@needs_dot
def test_free_text_with_quotes_does_not_break_the_diagram() -> None:
    text = (REPO / "tests" / "plans" / "minimal.yaml").read_text(encoding="utf-8")
    plan = parse_plan(text.replace("outcome: denied", 'outcome: "said \\"no\\" \\\\ <b>&"')).plan
    assert '"hangup:said #quot;no#quot;' in diagram.mermaid(plan)
    assert 'label="hangup:said \\"no\\" \\\\ <b>&"' in diagram.dot(plan)
    svg = diagram.svg(plan)  # graphviz refused the unescaped label before
    assert "said &quot;no&quot;" in svg or 'said "no"' in svg
