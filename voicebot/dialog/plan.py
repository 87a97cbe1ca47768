"""The dialog-plan schema: validated, frozen models that ops staff write as YAML."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

from ..hours import WeeklyHours, zone

SLOT_TYPE = Literal["digits", "phone", "tracking_number", "yes_no", "date", "time", "datetime", "ordinal", "number",
                    "text"]
# Intent names the engine itself produces or reserves.
CAPTURED = "captured"
# The current time (ISO 8601, seconds, UTC offset), put into the variables by the engine from its caller.
NOW = "now"
NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"
LANGUAGE = r"^[a-z]{2,3}(-[A-Za-z0-9]{2,8})*$"
# `{name}` or `{name|filter}` inside prompt text.
TEMPLATE_VAR = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?:\|([a-z_]+))?\}")
TEMPLATE_FILTERS = ("digits", "masked", "upper")
# Variables the call session supplies itself when the plan asks for them.
IN_BUSINESS_HOURS = "in_business_hours"
# What a service call can come back with; the state's `on:` handles these.
SERVICE_RESULTS = ("ok", "not_found", "error")
SERVICE_NAME = r"^[a-z_][a-z0-9_]*(\.[a-z_][a-z0-9_]*)*$"


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def _goto_shorthand(value: Any) -> Any:
    """`on: {yes: confirm}` is short for `on: {yes: {goto: confirm}}`."""
    return {"goto": value} if isinstance(value, str) else value


def _as_list(value: Any) -> Any:
    """A single prompt id may stand where a list of ids is expected."""
    return [value] if isinstance(value, str) else value


PromptIds = Annotated[list[str], BeforeValidator(_as_list)]


class VariableSpec(_Frozen):
    """A variable the call or contact must (or may) supply."""

    required: bool = True
    default: str | None = None
    description: str = ""
    pii: bool = Field(default=False, description="Personal data: masked in logs and events")


class IntentDef(_Frozen):
    """Something the caller can mean: phrases per language, keys, and slots spoken with it."""

    description: str = ""
    phrases: dict[Annotated[str, Field(pattern=LANGUAGE)], list[str]] = Field(default_factory=dict)
    dtmf: list[Annotated[str, Field(pattern=r"^[0-9*#A-D]{1,8}$")]] = Field(default_factory=list)
    slots: dict[Annotated[str, Field(pattern=NAME)], SLOT_TYPE] = Field(
        default_factory=dict, description="Slots extracted from the same utterance, name: type"
    )
    yields: bool = Field(default=False, description="A sign-off such as 再见/bye: said together with another "
                         "intent, the other one wins (\"放驿站吧，再见\" is station)")


class WavPart(_Frozen):
    """A recorded prompt file, relative to the plan's folder."""

    wav: str = Field(min_length=1)


PromptPiece = str | WavPart
# Per language: plain text (with {variables}), or a list mixing recorded WAVs and text.
PromptText = str | list[PromptPiece]


class Handler(_Frozen):
    """What to do on an intent, a no-input or a no-match: say, set, then go, transfer or hang up."""

    say: PromptIds = Field(default_factory=list)
    set: dict[Annotated[str, Field(pattern=NAME)], str | int | float | bool] = Field(default_factory=dict)
    goto: str | None = None
    transfer: str | None = Field(default=None, description="Agent queue to transfer the call to")
    reason: str = ""
    hangup: bool = False
    outcome: str | None = None
    repeat: bool = Field(default=False, description="Say the last prompt again, then listen again")
    reprompt: bool = Field(default=False, description="After `say`, replay the state's own prompt")

    @model_validator(mode="after")
    def _one_exit(self) -> Handler:
        exits = [n for n, on in (("goto", self.goto), ("transfer", self.transfer), ("hangup", self.hangup)) if on]
        if len(exits) > 1:
            raise ValueError(f"a handler takes at most one of goto, transfer, hangup; got {', '.join(exits)}")
        if (self.repeat or self.reprompt) and exits:
            kind = "repeat" if self.repeat else "reprompt"
            raise ValueError(f"{kind} stays in the state; it cannot be combined with {exits[0]}")
        return self


