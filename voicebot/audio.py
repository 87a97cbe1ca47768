"""Pure PCM helpers: G.711 codecs, resampling, WAV I/O, chunking and levels.

PCM is always `bytes` of signed 16-bit little-endian mono samples.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from functools import cache
from pathlib import Path

import numpy as np
import soundfile
import soxr

from voicebot.errors import AudioFormatError

# Rates a call runs at (the line's rate and the ASR's rate).
SUPPORTED_RATES = (8000, 16000)
# Rates accepted as input to resample/read (TTS engines and recorded prompts use these).
INPUT_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)
# What rms_dbfs reports for digital silence: finite so callers can do arithmetic with it.
SILENCE_DBFS = -120.0

_PCM16 = np.dtype("<i2")


# --- validation and array conversion -------------------------------------------------------------


def check_rate(rate: int, *, allowed: tuple[int, ...] = INPUT_RATES) -> int:
    """Return `rate` if it is one of `allowed`, else raise AudioFormatError."""
    if isinstance(rate, bool) or not isinstance(rate, int) or rate not in allowed:
        raise AudioFormatError(f"unsupported sample rate {rate!r}; expected one of {allowed}")
    return rate


def as_array(pcm: bytes) -> np.ndarray:
    """View PCM16 bytes as an int16 numpy array (read-only view, no copy)."""
    if not isinstance(pcm, (bytes, bytearray, memoryview)):
        raise AudioFormatError(f"PCM must be bytes, not {type(pcm).__name__}")
    if len(pcm) % 2:
        raise AudioFormatError(f"PCM16 needs an even number of bytes, got {len(pcm)}")
    return np.frombuffer(pcm, dtype=_PCM16)


def from_array(samples: np.ndarray) -> bytes:
    """Turn samples into PCM16 bytes: integers are clipped, floats in [-1, 1] are scaled."""
    arr = np.asarray(samples)
    if arr.dtype.kind == "f":
        arr = np.rint(arr * 32767.0)
    return np.clip(arr, -32768, 32767).astype(_PCM16).tobytes()


# --- G.711 (ITU-T) ------------------------------------------------------------------------------

_ULAW_SEG_END = np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF], dtype=np.int32)
_ALAW_SEG_END = np.array([0x1F, 0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF], dtype=np.int32)


@cache
def _ulaw_enc_table() -> np.ndarray:
    # Index = sample + 32768; mirrors the reference g711.c on the 14-bit magnitude.
    val = np.arange(-32768, 32768, dtype=np.int32) >> 2
    mask = np.where(val < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(val), 8159) + (0x84 >> 2)
    seg = np.searchsorted(_ULAW_SEG_END, mag, side="left")
    code = (np.minimum(seg, 7) << 4) | ((mag >> (np.minimum(seg, 7) + 1)) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


@cache
def _ulaw_dec_table() -> np.ndarray:
    u = ~np.arange(256, dtype=np.int32) & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u & 0x70) >> 4)
    return np.where(u & 0x80, 0x84 - t, t - 0x84).astype(_PCM16)


@cache
def _alaw_enc_table() -> np.ndarray:
    # A-law works on the 13-bit value; negative values are folded to one's complement.
    val = np.arange(-32768, 32768, dtype=np.int32) >> 3
    mask = np.where(val >= 0, 0xD5, 0x55)
    mag = np.where(val >= 0, val, -val - 1)
    seg = np.searchsorted(_ALAW_SEG_END, mag, side="left")
    shift = np.where(seg < 2, 1, np.minimum(seg, 7))
    code = (np.minimum(seg, 7) << 4) | ((mag >> shift) & 0xF)
    code = np.where(seg >= 8, 0x7F, code)
    return (code ^ mask).astype(np.uint8)


@cache
def _alaw_dec_table() -> np.ndarray:
    a = np.arange(256, dtype=np.int32) ^ 0x55
    t = (a & 0x0F) << 4
    seg = (a & 0x70) >> 4
    t = np.where(seg == 0, t + 8, t + 0x108)
    t = np.where(seg > 1, t << np.maximum(seg - 1, 0), t)
    return np.where(a & 0x80, t, -t).astype(_PCM16)


def ulaw_encode(pcm: bytes) -> bytes:
    """Encode PCM16 to G.711 μ-law (one byte per sample)."""
    return _ulaw_enc_table()[as_array(pcm).astype(np.int32) + 32768].tobytes()


def ulaw_decode(data: bytes) -> bytes:
    """Decode G.711 μ-law bytes to PCM16."""
    return _ulaw_dec_table()[np.frombuffer(bytes(data), dtype=np.uint8)].tobytes()


def alaw_encode(pcm: bytes) -> bytes:
    """Encode PCM16 to G.711 A-law (one byte per sample)."""
    return _alaw_enc_table()[as_array(pcm).astype(np.int32) + 32768].tobytes()


def alaw_decode(data: bytes) -> bytes:
    """Decode G.711 A-law bytes to PCM16."""
    return _alaw_dec_table()[np.frombuffer(bytes(data), dtype=np.uint8)].tobytes()


# --- resampling -----------------------------------------------------------------------------------


def resample(pcm: bytes, *, from_rate: int, to_rate: int) -> bytes:
    """Resample PCM16 from one rate to another in one go (same rate returns the input)."""
    check_rate(from_rate)
    check_rate(to_rate)
    samples = as_array(pcm)
    if from_rate == to_rate or samples.size == 0:
        return bytes(pcm)
    return soxr.resample(samples, from_rate, to_rate).astype(_PCM16).tobytes()


class StreamResampler:
    """Resample a chunked PCM16 stream; call `flush()` once at the end for the tail."""

    def __init__(self, from_rate: int, to_rate: int) -> None:
        self.from_rate = check_rate(from_rate)
        self.to_rate = check_rate(to_rate)
        self._pending = b""  # an odd trailing byte from the previous chunk
        self._stream = (
            None if from_rate == to_rate
            else soxr.ResampleStream(from_rate, to_rate, 1, dtype="int16")
        )

    def _split(self, pcm: bytes) -> bytes:
        # Chunks may split a sample in two: keep the odd byte for the next call.
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise AudioFormatError(f"PCM must be bytes, not {type(pcm).__name__}")
        data = self._pending + bytes(pcm)
        cut = len(data) - len(data) % 2
        self._pending = data[cut:]
        return data[:cut]

    def process(self, pcm: bytes) -> bytes:
        """Resample the next chunk; output may lag the input by the filter delay."""
        data = self._split(pcm)
        if self._stream is None:
            return data
        out = self._stream.resample_chunk(np.frombuffer(data, dtype=_PCM16), last=False)
        return np.asarray(out, dtype=_PCM16).tobytes()

    def flush(self) -> bytes:
        """Return the resampler's remaining output; the stream is finished afterwards."""
        if self._pending:
            raise AudioFormatError("stream ended in the middle of a 16-bit sample")
        if self._stream is None:
            return b""
        out = self._stream.resample_chunk(np.zeros(0, dtype=_PCM16), last=True)
        return np.asarray(out, dtype=_PCM16).tobytes()


