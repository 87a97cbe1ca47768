"""Regressions from the call-flow review: keypad timing, barge-in, tones, latency, pii, records, printing."""

from __future__ import annotations

import asyncio
import io
from collections.abc import AsyncIterator, Iterable
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import PLANS, fixture_path
from rich.console import Console

from voicebot.asr import TranscriptReplayRecognizer
from voicebot.audio import chunks, read_wav, silence
from voicebot.call import CallSession, Incoming, SessionConfig
from voicebot.config import Settings
from voicebot.dialog.engine import DialogEngine
from voicebot.dialog.load import LoadedPlan, load_plan, parse_plan
from voicebot.dtmf import generate_dtmf
from voicebot.errors import PlanError
from voicebot.events import (
    AudioChunk,
    CallEnded,
    CallStarted,
    Dtmf,
    Error,
    Hangup,
    Intent,
    Listen,
    NoInput,
    NoMatch,
    Play,
    PromptPart,
    Say,
    SpeechEnded,
    StopPlayback,
    Transcript,
)
from voicebot.recording import CallRecorder
from voicebot.simulate import CallerStep, ConversationPrinter, simulate
from voicebot.tts import PromptCache, Pyttsx3Synthesizer, render_prompt
from voicebot.vad import VadConfig

RATE = 8000
TESTS = Path(__file__).resolve().parent
MINIMAL = (TESTS / "plans" / "minimal.yaml").read_text(encoding="utf-8")
ZH_VARS = {"customer_name": "王先生", "tracking_tail": "5678"}

# A keypad capture state (timeout 6 s) followed by a yes/no confirmation.
KEYS_PLAN = """
plan: keys
languages: [en-US]
defaults: {timeout: 6}
intents:
  agent: {phrases: {en-US: [agent]}, dtmf: ["0"]}
  yes: {phrases: {en-US: [yes]}, dtmf: ["1"]}
prompts:
  ask: {en-US: "Key your phone number."}
  ok: {en-US: "Thanks."}
  confirm: {en-US: "Is that right?"}
  sorry: {en-US: "Sorry."}
start: ask
states:
  ask:
    say: ask
    capture: {slot: phone, type: digits}
    expect: [agent, yes]
    on: {captured: confirm, yes: confirm, agent: {say: [ok], transfer: q}}
    noinput: [{say: [sorry], reprompt: true}]
    nomatch: [{say: [sorry], reprompt: true}]
  confirm:
    say: confirm
    expect: [yes]
    on: {yes: done}
    noinput: [{say: [sorry], reprompt: true}]
    nomatch: [{say: [sorry], reprompt: true}]
  done: {say: ok, end: hangup, outcome: ok}
"""

# The minimal plan, its question made uninterruptible.
NO_BARGE_PLAN = MINIMAL.replace("  timeout: 4", "  timeout: 4\n  barge_in: false", 1)

# A caller's phone number (pii) and name (not pii).
PII_PLAN = """
plan: pii
languages: [en-US]
variables:
  name: {description: "Who we call"}
  phone: {description: "The callee's mobile", pii: true}
intents:
  yes: {phrases: {en-US: [yes]}, dtmf: ["1"]}
prompts:
  ask: {en-US: "Hello {name}, is this a good time?"}
  ok: {en-US: "Thank you."}
  sorry: {en-US: "Sorry?"}
start: ask
states:
  ask:
    say: ask
    expect: [yes]
    on: {yes: {set: {answer: "yes"}, goto: done}}
    noinput: [{say: [sorry], reprompt: true}]
    nomatch: [{say: [sorry], reprompt: true}]
  done: {say: ok, end: hangup, outcome: confirmed}
"""


def silent_prompts(seconds: float):
    """A `speak` that renders every prompt as `seconds` of silence: exact, known prompt durations."""

    async def speak(say: Say) -> bytes:
        return silence(seconds, RATE)

    return speak


def quiet(seconds: float) -> list[AudioChunk]:
    """`seconds` of line silence as 20 ms frames."""
    return [AudioChunk(pcm=f, rate=RATE) for f in chunks(silence(seconds, RATE), rate=RATE, ms=20)]


