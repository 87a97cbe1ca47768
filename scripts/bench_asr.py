"""Measure Vosk's real-time factor (CPU seconds per audio second), free vs grammar, on Korean at 8 kHz."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from voicebot.asr import VoskEngine
from voicebot.audio import chunks, duration, read_wav, resample
from voicebot.config import Settings

TEXT = "네 아니요, 상담원 연결해 주세요. 택배 배송 문의입니다."
GRAMMAR = ["네", "아니요", "상담원", "배송", "택배", "예"]
RATES = (8000, 16000)  # telephone first; 16 kHz for comparison


def synthesize(workdir: Path, rate: int) -> bytes:
    """Korean speech from espeak-ng at `rate`."""
    wav = workdir / "bench.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-s", "160", "-w", str(wav), TEXT], check=True, timeout=60)
    pcm, sr = read_wav(wav)
    return resample(pcm, from_rate=sr, to_rate=rate)


async def decode(
    engine: VoskEngine, pcm: bytes, rate: int, grammar: list[str] | None
) -> tuple[float, float, str]:
    """CPU and wall seconds to stream `pcm` through one recogniser in 20 ms chunks, and the text."""
    rec = await engine.recognizer(language="ko-KR", rate=rate, grammar=grammar)
    cpu, wall = time.process_time(), time.perf_counter()
    for chunk in chunks(pcm, rate=rate, ms=20):
        await rec.accept(chunk)
    text = (await rec.final()).text
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    await rec.aclose()
    return cpu, wall, text


async def main() -> int:
    """Print the figures."""
    if shutil.which("espeak-ng") is None:
        print("espeak-ng is required", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        async with VoskEngine(settings=Settings(cache_dir=Path(tmp), asr_workers=1)) as engine:
            await engine.model("ko-KR")
            for rate in RATES:
                pcm = synthesize(Path(tmp), rate)
                seconds = duration(pcm, rate)
                await decode(engine, pcm[: rate * 2], rate, None)  # warm up caches and the thread
                print(f"clip: {seconds:.2f} s of Korean at {rate} Hz (espeak-ng)")
                for label, grammar in (("free", None), ("grammar", GRAMMAR)):
                    runs = [await decode(engine, pcm, rate, grammar) for _ in range(3)]
                    cpu = min(r[0] for r in runs)
                    wall = min(r[1] for r in runs)
                    print(
                        f"  {label:8s} RTF {cpu / seconds:.3f} CPU-s/audio-s  (wall {wall / seconds:.3f})  "
                        f"text: {runs[0][2]!r}"
                    )
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
