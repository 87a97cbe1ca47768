"""Runs one call offline against a plan: typed text, WAV files or keys stand in for the caller."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from rich.console import Console
from rich.markup import escape

from .asr import Recognizer, TranscriptReplayRecognizer, VoskEngine
from .audio import chunks, read_wav, resample, silence
from .call import CallSession, Incoming, SessionConfig
from .config import Settings
from .dialog.engine import DialogEngine
from .dialog.load import LoadedPlan, load_plan
from .events import (
    AudioChunk,
    CallEnded,
    Dtmf,
    Error,
    Hangup,
    Intent,
    NoInput,
    NoMatch,
    Play,
    Say,
    ServiceResult,
    StateEntered,
    StopPlayback,
    Transcript,
    Transfer,
)
from .record import CallRecord
from .recording import CallRecorder
from .services import Services
from .store import CallStore
from .tts import PromptCache, Pyttsx3Synthesizer, render_prompt

FRAME_MS = 20
MAX_WAIT_SECONDS = 30.0  # of simulated audio, waiting for the robot to answer one input


@dataclass(frozen=True)
class CallerStep:
    """One thing the simulated caller does: say text, play a WAV, press keys, or stay silent."""

    kind: Literal["say", "wav", "keys", "silence"]
    value: str = ""


class ScriptedCaller:
    """Turns caller steps into the session's input stream, waiting for the robot like a person would."""

    def __init__(self, session: CallSession, steps: list[CallerStep], *, rate: int,
                 recorder: CallRecorder | None, ask: Callable[[], asyncio.Future] | None) -> None:
        self.session, self.steps, self.rate, self.recorder, self.ask = session, steps, rate, recorder, ask

    def _frames(self, pcm: bytes) -> list[Incoming]:
        out: list[Incoming] = []
        for frame in chunks(pcm, rate=self.rate, ms=FRAME_MS):
            out.append(AudioChunk(pcm=frame, rate=self.rate))
        return out

    async def _audio(self, pcm: bytes) -> AsyncIterator[Incoming]:
        for item in self._frames(pcm):
            if self.session.ended:
                return
            if self.recorder is not None:
                self.recorder.caller(item.pcm, at=self.session.now)
            yield item

    async def _until(self, done: Callable[[], bool], limit: float) -> AsyncIterator[Incoming]:
        """Silence until `done()` or `limit` seconds of audio have passed."""
        start = self.session.now
        frame = silence(FRAME_MS / 1000, self.rate)
        while not done() and not self.session.ended and self.session.now - start < limit:
            yield AudioChunk(pcm=frame, rate=self.rate)

    async def __aiter__(self) -> AsyncIterator[Incoming]:
        session = self.session
        steps = iter(self.steps)
        while not session.ended:
            # A person waits for the robot to finish its prompt before answering.
            async for item in self._until(lambda: session.listening and session.now >= session.playing_until,
                                          MAX_WAIT_SECONDS):
                yield item
            if session.ended or not session.listening:
                return
            step = next(steps, None)
            if step is None and self.ask is not None:
                step = await self.ask()
            if step is None:
                return  # the caller hangs up
            turns = len(session.record.turns)
            answered = lambda t=turns: len(session.record.turns) > t or session.ended  # noqa: E731
            if step.kind == "say":
                yield Transcript(text=step.value, final=True)
            elif step.kind == "keys":
                for key in step.value:
                    yield Dtmf(digit=key)
                async for item in self._until(answered, session.config.dtmf_inter_digit + 0.5):
                    yield item
            elif step.kind == "wav":
                pcm, rate = await asyncio.to_thread(read_wav, step.value)
                async for item in self._audio(resample(pcm, from_rate=rate, to_rate=self.rate)):
                    yield item
                async for item in self._until(answered, MAX_WAIT_SECONDS):
                    yield item
            else:
                async for item in self._until(answered, MAX_WAIT_SECONDS):
                    yield item


