"""The simulator gateway: a seeded phone network of callees who answer, talk, are busy, or reach voicemail.

Built in for demos, tests and benchmarks. Everything but the network is real: the dialog runs through
CallSession with real TTS, VAD and intent matching; callees speak typed text (or WAV files through Vosk).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from ruamel.yaml import YAML, YAMLError

from ..amd import AnsweringMachineDetector
from ..asr import Recognizer, TranscriptReplayRecognizer, VoskEngine
from ..audio import chunks, silence
from ..call import CallSession, SessionConfig
from ..config import Settings
from ..dialog.engine import DialogEngine
from ..dialog.load import LoadedPlan
from ..errors import ConfigError
from ..events import Say
from ..intent import Expectation
from ..simulate import CallerStep, ScriptedCaller
from ..tts import PromptCache, Pyttsx3Synthesizer, render_prompt
from . import rules
from .dialer import DialResult, OutboundCall

FATES = ("answer", "busy", "no_answer", "powered_off", "voicemail", "hang_up")
DEFAULT_MIX = {"answer": 70, "busy": 8, "no_answer": 10, "powered_off": 4, "voicemail": 5, "hang_up": 3}
RING_SECONDS = {"busy": (1, 3), "no_answer": (30, 30), "powered_off": (2, 4), "answer": (3, 12)}
MAX_TURNS = 8  # a random callee hangs up after this many answers
HELLO = {"zh": "喂，你好", "en": "Hello?", "ko": "여보세요"}
VOICEMAIL = {
    "zh": "您好，您拨打的用户暂时无法接听，请在提示音后留言，留言完毕请挂机。",
    "en": "Hi, you have reached my voicemail. I cannot take your call, please leave a message after the tone.",
    "ko": "지금은 전화를 받을 수 없습니다. 삐 소리가 나면 메시지를 남겨 주세요.",
}
NONSENSE = {"zh": "今天天气怎么样", "en": "what is the weather like", "ko": "오늘 날씨 어때요"}
# What a callee says when a state asks for a value rather than a choice.
CAPTURE_SAMPLES = {
    "zh": {"datetime": ["明天下午三点", "后天上午十点"], "date": ["明天", "周六"], "time": ["下午三点"],
           "digits": ["一二三四"], "phone": ["13812345678"], "tracking_number": ["SF1234567890123"],
           "yes_no": ["是的", "不是"], "number": ["三"], "ordinal": ["第一个"], "text": ["快递员态度不好"]},
    "en": {"datetime": ["tomorrow at three pm"], "date": ["tomorrow"], "time": ["three pm"], "digits": ["1 2 3 4"],
           "phone": ["4155550100"], "tracking_number": ["SF1234567890123"], "yes_no": ["yes", "no"],
           "number": ["three"], "ordinal": ["the first one"], "text": ["the courier was rude"]},
}
RARE_INTENTS = {"agent": 0.15, "repeat": 0.3, "do_not_call": 0.1, "goodbye": 0.2}


def parse_mix(text: str) -> dict[str, float]:
    """'answer=70,busy=10,...' → weights; fates not named keep no weight. ValueError on a bad entry."""
    mix: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in FATES:
            raise ValueError(f"{part!r}: expected FATE=WEIGHT with FATE one of {', '.join(FATES)}")
        try:
            mix[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: the weight must be a number") from None
        if mix[name.strip()] < 0:
            raise ValueError(f"{part!r}: weights cannot be negative")
    if sum(mix.values()) <= 0:
        raise ValueError(f"{text!r}: at least one fate needs a positive weight")
    return mix


class _Step(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    say: str | None = None
    wav: str | None = None
    keys: str | None = Field(default=None, pattern=r"^[0-9*#A-D]{1,24}$")
    silence: bool = False

    @model_validator(mode="after")
    def _one(self) -> _Step:
        if sum(x is not None and x is not False for x in (self.say, self.wav, self.keys, self.silence or None)) != 1:
            raise ValueError("each step is exactly one of say, wav, keys, silence")
        return self


class _Persona(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    name: str = ""
    weight: float = Field(default=1.0, gt=0)
    steps: list[_Step] = Field(min_length=1, max_length=50)


class _Personas(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)
    callees: list[_Persona] = Field(min_length=1, max_length=1000)


@dataclass(frozen=True)
class Persona:
    """A scripted callee: what they do at each turn, and how often they turn up."""

    name: str
    weight: float
    steps: tuple[CallerStep, ...]


def load_personas(path: str | Path) -> list[Persona]:
    """Scripted callees from YAML (`callees: [{weight, steps: [{say|wav|keys|silence}]}]`); WAVs relative to it."""
    path = Path(path)
    try:
        data = YAML(typ="safe").load(path.read_text(encoding="utf-8"))
        parsed = _Personas.model_validate(data)
    except (OSError, YAMLError, ValidationError) as err:
        raise ConfigError(f"{path}: not a callee script: {err}") from err
    out = []
    for i, p in enumerate(parsed.callees):
        steps = []
        for s in p.steps:
            if s.wav is not None:
                wav = (path.parent / s.wav).resolve()
                if not wav.is_file():
                    raise ConfigError(f"{path}: callee {p.name or i + 1}: no such WAV {wav}")
                steps.append(CallerStep("wav", str(wav)))
            elif s.say is not None:
                steps.append(CallerStep("say", s.say))
            elif s.keys is not None:
                steps.append(CallerStep("keys", s.keys))
            else:
                steps.append(CallerStep("silence"))
        out.append(Persona(name=p.name or f"callee {i + 1}", weight=p.weight, steps=tuple(steps)))
    return out


def _family(language: str) -> str:
    low = language.lower()
    return "zh" if low.startswith("zh") else "ko" if low.startswith("ko") else "en"


def beep(rate: int, *, seconds: float = 0.5, freq: float = 1000.0) -> bytes:
    """The voicemail tone."""
    t = np.arange(round(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 12000).astype("<i2").tobytes()


class RandomCallee:
    """A seeded callee who answers whatever the current state expects, now and then silent or off-topic."""

    def __init__(self, rng: random.Random, *, language: str, max_turns: int = MAX_TURNS) -> None:
        self.rng, self.family, self.turns = rng, _family(language), max_turns

    def next_step(self, expectation: Expectation) -> CallerStep | None:
        """What to do at this turn; None hangs up."""
        rng = self.rng
        self.turns -= 1
        if self.turns < 0:
            return None
        roll = rng.random()
        if roll < 0.05:
            return CallerStep("silence")
        if roll < 0.09:
            return CallerStep("say", NONSENSE[self.family])
        capture = expectation.capture
        samples = CAPTURE_SAMPLES.get(self.family, CAPTURE_SAMPLES["en"])
        if capture is not None and capture.type in samples and rng.random() < 0.8:
            return CallerStep("say", rng.choice(samples[capture.type]))
        intents = [i for i in expectation.intents if i.phrases or i.dtmf]
        if not intents:
            return CallerStep("silence")
        intent = rng.choices(intents, weights=[RARE_INTENTS.get(i.name, 1.0) for i in intents])[0]
        if intent.dtmf and (not intent.phrases or rng.random() < 0.2):
            return CallerStep("keys", intent.dtmf[0])
        return CallerStep("say", rng.choice(intent.phrases))


class SimulatedGateway:
    """A dialer whose network and callees are simulated, seeded: the same seed gives the same campaign."""

    name = "simulator"

    def __init__(self, *, plan: LoadedPlan, settings: Settings, mix: dict[str, float] | None = None,
                 seed: int = 0, time_scale: float = 0.0, personas: list[Persona] | None = None,
                 rate: int = 8000, clock: Callable[[], datetime] | None = None) -> None:
        if time_scale < 0:
            raise ConfigError("time scale cannot be negative")
        self.loaded, self.settings, self.seed, self.time_scale = plan, settings, seed, time_scale
        self.mix = mix or DEFAULT_MIX
        self.personas, self.rate, self.clock = personas or [], rate, clock
        self.engine = DialogEngine(plan)
        self._synth = Pyttsx3Synthesizer()
        self._cache: PromptCache | None = None
        self._vosk: VoskEngine | None = None
        self._answers: dict[tuple[str, str], bytes] = {}

    async def __aenter__(self) -> SimulatedGateway:
        await self._synth.start()
        self._cache = PromptCache(self._synth, self.settings.cache_dir)
        await self._cache.prerender(self.loaded.plan.static_texts(), rate=self.rate)
        for language in self.loaded.plan.languages:
            fam = _family(language)
            hello = await self._cache.get_or_render(HELLO[fam], language=language, rate=self.rate)
            greeting = await self._cache.get_or_render(VOICEMAIL[fam], language=language, rate=self.rate)
            # The callee's hello, then silence while they wait for us; the machine's greeting, then its beep.
            self._answers[(language, "human")] = silence(0.3, self.rate) + hello + silence(1.5, self.rate)
            self._answers[(language, "machine")] = (silence(0.3, self.rate) + greeting + silence(0.3, self.rate)
                                                    + beep(self.rate) + silence(1.0, self.rate))
        if any(s.kind == "wav" for p in self.personas for s in p.steps):
            self._vosk = VoskEngine(settings=self.settings)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._vosk is not None:
            await self._vosk.aclose()
        await self._synth.aclose()

    def _fate(self, rng: random.Random) -> str:
        names = [f for f in FATES if self.mix.get(f, 0) > 0]
        return rng.choices(names, weights=[self.mix[f] for f in names])[0]

    async def _wait(self, simulated_seconds: float) -> None:
        if self.time_scale > 0:
            await asyncio.sleep(simulated_seconds * self.time_scale)

    async def dial(self, call: OutboundCall, *, emit: Callable[[object], None]) -> DialResult:
        """Ring the simulated callee; the same seed, number and attempt always meet the same fate."""
        rng = random.Random(f"{self.seed}:{call.phone}:{call.attempt}")
        fate = self._fate(rng)
        low, high = RING_SECONDS.get(fate, RING_SECONDS["answer"])
        ring = round(rng.uniform(low, high), 1)
        await self._wait(ring)
        if fate in ("busy", "no_answer", "powered_off"):
            return DialResult(outcome=fate, ring_seconds=ring)
        language = call.language or self.loaded.plan.languages[0]
        answer = self._answers[(language, "machine" if fate == "voicemail" else "human")]
        detector = AnsweringMachineDetector(rate=self.rate)
        amd = None
        for frame in chunks(answer, rate=self.rate, ms=20):
            if (amd := detector.feed(frame)) is not None:
                break
        if amd is not None and amd.verdict == "machine":
            await self._wait(amd.after)
            return DialResult(outcome=rules.VOICEMAIL, ring_seconds=ring, talk_seconds=amd.after,
                              detail=f"answering machine: {amd.reason} after {amd.after:g} s")
        record = await self._converse(call, language, rng, fate, emit)
        await self._wait(record.duration)
        detail = f"amd {amd.verdict}: {amd.reason}" if amd else ""
        return DialResult(outcome=record.outcome, record=record, ring_seconds=ring, talk_seconds=record.duration,
                          detail=detail)

    async def _converse(self, call: OutboundCall, language: str, rng: random.Random, fate: str,
                        emit: Callable[[object], None]) -> Any:
        """Run the plan with a callee: scripted persona, random one, or one who hangs up at once."""
        steps: list[CallerStep] = []
        ask = None
        if fate == "voicemail":
            pass  # detection missed the machine: it says nothing more, and the call ends in silence
        elif fate == "hang_up":
            pass  # answers, hears the greeting, hangs up
        elif self.personas:
            steps = list(rng.choices(self.personas, weights=[p.weight for p in self.personas])[0].steps)
        else:
            callee = RandomCallee(rng, language=language)

            def ask() -> asyncio.Future:
                fut = asyncio.get_running_loop().create_future()
                fut.set_result(callee.next_step(self.engine.expectation(session.state)))
                return fut

        recognizer: Recognizer
        if any(s.kind == "wav" for s in steps) and self._vosk is not None:
            recognizer = await self._vosk.recognizer(language=language, rate=self.rate)
        else:
            recognizer = TranscriptReplayRecognizer([], rate=self.rate, language=language)
        records: list[Any] = []

        def on_event(event: object) -> None:
            if getattr(event, "record", None) is not None:
                records.append(event.record)
            emit(event)

        async def speak(say: Say) -> bytes:
            assert self._cache is not None
            return await render_prompt(say.parts, language=say.language, rate=self.rate, cache=self._cache,
                                       base_dir=self.loaded.base_dir)

        session = CallSession(call_id=call.call_id, engine=self.engine, recognizer=recognizer, speak=speak,
                              emit=on_event, variables=dict(call.variables), language=language,
                              caller=call.phone, config=SessionConfig(rate=self.rate), clock=self.clock)
        try:
            async for _out in session.run(ScriptedCaller(session, steps, rate=self.rate, recorder=None, ask=ask)):
                pass  # the simulated network plays nothing: the callee's script already knows what it answers
        finally:
            await recognizer.aclose()
        return records[-1]