# --- WAV files ------------------------------------------------------------------------------------


def _decode(source: object, what: str) -> tuple[bytes, int]:
    try:
        # Read as float: libsndfile does not scale float files when asked for int16 directly.
        data, rate = soundfile.read(source, dtype="float64", always_2d=True)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as err:
        raise AudioFormatError(f"cannot read audio from {what}: {err}") from err
    check_rate(int(rate))
    # Channels are averaged; x32768 undoes libsndfile's int16 normalisation exactly.
    mono = np.rint(data.mean(axis=1) * 32768.0)
    return from_array(np.clip(mono, -32768, 32767).astype(np.int32)), int(rate)


def read_wav(path: str | Path) -> tuple[bytes, int]:
    """Read any file soundfile can decode as mono PCM16; returns (pcm, rate)."""
    if not Path(path).is_file():
        raise AudioFormatError(f"no such audio file: {path}")
    return _decode(str(path), str(path))


def parse_wav_bytes(data: bytes) -> tuple[bytes, int]:
    """Decode an in-memory audio file (e.g. RIFF WAV) to mono PCM16; returns (pcm, rate)."""
    return _decode(io.BytesIO(bytes(data)), "bytes")


def wav_bytes(pcm: bytes, rate: int) -> bytes:
    """Wrap PCM16 in an in-memory RIFF WAV file."""
    check_rate(rate)
    buf = io.BytesIO()
    soundfile.write(buf, as_array(pcm), rate, subtype="PCM_16", format="WAV")
    return buf.getvalue()


def write_wav(path: str | Path, pcm: bytes, rate: int) -> None:
    """Write PCM16 to a 16-bit mono WAV file (blocking: call it from a thread in async code)."""
    Path(path).write_bytes(wav_bytes(pcm, rate))


# --- slicing, levels and synthesis ---------------------------------------------------------------


def frame_bytes(rate: int, ms: int) -> int:
    """Bytes in `ms` milliseconds of PCM16 at `rate`."""
    return rate * ms // 1000 * 2


def chunks(pcm: bytes, *, rate: int, ms: int = 20) -> Iterator[bytes]:
    """Split PCM16 into `ms`-long chunks; the last one may be shorter."""
    as_array(pcm)
    size = frame_bytes(check_rate(rate), ms)
    if size <= 0:
        raise AudioFormatError(f"chunk length must be positive, got {ms} ms")
    for start in range(0, len(pcm), size):
        yield bytes(pcm[start:start + size])


def duration(pcm: bytes, rate: int) -> float:
    """Length of PCM16 in seconds."""
    return as_array(pcm).size / check_rate(rate)


def rms_dbfs(pcm: bytes) -> float:
    """RMS level in dBFS (full-scale square wave = 0); SILENCE_DBFS for silence or no audio."""
    samples = as_array(pcm)
    if samples.size == 0:
        return SILENCE_DBFS
    as_float = samples.astype(np.float64)
    rms = math.sqrt(float(np.dot(as_float, as_float)) / samples.size)  # dot: far cheaper than mean(square)
    if rms == 0.0:
        return SILENCE_DBFS
    return max(SILENCE_DBFS, 20.0 * math.log10(rms / 32768.0))


def silence(seconds: float, rate: int) -> bytes:
    """PCM16 digital silence of the given length."""
    if seconds < 0:
        raise AudioFormatError(f"silence length must be >= 0, got {seconds}")
    return bytes(2 * round(seconds * check_rate(rate)))


def gain(pcm: bytes, db: float) -> bytes:
    """Scale PCM16 by `db` decibels, clipping at full scale."""
    scaled = as_array(pcm).astype(np.float64) * 10 ** (db / 20.0)
    return from_array(np.clip(np.rint(scaled), -32768, 32767).astype(np.int32))


def mix(a: bytes, b: bytes) -> bytes:
    """Sum two PCM16 signals sample by sample with clipping; the shorter is padded with silence."""
    x, y = as_array(a).astype(np.int32), as_array(b).astype(np.int32)
    n = max(x.size, y.size)
    out = np.zeros(n, dtype=np.int32)
    out[: x.size] += x
    out[: y.size] += y
    return from_array(out)
