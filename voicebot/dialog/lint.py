"""Checks a validated plan for mistakes the schema cannot see: dangling names, dead states, gaps."""

from __future__ import annotations

from collections.abc import Iterator

from .load import LoadedPlan, Path_, Problem
from .plan import CAPTURED, IN_BUSINESS_HOURS, NOW, TEMPLATE_FILTERS, TEMPLATE_VAR, Handler, Plan, WavPart


def _handlers(plan: Plan) -> Iterator[tuple[Path_, Handler]]:
    """Every handler in the plan with its field path."""
    for name, handler in plan.global_.items():
        yield ("global", name), handler
    if plan.defaults.escalate:
        yield ("defaults", "escalate"), plan.defaults.escalate
    for sname, state in plan.states.items():
        for intent, handler in state.on.items():
            yield ("states", sname, "on", intent), handler
        for kind in ("noinput", "nomatch"):
            for i, handler in enumerate(getattr(state, kind)):
                yield ("states", sname, kind, i), handler


def _known_variables(plan: Plan) -> set[str]:
    """Variables a prompt may use: declared, set somewhere, captured, an intent's slot, or the engine's `now`."""
    names = set(plan.variables) | {NOW}
    for state in plan.states.values():
        names.update(state.set)
        if state.capture:
            names.add(state.capture.slot)
    for _, handler in _handlers(plan):
        names.update(handler.set)
    for intent in plan.intents.values():
        names.update(intent.slots)
    if plan.business_hours:
        names.add(IN_BUSINESS_HOURS)
    return names


def _service_prefixes(plan: Plan) -> tuple[str, ...]:
    """`<into>_` of every invoke: a service's values land in variables named so (its keys are not declared)."""
    return tuple(f"{s.invoke.into}_" for s in plan.states.values() if s.invoke and s.invoke.into)


def _successors(plan: Plan, sname: str) -> set[str]:
    """States reachable in one step from `sname` (including through global intents)."""
    state = plan.states[sname]
    targets = {state.next} if state.next else set()
    targets.update(case.goto for case in state.branch)
    handlers = list(state.on.values()) + state.noinput + state.nomatch
    if state.listens:
        if state.globals:
            handlers += list(plan.global_.values())
        if plan.defaults.escalate:
            handlers.append(plan.defaults.escalate)
    targets.update(h.goto for h in handlers if h.goto)
    return targets


def _check_reserved(plan: Plan) -> Iterator[Problem]:
    """`now` is the engine's: a plan may read it but never declare, set or capture it."""
    message = f"'{NOW}' is reserved: the engine sets it to the current time; pick another name"
    if NOW in plan.variables:
        yield Problem("reserved_variable", message, ("variables", NOW))
    for path, handler in _handlers(plan):
        if NOW in handler.set:
            yield Problem("reserved_variable", message, (*path, "set", NOW))
    for sname, state in plan.states.items():
        if NOW in state.set:
            yield Problem("reserved_variable", message, ("states", sname, "set", NOW))
        if state.capture and state.capture.slot == NOW:
            yield Problem("reserved_variable", message, ("states", sname, "capture", "slot"))
    for iname, intent in plan.intents.items():
        if NOW in intent.slots:
            yield Problem("reserved_variable", message, ("intents", iname, "slots", NOW))


