"""Answering-machine detection: a person says a short hello and waits; a machine talks on, or beeps."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

from .audio import check_rate
from .errors import ConfigError
from .events import SpeechEnded, SpeechStarted
from .vad import Segmenter, VadConfig

Verdict = Literal["human", "machine", "unknown"]


@dataclass(frozen=True)
class AmdConfig:
    """Thresholds in seconds, after the usual greeting-length heuristics (as in Asterisk's AMD)."""

    max_greeting: float = 1.6  # more speech than this before a pause is a recorded greeting, not "喂？"
    after_greeting_silence: float = 0.7  # a short hello, then this much silence: a person waiting for us
    max_initial_silence: float = 3.0  # nobody speaks: give up and treat as unknown (we then talk)
    max_analysis: float = 5.0  # never hold the call longer than this before deciding
    beep_min: float = 0.18  # a steady tone this long is a voicemail beep
    beep_band: tuple[float, float] = (500.0, 2600.0)
    beep_purity: float = 0.6  # share of the frame's energy in the strongest frequency bin and its neighbours

    def __post_init__(self) -> None:
        if not 0 < self.max_greeting < self.max_analysis or self.after_greeting_silence <= 0 or self.beep_min <= 0:
            raise ConfigError(f"invalid AMD config: {self!r}")


@dataclass(frozen=True)
class AmdResult:
    """The verdict, why, and how many seconds of audio it took."""

    verdict: Verdict
    reason: str
    after: float


class AnsweringMachineDetector:
    """Feed the callee's first audio after answer; `feed` returns a result once it can tell."""

    FRAME_MS = 20

    def __init__(self, *, rate: int, config: AmdConfig | None = None) -> None:
        self.rate = check_rate(rate)
        self.config = config or AmdConfig()
        # A short end-silence: a hello is two syllables, and the silence after it is the signal.
        self.vad = Segmenter(VadConfig(end_silence_ms=200, min_speech_ms=100), rate=rate)
        self._frame = rate * self.FRAME_MS // 1000 * 2
        self._buf = b""
        self._seconds = 0.0
        self._speech_start: float | None = None
        self._speech_end: float | None = None
        # Speech in the utterances already ended: a greeting of short sentences with short pauses between
        # them is still one long greeting (Asterisk's AMD also sums the voice, not just the current word).
        self._voiced = 0.0
        self._spoke = False
        self._tone = 0.0  # seconds of steady tone in a row
        self.result: AmdResult | None = None

    def feed(self, pcm: bytes) -> AmdResult | None:
        """Consume audio; the result once decided (and on every later call)."""
        if self.result is not None:
            return self.result
        self._buf += pcm
        while len(self._buf) >= self._frame and self.result is None:
            frame, self._buf = self._buf[: self._frame], self._buf[self._frame :]
            self._seconds += self.FRAME_MS / 1000
            self.result = self._step(frame)
        return self.result

    def _decide(self, verdict: Verdict, reason: str) -> AmdResult:
        return AmdResult(verdict=verdict, reason=reason, after=round(self._seconds, 3))

    def _step(self, frame: bytes) -> AmdResult | None:
        cfg = self.config
        self._tone = self._tone + self.FRAME_MS / 1000 if self._is_tone(frame) else 0.0
        if self._tone >= cfg.beep_min:
            return self._decide("machine", "beep")
        for event in self.vad.feed(frame):
            if isinstance(event, SpeechStarted):
                self._spoke, self._speech_start, self._speech_end = True, event.at, None
            elif isinstance(event, SpeechEnded):
                self._speech_end = event.at
                self._voiced += event.duration
        if self.vad.in_speech and self._speech_start is not None:
            if self._voiced + self._seconds - self._speech_start > cfg.max_greeting:
                return self._decide("machine", "long greeting")
        elif self._speech_end is not None and self._seconds - self._speech_end >= cfg.after_greeting_silence:
            return self._decide("human", "short greeting, then silence")
        if not self._spoke and self._seconds >= cfg.max_initial_silence:
            return self._decide("unknown", "silence")
        if self._seconds >= cfg.max_analysis:
            return self._decide("unknown", "no decision in time")
        return None

    def _is_tone(self, frame: bytes) -> bool:
        """One strong frequency in the beep band holding most of the energy."""
        samples = np.frombuffer(frame, dtype="<i2").astype(np.float32)
        if float(np.sqrt(np.mean(samples * samples))) < 300.0:  # about -40 dBFS: too quiet to be a beep
            return False
        spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples)))) ** 2
        total = float(spectrum.sum())
        peak = int(spectrum.argmax())
        freq = peak * self.rate / len(samples)
        low, high = self.config.beep_band
        if not low <= freq <= high or total <= 0:
            return False
        return float(spectrum[max(0, peak - 2) : peak + 3].sum()) / total >= self.config.beep_purity