HandlerOrGoto = Annotated[Handler, BeforeValidator(_goto_shorthand)]


class Capture(_Frozen):
    """A slot the state fills from what the caller says or keys."""

    slot: str = Field(pattern=NAME)
    type: SLOT_TYPE


class BranchCase(_Frozen):
    """One arm of a `branch:`: go to `goto` when every variable in `when` has the given value."""

    when: dict[Annotated[str, Field(pattern=NAME)], str | int | float | bool] = Field(
        default_factory=dict, description="Variable: value pairs that must all hold (values compared as text); "
                                          "empty = always")
    goto: str


class ServiceCall(_Frozen):
    """A call to a back-end service; its result (ok, not_found, error) selects the state's `on:` handler."""

    service: str = Field(pattern=SERVICE_NAME, description="Service name, e.g. parcels.lookup")
    args: dict[Annotated[str, Field(pattern=NAME)], str] = Field(
        default_factory=dict, description="Arguments; strings may use {variables}")
    into: str | None = Field(default=None, pattern=NAME,
                             description="Prefix: the result's values land in variables `<into>_<key>`")
    timeout: float = Field(default=5.0, gt=0, le=60, description="Seconds before the call counts as an error")


class BusinessHours(_Frozen):
    """When the hotline is staffed: sets the `in_business_hours` variable (yes/no) at the start of each call."""

    timezone: str = Field(description="IANA time zone, e.g. Asia/Shanghai")
    hours: str | dict[str, str] = Field(
        description='"09:00-21:00" every day, or per days: {mon-fri: "09:00-21:00", sat-sun: "10:00-18:00"}; '
                    '"closed" for a closed day; days left out are closed')

    @model_validator(mode="after")
    def _parse(self) -> BusinessHours:
        zone(self.timezone)
        WeeklyHours.parse(self.hours)
        return self

    def is_open(self, moment: datetime) -> bool:
        """Whether the hotline is open at `moment` (an aware datetime, any zone)."""
        return WeeklyHours.parse(self.hours).is_open(moment.astimezone(zone(self.timezone)))


class State(_Frozen):
    """One step of the dialog: speak, then listen, move on, branch, call a service, or end the call."""

    description: str = ""
    say: PromptIds = Field(default_factory=list)
    set: dict[Annotated[str, Field(pattern=NAME)], str | int | float | bool] = Field(default_factory=dict)
    expect: list[str] = Field(default_factory=list, description="Intents this state listens for")
    capture: Capture | None = None
    on: dict[str, HandlerOrGoto] = Field(default_factory=dict)
    noinput: list[Handler] = Field(default_factory=list, description="Handler per count; the last repeats")
    nomatch: list[Handler] = Field(default_factory=list, description="Handler per count; the last repeats")
    timeout: float | None = Field(default=None, gt=0, le=120, description="Seconds of silence = no-input")
    barge_in: bool | None = None
    globals: bool = Field(default=True, description="Whether the plan's global intents are active here")
    next: str | None = Field(default=None, description="State to go to after speaking (no input)")
    branch: list[BranchCase] = Field(default_factory=list,
                                     description="Go to the first case whose `when` holds; the last has no `when`")
    invoke: ServiceCall | None = Field(default=None, description="Call a service; `on: {ok, not_found, error}`")

    @field_validator("branch")
    @classmethod
    def _fallback(cls, cases: list[BranchCase]) -> list[BranchCase]:
        if cases and cases[-1].when:
            raise ValueError("the last `branch` case must have no `when:`: it is the fallback when nothing matches")
        return cases
    end: Literal["hangup", "transfer"] | None = None
    transfer: str | None = Field(default=None, description="Agent queue, for end: transfer")
    reason: str = ""
    outcome: str | None = None

    @property
    def listens(self) -> bool:
        """Whether the state waits for the caller."""
        return bool(self.expect or self.capture)

    @model_validator(mode="after")
    def _shape(self) -> State:
        kinds = [k for k, on in (("expect/capture", self.listens), ("next", self.next), ("end", self.end),
                                 ("branch", self.branch), ("invoke", self.invoke)) if on]
        if len(kinds) != 1:
            raise ValueError(
                "a state must do exactly one of: listen (expect/capture), move on (next), end (end), "
                "branch (branch), call a service (invoke); "
                + (f"it has {', '.join(kinds)}" if kinds else "it has none")
            )
        if self.end == "transfer" and not self.transfer:
            raise ValueError("end: transfer needs `transfer: <queue>`")
        if self.invoke:
            unknown = [k for k in self.on if k not in SERVICE_RESULTS]
            if unknown:
                raise ValueError(f"an invoke state handles only {', '.join(SERVICE_RESULTS)} in `on:`; "
                                 f"got {', '.join(unknown)}")
            if self.noinput or self.nomatch:
                raise ValueError("noinput/nomatch only make sense in a state that listens")
            stays = [k for k, h in self.on.items() if not (h.goto or h.transfer or h.hangup)]
            if stays:
                raise ValueError(f"an invoke state cannot listen: `on: {stays[0]}` needs goto, transfer or hangup")
        elif not self.listens and (self.on or self.noinput or self.nomatch):
            raise ValueError("on/noinput/nomatch only make sense in a state that listens")
        return self


