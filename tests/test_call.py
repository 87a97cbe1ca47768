"""Whole calls: recorded caller WAVs streamed through the real VAD, intent, engine and espeak-ng TTS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import PLANS, fixture_entry, fixture_path

from voicebot.asr import TranscriptReplayRecognizer
from voicebot.audio import chunks, read_wav, silence
from voicebot.call import CallSession, SessionConfig
from voicebot.dialog.engine import DialogEngine
from voicebot.dialog.load import load_plan
from voicebot.events import AudioChunk, CallEnded, Play, Say, StopPlayback, Transfer
from voicebot.simulate import CallerStep, simulate
from voicebot.store import CallStore
from voicebot.tts import PromptCache, Pyttsx3Synthesizer, render_prompt

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)
ZH_VARS = {"customer_name": "王先生", "tracking_tail": "5678"}
EN_VARS = {"customer_name": "Ms Smith", "tracking_tail": "4321", "company": "Acme Express",
           "station_name": "the corner shop"}


def replay(language: str, ids: list[str], rate: int = 8000) -> TranscriptReplayRecognizer:
    """FAKE recogniser (no zh/en Vosk model installs here) that returns each fixture's manifest text."""
    return TranscriptReplayRecognizer([fixture_entry(language, i, rate)["text"] for i in ids], rate=rate,
                                      language=language)


async def call_with_wavs(settings, language: str, ids: list[str], *, rate: int = 8000, variables=None,
                         events: list | None = None, store: CallStore | None = None):
    """Run pre_delivery with the caller answering each prompt with one fixture WAV."""
    steps = [CallerStep("wav", str(fixture_path(language, i, rate))) for i in ids]
    return await simulate(
        plan=PLANS / "pre_delivery.yaml", steps=steps,
        variables=variables or (ZH_VARS if language == "zh-CN" else EN_VARS),
        settings=settings, emit=(events if events is not None else []).append, language=language, rate=rate,
        recognizer=replay(language, ids, rate), clock=lambda: NOW, store=store,
    )


@pytest.mark.parametrize(
    ("ids", "outcome", "choice"),
    [
        (["door"], "door_delivery", "door"),
        (["door_home"], "door_delivery", "door"),
        (["station"], "station_consent", "station"),
        (["locker"], "locker_consent", "locker"),
        (["refuse"], "refused", "refuse"),
        (["wrong_number"], "wrong_number", None),
        (["dnc"], "do_not_call", "door"),
        (["agent"], "transferred", None),
        (["goodbye"], "default_door", "door"),
        (["what_parcel", "station"], "station_consent", "station"),
        (["not_home", "locker"], "locker_consent", "locker"),
        (["weather", "door"], "door_delivery", "door"),
    ],
)
async def test_pre_delivery_outcomes_from_zh_wavs(settings, ids, outcome, choice):
    """Each answer, spoken as a WAV, leads to its outcome and recorded choice."""
    record = await call_with_wavs(settings, "zh-CN", ids)
    assert record.outcome == outcome
    assert record.variables.get("choice") == choice
    heard = [t.heard for t in record.turns if t.heard]
    assert heard == [fixture_entry("zh-CN", i)["text"] for i in ids]
    assert all(t.speech_ended_at is not None and t.reply_latency is not None for t in record.turns if t.heard)


async def test_reschedule_captures_date_and_time_and_skips_asking_again(settings):
    """明天下午三点再送 fills the time slot in one go: the plan does not ask for the time again."""
    events: list = []
    record = await call_with_wavs(settings, "zh-CN", ["another_time"], events=events)
    assert record.outcome == "rescheduled"
    tomorrow = (NOW + timedelta(days=1)).date().isoformat()
    assert record.variables["when"] == {"date": tomorrow, "time": "15:00"}
    said = [e.prompt_id for e in events if isinstance(e, Say)]
    assert said == ["greeting", "confirm_time"]


async def test_english_call_at_16k(settings):
    """The same plan in en-US, with the line at 16 kHz."""
    events: list = []
    record = await call_with_wavs(settings, "en-US", ["weather", "locker"], rate=16000, events=events)
    assert [t.intent for t in record.turns if t.heard] == ["nomatch", "locker"]
    assert record.outcome == "locker_consent"
    greeting = next(e for e in events if isinstance(e, Say))
    assert "Ms Smith" in greeting.text and "4 3 2 1" in greeting.text


async def test_noinput_escalates_to_safe_default(settings):
    """Silence: reprompt, move to the short question, reprompt, then the safe default (door delivery)."""
    steps = [CallerStep("silence")] * 4
    record = await simulate(plan=PLANS / "pre_delivery.yaml", steps=steps, variables=ZH_VARS, settings=settings,
                            emit=[].append, recognizer=replay("zh-CN", []), clock=lambda: NOW)
    assert [t.intent for t in record.turns if t.intent] == ["noinput"] * 4
    assert record.outcome == "default_door"
    assert record.variables["choice"] == "door"


