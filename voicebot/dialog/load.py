"""Loading dialog plans from YAML, with errors that name file, line, column and field."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import MarkedYAMLError, YAMLError

from ..errors import PlanError
from .plan import Plan

MAX_PLAN_BYTES = 1_000_000
MAX_FLOW_DEPTH = 64  # a plan is hand-written; anything bigger is a mistake or an attack
# YAML aliases can make a few bytes expand into billions of nodes ("billion laughs"); real plans have hundreds.
MAX_PLAN_NODES = 100_000

Path_ = tuple[str | int, ...]


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a plan, located in its file."""

    code: str
    message: str
    path: Path_ = ()
    line: int = 0
    column: int = 0
    severity: str = "error"  # "error" stops the plan loading; "warning" only fails `dialplan check`

    def format(self, source: str) -> str:
        """`file:line:col: field: message [code]`, the form editors and CI understand."""
        where = f"{source}:{self.line}:{self.column}" if self.line else source
        dotted = ".".join(str(p) for p in self.path)
        return f"{where}: {self.severity}: {dotted + ': ' if dotted else ''}{self.message} [{self.code}]"


@dataclass(frozen=True)
class LoadedPlan:
    """A validated plan with where it came from and where each field sits in its file."""

    plan: Plan
    source: str
    base_dir: Path
    digest: str
    positions: dict[Path_, tuple[int, int]] = field(default_factory=dict, repr=False, compare=False)

    def locate(self, path: Path_) -> tuple[int, int]:
        """Line and column (1-based) of the deepest known node on `path`."""
        for end in range(len(path), -1, -1):
            if (pos := self.positions.get(tuple(path[:end]))) is not None:
                return pos
        return (0, 0)

    @property
    def version(self) -> str:
        """The plan's declared version plus a short content hash, so edits are never confused."""
        return f"{self.plan.version}+{self.digest[:8]}"


class _TooManyNodes(Exception):
    """The document expands to more than MAX_PLAN_NODES nodes."""


def _positions(node: Any, path: Path_ = (), out: dict | None = None) -> dict[Path_, tuple[int, int]]:
    """Map every field path in a ruamel document to its 1-based (line, column)."""
    out = {} if out is None else out
    if len(out) > MAX_PLAN_NODES:
        raise _TooManyNodes
    if isinstance(node, CommentedMap):
        if not path:
            out[()] = (node.lc.line + 1, node.lc.col + 1)
        for key in node:
            line, col = node.lc.key(key)
            out[(*path, str(key))] = (line + 1, col + 1)
            _positions(node[key], (*path, str(key)), out)
    elif isinstance(node, CommentedSeq):
        for i, item in enumerate(node):
            line, col = node.lc.item(i)
            out[(*path, i)] = (line + 1, col + 1)
            _positions(item, (*path, i), out)
    return out