class Defaults(_Frozen):
    """Plan-wide defaults for states that do not say otherwise."""

    timeout: float = Field(default=6.0, gt=0, le=120)
    barge_in: bool = True
    max_failures: int | None = Field(
        default=None, ge=1, le=50, description="No-inputs plus no-matches in one call before `escalate`"
    )
    escalate: Handler | None = None
    threshold: float = Field(default=0.78, gt=0, le=1, description="Intent confidence below which = no-match")


class Plan(_Frozen):
    """A whole dialog plan as ops staff write it."""

    plan: str = Field(pattern=NAME, description="The plan's name")
    version: str = "1"
    description: str = ""
    direction: Literal["inbound", "outbound"] = "inbound"
    languages: list[Annotated[str, Field(pattern=LANGUAGE)]] = Field(min_length=1)
    variables: dict[Annotated[str, Field(pattern=NAME)], VariableSpec] = Field(default_factory=dict)
    defaults: Defaults = Field(default_factory=Defaults)
    intents: dict[Annotated[str, Field(pattern=NAME)], IntentDef] = Field(default_factory=dict)
    prompts: dict[Annotated[str, Field(pattern=NAME)], dict[str, PromptText]] = Field(default_factory=dict)
    global_: dict[str, HandlerOrGoto] = Field(default_factory=dict, alias="global")
    business_hours: BusinessHours | None = Field(
        default=None, description="Opening hours: each call gets in_business_hours = yes/no at its start")
    start: str
    states: dict[Annotated[str, Field(pattern=NAME)], State] = Field(min_length=1)

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def static_texts(self) -> list[tuple[str, str]]:
        """(text, language) of every prompt piece without variables: rendered once, when the plan loads."""
        out: list[tuple[str, str]] = []
        for texts in self.prompts.values():
            for language, text in texts.items():
                for piece in [text] if isinstance(text, str) else text:
                    if isinstance(piece, str) and piece.strip() and not TEMPLATE_VAR.search(piece):
                        out.append((piece, language))
        return out

    def prompt_variables(self, prompt_id: str) -> set[str]:
        """Names of the variables a prompt's texts refer to, over all languages."""
        names: set[str] = set()
        for text in self.prompts.get(prompt_id, {}).values():
            pieces = [text] if isinstance(text, str) else text
            for piece in pieces:
                if isinstance(piece, str):
                    names.update(m.group(1) for m in TEMPLATE_VAR.finditer(piece))
        return names
