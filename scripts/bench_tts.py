"""Measure prompt rendering: per-prompt latency cold (synthesis) and warm (disk cache), and throughput.

Run: .venv/bin/python scripts/bench_tts.py [--rate 8000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from voicebot import audio
from voicebot.tts import PromptCache, Pyttsx3Synthesizer

PROMPTS = {
    "zh-CN": [
        "您好，这里是顺达快递，您有一个包裹今天下午派送。",
        "请问您方便在家签收吗？",
        "请问是送货上门，还是放到驿站或者快递柜？",
        "好的，已为您安排送货上门。",
        "好的，包裹将放在小区驿站，请凭取件码领取。",
        "抱歉，我没有听清楚，请您再说一遍。",
        "正在为您转接人工客服，请稍候。",
        "您的取件码是八三二一，请妥善保管。",
        "感谢您的配合，祝您生活愉快，再见。",
        "请问您希望改到什么时间派送？",
    ],
    "en-US": [
        "Hello, this is Swift Parcel calling about a delivery scheduled for this afternoon.",
        "Will you be home to receive it?",
        "Should we deliver to your door, or leave it at the pickup station or a locker?",
        "Great, we will deliver it to your door.",
        "Your parcel will be left at the pickup station.",
        "Sorry, I did not catch that. Could you say it again?",
        "Please hold while I transfer you to an agent.",
        "Your pickup code is eight three two one.",
        "Thank you, goodbye.",
        "When would you like us to deliver instead?",
    ],
}


def _stats(ms: list[float]) -> str:
    p95 = statistics.quantiles(ms, n=20)[-1] if len(ms) > 1 else ms[0]
    return f"mean {statistics.fmean(ms):7.2f} ms  p95 {p95:7.2f} ms  (n={len(ms)})"


async def _pass(cache: PromptCache, rate: int) -> tuple[list[float], float, float]:
    times, audio_s = [], 0.0
    start = time.perf_counter()
    for language, texts in PROMPTS.items():
        for text in texts:
            t0 = time.perf_counter()
            pcm = await cache.get_or_render(text, language=language, rate=rate)
            times.append((time.perf_counter() - t0) * 1000)
            audio_s += audio.duration(pcm, rate)
    return times, audio_s, time.perf_counter() - start


async def run(rate: int, rounds: int) -> None:
    """Render all prompts cold then warm, `rounds` times each with a fresh cache dir."""
    cold, warm = [], []
    cold_audio = cold_wall = warm_audio = warm_wall = 0.0
    async with Pyttsx3Synthesizer() as synth:
        for _ in range(rounds):
            with tempfile.TemporaryDirectory() as tmp:
                cache = PromptCache(synth, Path(tmp))
                t, a, w = await _pass(cache, rate)
                cold += t
                cold_audio, cold_wall = cold_audio + a, cold_wall + w
                t, a, w = await _pass(cache, rate)
                warm += t
                warm_audio, warm_wall = warm_audio + a, warm_wall + w
                assert cache.misses == len(t) and cache.hits == len(t)
        # Throughput with the worker kept busy: all prompts at once, no cache.
        texts = [(lang, t) for lang, ts in PROMPTS.items() for t in ts]
        t0 = time.perf_counter()
        pcms = await asyncio.gather(*(synth.synthesize(t, language=lang, rate=rate) for lang, t in texts))
        burst_wall = time.perf_counter() - t0
        burst_audio = sum(audio.duration(p, rate) for p in pcms)
    print(f"{len(texts)} prompts (zh-CN + en-US) at {rate} Hz, {rounds} rounds")
    print(f"cold (synthesis + cache write): {_stats(cold)}  {cold_audio / cold_wall:6.1f} audio s / wall s")
    print(f"warm (cache hit, disk read):    {_stats(warm)}  {warm_audio / warm_wall:6.1f} audio s / wall s")
    print(f"burst (20 concurrent, no cache): {burst_wall * 1000:.1f} ms wall, "
          f"{burst_audio:.1f} s audio, {burst_audio / burst_wall:.1f} audio s / wall s")


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rate", type=int, default=8000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(run(args.rate, args.rounds))


if __name__ == "__main__":
    main()