async def test_backchannel_is_not_an_answer(settings):
    """嗯 while the robot waits is ignored; the caller's real answer then counts."""
    record = await call_with_wavs(settings, "zh-CN", ["backchannel", "door"])
    # 嗯 is neither an answer nor a no-match: the robot keeps waiting (here until its no-input timeout).
    assert [t.intent for t in record.turns if t.intent] == ["noinput", "door"]
    assert "嗯" not in [t.heard for t in record.turns]
    assert record.outcome == "door_delivery"


async def test_inband_dtmf_tone_selects_option(settings):
    """A key sent as audio tones (no signalling) is detected and chosen: 1 = door."""
    steps = [CallerStep("wav", str(fixture_path("zh-CN", "dtmf_1")))]
    record = await simulate(plan=PLANS / "pre_delivery.yaml", steps=steps, variables=ZH_VARS, settings=settings,
                            emit=[].append, recognizer=replay("zh-CN", []), clock=lambda: NOW)
    turn = next(t for t in record.turns if t.intent)
    assert (turn.intent, turn.source, turn.heard) == ("door", "dtmf", "1")
    assert record.outcome == "door_delivery"


async def test_keypad_event_and_transfer_context(settings):
    """Key 0 transfers to a human, who receives the conversation so far."""
    events: list = []
    steps = [CallerStep("say", "什么快递"), CallerStep("keys", "0")]
    record = await simulate(plan=PLANS / "pre_delivery.yaml", steps=steps, variables=ZH_VARS, settings=settings,
                            emit=events.append, recognizer=replay("zh-CN", []), clock=lambda: NOW)
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert transfer.target == "delivery_support" and transfer.reason == "caller_request"
    texts = [line["text"] for line in transfer.context["transcript"]]
    assert transfer.context["intent"] == "agent" and transfer.context["caller"] == ""
    assert transfer.context["variables"]["customer_name"] == "王先生"
    assert "什么快递" in texts and any("王先生" in t for t in texts)
    assert record.outcome == "transferred" and record.ended_by == "transfer"


async def test_caller_hangs_up_mid_call_record_is_complete_and_stored(settings, tmp_path):
    """A caller who hangs up after one answer leaves a complete record marked dropped, in the store."""
    async with CallStore(tmp_path / "calls.db") as store:
        record = await simulate(
            plan=PLANS / "pre_delivery.yaml", steps=[CallerStep("wav", str(fixture_path("zh-CN", "what_parcel")))],
            variables=ZH_VARS, settings=settings, emit=[].append, recognizer=replay("zh-CN", ["what_parcel"]),
            clock=lambda: NOW, store=store,
        )
        stored = await store.get(record.call_id)
    assert record.outcome == "dropped" and record.ended_by == "caller"
    assert stored == record
    assert [t.intent for t in stored.turns] == ["what_parcel", ""]
    assert "请问送货上门" in stored.turns[-1].prompt  # the question left unanswered


async def _session(settings, plan_path: Path, recognizer, events: list, rate=8000, config=None):
    synth = Pyttsx3Synthesizer()
    await synth.start()
    cache = PromptCache(synth, settings.cache_dir)
    loaded = load_plan(plan_path)

    async def speak(say: Say) -> bytes:
        return await render_prompt(say.parts, language=say.language, rate=rate, cache=cache,
                                   base_dir=loaded.base_dir)

    session = CallSession(call_id="t1", engine=DialogEngine(loaded), recognizer=recognizer, speak=speak,
                          emit=events.append, variables=dict(ZH_VARS), config=config or SessionConfig(rate=rate),
                          clock=lambda: NOW)
    return session, synth


async def _stream(pcm: bytes, rate: int):
    for frame in chunks(pcm, rate=rate, ms=20):
        yield AudioChunk(pcm=frame, rate=rate)


async def test_barge_in_stops_playback_and_records_what_was_heard(settings):
    """Speaking over the greeting stops it at once (gateway told to flush) and the answer is taken."""
    events: list = []
    session, synth = await _session(settings, PLANS / "pre_delivery.yaml", replay("zh-CN", ["door"]), events)
    door, _rate = read_wav(fixture_path("zh-CN", "door"))
    outs = []
    try:
        # The caller starts talking 1 s into a greeting that lasts several seconds.
        async for out in session.run(_stream(silence(1.0, 8000) + door + silence(1.5, 8000), 8000)):
            outs.append(out)
    finally:
        await synth.aclose()
    greeting = outs[0]
    assert isinstance(greeting, Play) and len(greeting.pcm) / 2 / 8000 > 5
    assert any(isinstance(o, StopPlayback) for o in outs)
    turn = session.record.turns[0]
    assert turn.barged_in and turn.intent == "door"
    assert 1.0 < turn.heard_prompt_until < 3.0
    assert session.record.outcome == "door_delivery"