def audio(pcm: bytes) -> list[AudioChunk]:
    """Caller PCM (8 kHz) as 20 ms frames."""
    return [AudioChunk(pcm=f, rate=RATE) for f in chunks(pcm, rate=RATE, ms=20)]


def spoken(language: str, fixture_id: str) -> list[AudioChunk]:
    """A recorded caller utterance as 20 ms frames."""
    pcm, rate = read_wav(fixture_path(language, fixture_id))
    assert rate == RATE
    return audio(pcm)


def plan_of(text_or_path: str | Path) -> LoadedPlan:
    """An inline YAML plan or a plan file, loaded and linted."""
    return load_plan(text_or_path) if isinstance(text_or_path, Path) else parse_plan(text_or_path)


def make_session(plan: str | Path, *, texts: Iterable[str] = (), speak=None, variables=None,
                 config: SessionConfig | None = None) -> tuple[CallSession, list]:
    """A session on real VAD/DTMF/engine; the transcript replay fake stands in for the ASR only."""
    events: list = []
    loaded = plan_of(plan)
    session = CallSession(
        call_id="reg", engine=DialogEngine(loaded), recognizer=TranscriptReplayRecognizer(list(texts), rate=RATE),
        speak=speak or silent_prompts(2.0), emit=events.append,
        variables=dict(variables if variables is not None else {"name": "Bo"}), config=config,
    )
    return session, events


async def drive(session: CallSession, items: Iterable[Incoming]) -> list[tuple[float, object]]:
    """Run the call over `items`; every output with the call time (caller audio received) it came at."""

    async def incoming() -> AsyncIterator[Incoming]:
        for item in items:
            yield item

    return [(session.now, out) async for out in session.run(incoming())]


def of(kind: type, events: list) -> list:
    """The events of one type, in order."""
    return [e for e in events if isinstance(e, kind)]


# --- (1) (2) keypad capture ---------------------------------------------------------------------


async def test_slow_keypad_entry_is_one_capture_without_noinput():
    """11 digits keyed 0.7 s apart, past the 6 s no-input deadline, are taken as one number."""
    session, events = make_session(KEYS_PLAN)
    items: list[Incoming] = quiet(3.0)  # the 2 s prompt plays out; keying ends at 10.7 s, after the deadline
    for digit in "13812345678":
        items += [Dtmf(digit=digit), *quiet(0.7)]
    await drive(session, items + quiet(4.0))
    assert of(NoInput, events) == []
    assert [(t.state, t.intent, t.heard) for t in session.record.turns] == [
        ("ask", "captured", "13812345678"), ("confirm", "", "")]
    assert session.record.turns[0].slots == {"phone": "13812345678"}


@pytest.mark.parametrize("answer", ["typed", "spoken"])
async def test_stray_key_does_not_spill_into_the_next_state(answer):
    """A key pressed in the capture state, then a spoken yes: the key is not submitted in `confirm`."""
    session, events = make_session(KEYS_PLAN, texts=["yes"])
    said = [Transcript(text="yes", final=True)] if answer == "typed" else spoken("en-US", "yes")
    await drive(session, [*quiet(2.5), Dtmf(digit="5"), *quiet(0.5), *said, *quiet(6.0)])
    assert [e.digit for e in of(Dtmf, events)] == ["5"]
    assert of(NoMatch, events) == []
    turns = [(t.state, t.intent, t.heard) for t in session.record.turns]
    assert turns[0] == ("ask", "yes", "yes")
    # The confirm question is still waiting, unanswered (its no-input would come later).
    assert turns[1:] == [("confirm", "", "")]


# --- (3) barge_in: false ---------------------------------------------------------------------


