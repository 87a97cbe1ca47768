"""Tests for voicebot.dtmf: generated tones are detected once each, speech and noise are not."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from voicebot import audio
from voicebot.dtmf import DtmfDetector, generate_dtmf
from voicebot.errors import AudioFormatError

SPEECH = Path(__file__).resolve().parents[2] / "shared" / "speech"
RATES = (8000, 16000)
ALL_KEYS = "0123456789*#ABCD"


def detect(pcm: bytes, rate: int, chunk: int | None = None) -> str:
    """Run a fresh detector over `pcm` in chunks of `chunk` bytes (all at once if None)."""
    det = DtmfDetector(rate=rate)
    step = chunk or len(pcm) or 1
    return "".join(d for i in range(0, len(pcm), step) for d in det.feed(pcm[i:i + step]))


def white_noise(pcm_len: int, level_dbfs: float, seed: int = 7) -> bytes:
    """Gaussian noise with the given RMS level, as many bytes as `pcm_len`."""
    rng = np.random.default_rng(seed)
    return audio.from_array(rng.normal(0.0, 10 ** (level_dbfs / 20), pcm_len // 2))


@pytest.mark.parametrize("rate", RATES)
def test_every_key_is_detected_once(rate: int) -> None:
    assert detect(generate_dtmf(ALL_KEYS, rate=rate), rate) == ALL_KEYS


@pytest.mark.parametrize("rate", RATES)
def test_number_through_ulaw(rate: int) -> None:
    pcm = generate_dtmf("13812345678#", rate=rate)
    assert detect(audio.ulaw_decode(audio.ulaw_encode(pcm)), rate) == "13812345678#"
    assert detect(audio.alaw_decode(audio.alaw_encode(pcm)), rate) == "13812345678#"


@pytest.mark.parametrize("rate", RATES)
def test_number_in_noise_at_15_db_snr(rate: int) -> None:
    pcm = generate_dtmf("13812345678#", rate=rate)
    noisy = audio.mix(pcm, white_noise(len(pcm), audio.rms_dbfs(pcm) - 15))
    assert detect(noisy, rate) == "13812345678#"


@pytest.mark.parametrize("rate", RATES)
def test_chunk_size_does_not_change_result(rate: int) -> None:
    pcm = audio.silence(0.013, rate) + generate_dtmf("2580*#", rate=rate, tone_ms=70, gap_ms=50)
    results = {detect(pcm, rate, chunk) for chunk in (7, 160, 333, None)}
    assert results == {"2580*#"}


@pytest.mark.parametrize("rate", RATES)
def test_held_key_is_one_digit_and_repeats_are_separate(rate: int) -> None:
    assert detect(generate_dtmf("5", rate=rate, tone_ms=1500), rate) == "5"
    assert detect(generate_dtmf("55", rate=rate, tone_ms=60, gap_ms=50), rate) == "55"


@pytest.mark.parametrize("rate", RATES)
def test_minimum_duration(rate: int) -> None:
    # Q.24: tones of 40 ms must count, tones under ~23 ms must not.
    assert detect(generate_dtmf("159", rate=rate, tone_ms=40, gap_ms=40), rate) == "159"
    assert detect(generate_dtmf("159", rate=rate, tone_ms=15, gap_ms=40), rate) == ""


@pytest.mark.parametrize("rate", RATES)
def test_silence_noise_and_single_tones_give_nothing(rate: int) -> None:
    quiet = audio.silence(2.0, rate)
    assert detect(quiet, rate) == ""
    assert detect(white_noise(len(quiet), -20), rate) == ""
    t = np.arange(rate) / rate
    single = audio.from_array(0.3 * np.sin(2 * np.pi * 697 * t))
    assert detect(single, rate) == ""
    # Both tones present but far too quiet to be a key press on a phone line.
    assert detect(generate_dtmf("1", rate=rate, level_db=-60), rate) == ""


def test_twist_limit_rejects_lopsided_tones() -> None:
    t = np.arange(8000) / 8000
    lopsided = audio.from_array(0.3 * np.sin(2 * np.pi * 697 * t) + 0.03 * np.sin(2 * np.pi * 1209 * t))
    assert detect(lopsided, 8000) == ""


def test_bad_input() -> None:
    with pytest.raises(ValueError, match="not a DTMF digit"):
        generate_dtmf("12x", rate=8000)
    with pytest.raises(ValueError):
        generate_dtmf("1", rate=8000, tone_ms=0)
    with pytest.raises(AudioFormatError):
        DtmfDetector(rate=44100)
    with pytest.raises(AudioFormatError):
        generate_dtmf("1", rate=22050)
    assert generate_dtmf("", rate=8000) == b""


def speech_clips() -> list[Path]:
    """All shared speech clips, or skip when the folder is absent."""
    if not SPEECH.is_dir():
        pytest.skip(f"shared speech clips not found at {SPEECH}")
    return sorted(SPEECH.glob("*/*.wav"))


@pytest.mark.speech
@pytest.mark.parametrize("rate", RATES)
def test_real_speech_produces_no_digits(rate: int) -> None:
    clips = speech_clips()
    assert len(clips) >= 20
    for clip in clips:
        pcm, clip_rate = audio.read_wav(clip)
        pcm = audio.resample(pcm, from_rate=clip_rate, to_rate=rate)
        for variant in (pcm, audio.ulaw_decode(audio.ulaw_encode(pcm)), audio.gain(pcm, 12)):
            assert detect(variant, rate) == "", clip.name
