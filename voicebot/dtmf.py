"""In-band DTMF: generate key tones and detect them in caller audio (Goertzel)."""

from __future__ import annotations

import numpy as np

from voicebot.audio import SUPPORTED_RATES, check_rate, from_array
from voicebot.errors import AudioFormatError

ROWS = (697.0, 770.0, 852.0, 941.0)
COLS = (1209.0, 1336.0, 1477.0, 1633.0)
KEYPAD = ("123A", "456B", "789C", "*0#D")
DIGITS = frozenset("".join(KEYPAD))


def _freqs(digit: str) -> tuple[float, float]:
    for r, row in enumerate(KEYPAD):
        c = row.find(digit)
        if c >= 0:
            return ROWS[r], COLS[c]
    raise ValueError(f"not a DTMF digit: {digit!r} (allowed: 0-9 * # A-D)")


def generate_dtmf(
    digits: str, *, rate: int, tone_ms: int = 100, gap_ms: int = 60, level_db: float = -10.0
) -> bytes:
    """Render `digits` as PCM16 DTMF tones, each `tone_ms` long followed by `gap_ms` of silence."""
    check_rate(rate, allowed=SUPPORTED_RATES)
    if tone_ms <= 0 or gap_ms < 0:
        raise ValueError(f"tone_ms must be > 0 and gap_ms >= 0, got {tone_ms}, {gap_ms}")
    pairs = [_freqs(d) for d in digits.upper()]
    n_tone, n_gap = rate * tone_ms // 1000, rate * gap_ms // 1000
    t = np.arange(n_tone) / rate
    # Each of the two sines gets half the amplitude so the sum peaks at level_db.
    amp = 0.5 * 10 ** (level_db / 20.0)
    gap = np.zeros(n_gap)
    parts = []
    for lo, hi in pairs:
        parts.append(amp * (np.sin(2 * np.pi * lo * t) + np.sin(2 * np.pi * hi * t)))
        parts.append(gap)
    return from_array(np.concatenate(parts)) if parts else b""


TONE_LEAKAGE = 0.25  # margin for the single-bin estimate exceeding the block's true share of energy


class DtmfDetector:
    """Find key presses in a PCM16 stream; each press is reported once, when confirmed."""

    BLOCK_MS = 12.75  # 102 samples at 8 kHz: bins ~78 Hz wide, nulls land on neighbouring tones
    MIN_TONE_MS = 25.0  # Q.24: accept tones >= 40 ms, reject < 23 ms (block edges cost up to one block)
    END_GAP_MS = 25.0  # silence that ends a press, so one dropout block does not split a held key
    MIN_TONE_DBFS = -40.0  # each of the two tones must be at least this loud
    MIN_TONE_RATIO = 0.6  # share of the block's energy the two tones must carry (speech fails this)
    PEAK_RATIO_DB = 8.0  # the best row/column must beat the others in its group by this much
    NORMAL_TWIST_DB = 8.0  # column tone weaker than row tone
    REVERSE_TWIST_DB = 6.0  # row tone weaker than column tone

    def __init__(self, *, rate: int) -> None:
        self.rate = check_rate(rate, allowed=SUPPORTED_RATES)
        self._n = round(rate * self.BLOCK_MS / 1000)
        self._min_blocks = max(1, round(self.MIN_TONE_MS / self.BLOCK_MS))
        self._end_blocks = max(1, round(self.END_GAP_MS / self.BLOCK_MS))
        # Single-bin DFTs at the exact tone frequencies: the same powers Goertzel gives, but
        # computed for all blocks and all eight tones in one matrix product.
        t = np.arange(self._n) / rate
        freqs = np.array(ROWS + COLS)
        self._basis = np.exp(-2j * np.pi * np.outer(t, freqs))
        # A full-scale sine of amplitude A has block energy N*A^2/2; the threshold is per tone.
        amp = 32768.0 * 10 ** (self.MIN_TONE_DBFS / 20.0)
        self._min_energy = self._n * amp * amp / 2
        self._buf = b""
        self._key: str | None = None
        self._run = 0
        self._misses = 0
        self._reported = False

    def reset(self) -> None:
        """Forget buffered audio and any key in progress."""
        self._buf = b""
        self._key, self._run, self._misses, self._reported = None, 0, 0, False

    def feed(self, pcm: bytes) -> list[str]:
        """Consume a chunk of any size; return digits confirmed in it (each key press once)."""
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise AudioFormatError(f"PCM must be bytes, not {type(pcm).__name__}")
        data = self._buf + bytes(pcm)
        size = 2 * self._n
        usable = len(data) - len(data) % size
        self._buf = data[usable:]  # always shorter than one block
        if not usable:
            return []
        blocks = np.frombuffer(data[:usable], dtype="<i2").astype(np.float64).reshape(-1, self._n)
        return [d for d in map(self._step, self._classify(blocks)) if d]

    def _classify(self, blocks: np.ndarray) -> list[str | None]:
        total = np.einsum("ij,ij->i", blocks, blocks)
        # Two tones each at least min_energy need at least that much energy in the block: quiet blocks
        # (most of any call) skip the transform. This runs for every frame of every call.
        if total.max() < 2 * self._min_energy * (1 - TONE_LEAKAGE):
            return [None] * len(blocks)
        # Tone energy per block: |X|^2 * 2 / N equals the energy of that sinusoid in the block.
        power = np.abs(blocks @ self._basis) ** 2 * (2.0 / self._n)
        out: list[str | None] = []
        peak = 10 ** (self.PEAK_RATIO_DB / 10)
        normal, reverse = 10 ** (self.NORMAL_TWIST_DB / 10), 10 ** (self.REVERSE_TWIST_DB / 10)
        for p, tot in zip(power, total, strict=True):
            rows, cols = p[:4], p[4:]
            r, c = int(np.argmax(rows)), int(np.argmax(cols))
            re, ce = rows[r], cols[c]
            ok = (
                re >= self._min_energy
                and ce >= self._min_energy
                and re + ce >= self.MIN_TONE_RATIO * tot
                and ce * normal >= re
                and re * reverse >= ce
                and all(re >= peak * v for i, v in enumerate(rows) if i != r)
                and all(ce >= peak * v for i, v in enumerate(cols) if i != c)
            )
            out.append(KEYPAD[r][c] if ok else None)
        return out

    def _step(self, hit: str | None) -> str | None:
        # Debounce: a key counts once it holds for min_blocks; it ends after end_blocks misses.
        if hit is not None and hit == self._key:
            self._run += 1
            self._misses = 0
        elif hit is None:
            if self._key is not None:
                self._misses += 1
                if self._misses >= self._end_blocks or not self._reported:
                    self._key, self._run, self._misses, self._reported = None, 0, 0, False
            return None
        else:
            self._key, self._run, self._misses, self._reported = hit, 1, 0, False
        if not self._reported and self._run >= self._min_blocks:
            self._reported = True
            return self._key
        return None