async def test_key_and_speech_over_an_uninterruptible_prompt_are_ignored():
    """barge_in: false: a key or speech over the prompt neither stops it nor answers; a key after it does."""
    # The fake would hear "no" if the speech over the prompt reached the recogniser.
    session, events = make_session(NO_BARGE_PLAN, texts=["no"], speak=silent_prompts(8.0))
    speech = spoken("en-US", "no")  # about 2.1 s, ending well before the prompt does
    outs = await drive(session, [*quiet(1.0), Dtmf(digit="2"), *quiet(1.0), *speech, *quiet(5.0),
                                 Dtmf(digit="1"), *quiet(0.5)])
    assert of(Listen, events)[0].barge_in is False
    assert not [o for _, o in outs if isinstance(o, StopPlayback)]
    assert [e.digit for e in of(Dtmf, events)] == ["2", "1"]  # both seen, only the second one taken
    intents = of(Intent, events)
    assert [(i.name, i.source) for i in intents] == [("yes", "dtmf")]
    turn = session.record.turns[0]
    assert (turn.intent, turn.heard, turn.barged_in) == ("yes", "1", False)
    assert session.record.outcome == "confirmed"


# --- (4) no-input after a barge-in ----------------------------------------------------------


@pytest.mark.parametrize("heard", ["", "嗯"])
async def test_noinput_after_barge_in_counts_from_the_interruption(heard):
    """Barge-in, then nothing usable: no-input comes a timeout after the caller, not after the cut prompt."""
    session, events = make_session(PLANS / "pre_delivery.yaml", texts=[heard], speak=silent_prompts(10.0),
                                   variables=ZH_VARS)
    outs = await drive(session, [*quiet(1.0), *spoken("zh-CN", "door"), *quiet(20.0)])
    stop_at = next(t for t, o in outs if isinstance(o, StopPlayback))
    reprompt_at = [t for t, o in outs if isinstance(o, Play)][1]
    utterance_end = of(SpeechEnded, events)[0].at
    timeout = 6.0  # pre_delivery's default
    assert stop_at < 10.0 and of(NoInput, events)
    # The caller got the full timeout after the barge-in (and after the 嗯), and no more than that.
    assert stop_at + timeout <= reprompt_at <= utterance_end + VadConfig().end_silence_ms / 1000 + timeout + 0.05
    assert reprompt_at < 10.0 + timeout  # not counted from the planned end of the cut prompt


# --- (5) in-band DTMF tones --------------------------------------------------------------------


@pytest.mark.parametrize(("tone_ms", "gap_ms"), [(100, 60), (200, 100)])
async def test_inband_tones_are_keys_not_words(tone_ms, gap_ms):
    """A number keyed as in-band tones (short or held keys) is captured; the tones never reach the ASR."""
    session, events = make_session(KEYS_PLAN, texts=["uh"])  # what an ASR might make of tones
    tones = generate_dtmf("13812345678", rate=RATE, tone_ms=tone_ms, gap_ms=gap_ms)
    await drive(session, [*quiet(2.5), *audio(tones), *quiet(5.0)])
    assert "".join(e.digit for e in of(Dtmf, events)) == "13812345678"
    assert [e.text for e in of(Transcript, events) if e.text] == []
    assert of(NoMatch, events) == []
    assert session.record.turns[0].intent == "captured"
    assert session.record.turns[0].slots == {"phone": "13812345678"}


async def test_single_held_inband_key_is_taken_not_transcribed():
    """One key held 300 ms in the capture state: the VAD hears 'speech', but it is the key."""
    session, events = make_session(KEYS_PLAN, texts=["uh"])
    await drive(session, [*quiet(2.5), *audio(generate_dtmf("0", rate=RATE, tone_ms=300, gap_ms=0)), *quiet(5.0)])
    assert [e.digit for e in of(Dtmf, events)] == ["0"]
    assert [e.text for e in of(Transcript, events) if e.text] == []
    assert of(NoMatch, events) == []
    turn = session.record.turns[0]
    assert (turn.intent, turn.heard, turn.source) == ("agent", "0", "dtmf")
    assert session.record.transfer["target"] == "q"  # the key was taken: the caller went to an agent


# --- (6) (15) how a call ends -----------------------------------------------------------------