class ConversationPrinter:
    """Prints a call turn by turn, as ops staff want to read it."""

    def __init__(self, console: Console) -> None:
        self.console = console

    def __call__(self, event: object) -> None:
        """Print one event if it is part of the conversation."""
        c = self.console
        match event:
            case Say():
                c.print(f"[bold cyan]robot [/] {escape(event.text)}", highlight=False)
            case Transcript(final=True) if event.text:
                c.print(f"[bold green]caller[/] {escape(event.text)}", highlight=False)
            case Dtmf():
                c.print(f"[bold green]caller[/] {escape(f'[key {event.digit}]')}", highlight=False)
            case Intent():
                slots = escape(f" {event.slots}") if event.slots else ""
                c.print(f"       [dim]→ intent {event.name} ({event.confidence:.2f}){slots}[/]", highlight=False)
            case NoMatch():
                c.print(f"       [dim]→ no match (nearest {event.best or '-'} {event.score:.2f})[/]", highlight=False)
            case NoInput():
                c.print(f"       [dim]→ no input after {event.waited:g} s[/]", highlight=False)
            case StateEntered():
                c.print(f"       [dim]→ state {event.state}[/]", highlight=False)
            case ServiceResult():
                shown = escape(f"{event.service}: {event.status} {event.values or event.detail}")
                c.print(f"       [dim]→ service {shown}[/]", highlight=False)
            case StopPlayback():
                c.print("       [yellow]↯ barge-in: robot stops talking[/]", highlight=False)
            case Transfer():
                where = escape(f"{event.target} ({event.reason})")
                c.print(f"[bold magenta]transfer[/] to {where}", highlight=False)
            case Hangup():
                c.print(f"[bold]hang-up[/] ({escape(event.reason)})", highlight=False)
            case Error():
                c.print(f"[bold red]error[/] {escape(f'[{event.code}] {event.message}')}", highlight=False)
            case CallEnded():
                c.print(f"[bold]outcome: {event.outcome}[/]  ({len(event.record.turns)} turns)", highlight=False)


async def make_recognizer(steps: list[CallerStep], *, language: str, rate: int,
                          vosk: VoskEngine | None) -> Recognizer:
    """Vosk when any input is audio; otherwise typed text needs no recogniser (a silent fake stands in)."""
    if vosk is not None and any(s.kind == "wav" for s in steps):
        return await vosk.recognizer(language=language, rate=rate)
    return TranscriptReplayRecognizer([], rate=rate, language=language)


async def simulate(
    *,
    plan: str | Path | LoadedPlan,
    steps: list[CallerStep],
    variables: dict[str, object],
    settings: Settings,
    emit: Callable[[object], None],
    language: str | None = None,
    rate: int = 8000,
    record_to: Path | None = None,
    recognizer: Recognizer | None = None,
    vosk: VoskEngine | None = None,
    ask: Callable[[], asyncio.Future] | None = None,
    store: CallStore | None = None,
    clock: Callable[[], datetime] | None = None,
    services: Services | None = None,
) -> CallRecord:
    """Run one call offline and return its record; `ask` supplies further steps interactively.

    Audio steps are recognised by `recognizer` if given, else by `vosk` (or a Vosk engine of its own).
    """
    loaded = plan if isinstance(plan, LoadedPlan) else await asyncio.to_thread(load_plan, plan)
    engine = DialogEngine(loaded)
    lang = language or loaded.plan.languages[0]
    recorder = CallRecorder(rate=rate) if record_to else None
    records: list[CallRecord] = []

    def on_event(event: object) -> None:
        if isinstance(event, CallEnded):
            records.append(event.record)
        emit(event)

    async with Pyttsx3Synthesizer() as synth:
        cache = PromptCache(synth, settings.cache_dir)
        # Static prompts are rendered up front so the first caller never waits for TTS.
        await cache.prerender([(text, lg) for text, lg in loaded.plan.static_texts() if lg == lang], rate=rate)

        async def speak(say: Say) -> bytes:
            return await render_prompt(say.parts, language=say.language, rate=rate, cache=cache,
                                       base_dir=loaded.base_dir)

        own_vosk = vosk is None and recognizer is None
        if own_vosk:
            vosk = VoskEngine(settings=settings)
        try:
            rec = recognizer or await make_recognizer(steps, language=lang, rate=rate, vosk=vosk)
            session = CallSession(call_id=f"sim-{uuid.uuid4().hex[:8]}", engine=engine, recognizer=rec,
                                  speak=speak, emit=on_event, variables=variables, language=lang,
                                  config=SessionConfig(rate=rate), clock=clock, services=services)
            caller = ScriptedCaller(session, steps, rate=rate, recorder=recorder, ask=ask)
            try:
                cursor = 0.0  # where the gateway's playback queue ends, on the call's clock
                async for out in session.run(caller):
                    if recorder is not None and isinstance(out, Play):
                        cursor = max(cursor, session.now)
                        recorder.robot(out.pcm, at=cursor)
                        cursor += len(out.pcm) / 2 / rate
                    elif recorder is not None and isinstance(out, StopPlayback):
                        recorder.cut(at=session.now)
                        cursor = session.now
            finally:
                await rec.aclose()
        finally:
            if own_vosk:
                await vosk.aclose()
    if recorder is not None and record_to is not None:
        await asyncio.to_thread(recorder.write, record_to)
    if store is not None:
        await store.save(records[-1])
    return records[-1]
