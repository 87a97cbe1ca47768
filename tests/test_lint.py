"""Lint: each problem code triggered by a small plan and located at the line that causes it."""

from __future__ import annotations

import re
import wave
from pathlib import Path

import pytest

from voicebot.dialog.lint import lint
from voicebot.dialog.load import parse_plan
from voicebot.errors import PlanError

PLANS = Path(__file__).resolve().parent / "plans"
MINIMAL = (PLANS / "minimal.yaml").read_text(encoding="utf-8")
LINE = re.compile(r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): .* \[(?P<code>\w+)\]$")


def edit(*pairs: str, text: str = MINIMAL) -> str:
    """The minimal plan with (old, new) substrings replaced, each of which must exist."""
    for old, new in zip(pairs[::2], pairs[1::2], strict=True):
        assert old in text, old
        text = text.replace(old, new, 1)
    return text


def problems(text: str, *, base_dir: Path | None = None) -> list[tuple[str, str, int]]:
    """(code, severity, line) of every problem: the errors that stop loading, else lint's warnings."""
    try:
        loaded = parse_plan(text, source="p.yaml", base_dir=base_dir)
    except PlanError as err:
        out = []
        for line in err.message.splitlines():
            m = LINE.match(line)
            assert m, f"unlocated: {line}"
            out.append((m["code"], m["sev"], int(m["line"])))
        return out
    return [(p.code, p.severity, p.line) for p in lint(loaded)]