async def test_failing_speak_is_recorded_as_an_internal_error_and_propagates():
    """A speak() that raises OSError: the record says error, an Error(internal) is emitted, the error escapes."""
    calls = 0

    async def speak_then_fail(say: Say) -> bytes:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError("disk full")
        return silence(1.0, RATE)

    session, events = make_session(MINIMAL, speak=speak_then_fail)
    with pytest.raises(OSError, match="disk full"):
        await drive(session, [*quiet(1.5), Transcript(text="yes", final=True), *quiet(1.0)])
    assert (session.record.outcome, session.record.ended_by) == ("error", "error")
    assert [(e.code, e.message) for e in of(Error, events)] == [("internal", "OSError: disk full")]
    assert [e.outcome for e in of(CallEnded, events)] == ["error"]


async def test_max_call_seconds_ends_the_call_as_max_duration():
    """Reaching max_call_seconds hangs up with outcome max_duration, not dropped."""
    session, events = make_session(MINIMAL, speak=silent_prompts(1.0), config=SessionConfig(max_call_seconds=3))
    outs = await drive(session, quiet(10.0))
    assert isinstance(outs[-1][1], Hangup) and outs[-1][1].reason == "max_duration"
    assert [e.code for e in of(Error, events)] == ["call_too_long"]
    assert (session.record.outcome, session.record.ended_by) == ("max_duration", "robot")
    assert [e.outcome for e in of(CallEnded, events)] == ["max_duration"]
    assert session.now < 3.1  # no more input was taken


# --- (7) (10) what the record measures -------------------------------------------------------


async def test_reply_latency_includes_the_end_of_speech_wait():
    """Reply latency runs from the caller's end of speech, so it includes the VAD's end-silence."""
    session, _ = make_session(PLANS / "pre_delivery.yaml", texts=["送货上门吧"], speak=silent_prompts(2.0),
                              variables=ZH_VARS)
    await drive(session, [*quiet(2.5), *spoken("zh-CN", "door"), *quiet(3.0)])
    turn = session.record.turns[0]
    assert turn.intent == "door" and turn.speech_ended_at is not None
    # The VAD waited end_silence_ms of quiet before deciding the caller had finished (less a frame of rounding).
    assert turn.reply_latency >= VadConfig().end_silence_ms / 1000 - 0.01


async def test_heard_prompt_until_counts_from_the_first_prompt_of_the_reply():
    """A barge-in into a two-prompt reply measures what was heard from the start of the first prompt."""
    session, _ = make_session(PLANS / "pre_delivery.yaml", texts=["放驿站"], speak=silent_prompts(3.0),
                              variables=ZH_VARS)
    # nomatch -> "nomatch_1" (3 s) + "greeting_short" (3 s) queued from 3.2 s; the caller talks 1 s into it.
    outs = await drive(session, [*quiet(3.2), Transcript(text="今天天气不错", final=True), *quiet(1.0),
                                 *spoken("zh-CN", "door"), *quiet(2.0)])
    reply_at = [t for t, o in outs if isinstance(o, Play)][1]
    stop_at = next(t for t, o in outs if isinstance(o, StopPlayback))
    turn = session.record.turns[1]
    assert (turn.prompt_id, turn.barged_in, turn.intent) == ("nomatch_1+greeting_short", True, "station")
    assert 1.0 < turn.heard_prompt_until < 3.0
    assert turn.heard_prompt_until == pytest.approx(stop_at - reply_at, abs=0.001)


# --- (8) pii ---------------------------------------------------------------------------------


