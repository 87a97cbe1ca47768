"""The vocabulary: small frozen dataclasses for everything that flows through a call."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

# --- audio and keys coming in from the caller -------------------------------------------------


@dataclass(frozen=True, slots=True)
class AudioChunk:
    """A slice of caller audio: signed 16-bit little-endian mono PCM at `rate` Hz."""

    pcm: bytes
    rate: int


@dataclass(frozen=True, slots=True)
class Dtmf:
    """One key pressed by the caller (0-9, *, #, A-D)."""

    digit: str


# --- what the listening stages conclude --------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SpeechStarted:
    """The VAD heard the caller start speaking, `at` seconds into the call."""

    at: float


@dataclass(frozen=True, slots=True)
class SpeechEnded:
    """The VAD decided the caller's utterance is over, `at` seconds into the call."""

    at: float
    duration: float


@dataclass(frozen=True, slots=True)
class Transcript:
    """Recognised text; `final` is False for partial hypotheses."""

    text: str
    final: bool
    confidence: float = 1.0
    language: str = ""


@dataclass(frozen=True, slots=True)
class Intent:
    """The caller's input understood as a named intent, with any captured slots."""

    name: str
    confidence: float
    text: str = ""
    slots: dict[str, Any] = field(default_factory=dict)
    source: str = "speech"  # "speech" or "dtmf"


@dataclass(frozen=True, slots=True)
class NoMatch:
    """The caller said or keyed something that matched nothing the state expects."""

    text: str
    source: str = "speech"
    best: str = ""  # the nearest intent, for diagnostics
    score: float = 0.0


@dataclass(frozen=True, slots=True)
class NoInput:
    """The caller said nothing before the state's no-input timeout."""

    waited: float


# --- what the robot does -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PromptPart:
    """One piece of a prompt: text to synthesise, or a recorded WAV to play as it is."""

    text: str = ""
    wav: str = ""


@dataclass(frozen=True, slots=True)
class Say:
    """Speak a prompt (one or more parts) in `language`; `barge_in` lets the caller interrupt it."""

    prompt_id: str
    parts: tuple[PromptPart, ...]
    language: str
    barge_in: bool = True

    @property
    def text(self) -> str:
        """The prompt's words, recorded parts included, as one string."""
        return "".join(p.text or f"[{p.wav}]" for p in self.parts)


@dataclass(frozen=True, slots=True)
class Play:
    """Audio ready for the gateway: PCM16 mono at `rate` Hz, belonging to prompt `prompt_id`."""

    pcm: bytes
    rate: int
    prompt_id: str = ""


@dataclass(frozen=True, slots=True)
class StopPlayback:
    """Stop the robot's audio now and make the gateway flush what it has queued (barge-in)."""

    reason: str = "barge_in"


@dataclass(frozen=True, slots=True)
class Listen:
    """Open the ear for the current state: what it expects and how long to wait."""

    state: str
    grammar: tuple[str, ...]
    timeout: float
    barge_in: bool = True


@dataclass(frozen=True, slots=True)
class Transfer:
    """Hand the call to a human, with everything the agent needs to know."""

    target: str
    reason: str
    context: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Hangup:
    """End the call from our side."""

    reason: str


@dataclass(frozen=True, slots=True)
class Invoke:
    """Call back-end service `service` with `args`; the session answers the engine with a ServiceResult."""

    service: str
    args: dict[str, str] = field(default_factory=dict)
    into: str = ""  # the result's values become variables `<into>_<key>`
    timeout: float = 5.0


@dataclass(frozen=True, slots=True)
class ServiceResult:
    """What a service call came back with: status ok, not_found or error, and its values."""

    service: str
    status: str
    values: dict[str, str] = field(default_factory=dict)
    detail: str = ""  # why it failed, for logs; never shown to the caller


# --- lifecycle and bookkeeping --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CallStarted:
    """A call began: its id, the plan that runs it, and the call's variables."""

    call_id: str
    plan: str
    language: str
    variables: dict[str, Any] = field(default_factory=dict)
    direction: str = "inbound"
    caller: str = ""


@dataclass(frozen=True, slots=True)
class AnswerDetected:
    """Outbound: who picked up, judged from the first audio (`human`, `machine` or `unknown`)."""

    call_id: str
    verdict: str
    reason: str
    after: float  # seconds of audio it took


@dataclass(frozen=True, slots=True)
class StateEntered:
    """The dialog moved into `state`."""

    call_id: str
    state: str
    previous: str = ""


@dataclass(frozen=True, slots=True)
class TurnCompleted:
    """One exchange finished: what we said, what we heard, and what we made of it."""

    call_id: str
    turn: Any  # voicebot.record.Turn; kept loose so the vocabulary imports nothing


@dataclass(frozen=True, slots=True)
class CallEnded:
    """A call is over, with its outcome and complete record."""

    call_id: str
    outcome: str
    record: Any = None  # voicebot.record.CallRecord


@dataclass(frozen=True, slots=True)
class Error:
    """Something went wrong; `code` is stable, `message` is for people."""

    code: str
    message: str
    call_id: str = ""


# What the dialog engine may ask the session to do.
Action = Say | Listen | Transfer | Hangup | Invoke
# What the dialog engine reacts to.
DialogInput = Intent | NoMatch | NoInput | ServiceResult
