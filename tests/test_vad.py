"""Tests for voicebot.vad: synthetic bursts and noise, and real human speech at 16k, 8k and μ-law."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicebot import audio
from voicebot.errors import AudioFormatError, ConfigError
from voicebot.events import SpeechEnded, SpeechStarted
from voicebot.vad import Segmenter, VadConfig

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
LEAD, TAIL = 1.0, 1.5  # silence padded around each clip

# Clips that are one utterance without pauses >= 600 ms and start on a quiet background (left out:
# funasr_cs_example_2 opens with -45 dBFS murmur right at the threshold, thchs30 and wenetspeech ID001
# open with loud background that the padding turns into a sudden onset).
SINGLE = [
    "en/speechbrain_spk1_snt1.wav", "en/speechbrain_spk1_snt2.wav", "en/speechbrain_spk1_snt3.wav",
    "en/speechbrain_spk1_snt4.wav", "en/speechbrain_spk1_snt5.wav", "en/speechbrain_spk2_snt1.wav",
    "en/speechbrain_spk2_snt2.wav", "en/speechbrain_spk2_snt3.wav", "en/speechbrain_spk2_snt4.wav",
    "en/speechbrain_spk2_snt5.wav", "en/librispeech_1995-1837-0001.wav", "en/funasr_cs_example_4.wav",
    "zh/aishell_BAC009S0724W0121.wav", "zh/aishell_BAC009S0764W0121.wav",
    "zh/cosyvoice_zero_shot_prompt.wav", "zh/funasr_asr_example.wav",
    "zh/masr_test.wav", "zh/speechrecognition_chinese.wav", "zh/wenetspeech_nst_ID002.wav",
]


def run(seg: Segmenter, pcm: bytes, chunk: int = 320) -> list:
    """Feed `pcm` in chunks of `chunk` bytes and collect every event."""
    return [e for i in range(0, len(pcm), chunk) for e in seg.feed(pcm[i:i + chunk])]


def tone(seconds: float, rate: int, level_dbfs: float, freq: float = 300.0) -> bytes:
    """A sine burst whose RMS is `level_dbfs`."""
    t = np.arange(round(seconds * rate)) / rate
    return audio.from_array(np.sqrt(2) * 10 ** (level_dbfs / 20) * np.sin(2 * np.pi * freq * t))


def noise(seconds: float, rate: int, level_dbfs: float, seed: int = 3) -> bytes:
    """White noise whose RMS is `level_dbfs`."""
    rng = np.random.default_rng(seed)
    return audio.from_array(rng.normal(0.0, 10 ** (level_dbfs / 20), round(seconds * rate)))


def kinds(events: list) -> str:
    """Events as a string of S (started) and E (ended)."""
    return "".join("S" if isinstance(e, SpeechStarted) else "E" for e in events)


@pytest.mark.parametrize("rate", [8000, 16000])
def test_tone_burst_gives_one_utterance_with_times(rate: int) -> None:
    pcm = audio.silence(1.0, rate) + tone(1.0, rate, -20) + audio.silence(1.0, rate)
    seg = Segmenter(VadConfig(), rate=rate)
    events = run(seg, pcm)
    assert kinds(events) == "SE"
    start, end = events
    assert start.at == pytest.approx(1.0, abs=0.021)  # estimated onset, not confirmation time
    assert end.at == pytest.approx(2.0, abs=0.021)  # when the sound stopped
    assert end.duration == pytest.approx(1.0, abs=0.041)
    assert seg.elapsed == pytest.approx(3.0)
    assert not seg.in_speech and seg.speech_elapsed == 0.0


def test_state_properties_while_speaking() -> None:
    seg = Segmenter(VadConfig(), rate=8000)
    seg.feed(audio.silence(0.5, 8000))
    events = seg.feed(tone(0.5, 8000, -20))
    assert kinds(events) == "S" and seg.in_speech
    assert seg.speech_elapsed == pytest.approx(0.5, abs=0.021)
    seg.reset()
    assert seg.elapsed == 0.0 and not seg.in_speech


def test_short_pause_does_not_end_and_long_pause_does() -> None:
    rate = 8000
    word = tone(0.5, rate, -20)
    pcm = (audio.silence(0.5, rate) + word + audio.silence(0.3, rate) + word
           + audio.silence(1.0, rate) + word + audio.silence(1.0, rate))
    events = run(Segmenter(VadConfig(end_silence_ms=600), rate=rate), pcm)
    assert kinds(events) == "SESE"
    assert events[1].at == pytest.approx(1.8, abs=0.021)
    assert events[2].at == pytest.approx(2.8, abs=0.021)


def test_clicks_shorter_than_min_speech_do_not_start() -> None:
    rate = 16000
    click = tone(0.06, rate, -10, freq=1000)
    pcm = audio.silence(0.5, rate) + (click + audio.silence(0.3, rate)) * 5
    assert run(Segmenter(VadConfig(min_speech_ms=120), rate=rate), pcm) == []


def test_max_utterance_force_ends() -> None:
    rate = 8000
    # Syllable-like bursts: 200 ms sound, 100 ms pause, never a pause long enough to end.
    pcm = audio.silence(0.2, rate) + (tone(0.2, rate, -20) + audio.silence(0.1, rate)) * 25
    events = run(Segmenter(VadConfig(max_utterance_s=3.0), rate=rate), pcm)
    assert kinds(events)[:2] == "SE"
    assert events[1].duration == pytest.approx(3.0, abs=0.021)
    assert events[1].at == pytest.approx(3.2, abs=0.021)


def test_quiet_sound_below_absolute_threshold_is_ignored() -> None:
    rate = 8000
    pcm = audio.silence(1.0, rate) + tone(1.0, rate, -55) + audio.silence(1.0, rate)
    assert run(Segmenter(VadConfig(threshold_dbfs=-45), rate=rate), pcm) == []


@pytest.mark.parametrize("level", [-50.0, -40.0, -30.0, -20.0])
def test_steady_noise_alone_never_triggers(level: float) -> None:
    rate = 8000
    assert run(Segmenter(VadConfig(), rate=rate), noise(10.0, rate, level)) == []


@pytest.mark.parametrize("level", [-40.0, -30.0])
def test_tone_over_noise_is_found(level: float) -> None:
    rate = 8000
    speech = audio.silence(2.0, rate) + tone(1.0, rate, level + 15) + audio.silence(2.0, rate)
    events = run(Segmenter(VadConfig(), rate=rate), audio.mix(noise(5.0, rate, level), speech))
    assert kinds(events) == "SE"
    assert events[0].at == pytest.approx(2.0, abs=0.05)
    assert events[1].at == pytest.approx(3.0, abs=0.05)


def test_noise_that_appears_mid_call_is_learned() -> None:
    # Noise suddenly switching on first looks like speech, but the floor adapts and it ends.
    rate = 8000
    pcm = audio.silence(1.0, rate) + noise(10.0, rate, -30)
    events = run(Segmenter(VadConfig(), rate=rate), pcm)
    assert kinds(events) == "SE"
    assert events[1].at < 6.0


@pytest.mark.parametrize("rate", [8000, 16000])
def test_chunking_invariance(rate: int) -> None:
    pcm = (noise(1.0, rate, -50) + tone(0.8, rate, -25) + noise(0.9, rate, -50, seed=4)
           + tone(0.3, rate, -25) + noise(1.2, rate, -50, seed=5))
    reference = run(Segmenter(VadConfig(), rate=rate), pcm, chunk=320)
    assert kinds(reference) == "SESE"
    for chunk in (7, 333, 4096, len(pcm)):
        assert run(Segmenter(VadConfig(), rate=rate), pcm, chunk=chunk) == reference


def test_bad_config_and_input() -> None:
    with pytest.raises(ConfigError, match="frame_ms"):
        VadConfig(frame_ms=25)
    with pytest.raises(ConfigError, match="end_silence_ms"):
        VadConfig(end_silence_ms=0)
    with pytest.raises(ConfigError, match="threshold_dbfs"):
        VadConfig(threshold_dbfs=3.0)
    with pytest.raises(ConfigError, match="max_utterance_s"):
        VadConfig(max_utterance_s=0.1)
    with pytest.raises(AudioFormatError):
        Segmenter(VadConfig(), rate=44100)
    seg = Segmenter(VadConfig(), rate=8000)
    with pytest.raises(AudioFormatError):
        seg.feed("audio")  # type: ignore[arg-type]
    assert seg.feed(b"\x00") == [] and seg.feed(b"\x00" * 319) == []  # odd bytes are carried
    assert seg.elapsed == pytest.approx(0.02)


# --- real human speech ---------------------------------------------------------------------------


def load(name: str, rate: int, ulaw: bool) -> bytes:
    """A shared clip at `rate`, optionally through a μ-law round trip; skip if clips are absent."""
    if not SPEECH.is_dir():
        pytest.skip(f"shared speech clips not found at {SPEECH}")
    pcm, clip_rate = audio.read_wav(SPEECH / name)
    pcm = audio.resample(pcm, from_rate=clip_rate, to_rate=rate)
    return audio.ulaw_decode(audio.ulaw_encode(pcm)) if ulaw else pcm


def reference_span(pcm: bytes, rate: int) -> tuple[float, float]:
    """Where speech is by a simple independent rule: 10 ms windows well above the clip's background."""
    levels = np.array([audio.rms_dbfs(c) for c in audio.chunks(pcm, rate=rate, ms=10)])
    loud = np.nonzero(levels >= max(levels.max() - 30, np.percentile(levels, 10) + 12))[0]
    return loud[0] * 0.01, (loud[-1] + 1) * 0.01