async def test_pii_variables_are_masked_in_events_and_record(tmp_path):
    """A `pii: true` variable never leaves the session unmasked: CallStarted and the record mask it."""
    loaded = parse_plan(PII_PLAN)
    async with Pyttsx3Synthesizer() as synth:
        cache = PromptCache(synth, tmp_path / "tts")

        async def speak(say: Say) -> bytes:
            return await render_prompt(say.parts, language=say.language, rate=RATE, cache=cache,
                                       base_dir=loaded.base_dir)

        events: list = []
        session = CallSession(call_id="pii", engine=DialogEngine(loaded),
                              recognizer=TranscriptReplayRecognizer([], rate=RATE), speak=speak,
                              emit=events.append, variables={"name": "Bo", "phone": "13812345678"})
        await drive(session, [*quiet(0.5), Transcript(text="yes", final=True), *quiet(0.5)])
    started = of(CallStarted, events)[0]
    assert started.variables == {"name": "Bo", "phone": "138****5678"}
    ended = of(CallEnded, events)[0]
    assert ended.outcome == "confirmed"
    assert ended.record.variables["phone"] == "138****5678"
    assert ended.record.variables["name"] == "Bo" and ended.record.variables["answer"] == "yes"
    assert "13812345678" not in repr(started) + repr(ended)


# --- (11) the call recording -----------------------------------------------------------------


def robot_channel(path: Path) -> np.ndarray:
    """The robot (right) channel of a stereo call recording."""
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == RATE and data.ndim == 2
    return data[:, 1]


def test_recorder_barge_in_silences_the_rest_of_the_queue(tmp_path):
    """Three prompts queued back to back; a cut at 1.5 s keeps the first, half the second, none of the third."""
    one = np.full(RATE, 1000, dtype=np.int16).tobytes()  # 1 s of a constant, non-silent level
    rec = CallRecorder(rate=RATE)
    rec.robot(one, at=0.0)
    rec.robot(one, at=1.0)
    rec.robot(one, at=2.0)
    rec.cut(at=1.5)
    rec.robot(one, at=4.0)  # the robot's next reply, after the barge-in: heard in full
    assert rec.write(tmp_path / "call.wav") == pytest.approx(5.0)
    robot = robot_channel(tmp_path / "call.wav")
    assert (robot[: int(1.5 * RATE)] == 1000).all()
    assert (robot[int(1.5 * RATE) : 4 * RATE] == 0).all()
    assert (robot[4 * RATE :] == 1000).all()


def find_exact(track: np.ndarray, piece: np.ndarray, lo: int, hi: int) -> int | None:
    """First offset in [lo, hi) at which `piece` appears sample for sample in `track`."""
    for offset in range(lo, min(hi, len(track) - len(piece) + 1)):
        if track[offset] == piece[0] and np.array_equal(track[offset : offset + len(piece)], piece):
            return offset
    return None


