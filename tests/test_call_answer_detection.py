"""Outbound answer detection in the call session: listen first, talk to people, hang up on machines."""

from __future__ import annotations

import numpy as np
from conftest import PLANS, fixture_path

from voicebot.amd import AmdConfig
from voicebot.asr import TranscriptReplayRecognizer
from voicebot.audio import chunks, read_wav, resample, silence
from voicebot.call import CallSession, SessionConfig
from voicebot.dialog.engine import DialogEngine
from voicebot.dialog.load import load_plan
from voicebot.events import AnswerDetected, AudioChunk, CallEnded, Hangup, Say
from voicebot.tts import PromptCache, Pyttsx3Synthesizer, render_prompt

RATE = 8000
BEEP = (np.sin(2 * np.pi * 1000 * np.arange(RATE // 2) / RATE) * 12000).astype("<i2").tobytes()


def _audio(language: str, name: str) -> bytes:
    pcm, rate = read_wav(fixture_path(language, name))
    return resample(pcm, from_rate=rate, to_rate=RATE)


async def _call(settings, opening: bytes, *, texts: list[str], then: bytes = b"") -> tuple[list, list]:
    loaded = load_plan(PLANS / "pre_delivery.yaml")
    events: list[object] = []
    outputs: list[object] = []
    async with Pyttsx3Synthesizer() as synth:
        cache = PromptCache(synth, settings.cache_dir)

        async def speak(say: Say) -> bytes:
            return await render_prompt(say.parts, language=say.language, rate=RATE, cache=cache,
                                       base_dir=loaded.base_dir)

        session = CallSession(call_id="amd-1", engine=DialogEngine(loaded), speak=speak, emit=events.append,
                              recognizer=TranscriptReplayRecognizer(texts, rate=RATE, language="zh-CN"),
                              variables={"customer_name": "王先生", "tracking_tail": "1234"},
                              config=SessionConfig(rate=RATE, answer_detection=AmdConfig()))

        async def line():
            for frame in chunks(opening + then, rate=RATE):
                yield AudioChunk(pcm=frame, rate=RATE)

        async for out in session.run(line()):
            outputs.append(out)
    return events, outputs


async def test_a_machine_is_hung_up_on_before_the_robot_says_a_word(settings):
    greeting = _audio("zh-CN", "long_speech")[: 4 * RATE * 2]
    events, outputs = await _call(settings, greeting + silence(0.3, RATE) + BEEP, texts=[])
    verdict = next(e for e in events if isinstance(e, AnswerDetected))
    assert (verdict.verdict, verdict.reason) == ("machine", "long greeting")
    assert not any(isinstance(e, Say) for e in events)
    assert [type(o) for o in outputs] == [Hangup]
    ended = next(e for e in events if isinstance(e, CallEnded))
    assert ended.outcome == "voicemail" and ended.record.ended_by == "robot"


async def test_a_person_says_hello_and_then_hears_the_greeting(settings):
    hello = _audio("zh-CN", "yes") + silence(1.0, RATE)
    answer = silence(16.0, RATE) + _audio("zh-CN", "door") + silence(3.0, RATE)
    events, _ = await _call(settings, hello, texts=["送货上门吧"], then=answer)
    kinds = [type(e).__name__ for e in events if isinstance(e, AnswerDetected | Say)]
    assert kinds[0] == "AnswerDetected" and "Say" in kinds  # the robot speaks only after the verdict
    verdict = next(e for e in events if isinstance(e, AnswerDetected))
    assert verdict.verdict == "human" and verdict.after < 3.0
    assert next(e for e in events if isinstance(e, CallEnded)).outcome == "door_delivery"


async def test_hanging_up_before_a_verdict_is_a_dropped_call(settings):
    events, outputs = await _call(settings, silence(0.5, RATE), texts=[])
    assert outputs == [] and not any(isinstance(e, AnswerDetected) for e in events)
    assert next(e for e in events if isinstance(e, CallEnded)).outcome == "dropped"