def padded(pcm: bytes, rate: int) -> bytes:
    """The clip with silence before and after."""
    return audio.silence(LEAD, rate) + pcm + audio.silence(TAIL, rate)


VARIANTS = [(16000, False), (8000, False), (8000, True)]


@pytest.mark.speech
@pytest.mark.parametrize(("rate", "ulaw"), VARIANTS, ids=["16k", "8k", "8k-ulaw"])
def test_real_clips_are_one_utterance_each(rate: int, ulaw: bool) -> None:
    for name in SINGLE:
        pcm = load(name, rate, ulaw)
        ref_start, ref_end = reference_span(pcm, rate)
        events = run(Segmenter(VadConfig(), rate=rate), padded(pcm, rate))
        assert kinds(events) == "SE", (name, events)
        start, end = events
        assert start.at - LEAD == pytest.approx(ref_start, abs=0.3), name
        assert end.at - LEAD == pytest.approx(ref_end, abs=0.3), name
        assert end.at <= LEAD + audio.duration(pcm, rate) + 0.02, name
        assert end.duration == pytest.approx(end.at - start.at)


@pytest.mark.speech
@pytest.mark.parametrize(("rate", "ulaw"), VARIANTS, ids=["16k", "8k", "8k-ulaw"])
def test_sentences_with_pauses_are_separate_utterances(rate: int, ulaw: bool) -> None:
    # Harvard sentences read with pauses between them: 35 s, 10 sentences.
    pcm = load("en/OSR_us_000_0034_8k.wav", rate, ulaw)
    events = run(Segmenter(VadConfig(end_silence_ms=500), rate=rate), padded(pcm, rate), chunk=333)
    assert kinds(events) == "SE" * (len(events) // 2)
    assert 5 <= len(events) // 2 <= 14
    assert events[0].at - LEAD == pytest.approx(1.24, abs=0.3)
    assert all(e.duration < 5.0 for e in events if isinstance(e, SpeechEnded))
    # "one two three" with long gaps between the words.
    pcm = load("en/speechrecognition_english.wav", rate, ulaw)
    assert kinds(run(Segmenter(VadConfig(), rate=rate), padded(pcm, rate))) == "SESESE"


@pytest.mark.speech
@pytest.mark.parametrize("level", [-45.0, -38.0])
def test_real_speech_over_line_noise(level: float) -> None:
    rate = 8000
    pcm = load("zh/aishell_BAC009S0724W0121.wav", rate, False)
    ref_start, ref_end = reference_span(load("zh/aishell_BAC009S0724W0121.wav", 16000, False), 16000)
    speech = padded(pcm, rate)
    line = noise(audio.duration(speech, rate), rate, level)
    noisy = audio.ulaw_decode(audio.ulaw_encode(audio.mix(speech, line)))
    events = run(Segmenter(VadConfig(), rate=rate), noisy)
    assert kinds(events) == "SE"
    assert events[0].at - LEAD == pytest.approx(ref_start, abs=0.3)
    assert events[1].at - LEAD == pytest.approx(ref_end, abs=0.4)