async def test_simulate_recording_places_a_reply_prompts_back_to_back(tmp_path):
    """simulate --record: the two prompts of one reply follow each other with no gap and no overlap."""
    settings = Settings.from_env({"HOME": str(tmp_path)}, cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")
    events: list = []
    await simulate(plan=PLANS / "pre_delivery.yaml", steps=[CallerStep("say", "今天天气不错")], variables=ZH_VARS,
                   settings=settings, emit=events.append, record_to=tmp_path / "call.wav",
                   recognizer=TranscriptReplayRecognizer([], rate=RATE))
    says = of(Say, events)
    assert [s.prompt_id for s in says] == ["greeting", "nomatch_1", "greeting_short"]
    loaded = load_plan(PLANS / "pre_delivery.yaml")
    async with Pyttsx3Synthesizer() as synth:  # the same cache: the very samples the call played
        cache = PromptCache(synth, settings.cache_dir)
        pcm = [np.frombuffer(await render_prompt(s.parts, language=s.language, rate=RATE, cache=cache,
                                                 base_dir=loaded.base_dir), dtype=np.int16) for s in says]
    robot = robot_channel(tmp_path / "call.wav")
    assert np.array_equal(robot[: len(pcm[0])], pcm[0])
    # The caller answers within a frame of the greeting's end; the reply follows at once.
    reply = find_exact(robot, pcm[1], len(pcm[0]), len(pcm[0]) + RATE // 10)
    assert reply is not None
    second = reply + len(pcm[1])
    assert np.array_equal(robot[second : second + len(pcm[2])], pcm[2])


# --- (12) the conversation printer -----------------------------------------------------------


def test_printer_prints_markup_like_text_verbatim():
    """Transcripts and prompts with [brackets] print as written instead of crashing rich."""
    out = io.StringIO()
    printer = ConversationPrinter(Console(file=out, width=100, color_system=None))
    printer(Say(prompt_id="g", parts=(PromptPart(text="press [1] now"),), language="en-US"))
    printer(Transcript(text="[unk] 送货上门", final=True))
    printer(Transcript(text="what about [/] this", final=True))
    printer(Transcript(text="[bold red]x", final=True))
    printer(Dtmf(digit="3"))
    printer(Error(code="asr", message="Vosk failed [/] badly"))
    printer(Hangup(reason="[done]"))
    text = out.getvalue()
    for needle in ("press [1] now", "[unk] 送货上门", "what about [/] this", "[bold red]x", "[key 3]",
                   "[asr] Vosk failed [/] badly", "([done])"):
        assert needle in text


# --- (13) run() ends with the call -------------------------------------------------------------


async def test_run_returns_after_hangup_without_waiting_for_more_input():
    """Once the dialog hangs up, run() finishes even if the gateway sends nothing more."""
    session, events = make_session(MINIMAL)
    outs: list = []

    async def incoming() -> AsyncIterator[Incoming]:
        for item in quiet(2.5):
            yield item
        yield Dtmf(digit="1")  # yes -> done: "Thank you", hang up
        await asyncio.Event().wait()  # the gateway waits for our hang-up to take effect

    async def consume() -> None:
        async for out in session.run(incoming()):
            outs.append(out)

    await asyncio.wait_for(consume(), timeout=10)  # without the fix this never returns
    assert isinstance(outs[-1], Hangup)
    assert [e.outcome for e in of(CallEnded, events)] == ["confirmed"]


# --- (14) plan loading ------------------------------------------------------------------------


@pytest.mark.parametrize("opening, closing", [("[", "]"), ("{a: ", "}")])
def test_deeply_nested_yaml_is_a_plan_error(opening, closing):
    """A pathologically nested plan is refused with a PlanError, not a RecursionError."""
    text = "plan: x\na: " + opening * 600 + "1" + closing * 600 + "\n"
    with pytest.raises(PlanError) as info:
        parse_plan(text)
    assert "too_large" in info.value.message


PII_READ_PLAN = """
plan: pii_read
languages: [en-US]
variables:
  phone: {description: "The callee's mobile", pii: true}
  callback: {required: false, description: "A number to call back", pii: true}
prompts:
  ask: {en-US: "Is {phone} the best number? If not, key another one."}
  ok: {en-US: "Thank you."}
  sorry: {en-US: "Sorry?"}
start: ask
states:
  ask:
    say: ask
    capture: {slot: callback, type: phone}
    on: {captured: done}
    noinput: [{say: [sorry], hangup: true, outcome: no_answer}]
    nomatch: [{say: [sorry], hangup: true, outcome: no_answer}]
  done: {say: ok, end: hangup, outcome: confirmed}
"""


async def test_pii_read_out_or_keyed_is_masked_in_the_record():
    """A prompt that reads a pii value, and a pii slot keyed by the caller, are masked in the record."""
    loaded = parse_plan(PII_READ_PLAN)
    events: list = []
    session = CallSession(call_id="pii2", engine=DialogEngine(loaded),
                          recognizer=TranscriptReplayRecognizer([], rate=RATE), speak=silent_prompts(1.0),
                          emit=events.append, variables={"phone": "13812345678"})
    keys = [Dtmf(digit=d) for d in "13987654321#"]
    await drive(session, [*quiet(1.2), *keys, *quiet(0.5)])
    ended = of(CallEnded, events)[0]
    assert ended.outcome == "confirmed"
    turn = ended.record.turns[0]
    assert "138****5678" in turn.prompt and "13812345678" not in turn.prompt
    assert turn.slots == {"callback": "139****4321"} and turn.heard == "139****4321#"
    assert "13987654321" not in repr(ended.record)
