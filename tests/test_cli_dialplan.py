"""`voicebot dialplan check/show/schema`: as a real subprocess once, through typer's runner for the rest."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voicebot.cli import app
from voicebot.dialog.lint import lint
from voicebot.dialog.load import load_plan

REPO = Path(__file__).resolve().parents[1]
PLANS = REPO / "tests" / "plans"
SHIPPED = sorted((REPO / "dialplans").glob("*.yaml"))
LOCATED = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): .+ \[(?P<code>\w+)\]$")
WIDE = {"COLUMNS": "1000"}  # rich wraps at 80 columns when it is not writing to a terminal


def run(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m voicebot ARGS` in the repo root, as a user would run it."""
    return subprocess.run([sys.executable, "-m", "voicebot", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=60, env={**os.environ, **(env or {})}, check=False)


def invoke(*args: str):
    return CliRunner().invoke(app, list(args), env=WIDE)


def located(output: str) -> list[re.Match]:
    return [m for line in output.splitlines() if (m := LOCATED.match(line))]


def test_check_broken_plan_subprocess() -> None:
    done = run("dialplan", "check", "tests/plans/broken.yaml", env=WIDE)
    assert done.returncode == 1, done.stderr
    found = {(m["code"], int(m["line"]), int(m["col"])) for m in located(done.stdout)}
    assert found == {
        ("undefined_variable", 13, 5),
        ("dtmf_conflict", 18, 3),
        ("unknown_intent", 20, 23),
        ("unknown_state", 22, 7),
        ("unknown_prompt", 23, 12),
        ("unknown_intent", 24, 7),
    }
    assert all(m["file"] == "tests/plans/broken.yaml" and m["sev"] == "error" for m in located(done.stdout))


def test_check_keeps_each_problem_on_one_line_without_a_terminal() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    done = subprocess.run([sys.executable, "-m", "voicebot", "dialplan", "check", "tests/plans/broken.yaml"],
                          cwd=REPO, capture_output=True, text=True, timeout=60, env=env, check=False)
    lines = [line for line in done.stdout.splitlines() if line.strip()]
    assert len(lines) == 6
    assert all(LOCATED.match(line) for line in lines), done.stdout


def test_check_clean_plans_exit_zero() -> None:
    result = invoke("dialplan", "check", *map(str, SHIPPED), str(PLANS / "minimal.yaml"))
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(SHIPPED) + 1


def test_check_warnings_only_fails_but_the_plan_loads() -> None:
    path = PLANS / "warnings.yaml"
    loaded = load_plan(path)  # warnings do not stop a plan from loading
    assert {p.code for p in lint(loaded)} == {"unreachable", "missing_noinput"}
    result = invoke("dialplan", "check", str(path))
    assert result.exit_code == 1
    found = {(m["code"], m["sev"], int(m["line"])) for m in located(result.output)}
    assert found == {("missing_noinput", "warning", 12), ("unreachable", "warning", 21)}
    assert ": ok (" not in result.output


def test_check_one_bad_among_good_fails_and_reports_all() -> None:
    result = invoke("dialplan", "check", str(SHIPPED[0]), str(PLANS / "broken.yaml"), str(PLANS / "minimal.yaml"))
    assert result.exit_code == 1
    assert result.output.count(": ok (") == 2
    assert len(located(result.output)) == 6


def test_check_schema_error_and_missing_file(tmp_path: Path) -> None:
    typo = tmp_path / "typo.yaml"
    typo.write_text((PLANS / "minimal.yaml").read_text(encoding="utf-8").replace("expect:", "expct:"),
                    encoding="utf-8")
    result = invoke("dialplan", "check", str(typo), str(tmp_path / "absent.yaml"))
    assert result.exit_code == 1
    (m,) = located(result.output)
    assert m["file"] == str(typo) and m["code"] == "schema"
    assert "unknown field 'expct'" in result.output
    assert "no such plan file" in result.output


def test_show_mermaid_and_dot() -> None:
    result = invoke("dialplan", "show", "dialplans/pre_delivery.yaml")
    assert result.exit_code == 0
    assert result.output.startswith("flowchart TD") and '"ask_time"' in result.output
    result = invoke("dialplan", "show", "dialplans/pre_delivery.yaml", "--format", "dot")
    assert result.exit_code == 0 and result.output.startswith('digraph "pre_delivery"')


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_show_svg_to_a_file(tmp_path: Path) -> None:
    out = tmp_path / "plan.svg"
    result = invoke("dialplan", "show", "dialplans/delivery_ko.yaml", "-f", "svg", "-o", str(out))
    assert result.exit_code == 0, result.output
    assert out.read_text(encoding="utf-8").lstrip().startswith(("<svg", "<?xml"))


def test_show_bad_format_and_bad_plan() -> None:
    result = invoke("dialplan", "show", "dialplans/pre_delivery.yaml", "--format", "png")
    assert result.exit_code == 2 and "unknown format" in result.output
    result = invoke("dialplan", "show", str(PLANS / "broken.yaml"))
    assert result.exit_code == 1 and "unknown_state" in result.output


def test_schema_is_json_with_states() -> None:
    result = invoke("dialplan", "schema")
    assert result.exit_code == 0
    schema = json.loads(result.output)
    assert "states" in schema["properties"] and "plan" in schema["properties"]
    assert "global" in schema["properties"]  # the YAML key, not the Python field name
    assert set(schema["required"]) >= {"plan", "languages", "start", "states"}


def test_schema_matches_the_shipped_copy(tmp_path: Path) -> None:
    shipped = REPO / "docs" / "dialplan.schema.json"
    if not shipped.is_file():
        pytest.skip("docs/dialplan.schema.json is not in this checkout")
    out = tmp_path / "schema.json"
    assert invoke("dialplan", "schema", "-o", str(out)).exit_code == 0
    assert json.loads(out.read_text(encoding="utf-8")) == json.loads(shipped.read_text(encoding="utf-8")), (
        "docs/dialplan.schema.json is stale: regenerate with `voicebot dialplan schema -o docs/dialplan.schema.json`")


@pytest.mark.parametrize("path", [*SHIPPED, PLANS / "minimal.yaml"], ids=lambda p: p.name)
def test_schema_validates_plans(path: Path) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    from ruamel.yaml import YAML

    schema = json.loads(invoke("dialplan", "schema").output)
    jsonschema.validate(YAML(typ="safe").load(path.read_text(encoding="utf-8")), schema)
