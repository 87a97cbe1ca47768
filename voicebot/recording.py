"""Records both sides of a call on one timeline: caller left, robot right."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import soundfile as sf

from .audio import as_array

MAX_RECORDING_SECONDS = 3600


class CallRecorder:
    """Collects caller and robot audio at their positions on the call's clock."""

    def __init__(self, *, rate: int) -> None:
        self.rate = rate
        self._caller: list[tuple[int, np.ndarray]] = []
        self._robot: list[tuple[int, np.ndarray]] = []
        self._cuts: list[tuple[int, int]] = []  # (robot pieces queued by then, sample where barge-in cut them)

    def _at(self, seconds: float) -> int:
        return round(seconds * self.rate)

    def caller(self, pcm: bytes, *, at: float) -> None:
        """Caller audio that starts `at` seconds into the call."""
        self._caller.append((self._at(at), as_array(pcm)))

    def robot(self, pcm: bytes, *, at: float) -> None:
        """Robot audio queued to start `at` seconds into the call."""
        self._robot.append((self._at(at), as_array(pcm)))

    def cut(self, *, at: float) -> None:
        """Barge-in: robot audio after `at` was never heard."""
        self._cuts.append((len(self._robot), self._at(at)))

    def _track(self, pieces: list[tuple[int, np.ndarray]], length: int) -> np.ndarray:
        track = np.zeros(length, dtype=np.int16)
        for start, samples in pieces:
            end = min(length, start + len(samples))
            if end > start:
                track[start:end] = samples[: end - start]
        return track

    def write(self, path: str | Path) -> float:
        """Write a stereo WAV; returns its length in seconds."""
        ends = [s + len(a) for s, a in self._caller + self._robot] or [0]
        length = min(max(ends), MAX_RECORDING_SECONDS * self.rate)
        # A cut drops what was queued before it from the cut on: the gateway flushed it unheard.
        pieces = list(self._robot)
        for queued, cut_at in self._cuts:
            for i in range(queued):
                start, samples = pieces[i]
                keep = max(0, min(len(samples), cut_at - start))
                pieces[i] = (start, samples[:keep])
        robot = self._track(pieces, length)
        stereo = np.stack([self._track(self._caller, length), robot], axis=1)
        sf.write(str(path), stereo, self.rate, subtype="PCM_16")
        return length / self.rate
