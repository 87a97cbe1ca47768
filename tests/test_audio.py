"""Tests for voicebot.audio: G.711 against the stdlib reference, resampling, WAV I/O, levels."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import soundfile

from voicebot import audio
from voicebot.errors import AudioFormatError

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # independent G.711 reference (deprecated, still in 3.11)

ALL_SAMPLES = np.arange(-32768, 32768, dtype="<i2").tobytes()
ALL_CODES = bytes(range(256))


def tone(freq: float, seconds: float, rate: int, amp: float = 0.5) -> bytes:
    """A sine wave as PCM16."""
    t = np.arange(round(seconds * rate)) / rate
    return audio.from_array(amp * np.sin(2 * np.pi * freq * t))


def test_ulaw_matches_reference_on_every_sample_and_code() -> None:
    assert audio.ulaw_encode(ALL_SAMPLES) == audioop.lin2ulaw(ALL_SAMPLES, 2)
    assert audio.ulaw_decode(ALL_CODES) == audioop.ulaw2lin(ALL_CODES, 2)


def test_alaw_matches_reference_on_every_sample_and_code() -> None:
    assert audio.alaw_encode(ALL_SAMPLES) == audioop.lin2alaw(ALL_SAMPLES, 2)
    assert audio.alaw_decode(ALL_CODES) == audioop.alaw2lin(ALL_CODES, 2)


def test_g711_round_trip_is_close_and_silence_stays_silent() -> None:
    pcm = tone(440, 0.1, 8000)
    for enc, dec in ((audio.ulaw_encode, audio.ulaw_decode), (audio.alaw_encode, audio.alaw_decode)):
        back = audio.as_array(dec(enc(pcm))).astype(int)
        err = np.abs(back - audio.as_array(pcm))
        assert len(enc(pcm)) == len(pcm) // 2
        assert err.max() < 0.04 * 16384  # companding error is a few percent of the level
    assert audio.ulaw_decode(audio.ulaw_encode(bytes(320))) == bytes(320)


def test_odd_length_pcm_is_rejected() -> None:
    with pytest.raises(AudioFormatError) as info:
        audio.ulaw_encode(b"\x00\x01\x02")
    assert info.value.code == "audio_format"
    with pytest.raises(AudioFormatError):
        audio.rms_dbfs("not bytes")  # type: ignore[arg-type]


@pytest.mark.parametrize(("src", "dst"), [(8000, 16000), (16000, 8000), (22050, 8000), (48000, 16000)])
def test_resample_keeps_length_and_pitch(src: int, dst: int) -> None:
    pcm = tone(400, 1.0, src)
    out = audio.resample(pcm, from_rate=src, to_rate=dst)
    samples = audio.as_array(out).astype(float)
    assert abs(samples.size - dst) <= 2
    spectrum = np.abs(np.fft.rfft(samples))
    peak_hz = np.argmax(spectrum) * dst / samples.size
    assert abs(peak_hz - 400) < 3
    assert abs(audio.rms_dbfs(out) - audio.rms_dbfs(pcm)) < 0.5


def test_resample_same_rate_returns_input_and_bad_rate_fails() -> None:
    pcm = tone(300, 0.05, 8000)
    assert audio.resample(pcm, from_rate=8000, to_rate=8000) == pcm
    with pytest.raises(AudioFormatError):
        audio.resample(pcm, from_rate=8000, to_rate=12345)
    with pytest.raises(AudioFormatError):
        audio.resample(pcm, from_rate=0, to_rate=8000)


@pytest.mark.parametrize("chunk", [7, 160, 333, 4000])
def test_stream_resampler_matches_one_shot(chunk: int) -> None:
    pcm = tone(500, 1.0, 8000)
    one_shot = audio.resample(pcm, from_rate=8000, to_rate=16000)
    rs = audio.StreamResampler(8000, 16000)
    parts = [rs.process(pcm[i:i + chunk]) for i in range(0, len(pcm), chunk)]
    streamed = b"".join(parts) + rs.flush()
    assert abs(len(streamed) - len(one_shot)) <= 8
    a, b = audio.as_array(streamed).astype(float), audio.as_array(one_shot).astype(float)
    n = min(a.size, b.size)
    assert np.abs(a[100:n - 100] - b[100:n - 100]).max() < 200  # same signal, not just same length


def test_stream_resampler_rejects_half_sample_at_end() -> None:
    rs = audio.StreamResampler(8000, 16000)
    rs.process(b"\x00\x00\x01")
    with pytest.raises(AudioFormatError):
        rs.flush()


def test_wav_round_trip_in_memory_and_on_disk(tmp_path) -> None:
    pcm = tone(700, 0.3, 16000)
    data = audio.wav_bytes(pcm, 16000)
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    assert audio.parse_wav_bytes(data) == (pcm, 16000)
    path = tmp_path / "x.wav"
    audio.write_wav(path, pcm, 8000)
    assert audio.read_wav(path) == (pcm, 8000)


def test_read_wav_mixes_stereo_and_converts_float(tmp_path) -> None:
    left = np.full(1000, 0.5)
    right = np.full(1000, -0.25)
    path = tmp_path / "stereo.wav"
    soundfile.write(path, np.stack([left, right], axis=1), 22050, subtype="FLOAT")
    pcm, rate = audio.read_wav(path)
    assert rate == 22050
    samples = audio.as_array(pcm)
    assert samples.size == 1000
    assert abs(int(samples[500]) - round(0.125 * 32767)) <= 2


def test_unreadable_files_raise_audio_format_error(tmp_path) -> None:
    bad = tmp_path / "bad.wav"
    bad.write_bytes(b"RIFF this is not a wav file")
    with pytest.raises(AudioFormatError):
        audio.read_wav(bad)
    with pytest.raises(AudioFormatError):
        audio.read_wav(tmp_path / "missing.wav")
    with pytest.raises(AudioFormatError):
        audio.parse_wav_bytes(b"garbage")
    odd_rate = tmp_path / "odd.wav"
    soundfile.write(odd_rate, np.zeros(100), 7000, subtype="PCM_16")
    with pytest.raises(AudioFormatError):
        audio.read_wav(odd_rate)


def test_chunks_duration_silence() -> None:
    pcm = audio.silence(0.05, 8000)
    assert len(pcm) == 800 and audio.duration(pcm, 8000) == pytest.approx(0.05)
    parts = list(audio.chunks(pcm, rate=8000, ms=20))
    assert [len(p) for p in parts] == [320, 320, 160]
    assert b"".join(parts) == pcm
    assert list(audio.chunks(b"", rate=8000)) == []
    with pytest.raises(AudioFormatError):
        list(audio.chunks(pcm, rate=8001))


def test_rms_dbfs_levels() -> None:
    square = audio.from_array(np.array([32767, -32767] * 100))
    assert audio.rms_dbfs(square) == pytest.approx(0.0, abs=0.01)
    assert audio.rms_dbfs(tone(1000, 0.1, 8000, amp=1.0)) == pytest.approx(-3.01, abs=0.05)
    assert audio.rms_dbfs(tone(1000, 0.1, 8000, amp=0.1)) == pytest.approx(-23.01, abs=0.05)
    assert audio.rms_dbfs(audio.silence(0.1, 8000)) == audio.SILENCE_DBFS
    assert audio.rms_dbfs(b"") == audio.SILENCE_DBFS


def test_mix_clips_and_pads_and_gain_scales() -> None:
    loud = audio.from_array(np.full(10, 30000))
    mixed = audio.as_array(audio.mix(loud, loud[:10]))  # second input: 5 samples
    assert mixed.size == 10
    assert list(mixed) == [32767] * 5 + [30000] * 5
    assert audio.as_array(audio.mix(loud, b""))[0] == 30000
    quiet = audio.gain(tone(300, 0.1, 8000), -20)
    assert audio.rms_dbfs(quiet) == pytest.approx(audio.rms_dbfs(tone(300, 0.1, 8000)) - 20, abs=0.1)
