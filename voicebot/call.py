"""CallSession: one call, composed from the stages; audio and keys in, the robot's audio out."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from .amd import AmdConfig, AmdResult, AnsweringMachineDetector
from .asr import Recognizer
from .audio import StreamResampler, duration
from .dialog.engine import DialogEngine, DialogState
from .dialog.plan import IN_BUSINESS_HOURS, NOW
from .dtmf import DtmfDetector
from .errors import AudioFormatError, VoicebotError
from .events import (
    Action,
    AnswerDetected,
    AudioChunk,
    CallEnded,
    CallStarted,
    Dtmf,
    Error,
    Hangup,
    Intent,
    Invoke,
    Listen,
    NoInput,
    NoMatch,
    Play,
    Say,
    ServiceResult,
    SpeechEnded,
    SpeechStarted,
    StateEntered,
    StopPlayback,
    Transcript,
    Transfer,
    TurnCompleted,
)
from .gateways.base import MarkReached, mark_name, prompt_of_mark
from .intent import match, match_dtmf
from .record import CallRecord, Turn, mask_number, mask_value
from .services import ServiceNotFound, Services
from .textnorm import normalize
from .vad import Segmenter, VadConfig

# A final Transcript in = typed text (simulation, chat); MarkReached = the gateway played up to our mark.
Incoming = AudioChunk | Dtmf | Transcript | MarkReached
Outgoing = Play | StopPlayback | Transfer | Hangup
Speak = Callable[[Say], Awaitable[bytes]]  # renders a prompt as PCM16 at the session's rate
KEYPAD_SLOTS = frozenset({"digits", "phone", "tracking_number", "number"})
MAX_CHUNK_SECONDS = 1.0
MAX_SERVICE_VALUES = 50  # a service answer larger than this is cut: it feeds variables, not a database
MAX_SERVICE_VALUE_CHARS = 500
TONE_GUARD_SECONDS = 0.3  # after an in-band key tone, "speech" starting this soon is the tone itself
ASR_BATCH_MS = 100  # utterance audio goes to the recogniser in batches this long
PREROLL_SECONDS = 0.3  # audio before the VAD's speech start that still goes to the recogniser
VOICEMAIL = "voicemail"  # the outcome of an outbound call that an answering machine picked up
RECENT_SECONDS = 1.0  # history kept for that: the VAD confirms speech a little after it starts


@dataclass(frozen=True)
class SessionConfig:
    """How one call listens: line rate, VAD tuning, barge-in guard, keypad timing."""

    rate: int = 8000
    vad: VadConfig = field(default_factory=VadConfig)
    barge_in_min_speech: float = 0.3  # seconds of speech before it interrupts the robot
    # Short acknowledgements that neither interrupt the robot nor count as an answer.
    backchannels: frozenset[str] = frozenset(
        {"嗯", "嗯嗯", "哦", "啊", "对", "对对", "好", "ok", "okay", "mhm", "uh huh", "yeah", "right"}
    )
    inband_dtmf: bool = True
    dtmf_inter_digit: float = 3.0  # seconds after the last key before a keyed number is taken
    max_dtmf_digits: int = 24
    max_call_seconds: float = 1800.0
    # Outbound: listen before speaking, and hang up on an answering machine (outcome `voicemail`).
    answer_detection: AmdConfig | None = None


class CallSession:
    """Runs one call: VAD, ASR, intent and dialog engine in, prompts and control out; emits everything."""

    def __init__(
        self,
        *,
        call_id: str,
        engine: DialogEngine,
        recognizer: Recognizer,
        speak: Speak,
        emit: Callable[[object], None],
        variables: dict[str, object],
        language: str | None = None,
        caller: str = "",
        config: SessionConfig | None = None,
        clock: Callable[[], datetime] | None = None,
        services: Services | None = None,
    ) -> None:
        self.call_id = call_id
        self.services = services
        self.engine = engine
        self.recognizer = recognizer
        self.speak = speak
        self.emit = emit
        self.config = config or SessionConfig()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._variables = variables
        self._language = language
        self.vad = Segmenter(self.config.vad, rate=self.config.rate)
        self.dtmf = DtmfDetector(rate=self.config.rate) if self.config.inband_dtmf else None
        self._resamplers: dict[int, StreamResampler] = {}
        plan = engine.loaded
        self.record = CallRecord(
            call_id=call_id, plan=plan.plan.plan, plan_version=plan.version,
            language=language or plan.plan.languages[0], direction=plan.plan.direction,
            caller=mask_number(caller) if caller else "",
        )
        self.state: DialogState | None = None
        self.now = 0.0  # seconds of caller audio received: the session's clock
        self.playing_until = 0.0  # when the robot's queued audio will have finished playing
        self.ended = False
        self._listen: Listen | None = None
        self._deadline = 0.0
        self._turn: Turn | None = None
        self._pending_prompts: list[Say] = []
        self._play_started = 0.0
        self._partial = ""
        self._speech_open = False  # the current utterance started while the ear was open
        self._recent: deque[tuple[float, bytes]] = deque()  # the last moments of audio, for pre-roll
        self._keys = ""
        self._last_key_at = 0.0
        self._latency_from: float | None = None
        self._wall_start = 0.0
        self._end_reason = ""
        self._tone_until = -1.0  # in-band DTMF heard until then: that "speech" is a key, not words
        self._fed = False  # audio went to the recogniser since its last final()
        self._asr_buffer = b""
        self._asr_batch_bytes = self.config.rate * 2 * ASR_BATCH_MS // 1000
        self._marks_sent: list[str] = []  # mark names, in the order codecs number them (prompt_id#n)
        self._flushed_marks: set[str] = set()
        self._pii = frozenset(n for n, spec in engine.plan.variables.items() if spec.pii)

    # --- the whole call, top to bottom ---------------------------------------------------------

    async def run(self, incoming: AsyncIterable[Incoming]) -> AsyncIterator[Outgoing]:
        """Play the call: yields what the gateway must do, until the dialog or the caller ends it."""
        loop = asyncio.get_running_loop()
        self._wall_start = loop.time()
        self.record.started_at = self._clock().isoformat(timespec="seconds")
        self._variables = {**self._variables, **self._builtin_variables()}
        self.emit(CallStarted(call_id=self.call_id, plan=self.record.plan, language=self.record.language,
                              variables=self._masked(self._variables), direction=self.record.direction,
                              caller=self.record.caller))
        ended_by = "caller"
        try:
            stream = aiter(incoming)
            if self.config.answer_detection is not None:
                answer = await self._screen(stream)
                if answer is None:
                    return  # gone before we could tell who answered: dropped
                if answer.verdict == "machine":
                    self._end_reason = VOICEMAIL
                    yield await self._hang_up(VOICEMAIL)
                    ended_by = "robot"
                    return
            self.state, actions = self.engine.start(variables=self._variables, language=self._language,
                                                    now=self._clock())
            self.record.language = self.state.language
            self.record.variables = self._masked(self.state.variables)
            self.emit(StateEntered(call_id=self.call_id, state=self.state.state))
            for out in await self._perform(actions):
                yield out
            async for item in stream:
                if not self.ended:
                    for out in await self._receive(item):
                        yield out
                if not self.ended and self.now > self.config.max_call_seconds:
                    self.emit(Error(code="call_too_long", message="maximum call length reached", call_id=self.call_id))
                    yield await self._hang_up("max_duration")
                if self.ended:
                    break  # do not wait for more input once the call is over
            ended_by = "robot" if self.ended else "caller"
        except VoicebotError as err:
            ended_by = "error"
            self.emit(Error(code=err.code, message=err.message, call_id=self.call_id))
            raise
        except Exception as err:
            # A bug must not pass for a normal ending in the record.
            ended_by = "error"
            self.emit(Error(code="internal", message=f"{type(err).__name__}: {err}", call_id=self.call_id))
            raise
        finally:
            self._finish(ended_by)

    async def _screen(self, stream: AsyncIterator[Incoming]) -> AmdResult | None:
        """Before the first prompt: a person says a short hello and waits, a machine talks on or beeps."""
        assert self.config.answer_detection is not None
        detector = AnsweringMachineDetector(rate=self.config.rate, config=self.config.answer_detection)
        async for item in stream:
            result = None
            if isinstance(item, AudioChunk):
                pcm = self._to_line_rate(item)
                self.now += duration(pcm, self.config.rate)
                self.vad.feed(pcm)  # keeps the VAD's clock on the call's clock
                keys = self.dtmf.feed(pcm) if self.dtmf is not None else []
                result = detector.feed(pcm) if not keys else AmdResult("human", "key pressed", round(self.now, 3))
            elif isinstance(item, Dtmf):
                result = AmdResult("human", "key pressed", round(self.now, 3))
            if result is not None:
                self.emit(AnswerDetected(call_id=self.call_id, verdict=result.verdict, reason=result.reason,
                                         after=result.after))
                return result
        return None

    async def _receive(self, item: Incoming) -> list[Outgoing]:
        match item:
            case AudioChunk():
                return await self._on_audio(item)
            case Dtmf():
                return await self._on_key(item.digit)
            case Transcript():
                self.emit(item)
                return await self._on_heard(item, ended_at=self.now)
            case MarkReached():
                self._on_mark(item.name)
                return []
        raise AudioFormatError(f"unexpected input {type(item).__name__}")

    def _builtin_variables(self) -> dict[str, object]:
        """Variables the session supplies from its clock: in_business_hours when the plan has opening hours."""
        hours = self.engine.plan.business_hours
        if hours is None:
            return {}
        return {IN_BUSINESS_HOURS: "yes" if hours.is_open(self._clock()) else "no"}

    def _masked(self, variables: Mapping[str, object]) -> dict[str, object]:
        """Variables as events and records may carry them: the plan's pii variables masked."""
        pii = self._pii
        return {k: (mask_value(v) if k in pii else v) for k, v in variables.items()}

    def _mask_turns(self, variables: Mapping[str, object]) -> None:
        """Personal values leave the record masked: in slots, in what was heard, in prompts that read them out."""
        secrets: dict[str, str] = {}
        for name, value in variables.items():
            if name in self._pii and value not in (None, ""):
                raw = str(value)
                spoken = " ".join(raw.replace(" ", ""))  # as the `digits` filter reads it out (pickup codes)
                secrets |= {raw: mask_value(raw), spoken: mask_value(spoken)}
        if not secrets:
            return
        for turn in self.record.turns:
            turn.slots = {k: (mask_value(v) if k in self._pii else v) for k, v in turn.slots.items()}
            for raw, masked in secrets.items():
                turn.prompt = turn.prompt.replace(raw, masked)
                turn.heard = turn.heard.replace(raw, masked)

    # --- listening ----------------------------------------------------------------------------

    def _to_line_rate(self, chunk: AudioChunk) -> bytes:
        if len(chunk.pcm) > chunk.rate * 2 * MAX_CHUNK_SECONDS:
            raise AudioFormatError(f"audio chunk longer than {MAX_CHUNK_SECONDS} s")
        if chunk.rate == self.config.rate:
            return chunk.pcm
        if chunk.rate not in self._resamplers:
            self._resamplers[chunk.rate] = StreamResampler(chunk.rate, self.config.rate)
        return self._resamplers[chunk.rate].process(chunk.pcm)

    @property
    def listening(self) -> bool:
        """Whether the dialog is waiting for the caller."""
        return self._listen is not None

    @property
    def _ear_open(self) -> bool:
        """Whether caller audio goes to the recogniser now: listening, and playback done or interruptible."""
        listen = self._listen
        return listen is not None and (self.now >= self.playing_until or listen.barge_in)

    async def _recognize(self, pcm: bytes, *, flush: bool = False) -> None:
        """Send utterance audio to the recogniser in ~100 ms batches: one thread hop per batch, not per frame."""
        self._fed = True
        self._asr_buffer += pcm
        if not self._asr_buffer or (not flush and len(self._asr_buffer) < self._asr_batch_bytes):
            return
        pcm, self._asr_buffer = self._asr_buffer, b""
        partial = await self.recognizer.accept(pcm)
        if partial is not None:
            self._partial = partial.text
            self.emit(partial)

    async def _on_audio(self, chunk: AudioChunk) -> list[Outgoing]:
        pcm = self._to_line_rate(chunk)
        start, self.now = self.now, self.now + duration(pcm, self.config.rate)
        out: list[Outgoing] = []
        if self.dtmf is not None:
            for digit in self.dtmf.feed(pcm):
                # The tone is a key, not words: keep it (and the utterance it is in) away from the ASR.
                self._tone_until = self.now + TONE_GUARD_SECONDS
                self._speech_open = False
                out += await self._on_key(digit)
        self._recent.append((start, pcm))
        while self._recent and self._recent[0][0] < self.now - RECENT_SECONDS:
            self._recent.popleft()
        # Only the utterance (from just before the VAD heard it start) goes to the recogniser:
        # decoding silence costs CPU, and Vosk misses short words after long silences.
        sent = False
        for ev in self.vad.feed(pcm):
            self.emit(ev)
            if isinstance(ev, SpeechStarted):
                self._speech_open = self._ear_open and ev.at > self._tone_until
                self._partial = ""
                if self._speech_open:
                    for at, recent in self._recent:
                        if at + duration(recent, self.config.rate) > ev.at - PREROLL_SECONDS:
                            await self._recognize(recent)
                    sent = True
            elif isinstance(ev, SpeechEnded):
                out += await self._on_utterance_end(ev)
                self._speech_open = False
        if self._speech_open and self.vad.in_speech and not sent:
            await self._recognize(pcm)
        if self._is_barge_in():
            out.append(self._stop_playback())
        if self._keys and self.now - self._last_key_at >= self.config.dtmf_inter_digit:
            out += await self._submit_keys()
        # No-input only when the caller is neither speaking nor in the middle of keying a number.
        if self._listen is not None and not self.vad.in_speech and not self._keys and self.now >= self._deadline:
            out += await self._step(NoInput(waited=self._listen.timeout))
        return out

    def _is_backchannel(self, text: str) -> bool:
        norm = normalize(text, language=self.record.language) if text else ""
        return norm in self.config.backchannels or text.strip().lower() in self.config.backchannels

    def _is_barge_in(self) -> bool:
        """Caller speech over an interruptible prompt, long enough and not a mere 嗯 or ok."""
        listen = self._listen
        return (
            listen is not None and listen.barge_in and self.now < self.playing_until and self.vad.in_speech
            and self._speech_open and self.vad.speech_elapsed >= self.config.barge_in_min_speech
            and not (self._partial and self._is_backchannel(self._partial))
        )

    def _stop_playback(self) -> StopPlayback:
        if self._turn is not None:
            self._turn.barged_in = True
            self._turn.heard_prompt_until = round(max(0.0, self.now - self._play_started), 3)
        self.playing_until = self.now
        # Marks of prompts queued so far will still be echoed (Twilio does on `clear`), but were not heard.
        self._flushed_marks.update(self._marks_sent)
        if self._listen is not None:
            # The prompt is cut short: the caller's time to answer starts now, not at its planned end.
            self._deadline = self.now + self._listen.timeout
        stop = StopPlayback(reason="barge_in")
        self.emit(stop)
        return stop

    async def _on_utterance_end(self, ev: SpeechEnded) -> list[Outgoing]:
        if not self._speech_open:
            if self._fed:  # a tone or an unheard stretch reached the recogniser: flush it, unheard
                self._fed, self._asr_buffer = False, b""
                await self.recognizer.final()
            return []  # the caller spoke while we were not listening, or it was a key tone
        # The caller stopped at ev.at; the VAD's end-silence has passed since (audio comes in real time).
        self._latency_from = asyncio.get_running_loop().time() - (self.now - ev.at)
        await self._recognize(b"", flush=True)
        self._fed = False
        transcript = await self.recognizer.final()
        self.emit(transcript)
        if self._listen is None:
            return []
        return await self._on_heard(transcript, ended_at=ev.at)

    async def _on_heard(self, transcript: Transcript, *, ended_at: float) -> list[Outgoing]:
        """A final transcript while listening: understand it and move the dialog."""
        if self._listen is None or not transcript.text.strip() or self._is_backchannel(transcript.text):
            # Not an answer (silence, 嗯, ok): give the caller the full time to answer from here.
            self._latency_from = None
            if self._listen is not None:
                self._deadline = max(self._deadline, self.now + self._listen.timeout)
            return []
        result = match(transcript.text, self.engine.expectation(self.state), now=self._clock())
        if self._turn is not None:
            self._turn.heard = transcript.text
            self._turn.confidence = round(transcript.confidence, 3)
            self._turn.speech_ended_at = round(ended_at, 3)
        return await self._step(result)

    def _on_mark(self, name: str) -> None:
        """The gateway played a prompt to its end; after a flush its marks mean 'discarded', not 'heard'."""
        prompt_id = prompt_of_mark(name) or name  # jambonz echoes the bare prompt id
        if name in self._flushed_marks or not prompt_id:
            return
        turn = self._turn or (self.record.turns[-1] if self.record.turns else None)
        if turn is not None and len(turn.played) < 64:
            turn.played.append(prompt_id)

    async def _on_key(self, digit: str) -> list[Outgoing]:
        self.emit(Dtmf(digit=digit))
        if self._listen is None:
            return []
        out: list[Outgoing] = []
        if self.now < self.playing_until:
            if not self._listen.barge_in:
                return []  # this prompt must be heard in full: keys pressed over it are ignored
            out.append(self._stop_playback())
        expectation = self.engine.expectation(self.state)
        if expectation.capture is not None and expectation.capture.type in KEYPAD_SLOTS:
            self._keys += digit
            self._last_key_at = self.now
            if digit == "#" or len(self._keys) >= self.config.max_dtmf_digits:
                out += await self._submit_keys()
            return out
        if self._turn is not None:
            self._turn.heard = digit
        return out + await self._step(match_dtmf(digit, expectation))

    async def _submit_keys(self) -> list[Outgoing]:
        keys, self._keys = self._keys, ""
        if self._listen is None:
            return []
        if self._turn is not None:
            self._turn.heard = keys
        return await self._step(match_dtmf(keys, self.engine.expectation(self.state)))

    # --- deciding ----------------------------------------------------------------------------

    async def _step(self, result: Intent | NoMatch | NoInput) -> list[Outgoing]:
        """Feed one input to the dialog engine, close the turn, and carry out what it says."""
        self.emit(result)
        previous = self.state.state
        self._listen = None
        self._keys = ""  # keys typed for this state never spill into the next
        if self._latency_from is None:
            self._latency_from = asyncio.get_running_loop().time()
        self.state, actions = self.engine.step(self.state, result, now=self._clock())
        turn = self._turn
        if turn is not None:
            if isinstance(result, Intent):
                turn.intent, turn.intent_confidence, turn.slots = result.name, round(result.confidence, 3), result.slots
                turn.source = result.source
            else:
                turn.intent = "noinput" if isinstance(result, NoInput) else "nomatch"
                turn.source = "" if isinstance(result, NoInput) else result.source
            turn.next_state = self.state.state
            self.record.turns.append(turn)
            self._turn = None
        if self.state.state != previous:
            self.emit(StateEntered(call_id=self.call_id, state=self.state.state, previous=previous))
        out = await self._perform(actions)
        if turn is not None:
            self.emit(TurnCompleted(call_id=self.call_id, turn=turn))
        return out

    async def _perform(self, actions: list[Action]) -> list[Outgoing]:
        out: list[Outgoing] = []
        for action in actions:
            match action:
                case Say():
                    out.append(await self._say(action))
                case Listen():
                    await self.recognizer.set_grammar(action.grammar or None)  # () = free text
                    self._listen = action
                    self._deadline = self.playing_until + action.timeout
                    self._speech_open = False
                    self._turn = Turn(index=len(self.record.turns), state=action.state,
                                      prompt_id="+".join(s.prompt_id for s in self._pending_prompts),
                                      prompt=" ".join(s.text for s in self._pending_prompts),
                                      started_at=round(self.now, 3))
                    self._pending_prompts = []
                    self.emit(action)
                case Transfer():
                    answered = [t for t in self.record.turns if t.intent not in ("", "noinput", "nomatch")]
                    slots = {k: v for t in self.record.turns for k, v in t.slots.items()}
                    context = {**action.context, "caller": self.record.caller, "transcript": self._transcript(),
                               "intent": answered[-1].intent if answered else "", "slots": slots}
                    transfer = Transfer(target=action.target, reason=action.reason, context=context)
                    self.record.transfer = {"target": transfer.target, "reason": transfer.reason}
                    self.ended = True
                    self.emit(transfer)
                    out.append(transfer)
                case Hangup():
                    out.append(await self._hang_up(action.reason))
                case Invoke():
                    out += await self._invoke(action)
        return out

    async def _invoke(self, action: Invoke) -> list[Outgoing]:
        """Call a back-end service for the dialog, bounded in time; any failure is the plan's `error` branch."""
        self.emit(Invoke(service=action.service, args=self._mask_text(action.args), into=action.into,
                         timeout=action.timeout))
        try:
            if self.services is None:
                raise VoicebotError("no services are configured for this call", code="no_services")
            values = await asyncio.wait_for(self.services.invoke(action.service, action.args, call_id=self.call_id),
                                            timeout=action.timeout)
            items = list(dict(values).items())[:MAX_SERVICE_VALUES]
            result = ServiceResult(service=action.service, status="ok",
                                   values={str(k): str(v)[:MAX_SERVICE_VALUE_CHARS] for k, v in items})
        except ServiceNotFound as err:
            result = ServiceResult(service=action.service, status="not_found", detail=err.message)
        except TimeoutError:
            result = ServiceResult(service=action.service, status="error",
                                   detail=f"no answer within {action.timeout:g} s")
            self.emit(Error(code="service_timeout", message=f"{action.service}: {result.detail}", call_id=self.call_id))
        except VoicebotError as err:
            result = ServiceResult(service=action.service, status="error", detail=err.message)
            self.emit(Error(code=err.code, message=f"{action.service}: {err.message}", call_id=self.call_id))
        except Exception as err:  # a broken service must not end the call: the plan apologises or transfers
            result = ServiceResult(service=action.service, status="error", detail=f"{type(err).__name__}: {err}")
            self.emit(Error(code="service_failed", message=f"{action.service}: {result.detail}", call_id=self.call_id))
        self.emit(ServiceResult(service=result.service, status=result.status, values=self._mask_text(result.values),
                                detail=result.detail))
        previous = self.state.state
        self.state, actions = self.engine.step(self.state, result, now=self._clock())
        if self.state.state != previous:
            self.emit(StateEntered(call_id=self.call_id, state=self.state.state, previous=previous))
        return await self._perform(actions)

    def _mask_text(self, values: Mapping[str, str]) -> dict[str, str]:
        """Values as events may carry them: the call's personal variables masked wherever they appear."""
        state = self.state
        secrets = {str(v): mask_value(v) for k, v in (state.variables.items() if state else ())
                   if k in self._pii and v not in (None, "")}
        out = {}
        for key, value in values.items():
            for raw, masked in secrets.items():
                value = value.replace(raw, masked)
            out[key] = value
        return out

    async def _say(self, say: Say) -> Play:
        pcm = await self.speak(say)
        if self._latency_from is not None:
            if self.record.turns and self.record.turns[-1].reply_latency is None:
                latency = asyncio.get_running_loop().time() - self._latency_from
                self.record.turns[-1].reply_latency = round(latency, 4)
            self._latency_from = None
        start = max(self.now, self.playing_until)
        if not self._pending_prompts:
            self._play_started = start  # barge-in measures what was heard from the first prompt of the reply
        self.playing_until = start + duration(pcm, self.config.rate)
        self._pending_prompts.append(say)
        self._marks_sent.append(mark_name(say.prompt_id, len(self._marks_sent) + 1))
        self.emit(say)
        return Play(pcm=pcm, rate=self.config.rate, prompt_id=say.prompt_id)

    async def _hang_up(self, reason: str) -> Hangup:
        self.ended = True
        self._end_reason = self._end_reason or reason
        hangup = Hangup(reason=reason)
        self.emit(hangup)
        return hangup

    # --- bookkeeping --------------------------------------------------------------------------

    def _transcript(self) -> list[dict[str, str]]:
        """The conversation so far, for the human agent who takes over."""
        lines = []
        for turn in self.record.turns:
            if turn.prompt:
                lines.append({"speaker": "robot", "text": turn.prompt})
            if turn.heard:
                lines.append({"speaker": "caller", "text": turn.heard, "intent": turn.intent})
        lines += [{"speaker": "robot", "text": s.text} for s in self._pending_prompts]
        return lines

    def _finish(self, ended_by: str) -> None:
        """Close the record: the last prompts, the outcome, who ended it; then announce it."""
        record = self.record
        if self._pending_prompts or self._turn is not None:
            turn = self._turn or Turn(index=len(record.turns), state=self.state.state if self.state else "")
            turn.prompt = turn.prompt or " ".join(s.text for s in self._pending_prompts)
            turn.prompt_id = turn.prompt_id or "+".join(s.prompt_id for s in self._pending_prompts)
            record.turns.append(turn)
            self._pending_prompts, self._turn = [], None
        state = self.state
        if ended_by == "error":
            record.outcome = "error"
        elif state is not None and state.ended:
            record.outcome = state.outcome
            ended_by = "transfer" if record.transfer else "robot"
        elif self._end_reason:
            record.outcome = self._end_reason  # the session itself hung up (e.g. max_duration)
        else:
            record.outcome = "dropped"
        if state is not None:
            # `now` is only the time of the last step: the record has its own times, and consents their own.
            record.variables = {k: v for k, v in self._masked(state.variables).items() if k != NOW}
            self._mask_turns(state.variables)
        record.ended_by = ended_by
        record.ended_at = self._clock().isoformat(timespec="seconds")
        record.duration = round(max(self.now, self.playing_until), 3)
        self.emit(CallEnded(call_id=self.call_id, outcome=record.outcome, record=record))