async def test_short_noise_does_not_barge_in(settings):
    """A click or cough shorter than the barge-in guard does not cut the robot off."""
    import numpy as np

    from voicebot.audio import from_array

    events: list = []
    session, synth = await _session(settings, PLANS / "pre_delivery.yaml", replay("zh-CN", []), events)
    burst = from_array((np.random.default_rng(1).standard_normal(8000 * 2 // 10) * 0.3).clip(-1, 1))  # 0.2 s
    outs = []
    try:
        async for out in session.run(_stream(silence(1.0, 8000) + burst + silence(1.0, 8000), 8000)):
            outs.append(out)
    finally:
        await synth.aclose()
    assert not any(isinstance(o, StopPlayback) for o in outs)
    assert session.record.outcome == "dropped"


async def test_16k_audio_into_8k_line_is_resampled(settings):
    """A gateway sending 16 kHz into an 8 kHz session still gets understood."""
    events: list = []
    session, synth = await _session(settings, PLANS / "pre_delivery.yaml", replay("zh-CN", ["station"]), events)
    pcm16, rate16 = read_wav(fixture_path("zh-CN", "station", 16000))
    assert rate16 == 16000
    try:
        stream_pcm = silence(40.0, 16000) + pcm16 + silence(1.5, 16000)
        outs = [out async for out in session.run(_stream(stream_pcm, 16000))]
    finally:
        await synth.aclose()
    assert len(outs[0].pcm) / 2 / 8000 < 40.0  # the caller waited for the greeting to end
    assert session.record.outcome == "station_consent"
    assert any(isinstance(e, CallEnded) for e in events)



async def test_static_prompts_are_rendered_when_the_plan_loads(settings):
    """Every prompt without variables is in the TTS cache after a call, even those never spoken."""
    from voicebot.tts import PromptCache as Cache

    await call_with_wavs(settings, "zh-CN", ["door"])
    loaded = load_plan(PLANS / "pre_delivery.yaml")
    static = [text for text, lang in loaded.plan.static_texts() if lang == "zh-CN"]
    assert len(static) >= 12
    probe = Cache(Pyttsx3Synthesizer(), settings.cache_dir)  # never started: only computes paths
    for text in static:
        assert probe.path_for(probe.key(text, language="zh-CN", rate=8000)).is_file(), text


SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"


@pytest.mark.speech
async def test_real_human_speech_barges_in_over_the_greeting(settings):
    """A real Mandarin recording (AISHELL) spoken over the greeting interrupts it within the guard time."""
    clip = SPEECH / "zh" / "aishell_BAC009S0724W0121.wav"
    if not clip.is_file():
        pytest.skip(f"real speech clips not present at {SPEECH} (they live beside the repository in CI)")
    pcm, rate = read_wav(clip)
    from voicebot.audio import resample

    speech = resample(pcm, from_rate=rate, to_rate=8000)
    events: list = []
    session, synth = await _session(settings, PLANS / "pre_delivery.yaml", replay("zh-CN", []), events)
    try:
        outs = [o async for o in session.run(_stream(silence(2.0, 8000) + speech + silence(1.0, 8000), 8000))]
    finally:
        await synth.aclose()
    stop_at = session.record.turns[0].heard_prompt_until
    assert any(isinstance(o, StopPlayback) for o in outs)
    # Speech starts at 2.0 s; the interruption comes after the 0.3 s guard and well before 1 s.
    assert 2.2 < stop_at < 3.0


async def test_endless_speech_is_cut_at_the_maximum_utterance_length(settings):
    """A caller who never stops (or a noisy line) is cut off at max_utterance_s and answered."""
    from voicebot.vad import VadConfig

    events: list = []
    config = SessionConfig(rate=8000, vad=VadConfig(max_utterance_s=6.0))
    session, synth = await _session(settings, PLANS / "pre_delivery.yaml", replay("zh-CN", ["station"]), events,
                                    config=config)
    long_pcm, _ = read_wav(fixture_path("zh-CN", "long_speech"))
    try:
        outs = [o async for o in session.run(_stream(silence(40.0, 8000) + long_pcm + silence(2.0, 8000), 8000))]
    finally:
        await synth.aclose()
    ends = [e for e in events if type(e).__name__ == "SpeechEnded"]
    assert ends and ends[0].duration == pytest.approx(6.0, abs=0.05)
    assert session.record.outcome == "station_consent"
    assert outs


async def test_marks_after_a_barge_in_do_not_count_as_heard(settings):
    """Twilio echoes marks of flushed audio too: a mark for a prompt cut by barge-in is not 'played'."""
    from voicebot.gateways.base import MarkReached

    events: list = []
    session, synth = await _session(settings, PLANS / "pre_delivery.yaml", replay("zh-CN", ["door"]), events)
    door, _ = read_wav(fixture_path("zh-CN", "door"))

    async def incoming():
        async for item in _stream(silence(1.0, 8000) + door, 8000):
            yield item
        yield MarkReached(name="greeting#1")  # the gateway's echo after `clear`
        async for item in _stream(silence(1.5, 8000), 8000):
            yield item

    try:
        outs = [o async for o in session.run(incoming())]
    finally:
        await synth.aclose()
    assert any(isinstance(o, StopPlayback) for o in outs)
    assert session.record.turns[0].barged_in and session.record.turns[0].played == []