def _plain(node: Any) -> Any:
    """ruamel's round-trip containers as plain dicts and lists, keys as strings."""
    if isinstance(node, dict):
        return {str(k): _plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [_plain(v) for v in node]
    return node


def _data_path(data: Any, loc: tuple[Any, ...]) -> Path_:
    """The part of a pydantic error location that exists in the data (drops union/type tags)."""
    path: list[str | int] = []
    node = data
    for part in loc:
        if isinstance(node, dict) and str(part) in node:
            node = node[str(part)]
            path.append(str(part))
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
            path.append(part)
    return tuple(path)


def _validation_problems(err: ValidationError, data: Any) -> list[Problem]:
    """Turn pydantic's errors into located problems, one per distinct field."""
    problems: list[Problem] = []
    seen: set[tuple[Path_, str]] = set()
    for e in err.errors(include_url=False):
        path = _data_path(data, e["loc"])
        message = e["msg"].removeprefix("Value error, ")
        if e["type"] == "missing":
            message = f"required field '{e['loc'][-1]}' is missing"
        elif e["type"] == "extra_forbidden":
            message = f"unknown field '{e['loc'][-1]}'"
        elif "input" in e and e["type"] not in ("value_error",) and not isinstance(e["input"], dict | list):
            message += f" (got {e['input']!r})"
        if (path, message) in seen:
            continue
        seen.add((path, message))
        problems.append(Problem(code="schema", message=message, path=path))
    return problems


def _flow_depth(text: str) -> int:
    """Deepest nesting of [ and { (brackets inside prompt text count too: harmless, the bound is generous)."""
    depth = deepest = 0
    for ch in text:
        if ch in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif ch in "]}" and depth:
            depth -= 1
    return deepest


def parse_plan(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> LoadedPlan:
    """Parse and validate a plan from YAML text; raise PlanError listing every problem found."""
    from .lint import lint  # lint reads LoadedPlan; imported here to keep the modules acyclic

    if len(text.encode()) > MAX_PLAN_BYTES:
        raise PlanError(f"{source}: plan is larger than {MAX_PLAN_BYTES} bytes")
    if _flow_depth(text) > MAX_FLOW_DEPTH:
        # ruamel takes seconds on deeply nested flow YAML before it fails: refuse it up front.
        raise PlanError(f"{source}:1:1: error: the plan is nested more than {MAX_FLOW_DEPTH} levels [too_large]")
    yaml = YAML(typ="rt")
    yaml.allow_duplicate_keys = False
    try:
        doc = yaml.load(text)
    except RecursionError as err:
        raise PlanError(f"{source}:1:1: error: the plan is nested too deeply [too_large]") from err
    except MarkedYAMLError as err:
        mark = err.problem_mark
        where = f"{source}:{mark.line + 1}:{mark.column + 1}" if mark else source
        raise PlanError(f"{where}: error: YAML syntax: {err.problem or err} [yaml]") from err
    except YAMLError as err:
        raise PlanError(f"{source}: error: YAML syntax: {err} [yaml]") from err
    if not isinstance(doc, CommentedMap):
        raise PlanError(f"{source}:1:1: error: a plan must be a YAML mapping (plan:, languages:, states: ...) [schema]")
    try:
        positions = _positions(doc)
        data = _plain(doc)
    except _TooManyNodes as err:
        raise PlanError(f"{source}: error: plan has more than {MAX_PLAN_NODES} fields and items "
                        "once YAML aliases are expanded [too_large]") from err
    except RecursionError as err:
        raise PlanError(f"{source}:1:1: error: the plan is nested too deeply [too_large]") from err
    try:
        plan = Plan.model_validate(data)
    except ValidationError as err:
        problems = _validation_problems(err, data)
        located = [_locate(p, positions) for p in problems]
        raise PlanError("\n".join(p.format(source) for p in located)) from err
    loaded = LoadedPlan(
        plan=plan,
        source=source,
        base_dir=base_dir or Path("."),
        digest=hashlib.sha256(text.encode()).hexdigest(),
        positions=positions,
    )
    errors = [p for p in lint(loaded) if p.severity == "error"]
    if errors:
        raise PlanError("\n".join(p.format(source) for p in errors))
    return loaded


def _locate(problem: Problem, positions: dict[Path_, tuple[int, int]]) -> Problem:
    """Fill in a problem's line and column from the document positions."""
    path = problem.path
    for end in range(len(path), -1, -1):
        if (pos := positions.get(tuple(path[:end]))) is not None:
            return Problem(problem.code, problem.message, path, pos[0], pos[1], problem.severity)
    return problem


def read_plan_text(path: Path) -> str:
    """Read a plan file with a size bound and a clear error."""
    try:
        size = path.stat().st_size
        if size > MAX_PLAN_BYTES:
            raise PlanError(f"{path}: plan is larger than {MAX_PLAN_BYTES} bytes")
        return path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise PlanError(f"{path}: no such plan file") from err
    except (OSError, UnicodeDecodeError) as err:
        raise PlanError(f"{path}: cannot read plan: {err}") from err


def load_plan(path: str | Path) -> LoadedPlan:
    """Load and validate a plan file (blocking: call it off the event loop in servers)."""
    path = Path(path)
    return parse_plan(read_plan_text(path), source=str(path), base_dir=path.resolve().parent)