def _check_references(plan: Plan) -> Iterator[Problem]:
    """Unknown states, intents and prompts anywhere they are named."""
    if plan.start not in plan.states:
        yield Problem("unknown_state", f"start state '{plan.start}' is not defined", ("start",))
    for path, handler in _handlers(plan):
        if handler.goto and handler.goto not in plan.states:
            yield Problem("unknown_state", f"goto '{handler.goto}': no such state", (*path, "goto"))
        for prompt in handler.say:
            if prompt not in plan.prompts:
                yield Problem("unknown_prompt", f"prompt '{prompt}' is not defined", (*path, "say"))
    for name in plan.global_:
        if name not in plan.intents:
            yield Problem("unknown_intent", f"global intent '{name}' is not defined in intents", ("global", name))
    for sname, state in plan.states.items():
        at = ("states", sname)
        if state.next and state.next not in plan.states:
            yield Problem("unknown_state", f"next '{state.next}': no such state", (*at, "next"))
        for i, case in enumerate(state.branch):
            if case.goto not in plan.states:
                yield Problem("unknown_state", f"goto '{case.goto}': no such state", (*at, "branch", i, "goto"))
        for prompt in state.say:
            if prompt not in plan.prompts:
                yield Problem("unknown_prompt", f"prompt '{prompt}' is not defined", (*at, "say"))
        for i, intent in enumerate(state.expect):
            if intent not in plan.intents:
                yield Problem("unknown_intent", f"intent '{intent}' is not defined in intents", (*at, "expect", i))
        for intent in [] if state.invoke else state.on:  # an invoke's `on:` keys are results, not intents
            if intent == CAPTURED:
                if not state.capture:
                    yield Problem("unknown_intent", "'captured' needs a `capture:` in this state", (*at, "on", intent))
            elif intent not in plan.intents:
                yield Problem("unknown_intent", f"intent '{intent}' is not defined in intents", (*at, "on", intent))
            elif intent not in state.expect and not (state.globals and intent in plan.global_):
                yield Problem(
                    "handler_unused", f"handler for '{intent}', which this state does not expect",
                    (*at, "on", intent), severity="warning",
                )


def _check_states(plan: Plan) -> Iterator[Problem]:
    """Handlers that are missing, states that cannot be reached, ends without outcomes, key clashes."""
    for sname, state in plan.states.items():
        at = ("states", sname)
        if state.listens:
            for intent in state.expect:
                if intent not in state.on and not (state.globals and intent in plan.global_):
                    yield Problem("unhandled_intent", f"expects '{intent}' but has no `on: {intent}:` handler",
                                  (*at, "expect"))
            if state.capture and CAPTURED not in state.on:
                yield Problem("unhandled_intent", "captures a slot but has no `on: captured:` handler",
                              (*at, "capture"))
            for kind in ("noinput", "nomatch"):
                if not getattr(state, kind):
                    yield Problem(f"missing_{kind}", f"listens but has no `{kind}:` handlers (reprompt, then escalate)",
                                  at, severity="warning")
            keys: dict[str, str] = {}
            active = list(state.expect) + (list(plan.global_) if state.globals else [])
            for intent in active:
                for key in plan.intents[intent].dtmf if intent in plan.intents else []:
                    if key in keys and keys[key] != intent:
                        yield Problem("dtmf_conflict", f"key {key} means both '{keys[key]}' and '{intent}' here", at)
                    keys[key] = intent
        if state.invoke:
            for result in ("ok", "error"):
                if result not in state.on:
                    yield Problem("unhandled_result", f"calls a service but has no `on: {result}:` handler "
                                  "(not_found falls back to error)", (*at, "invoke"))
        if state.branch:
            loop = _immediate_loop(plan, sname)
            if loop:
                yield Problem("next_loop", f"`branch:` can lead back to '{sname}' without waiting for the caller "
                              f"(via {' -> '.join(loop)})", (*at, "branch"))
        if state.end and not state.outcome:
            yield Problem("missing_outcome", "ends the call without an `outcome:`", at, severity="warning")
        for kind in ("noinput", "nomatch"):
            handlers = getattr(state, kind)
            if handlers and handlers[-1].goto == sname:
                yield Problem("endless_retry", f"the last `{kind}` handler goes back to this state, which resets its "
                              "counters: the caller is asked forever; end with transfer or hangup",
                              (*at, kind, len(handlers) - 1), severity="warning")
        if state.next:
            seen, name = {sname}, state.next
            while name in plan.states and plan.states[name].next and name not in seen:
                seen.add(name)
                name = plan.states[name].next
            if name in seen:
                yield Problem("next_loop", f"`next:` leads back to '{name}' without waiting for the caller",
                              (*at, "next"))
    if plan.business_hours and IN_BUSINESS_HOURS in plan.variables:
        yield Problem("reserved_variable", f"'{IN_BUSINESS_HOURS}' is set by the call from business_hours; "
                      "do not declare it", ("variables", IN_BUSINESS_HOURS))
    if plan.defaults.max_failures and not plan.defaults.escalate:
        yield Problem("escalate_missing", "max_failures does nothing without `escalate:`", ("defaults", "max_failures"))
    reached, todo = set(), [plan.start] if plan.start in plan.states else []
    while todo:
        name = todo.pop()
        if name in reached or name not in plan.states:
            continue
        reached.add(name)
        todo.extend(_successors(plan, name))
    for sname in plan.states:
        if sname not in reached:
            yield Problem("unreachable", f"state '{sname}' cannot be reached from '{plan.start}'",
                          ("states", sname), severity="warning")