def line_of(text: str, needle: str, after: str | None = None) -> int:
    """1-based line of the first line containing `needle` (after the line containing `after`)."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if after in line) if after else 0
    return next(i for i, line in enumerate(lines[start:], start + 1) if needle in line)


def test_clean_plan_has_no_problems() -> None:
    assert problems(MINIMAL) == []


def test_unknown_goto_state() -> None:
    text = edit("goto: done}", "goto: dne}")
    assert ("unknown_state", "error", line_of(text, "goto: dne")) in problems(text)


def test_unknown_start_state() -> None:
    text = edit("start: ask", "start: asc")
    assert problems(text) == [("unknown_state", "error", line_of(text, "start: asc"))]


def test_unknown_next_state() -> None:
    text = edit("    say: ok\n    end: hangup\n    outcome: confirmed", "    say: ok\n    next: nowhere")
    assert ("unknown_state", "error", line_of(text, "next: nowhere")) in problems(text)


def test_unknown_prompt_in_state_and_handler() -> None:
    text = edit("    say: ok\n", "    say: okay\n", "noinput: [{say: [sorry]", "noinput: [{say: [sory]")
    found = problems(text)
    assert ("unknown_prompt", "error", line_of(text, "say: okay")) in found
    assert ("unknown_prompt", "error", line_of(text, "sory")) in found


def test_unknown_intent_in_expect_and_on() -> None:
    text = edit("expect: [yes, no]", "expect: [yes, no, maybe]",
                "      no: {set", "      maybe: bye\n      no: {set")
    found = problems(text)
    assert ("unknown_intent", "error", line_of(text, "expect:")) in found
    assert ("unknown_intent", "error", line_of(text, "maybe: bye")) in found


def test_unknown_global_intent() -> None:
    text = edit("start: ask", "global:\n  agent: {transfer: support}\nstart: ask")
    assert ("unknown_intent", "error", line_of(text, "agent:")) in problems(text)


def test_captured_handler_without_capture() -> None:
    text = edit("      no: {set", "      captured: done\n      no: {set")
    assert ("unknown_intent", "error", line_of(text, "captured: done")) in problems(text)


def test_unhandled_intent() -> None:
    text = edit('      no: {set: {answer: "no"}, goto: bye}\n', "")
    found = problems(text)
    assert ("unhandled_intent", "error", line_of(text, "expect:")) in found


def test_capture_without_captured_handler() -> None:
    text = edit("    expect: [yes, no]\n", "    expect: [yes, no]\n    capture: {slot: when, type: date}\n")
    assert ("unhandled_intent", "error", line_of(text, "capture:")) in problems(text)


def test_handler_for_intent_not_expected_is_a_warning() -> None:
    text = edit("expect: [yes, no]", "expect: [yes]")
    found = problems(text)
    assert ("handler_unused", "warning", line_of(text, '      no: {set')) in found
    assert all(sev == "warning" for _, sev, _ in found)


@pytest.mark.parametrize("kind", ["noinput", "nomatch"])
def test_missing_noinput_or_nomatch_is_a_warning_on_the_state(kind: str) -> None:
    text = edit(f"    {kind}: [{{say: [sorry], reprompt: true}}]\n", "")
    assert problems(text) == [(f"missing_{kind}", "warning", line_of(text, "  ask:", after="states:"))]


def test_unreachable_state() -> None:
    orphan = "  orphan:\n    say: bye\n    end: hangup\n    outcome: x\n"
    text = edit("  bye:\n    say: bye", orphan + "  bye:\n    say: bye")
    assert problems(text) == [("unreachable", "warning", line_of(text, "orphan:"))]


def test_reachable_only_through_a_global_intent_is_reachable() -> None:
    text = edit("  no:\n", "  agent:\n    phrases: {en-US: [agent]}\n  no:\n",
                "start: ask", "global:\n  agent: help\nstart: ask",
                "  bye:\n    say: bye", "  help:\n    say: bye\n    end: transfer\n    transfer: q\n    outcome: t\n"
                "  bye:\n    say: bye")
    assert problems(text) == []


def test_missing_outcome_is_a_warning() -> None:
    text = edit("    end: hangup\n    outcome: denied\n", "    end: hangup\n")
    assert problems(text) == [("missing_outcome", "warning", line_of(text, "  bye:", after="states:"))]


def test_undefined_template_variable() -> None:
    text = edit("Thank you.", "Thank you, {nmae}.")
    assert problems(text) == [("undefined_variable", "error", line_of(text, "{nmae}"))]


def test_variables_set_captured_or_slots_are_defined() -> None:
    # `answer` is only set by a handler; it may still be used in a prompt.
    text = edit("Thank you.", "Thank you, you said {answer|upper}.")
    assert problems(text) == []


def test_unknown_template_filter() -> None:
    text = edit("{code|digits}", "{code|reverse}")
    assert problems(text) == [("unknown_filter", "error", line_of(text, "{code|reverse}"))]


def test_missing_translation_of_a_prompt() -> None:
    text = edit("languages: [en-US]", "languages: [en-US, zh-CN]")
    found = problems(text)
    assert ("missing_translation", "error", line_of(text, "  ask:")) in found
    assert len([p for p in found if p[0] == "missing_translation"]) == 4  # every prompt


def test_intent_without_phrases_in_a_language_is_a_warning() -> None:
    text = edit("    phrases: {en-US: [\"no\"]}\n    dtmf: [\"2\"]\n", "    phrases: {}\n")
    assert problems(text) == [("missing_translation", "warning", line_of(text, "  no:"))]


def test_prompt_in_undeclared_language() -> None:
    text = edit('    en-US: "Sorry?"', '    en-US: "Sorry?"\n    de-DE: "Bitte?"')
    assert problems(text) == [("unknown_language", "error", line_of(text, "de-DE"))]


def test_dtmf_conflict() -> None:
    text = edit('dtmf: ["2"]', 'dtmf: ["1"]')
    assert problems(text) == [("dtmf_conflict", "error", line_of(text, "  ask:", after="states:"))]


def _write_wav(path: Path) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"\x00\x00" * 800)


def test_recorded_prompts_present_missing_and_escaping(tmp_path: Path) -> None:
    (tmp_path / "prompts").mkdir()
    _write_wav(tmp_path / "prompts" / "hello.wav")
    good = edit('    en-US: "Thank you."', '    en-US: [{wav: prompts/hello.wav}, "Thank you."]')
    assert problems(good, base_dir=tmp_path) == []

    missing = edit('    en-US: "Thank you."', '    en-US: [{wav: prompts/absent.wav}, "Thank you."]')
    assert problems(missing, base_dir=tmp_path) == [("missing_wav", "error", line_of(missing, "absent.wav"))]

    outside = edit('    en-US: "Thank you."', '    en-US: [{wav: ../../etc/passwd}, "Thank you."]')
    assert problems(outside, base_dir=tmp_path) == [("bad_wav", "error", line_of(outside, "passwd"))]


def test_several_errors_are_all_reported_in_line_order() -> None:
    text = edit("goto: done}", "goto: dne}", "Thank you.", "Thank you, {nmae}.", "    say: bye\n", "    say: by\n")
    found = problems(text)
    assert {c for c, _, _ in found} == {"unknown_state", "undefined_variable", "unknown_prompt"}
    lines = [line for _, _, line in found]
    assert lines == sorted(lines)


# --- review regressions: loops, endless retries, escalation, handler exits ---


def test_next_cycle_is_refused_at_load() -> None:
    """States chained by `next:` in a circle would talk forever without listening: an error at load."""
    text = edit("    say: ok\n    end: hangup\n    outcome: confirmed\n", "    say: ok\n    next: bye\n",
                "    say: bye\n    end: hangup\n    outcome: denied", "    say: bye\n    next: done")
    with pytest.raises(PlanError, match=r"\[next_loop\]"):
        parse_plan(text, source="p.yaml")
    assert problems(text) == [("next_loop", "error", line_of(text, "next: bye")),
                              ("next_loop", "error", line_of(text, "next: done"))]


def test_next_chain_without_a_cycle_is_fine() -> None:
    text = edit("    say: ok\n    end: hangup\n    outcome: confirmed\n", "    say: ok\n    next: bye\n")
    assert problems(text) == []


def test_max_failures_without_escalate() -> None:
    text = edit("  timeout: 4", "  timeout: 4\n  max_failures: 3")
    assert problems(text) == [("escalate_missing", "error", line_of(text, "max_failures"))]
    with_escalate = edit("  timeout: 4", "  timeout: 4\n  max_failures: 3\n"
                         "  escalate: {say: [bye], hangup: true, outcome: gave_up}")
    assert problems(with_escalate) == []


@pytest.mark.parametrize("kind", ["noinput", "nomatch"])
def test_last_handler_going_back_to_its_own_state_is_an_endless_retry(kind: str) -> None:
    text = edit(f"    {kind}: [{{say: [sorry], reprompt: true}}]",
                f"    {kind}: [{{say: [sorry], reprompt: true}}, {{say: [sorry], goto: ask}}]")
    assert problems(text) == [("endless_retry", "warning", line_of(text, f"    {kind}:"))]


def test_going_back_to_its_own_state_before_a_final_exit_is_fine() -> None:
    text = edit("    noinput: [{say: [sorry], reprompt: true}]",
                "    noinput: [{say: [sorry], goto: ask}, {say: [bye], hangup: true, outcome: gone}]")
    assert problems(text) == []


def test_handler_with_reprompt_and_goto_is_a_schema_error() -> None:
    text = edit("    noinput: [{say: [sorry], reprompt: true}]",
                "    noinput: [{say: [sorry], reprompt: true, goto: bye}]")
    assert problems(text) == [("schema", "error", line_of(text, "reprompt: true, goto"))]
