"""End-of-utterance segmenter: energy VAD with an adaptive noise floor, driven by audio time only."""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass

from voicebot.audio import SUPPORTED_RATES, check_rate, rms_dbfs
from voicebot.errors import AudioFormatError, ConfigError
from voicebot.events import SpeechEnded, SpeechStarted

VadEvent = SpeechStarted | SpeechEnded


@dataclass(frozen=True)
class VadConfig:
    """Tuning of the segmenter; all times in milliseconds unless the name says seconds."""

    frame_ms: int = 20
    min_speech_ms: int = 120  # voiced audio needed before SpeechStarted (rejects clicks, coughs)
    onset_gap_ms: int = 60  # a pause longer than this abandons a not-yet-confirmed onset
    end_silence_ms: int = 600  # silence that ends an utterance (hangover over pauses inside it)
    max_utterance_s: float = 15.0  # force-end so a stuck line cannot hold the turn forever
    threshold_dbfs: float = -45.0  # absolute level below which nothing is speech
    margin_db: float = 10.0  # speech must be this far above the background noise floor to start
    hold_margin_db: float = 5.0  # lower bar once speaking (hysteresis): quiet word ends still count
    floor_window_s: float = 4.0  # the noise floor is the low percentile of this much audio
    floor_percentile: float = 10.0  # low percentile: robust to dropouts and to stray loud frames

    def __post_init__(self) -> None:
        """Reject values the segmenter cannot work with."""
        checks = (
            (self.frame_ms in (10, 20, 30), "frame_ms must be 10, 20 or 30"),
            (self.min_speech_ms >= self.frame_ms, "min_speech_ms must be >= frame_ms"),
            (self.onset_gap_ms >= 0, "onset_gap_ms must be >= 0"),
            (self.end_silence_ms >= self.frame_ms, "end_silence_ms must be >= frame_ms"),
            (
                self.max_utterance_s * 1000 > self.min_speech_ms,
                "max_utterance_s must be longer than min_speech_ms",
            ),
            (-120.0 < self.threshold_dbfs < 0.0, "threshold_dbfs must be between -120 and 0"),
            (0.0 <= self.margin_db <= 60.0, "margin_db must be between 0 and 60"),
            (0.0 <= self.hold_margin_db <= self.margin_db, "hold_margin_db must be in 0..margin_db"),
            (self.floor_window_s * 1000 >= self.frame_ms, "floor_window_s must cover a frame"),
            (0.0 <= self.floor_percentile <= 50.0, "floor_percentile must be between 0 and 50"),
        )
        for ok, message in checks:
            if not ok:
                raise ConfigError(f"invalid VAD config: {message} ({self!r})")


class Segmenter:
    """Turn a PCM16 stream into SpeechStarted/SpeechEnded events; time comes from audio fed."""

    def __init__(self, config: VadConfig | None = None, *, rate: int) -> None:
        self.config = config or VadConfig()
        self.rate = check_rate(rate, allowed=SUPPORTED_RATES)
        self._frame_bytes = rate * self.config.frame_ms // 1000 * 2
        self._frame_s = self.config.frame_ms / 1000
        cfg = self.config
        self._min_speech = math.ceil(cfg.min_speech_ms / cfg.frame_ms)
        self._onset_gap = cfg.onset_gap_ms // cfg.frame_ms
        self._end_silence = math.ceil(cfg.end_silence_ms / cfg.frame_ms)
        self._max_frames = round(cfg.max_utterance_s * 1000 / cfg.frame_ms)
        self._floor_levels: deque[float] = deque(maxlen=round(cfg.floor_window_s * 1000 / cfg.frame_ms))
        self.reset()

    def reset(self) -> None:
        """Start over: time back to zero, noise floor forgotten, no speech in progress."""
        self._buf = b""
        self._frames = 0  # frames processed since reset: the segmenter's clock
        self._floor_levels.clear()
        self._floor = -120.0
        self._in_speech = False
        self._start = 0  # frame index where the current (candidate) utterance began
        self._voiced = 0  # voiced frames in the candidate onset
        self._gap = 0  # unvoiced frames in a row
        self._last_voiced = 0  # frame index just after the last voiced frame

    @property
    def in_speech(self) -> bool:
        """True between SpeechStarted and SpeechEnded."""
        return self._in_speech

    @property
    def elapsed(self) -> float:
        """Seconds of audio processed since creation or reset (whole frames only)."""
        return self._frames * self._frame_s

    @property
    def speech_elapsed(self) -> float:
        """Seconds of the current utterance up to its last voiced frame (trailing silence excluded); 0.0 outside."""
        return (self._last_voiced - self._start) * self._frame_s if self._in_speech else 0.0

    @property
    def noise_floor(self) -> float:
        """Current estimate of the background level in dBFS."""
        return self._floor

    def feed(self, pcm: bytes) -> list[VadEvent]:
        """Consume a chunk of any size; return the events its audio completed."""
        if not isinstance(pcm, (bytes, bytearray, memoryview)):
            raise AudioFormatError(f"PCM must be bytes, not {type(pcm).__name__}")
        data = self._buf + bytes(pcm)
        size = self._frame_bytes
        usable = len(data) - len(data) % size
        self._buf = data[usable:]  # always shorter than one frame
        events: list[VadEvent] = []
        for off in range(0, usable, size):
            event = self._step(rms_dbfs(data[off:off + size]))
            if event is not None:
                events.append(event)
        return events

    def _threshold(self) -> float:
        margin = self.config.hold_margin_db if self._in_speech else self.config.margin_db
        return max(self.config.threshold_dbfs, self._floor + margin)

    def _step(self, level: float) -> VadEvent | None:
        index = self._frames
        self._frames += 1
        voiced = level >= self._threshold()
        # The floor learns from every frame, speech included: a low percentile over a window
        # lands in the pauses between syllables, so a lasting rise in line noise is learned
        # even when it was first mistaken for speech, while stray loud or silent frames are not.
        self._floor_levels.append(level)
        ordered = sorted(self._floor_levels)
        self._floor = ordered[int(len(ordered) * self.config.floor_percentile / 100)]
        if not self._in_speech:
            return self._step_idle(index, voiced)
        return self._step_speech(index, voiced)

    def _step_idle(self, index: int, voiced: bool) -> VadEvent | None:
        if voiced:
            if self._voiced == 0:
                self._start = index
            self._voiced += 1
            self._gap = 0
            self._last_voiced = index + 1
            if self._voiced >= self._min_speech:
                self._in_speech = True
                return SpeechStarted(at=self._start * self._frame_s)
        elif self._voiced:
            self._gap += 1
            if self._gap > self._onset_gap:
                self._voiced = self._gap = 0
        return None

    def _step_speech(self, index: int, voiced: bool) -> VadEvent | None:
        if voiced:
            self._gap = 0
            self._last_voiced = index + 1
        else:
            self._gap += 1
        if self._gap >= self._end_silence:
            return self._end(self._last_voiced)
        if index + 1 - self._start >= self._max_frames:
            return self._end(index + 1)
        return None

    def _end(self, end_frame: int) -> SpeechEnded:
        at = end_frame * self._frame_s
        duration = (end_frame - self._start) * self._frame_s
        self._in_speech = False
        self._voiced = self._gap = 0
        self._start = self._frames
        return SpeechEnded(at=at, duration=duration)
