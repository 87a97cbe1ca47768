"""Answering-machine detection on real audio: espeak-ng speech, the committed fixtures, real human clips."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from conftest import fixture_path

from voicebot.amd import AmdConfig, AmdResult, AnsweringMachineDetector
from voicebot.audio import chunks, read_wav, resample, silence
from voicebot.campaign.simulator import VOICEMAIL, beep
from voicebot.errors import VoicebotError
from voicebot.tts import Pyttsx3Synthesizer

RATE = 8000
SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"


def detect(pcm: bytes, *, rate: int = RATE) -> AmdResult | None:
    """The verdict fed in 20 ms chunks; fed all at once it must be the same."""
    chunked = AnsweringMachineDetector(rate=rate)
    result = None
    for frame in chunks(pcm, rate=rate, ms=20):
        if (result := chunked.feed(frame)) is not None:
            break
    whole = AnsweringMachineDetector(rate=rate).feed(pcm)
    assert whole == result
    return result


async def speak(text: str, language: str) -> bytes:
    async with Pyttsx3Synthesizer() as synth:
        return await synth.synthesize(text, language=language, rate=RATE)


def trimmed(pcm: bytes) -> bytes:
    """Speech without espeak-ng's own leading and trailing quiet, so pauses between phrases are what we say."""
    samples = np.frombuffer(pcm, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > 300)
    return samples[loud[0] : loud[-1] + 1].tobytes()


@pytest.mark.parametrize(("text", "language"), [("喂，你好", "zh-CN"), ("Hello?", "en-US"), ("喂？", "zh-CN")])
async def test_a_short_hello_then_silence_is_a_person(text, language):
    hello = await speak(text, language)
    result = detect(silence(0.3, RATE) + hello + silence(2.0, RATE))
    assert result is not None and result.verdict == "human" and result.reason == "short greeting, then silence"
    # Decided once the callee has waited for us, well before they give up: hello + 0.7 s of silence, plus slack.
    assert 0.3 + 0.7 < result.after < 0.3 + len(hello) / 2 / RATE + 1.0


async def test_two_short_hellos_with_a_pause_are_still_a_person():
    wei = await speak("喂？", "zh-CN")
    result = detect(silence(0.3, RATE) + wei + silence(0.5, RATE) + wei + silence(2.0, RATE))
    assert result is not None and result.verdict == "human"


@pytest.mark.parametrize(("family", "language"), [("zh", "zh-CN"), ("en", "en-US")])
async def test_a_long_voicemail_greeting_is_a_machine_before_it_ends(family, language):
    greeting = await speak(VOICEMAIL[family], language)
    assert len(greeting) / 2 / RATE > 4.0
    result = detect(silence(0.3, RATE) + greeting + silence(1.0, RATE))
    assert result is not None and (result.verdict, result.reason) == ("machine", "long greeting")
    assert result.after < 3.0  # max_greeting 1.6 s of talk: decided early in the greeting


@pytest.mark.parametrize(("language", "phrases"), [
    ("en-US", ["Hi", "this is John", "I can't take your call", "leave a message"]),
    ("zh-CN", ["您好", "我是张三", "现在不方便接听", "请留言"]),
])
async def test_a_greeting_of_short_sentences_with_short_pauses_is_one_long_greeting(language, phrases):
    # No single sentence lasts 1.6 s, and no pause reaches the 0.7 s a person waits: the talk adds up.
    async with Pyttsx3Synthesizer() as synth:
        parts = [trimmed(await synth.synthesize(p, language=language, rate=RATE)) for p in phrases]
    pcm = silence(0.3, RATE) + b"".join(part + silence(0.35, RATE) for part in parts) + silence(2.0, RATE)
    result = detect(pcm)
    assert result is not None and (result.verdict, result.reason) == ("machine", "long greeting")
    assert result.after < 4.0


def test_a_beep_after_silence_is_a_machine():
    result = detect(silence(1.0, RATE) + beep(RATE) + silence(1.0, RATE))
    assert result is not None and (result.verdict, result.reason) == ("machine", "beep")
    assert 1.0 + AmdConfig().beep_min <= result.after <= 1.0 + AmdConfig().beep_min + 0.06


