"""The dialog engine: a pure `step(state, event) -> (state, actions)` over a loaded plan."""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import MappingProxyType
from typing import Any

from ..errors import DialogError
from ..events import (
    Action,
    Hangup,
    Intent,
    Invoke,
    Listen,
    NoInput,
    NoMatch,
    PromptPart,
    Say,
    ServiceResult,
    Transfer,
)
from ..intent import Expectation, IntentSpec, SlotSpec, grammar
from ..record import mask_number
from .load import LoadedPlan
from .plan import CAPTURED, NAME, NOW, SERVICE_RESULTS, TEMPLATE_VAR, Handler, State, WavPart

MAX_CHAINED_STATES = 32  # `next:` chains longer than this are a loop in the plan
DEFAULT_RETRIES = 2  # without handlers: reprompt this many times, then hang up


@dataclass(frozen=True)
class DialogState:
    """Where a call is in its plan; immutable, a new one per step."""

    state: str
    language: str
    variables: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    noinput: int = 0  # counters for the current state, VoiceXML-style
    nomatch: int = 0
    failures: int = 0  # no-inputs plus no-matches over the whole call
    last_say: Say | None = None
    outcome: str = ""
    ended: bool = False


def render_text(template: str, variables: Mapping[str, Any]) -> str:
    """Fill `{name}` and `{name|filter}`; values are inserted literally, never re-parsed."""

    def fill(m: Any) -> str:
        value = variables.get(m.group(1))
        if isinstance(value, Mapping):  # a datetime slot {"date": ..., "time": ...} reads "2026-11-24 15:00"
            value = " ".join(str(v) for v in value.values() if v)
        text = "" if value is None else str(value)
        match m.group(2):
            case "digits":  # read one digit at a time: pickup codes, tracking numbers
                return " ".join(text.replace(" ", ""))
            case "masked":
                return mask_number(text)
            case "upper":
                return text.upper()
        return text

    return TEMPLATE_VAR.sub(fill, template)


def _timestamp(now: datetime) -> str:
    """ISO 8601 to the second with its UTC offset; a naive time would be ambiguous in a consent record."""
    if now.utcoffset() is None:
        raise DialogError("`now` must be an aware datetime (with a UTC offset)", code="naive_time")
    return now.isoformat(timespec="seconds")


