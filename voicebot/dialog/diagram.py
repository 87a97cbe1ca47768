"""Draws a plan's flow: Mermaid text for docs, Graphviz DOT (and SVG when `dot` is installed)."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator

from ..errors import VoicebotError
from .plan import Handler, Plan

_GLOBAL = "(any state)"


def _dq(text: str) -> str:
    """Text safe inside a DOT double-quoted string (outcomes and queues are free text)."""
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _mq(text: str) -> str:
    """Text safe inside a Mermaid quoted label."""
    return text.replace('"', "#quot;")


def _edges(plan: Plan) -> Iterator[tuple[str, str, str]]:
    """(from, to, label) for every way the dialog can move; ends point at a pseudo-node."""

    def target(handler: Handler) -> str | None:
        if handler.goto:
            return handler.goto
        if handler.transfer:
            return f"transfer:{handler.transfer}"
        if handler.hangup:
            return f"hangup:{handler.outcome or 'hangup'}"
        return None

    for name, state in plan.states.items():
        if state.next:
            yield name, state.next, ""
        for case in state.branch:
            yield name, case.goto, ", ".join(f"{k}={v}" for k, v in case.when.items()) or "else"
        if state.end == "hangup":
            yield name, f"hangup:{state.outcome or 'completed'}", ""
        elif state.end == "transfer":
            yield name, f"transfer:{state.transfer}", ""
        for intent, handler in state.on.items():
            if (to := target(handler)) is not None:
                yield name, to, intent
        for kind in ("noinput", "nomatch"):
            for i, handler in enumerate(getattr(state, kind), start=1):
                if (to := target(handler)) is not None:
                    yield name, to, f"{kind} {i}"
    for intent, handler in plan.global_.items():
        if (to := target(handler)) is not None:
            yield _GLOBAL, to, intent
    if plan.defaults.escalate and (to := target(plan.defaults.escalate)):
        yield _GLOBAL, to, f"{plan.defaults.max_failures or ''} failures".strip()


def _node_ids(plan: Plan) -> dict[str, str]:
    ids = {name: f"s{i}" for i, name in enumerate(plan.states)}
    for _, to, _ in _edges(plan):
        ids.setdefault(to, f"e{len(ids)}")
    ids.setdefault(_GLOBAL, "g0")
    return ids


def mermaid(plan: Plan) -> str:
    """The flow as a Mermaid flowchart."""
    ids = _node_ids(plan)
    lines = ["flowchart TD", f"    start((start)) --> {ids[plan.start]}"]
    for name, nid in ids.items():
        if name in plan.states:
            state = plan.states[name]
            if state.branch:
                shape = f'{nid}{{"{name}"}}'
            elif state.invoke:
                shape = f'{nid}[("{name}")]'  # a cylinder: a call to a back end
            else:
                shape = f'{nid}["{name}"]' if state.listens else f'{nid}("{name}")'
        elif name == _GLOBAL:
            shape = f'{nid}{{{{"{name}"}}}}'
        else:
            shape = f'{nid}[["{_mq(name)}"]]'
        lines.append(f"    {shape}")
    for src, to, label in _edges(plan):
        arrow = f'-- "{_mq(label)}" -->' if label else "-->"
        lines.append(f"    {ids[src]} {arrow} {ids[to]}")
    return "\n".join(lines) + "\n"


def dot(plan: Plan) -> str:
    """The flow as a Graphviz digraph."""
    ids = _node_ids(plan)
    lines = [f'digraph "{_dq(plan.plan)}" {{', "  rankdir=TB;", '  node [fontname="sans-serif"];',
             '  start [shape=circle, label="start"];', f"  start -> {ids[plan.start]};"]
    for name, nid in ids.items():
        if name in plan.states:
            state = plan.states[name]
            shape = ("diamond" if state.branch else "cylinder" if state.invoke
                     else "box" if state.listens else "box, style=rounded")
        else:
            shape = "hexagon" if name == _GLOBAL else "doubleoctagon"
        lines.append(f'  {nid} [shape={shape}, label="{_dq(name)}"];')
    for src, to, label in _edges(plan):
        lines.append(f'  {ids[src]} -> {ids[to]} [label="{_dq(label)}"];')
    lines.append("}")
    return "\n".join(lines) + "\n"


def svg(plan: Plan) -> str:
    """The flow rendered to SVG by Graphviz; VoicebotError when `dot` is not installed."""
    exe = shutil.which("dot")
    if exe is None:
        raise VoicebotError("graphviz `dot` is not installed (apt-get install graphviz)", code="no_graphviz")
    try:
        done = subprocess.run([exe, "-Tsvg"], input=dot(plan).encode(), capture_output=True, timeout=30, check=True)
    except subprocess.CalledProcessError as err:
        detail = err.stderr.decode(errors="replace").strip()
        raise VoicebotError(f"graphviz failed: {detail or err}", code="graphviz") from err
    except (subprocess.SubprocessError, OSError) as err:
        raise VoicebotError(f"graphviz failed: {err}", code="graphviz") from err
    return done.stdout.decode()