def _immediate_loop(plan: Plan, origin: str) -> list[str]:
    """A path from `origin` back to itself through states that neither listen nor call a service, or []."""
    todo: list[tuple[str, list[str]]] = [(origin, [origin])]
    seen: set[str] = set()
    while todo:
        name, path = todo.pop()
        state = plan.states[name]
        for nxt in ([state.next] if state.next else []) + [c.goto for c in state.branch]:
            if nxt == origin:
                return [*path, nxt]
            if nxt in plan.states and nxt not in seen:
                seen.add(nxt)
                todo.append((nxt, [*path, nxt]))
    return []


def _check_texts(loaded: LoadedPlan) -> Iterator[Problem]:
    """Translations, template variables and recorded files of every prompt and intent."""
    plan = loaded.plan
    known = _known_variables(plan)
    prefixes = _service_prefixes(plan)
    for pid, texts in plan.prompts.items():
        for lang in plan.languages:
            if lang not in texts:
                yield Problem("missing_translation", f"no {lang} text for this prompt", ("prompts", pid))
        for lang, text in texts.items():
            if lang not in plan.languages:
                yield Problem("unknown_language", f"'{lang}' is not in the plan's languages", ("prompts", pid, lang))
            pieces = [text] if isinstance(text, str) else text
            for i, piece in enumerate(pieces):
                where = ("prompts", pid, lang) if isinstance(text, str) else ("prompts", pid, lang, i)
                if isinstance(piece, WavPart):
                    wav = (loaded.base_dir / piece.wav).resolve()
                    if not wav.is_relative_to(loaded.base_dir.resolve()):
                        yield Problem("bad_wav", f"'{piece.wav}' points outside the plan's folder", where)
                    elif not wav.is_file():
                        yield Problem("missing_wav", f"recorded prompt '{piece.wav}' does not exist", where)
                    continue
                for m in TEMPLATE_VAR.finditer(piece):
                    if m.group(1) not in known and not m.group(1).startswith(prefixes):
                        yield Problem("undefined_variable", f"{{{m.group(1)}}} is never declared, set or captured",
                                      where)
                    if m.group(2) and m.group(2) not in TEMPLATE_FILTERS:
                        yield Problem("unknown_filter",
                                      f"filter '{m.group(2)}' (known: {', '.join(TEMPLATE_FILTERS)})", where)
    for sname, state in plan.states.items():
        for i, case in enumerate(state.branch):
            for name in case.when:
                if name not in known and not name.startswith(prefixes):
                    yield Problem("undefined_variable", f"'{name}' is never declared, set or captured",
                                  ("states", sname, "branch", i, "when", name))
        for arg, text in (state.invoke.args.items() if state.invoke else ()):
            for m in TEMPLATE_VAR.finditer(text):
                if m.group(1) not in known and not m.group(1).startswith(prefixes):
                    yield Problem("undefined_variable", f"{{{m.group(1)}}} is never declared, set or captured",
                                  ("states", sname, "invoke", "args", arg))
    for iname, intent in plan.intents.items():
        for lang in plan.languages:
            if not intent.phrases.get(lang) and not intent.dtmf:
                yield Problem("missing_translation", f"no {lang} phrases and no dtmf key: it can never match",
                              ("intents", iname), severity="warning")


def lint(loaded: LoadedPlan) -> list[Problem]:
    """Every problem in the plan, located, errors first."""
    plan = loaded.plan
    problems = [*_check_reserved(plan), *_check_references(plan), *_check_states(plan), *_check_texts(loaded)]
    located = []
    for p in problems:
        line, col = loaded.locate(p.path)
        located.append(Problem(p.code, p.message, p.path, line, col, p.severity))
    return sorted(located, key=lambda p: (p.severity != "error", p.line, p.column))