def as_text(value: Any) -> str:
    """A variable's value as `branch: when:` compares it: booleans as true/false, nothing as ""."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


class DialogEngine:
    """Runs one loaded plan; holds no call state, so one engine serves every call."""

    def __init__(self, loaded: LoadedPlan) -> None:
        self.loaded = loaded
        self.plan = loaded.plan
        self._expectations: dict[tuple[str, str], Expectation] = {}

    # --- public API ---------------------------------------------------------------------------

    def start(
        self, *, variables: Mapping[str, Any], language: str | None = None, now: datetime | None = None
    ) -> tuple[DialogState, list[Action]]:
        """Begin a call: check its variables, enter the start state; `now` (aware) becomes the variable `now`."""
        lang = language or self.plan.languages[0]
        if lang not in self.plan.languages:
            raise DialogError(f"plan '{self.plan.plan}' has no language {lang} (it has {self.plan.languages})",
                              code="unsupported_language")
        # Undeclared variables (extra contact columns) are kept: the agent may want them on transfer.
        values: dict[str, Any] = {k: v for k, v in variables.items() if k not in self.plan.variables and k != NOW}
        missing = []
        for name, spec in self.plan.variables.items():
            if name in variables and variables[name] not in (None, ""):
                values[name] = variables[name]
            elif spec.required:
                missing.append(name)
            else:
                values[name] = spec.default or ""
        if missing:
            raise DialogError(f"plan '{self.plan.plan}' needs variables: {', '.join(missing)}",
                              code="missing_variables")
        if now is not None:
            values[NOW] = _timestamp(now)
        state = DialogState(state=self.plan.start, language=lang, variables=MappingProxyType(values))
        return self._enter(state, self.plan.start, [])

    def step(
        self, state: DialogState, event: Intent | NoMatch | NoInput | ServiceResult, *, now: datetime | None = None
    ) -> tuple[DialogState, list[Action]]:
        """React to what the caller did (or did not do) in the current state, or to a service's answer.

        `now` (aware) refreshes the variable `now` before any `set:` renders, e.g. `consent_at: "{now}"`.
        """
        if state.ended:
            raise DialogError("the dialog has ended", code="dialog_ended")
        if now is not None:  # the engine reads no clock: its caller says when this step happens
            state = replace(state, variables=MappingProxyType({**state.variables, NOW: _timestamp(now)}))
        current = self.plan.states[state.state]
        if isinstance(event, ServiceResult):
            return self._on_result(state, current, event)
        if not current.listens:
            raise DialogError(f"state '{state.state}' is not listening", code="not_listening")
        if isinstance(event, Intent):
            handler = current.on.get(event.name)
            if handler is None and current.globals:
                handler = self.plan.global_.get(event.name)
            if handler is not None:
                variables = {**state.variables, **event.slots}
                state = replace(state, variables=MappingProxyType(variables))
                return self._run(state, handler, reason=event.name)
            event = NoMatch(text=event.text, source=event.source, best=event.name, score=event.confidence)
        kind = "noinput" if isinstance(event, NoInput) else "nomatch"
        count = getattr(state, kind) + 1
        state = replace(state, **{kind: count}, failures=state.failures + 1)
        limit = self.plan.defaults.max_failures
        if limit and state.failures >= limit and self.plan.defaults.escalate:
            return self._run(state, self.plan.defaults.escalate, reason="max_failures")
        handlers: list[Handler] = getattr(current, kind)
        if handlers:
            return self._run(state, handlers[min(count, len(handlers)) - 1], reason=kind)
        if count <= DEFAULT_RETRIES:
            return self._run(state, Handler(repeat=True), reason=kind)
        return self._run(state, Handler(hangup=True, outcome=f"{kind}_exhausted"), reason=kind)

    def first_grammar(self, language: str) -> tuple[str, ...] | None:
        """The grammar of the first state that listens: a recogniser built with it starts cheaply."""
        name, seen = self.plan.start, set()
        while name not in seen:
            seen.add(name)
            state = self.plan.states[name]
            if state.listens:
                return grammar(self.expectation(DialogState(state=name, language=language))) or None
            if not state.next:
                return None
            name = state.next
        return None

    def expectation(self, state: DialogState) -> Expectation:
        """What the current state listens for, in the call's language, global intents included."""
        key = (state.state, state.language)
        if key not in self._expectations:
            current = self.plan.states[state.state]
            names = list(current.expect)
            if current.globals:
                names += [n for n in self.plan.global_ if n not in names]
            specs = []
            for name in names:
                intent = self.plan.intents[name]
                specs.append(IntentSpec(
                    name=name,
                    phrases=tuple(intent.phrases.get(state.language, [])),
                    dtmf=tuple(intent.dtmf),
                    slots=tuple(SlotSpec(n, t) for n, t in intent.slots.items()),
                    yields=intent.yields,
                ))
            capture = SlotSpec(current.capture.slot, current.capture.type) if current.capture else None
            self._expectations[key] = Expectation(
                intents=tuple(specs), language=state.language, capture=capture, threshold=self.plan.defaults.threshold
            )
        return self._expectations[key]

    # --- internals ----------------------------------------------------------------------------

    def _on_result(self, state: DialogState, current: State, result: ServiceResult) -> tuple:
        """A service answered: store its values under the invoke's `into`, then run the handler for its status."""
        if current.invoke is None:
            raise DialogError(f"state '{state.state}' is not waiting for a service", code="not_invoking")
        status = result.status if result.status in SERVICE_RESULTS else "error"
        if current.invoke.into and result.values:
            values = dict(state.variables)
            prefix = current.invoke.into
            for key, value in result.values.items():
                if re.fullmatch(NAME, key):  # a service cannot write arbitrary variable names
                    values[f"{prefix}_{key}"] = value
            state = replace(state, variables=MappingProxyType(values))
        handler = current.on.get(status) or current.on.get("error")
        if handler is None:
            raise DialogError(f"state '{state.state}' has no handler for a service result '{status}'",
                              code="unhandled_result")
        return self._run(state, handler, reason=f"service_{status}")

    def _choose(self, state: DialogState, target: State) -> str:
        """The `goto` of the first branch case whose conditions all hold (the last case always does)."""
        for case in target.branch:
            if all(as_text(state.variables.get(k)) == as_text(v) for k, v in case.when.items()):
                return case.goto
        return target.branch[-1].goto

    def _say(self, prompt_ids: list[str], state: DialogState, *, barge_in: bool) -> Say:
        """Render prompts in the call's language into one Say."""
        parts: list[PromptPart] = []
        for pid in prompt_ids:
            text = self.plan.prompts[pid][state.language]
            for piece in [text] if isinstance(text, str) else text:
                if isinstance(piece, WavPart):
                    parts.append(PromptPart(wav=piece.wav))
                else:
                    parts.append(PromptPart(text=render_text(piece, state.variables)))
        return Say(prompt_id="+".join(prompt_ids), parts=tuple(parts), language=state.language, barge_in=barge_in)

    def _barge_in(self, state_def: State) -> bool:
        return self.plan.defaults.barge_in if state_def.barge_in is None else state_def.barge_in

    def _listen(self, state: DialogState) -> Listen:
        current = self.plan.states[state.state]
        return Listen(
            state=state.state,
            grammar=grammar(self.expectation(state)),
            timeout=current.timeout or self.plan.defaults.timeout,
            barge_in=self._barge_in(current),
        )

    def _set(self, state: DialogState, assignments: Mapping[str, Any]) -> DialogState:
        if not assignments:
            return state
        values = dict(state.variables)
        for name, value in assignments.items():
            values[name] = render_text(value, state.variables) if isinstance(value, str) else value
        return replace(state, variables=MappingProxyType(values))

    def _end(self, state: DialogState, actions: list[Action], *, outcome: str, action: Action) -> tuple:
        return replace(state, outcome=outcome, ended=True), [*actions, action]

    def _transfer(self, state: DialogState, target: str, reason: str) -> Transfer:
        context = {"plan": self.plan.plan, "state": state.state, "variables": dict(state.variables)}
        return Transfer(target=target, reason=reason, context=context)

    def _enter(self, state: DialogState, name: str, actions: list[Action], depth: int = 0) -> tuple:
        """Move into a state: set, speak, then listen, move on, or end."""
        if depth > MAX_CHAINED_STATES:
            raise DialogError(f"more than {MAX_CHAINED_STATES} states chained by `next:` (a loop?)", code="loop")
        target = self.plan.states[name]
        state = replace(state, state=name, noinput=0, nomatch=0)
        state = self._set(state, target.set)
        if target.capture and state.variables.get(target.capture.slot) not in (None, "", {}):
            # VoiceXML form filling: a slot the caller already gave (e.g. "明天下午三点再送") is not asked again.
            return self._run(state, target.on[CAPTURED], reason=CAPTURED, prior=actions, depth=depth + 1)
        if target.say:
            say = self._say(target.say, state, barge_in=self._barge_in(target) and not target.end)
            actions = [*actions, say]
            state = replace(state, last_say=say)
        if target.end == "transfer":
            outcome = target.outcome or "transferred"
            return self._end(state, actions, outcome=outcome,
                             action=self._transfer(state, target.transfer or "", target.reason or outcome))
        if target.end == "hangup":
            outcome = target.outcome or state.outcome or "completed"
            return self._end(state, actions, outcome=outcome, action=Hangup(reason=outcome))
        if target.next:
            return self._enter(state, target.next, actions, depth + 1)
        if target.branch:
            return self._enter(state, self._choose(state, target), actions, depth + 1)
        if target.invoke:
            spec = target.invoke
            args = {k: render_text(v, state.variables) for k, v in spec.args.items()}
            return state, [*actions, Invoke(service=spec.service, args=args, into=spec.into or "",
                                            timeout=spec.timeout)]
        return state, [*actions, self._listen(state)]

    def _run(
        self, state: DialogState, handler: Handler, *, reason: str, prior: Sequence[Action] = (), depth: int = 0
    ) -> tuple:
        """Carry out a handler: set, say, then transfer, hang up, go, or listen again."""
        state = self._set(state, handler.set)
        if handler.outcome:
            state = replace(state, outcome=handler.outcome)
        actions: list[Action] = list(prior)
        current = self.plan.states[state.state]
        if handler.say:
            # Last words before a hang-up or transfer are not interruptible, as in a state that ends.
            final = handler.hangup or bool(handler.transfer)
            actions.append(self._say(handler.say, state, barge_in=self._barge_in(current) and not final))
        if handler.transfer:
            outcome = handler.outcome or "transferred"
            return self._end(state, actions, outcome=outcome,
                             action=self._transfer(state, handler.transfer, handler.reason or reason))
        if handler.hangup:
            outcome = handler.outcome or state.outcome or "hangup"  # keeps what the call achieved so far
            return self._end(state, actions, outcome=outcome, action=Hangup(reason=outcome))
        if handler.goto:
            return self._enter(state, handler.goto, actions, depth)
        if (handler.repeat or handler.reprompt) and state.last_say is not None:
            actions.append(state.last_say)
        return state, [*actions, self._listen(state)]
