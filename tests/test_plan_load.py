"""Loading dialog plans: shipped plans load clean; every kind of broken file fails with a located error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from voicebot.dialog.lint import lint
from voicebot.dialog.load import MAX_PLAN_BYTES, load_plan, parse_plan
from voicebot.errors import PlanError

REPO = Path(__file__).resolve().parents[1]
PLANS = REPO / "tests" / "plans"
SHIPPED = sorted((REPO / "dialplans").glob("*.yaml"))
MINIMAL = (PLANS / "minimal.yaml").read_text(encoding="utf-8")
LINE = re.compile(
    r"^(?P<file>[^:]+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): (?P<rest>.*) \[(?P<code>\w+)\]$"
)


def edit(old: str, new: str) -> str:
    """The minimal plan with one exact substring replaced (fails loudly if the anchor moved)."""
    assert old in MINIMAL, old
    return MINIMAL.replace(old, new, 1)


def errors_of(text: str, source: str = "m.yaml") -> list[re.Match]:
    """Parse `text`, expect PlanError, and return its lines parsed as file:line:col: ... [code]."""
    with pytest.raises(PlanError) as info:
        parse_plan(text, source=source)
    lines = info.value.message.splitlines()
    parsed = [LINE.match(line) for line in lines]
    assert all(parsed), f"unlocated error line in:\n{info.value.message}"
    assert info.value.code == "plan_invalid"
    return parsed


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing `needle`."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_shipped_plans_load_and_lint_clean(path: Path) -> None:
    loaded = load_plan(path)
    assert lint(loaded) == []
    assert loaded.source == str(path)
    assert loaded.base_dir == path.parent
    assert re.fullmatch(r".+\+[0-9a-f]{8}", loaded.version)


def test_shipped_plans_exist() -> None:
    names = {p.name for p in SHIPPED}
    assert {"pre_delivery.yaml", "delivery_ko.yaml"} <= names


def test_minimal_test_plan_is_clean() -> None:
    loaded = load_plan(PLANS / "minimal.yaml")
    assert lint(loaded) == []
    assert set(loaded.plan.states) == {"ask", "done", "bye"}


def test_version_hash_changes_with_content() -> None:
    a = parse_plan(MINIMAL)
    b = parse_plan(MINIMAL + "\n# an edit\n")
    assert a.plan == b.plan
    assert a.version != b.version


def test_yaml_syntax_error_is_located() -> None:
    text = edit("languages: [en-US]\n", "languages: [en-US\n")
    (err,) = errors_of(text)
    assert err["file"] == "m.yaml"
    assert err["code"] == "yaml"
    # The unclosed flow sequence is noticed at the next key, on the following line.
    assert int(err["line"]) == line_of(text, "languages:") + 1


def test_tab_indentation_is_located() -> None:
    (err,) = errors_of("plan: a\n\tlanguages: [en-US]\n")
    assert (err["line"], err["col"], err["code"]) == ("2", "1", "yaml")


def test_duplicate_key_is_an_error_with_its_line() -> None:
    text = edit("  bye:\n    en-US: \"Goodbye.\"\n", "  bye:\n    en-US: \"Goodbye.\"\n  ok:\n    en-US: \"Again.\"\n")
    (err,) = errors_of(text)
    assert err["code"] == "yaml"
    assert "duplicate key" in err["rest"]
    assert int(err["line"]) == line_of(text, "Again.") - 1


def test_unknown_field_names_field_line_and_column() -> None:
    text = edit("    expect: [yes, no]\n", "    expct: [yes, no]\n")
    (err,) = errors_of(text)
    assert "unknown field 'expct'" in err["rest"]
    assert "states.ask.expct" in err["rest"]
    assert (int(err["line"]), int(err["col"])) == (line_of(text, "expct:"), 5)


def test_wrong_type_is_located_and_shows_the_value() -> None:
    text = edit("  timeout: 4\n", "  timeout: abc\n")
    (err,) = errors_of(text)
    assert "defaults.timeout" in err["rest"]
    assert "'abc'" in err["rest"]
    assert (int(err["line"]), int(err["col"])) == (line_of(text, "timeout: abc"), 3)


def test_state_timeout_out_of_range() -> None:
    text = edit("    expect: [yes, no]\n", "    expect: [yes, no]\n    timeout: 0\n")
    (err,) = errors_of(text)
    assert "states.ask.timeout" in err["rest"]
    assert int(err["line"]) == line_of(text, "timeout: 0")


def test_state_with_next_and_expect() -> None:
    text = edit("    say: ask\n    expect", "    say: ask\n    next: done\n    expect")
    (err,) = errors_of(text)
    assert "states.ask" in err["rest"]
    assert "exactly one of" in err["rest"]
    assert int(err["line"]) == line_of(text, "states:") + 1  # the `ask:` key of the state


def test_end_transfer_needs_a_queue() -> None:
    text = edit("    end: hangup\n    outcome: denied", "    end: transfer\n    outcome: denied")
    (err,) = errors_of(text)
    assert "transfer: <queue>" in err["rest"]
    assert "states.bye" in err["rest"]


def test_handler_with_goto_and_hangup() -> None:
    text = edit('{set: {answer: "yes"}, goto: done}', "{goto: done, hangup: true}")
    (err,) = errors_of(text)
    assert "states.ask.on.yes" in err["rest"]
    assert "goto, hangup" in err["rest"]
    assert (int(err["line"]), int(err["col"])) == (line_of(text, "hangup: true}"), 7)


def test_repeat_with_goto_rejected() -> None:
    text = edit('{set: {answer: "yes"}, goto: done}', "{repeat: true, goto: done}")
    (err,) = errors_of(text)
    assert "repeat" in err["rest"]


def test_missing_start() -> None:
    (err,) = errors_of(edit("start: ask\n", ""))
    assert "required field 'start' is missing" in err["rest"]
    assert int(err["line"]) >= 1


def test_bad_language_code_is_located_at_the_item() -> None:
    text = edit("languages: [en-US]", "languages: [english]")
    (err,) = errors_of(text)
    assert "languages.0" in err["rest"]
    assert "'english'" in err["rest"]
    assert (int(err["line"]), int(err["col"])) == (line_of(text, "languages:"), len("languages: [") + 1)


def test_bad_intent_name() -> None:
    text = edit("  no:\n    phrases", "  no-thanks:\n    phrases")
    (err,) = errors_of(text)
    assert "intents.no-thanks" in err["rest"]
    assert int(err["line"]) == line_of(text, "no-thanks:")


def test_dtmf_key_must_be_a_string() -> None:
    text = edit('dtmf: ["1"]', "dtmf: [1]")
    (err,) = errors_of(text)
    assert "intents.yes.dtmf.0" in err["rest"]
    assert "valid string" in err["rest"]


@pytest.mark.parametrize("text", ["- a\n- b\n", "just a string\n", "42\n"])
def test_top_level_must_be_a_mapping(text: str) -> None:
    (err,) = errors_of(text)
    assert "must be a YAML mapping" in err["rest"]
    assert (err["line"], err["col"]) == ("1", "1")


@pytest.mark.parametrize("text", ["", "# only a comment\n", "   \n"])
def test_empty_file(text: str) -> None:
    (err,) = errors_of(text)
    assert "mapping" in err["rest"]


def test_oversized_text_is_refused() -> None:
    text = MINIMAL + "#" * (MAX_PLAN_BYTES + 1) + "\n"
    with pytest.raises(PlanError, match="larger than"):
        parse_plan(text, source="big.yaml")


def test_oversized_file_is_refused_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.yaml"
    path.write_text(MINIMAL + "#" * (MAX_PLAN_BYTES + 1) + "\n", encoding="utf-8")
    with pytest.raises(PlanError, match="larger than"):
        load_plan(path)


def test_alias_bomb_is_refused_quickly() -> None:
    # Nine levels of nine aliases each would expand to 387 million nodes.
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{chr(98 + i)}: &{chr(98 + i)} [{', '.join([f'*{chr(97 + i)}'] * 9)}]\n" for i in range(8)
    )
    with pytest.raises(PlanError, match="too_large"):
        parse_plan(text, source="bomb.yaml")


def test_aliases_of_small_blocks_still_work() -> None:
    text = edit("    noinput: [{say: [sorry], reprompt: true}]\n    nomatch: [{say: [sorry], reprompt: true}]",
                "    noinput: &retry [{say: [sorry], reprompt: true}]\n    nomatch: *retry")
    loaded = parse_plan(text)
    assert loaded.plan.states["ask"].nomatch == loaded.plan.states["ask"].noinput


def test_multiple_errors_each_on_its_own_line() -> None:
    text = edit("    expect: [yes, no]\n", "    expct: [yes, no]\n").replace("  timeout: 4\n", "  timeout: abc\n")
    text = text.replace("languages: [en-US]", "languages: [english]")
    errs = errors_of(text)
    assert len(errs) == 3
    found = {(e["rest"].split(":")[0], int(e["line"])) for e in errs}
    assert found == {
        ("languages.0", line_of(text, "languages:")),
        ("defaults.timeout", line_of(text, "timeout: abc")),
        ("states.ask.expct", line_of(text, "expct:")),
    }


def test_missing_file_and_undecodable_file(tmp_path: Path) -> None:
    with pytest.raises(PlanError, match="no such plan file"):
        load_plan(tmp_path / "absent.yaml")
    bad = tmp_path / "latin1.yaml"
    bad.write_bytes("plan: caf\xe9\n".encode("latin-1"))
    with pytest.raises(PlanError, match="cannot read plan"):
        load_plan(bad)


def test_source_name_appears_in_errors(tmp_path: Path) -> None:
    path = tmp_path / "typo.yaml"
    path.write_text(edit("    expect: [yes, no]\n", "    expct: [yes, no]\n"), encoding="utf-8")
    with pytest.raises(PlanError) as info:
        load_plan(path)
    assert info.value.message.startswith(f"{path}:")