def test_a_beep_at_16k_and_other_tones():
    assert detect(silence(0.5, 16000) + beep(16000, freq=1400) + silence(1.0, 16000), rate=16000).reason == "beep"
    for freq in (440.0, 3200.0):  # outside the voicemail beep band: not a beep
        result = detect(silence(0.5, RATE) + beep(RATE, seconds=1.0, freq=freq) + silence(2.0, RATE))
        assert result is not None and result.reason != "beep", freq
    # A blip shorter than beep_min is not a beep either.
    short = detect(silence(0.5, RATE) + beep(RATE, seconds=0.1) + silence(4.0, RATE))
    assert short is not None and short.reason != "beep"


def test_pure_silence_is_unknown_after_the_initial_silence_limit():
    result = detect(silence(6.0, RATE))
    assert result == AmdResult(verdict="unknown", reason="silence", after=AmdConfig().max_initial_silence)


def test_not_enough_audio_yet_means_no_verdict():
    detector = AnsweringMachineDetector(rate=RATE)
    assert detector.feed(silence(1.0, RATE)) is None
    assert detector.feed(b"\x00" * 7) is None  # a partial frame waits for the rest
    assert detector.feed(silence(2.5, RATE)) == AmdResult(verdict="unknown", reason="silence", after=3.0)
    assert detector.feed(beep(RATE)) == detector.result  # decided: later audio changes nothing


def test_recorded_short_answer_fixture_is_a_person():
    pcm, rate = read_wav(fixture_path("zh-CN", "yes"))  # 对的
    assert rate == RATE
    result = detect(pcm + silence(1.5, RATE))
    assert result is not None and result.verdict == "human"


def test_recorded_long_speech_fixture_is_a_machine():
    pcm, _ = read_wav(fixture_path("zh-CN", "long_speech"))
    result = detect(pcm)
    assert result is not None and (result.verdict, result.reason) == ("machine", "long greeting")


@pytest.mark.parametrize("gain", [1.0, 10.0, 40.0])
def test_line_noise_is_never_a_beep(gain):
    pcm, _ = read_wav(fixture_path("", "noise"))
    loud = np.clip(np.frombuffer(pcm, dtype="<i2").astype(np.float64) * gain, -32767, 32767).astype("<i2")
    result = detect(loud.tobytes() + silence(3.0, RATE))
    assert result is not None and result.verdict != "machine"


def test_white_noise_and_dtmf_are_not_beeps():
    rng = np.random.default_rng(7)
    white = np.clip(rng.standard_normal(3 * RATE) * 8000, -32767, 32767).astype("<i2").tobytes()
    assert detect(white + silence(3.0, RATE)).reason != "beep"
    dtmf, _ = read_wav(fixture_path("", "dtmf_1"))  # two tones at once: a key press, not a voicemail beep
    assert detect(dtmf + silence(3.0, RATE)).reason != "beep"


def test_bad_configuration_and_rate_are_refused():
    with pytest.raises(VoicebotError, match="invalid AMD config"):
        AmdConfig(max_greeting=6.0, max_analysis=5.0)
    with pytest.raises(VoicebotError, match="invalid AMD config"):
        AmdConfig(after_greeting_silence=0)
    with pytest.raises(VoicebotError):
        AnsweringMachineDetector(rate=12345)


def _real(path: str) -> bytes:
    clip = SPEECH / path
    if not clip.is_file():
        pytest.skip(f"real speech clips not present at {SPEECH} (they live beside the repository in CI)")
    pcm, rate = read_wav(clip)
    return resample(pcm, from_rate=rate, to_rate=RATE)


@pytest.mark.speech
@pytest.mark.parametrize("path", ["zh/wenetspeech_nst_ID002.wav", "en/speechbrain_spk1_snt5.wav",
                                  "zh/aishell_BAC009S0724W0121.wav", "en/OSR_us_000_0034_8k.wav"])
def test_real_people_reading_sentences_sound_like_a_recorded_greeting(path):
    # Real read speech pauses between words; over two seconds of it is not someone saying hello and waiting.
    result = detect(_real(path) + silence(2.0, RATE))
    assert result is not None and (result.verdict, result.reason) == ("machine", "long greeting")


@pytest.mark.speech
def test_a_real_short_utterance_is_a_person():
    result = detect(silence(0.3, RATE) + _real("zh/speechrecognition_chinese.wav") + silence(2.0, RATE))
    assert result is not None and result.verdict == "human"
