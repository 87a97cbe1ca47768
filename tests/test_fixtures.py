"""Guards the committed audio fixtures: the manifest matches the files and the files are what they claim."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import pytest
import soundfile

from voicebot import audio
from voicebot.dtmf import DtmfDetector
from voicebot.tts import VOICES

ROOT = Path(__file__).resolve().parents[1] / "audio_fixtures"
KINDS = {"utterance", "silence", "noise", "dtmf", "long_speech"}
LEAD_S, TRAIL_S = 0.3, 0.8


def _manifest() -> list[dict]:
    return json.loads((ROOT / "manifest.json").read_text("utf-8"))


MANIFEST = _manifest() if (ROOT / "manifest.json").is_file() else []
BY_KIND = {k: [e for e in MANIFEST if e["kind"] == k] for k in KINDS}


def _ids(entries: list[dict]) -> list[str]:
    return [e["id"] for e in entries]


def _load(e: dict) -> bytes:
    pcm, rate = audio.read_wav(ROOT / e["file"])
    assert rate == e["rate"]
    return pcm


def test_manifest_is_well_formed():
    assert MANIFEST, "audio_fixtures/manifest.json is missing or empty"
    dupes = [i for i, n in Counter(e["id"] for e in MANIFEST).items() if n > 1]
    assert not dupes
    for e in MANIFEST:
        assert {"id", "file", "language", "rate", "text", "intent", "kind"} <= e.keys(), e
        assert e["kind"] in KINDS, e
        assert e["rate"] in (8000, 16000), e
        assert e["intent"] is None or isinstance(e["intent"], str), e
        assert ("digits" in e) == (e["kind"] == "dtmf"), e
        speech = e["kind"] in ("utterance", "long_speech")
        assert (e["language"] in VOICES) if speech else e["language"] is None, e
        assert bool(e["text"]) == speech, e
        assert not Path(e["file"]).is_absolute() and ".." not in Path(e["file"]).parts, e


def test_every_listed_file_exists_and_no_file_is_unlisted():
    listed = {e["file"] for e in MANIFEST}
    on_disk = {p.relative_to(ROOT).as_posix() for p in ROOT.rglob("*.wav")}
    assert listed - on_disk == set(), "listed but missing"
    assert on_disk - listed == set(), "on disk but not in the manifest"


def test_fixture_set_stays_small():
    total = sum((ROOT / e["file"]).stat().st_size for e in MANIFEST)
    assert total < 4.5e6, f"fixtures grew to {total / 1e6:.1f} MB"


@pytest.mark.parametrize("e", MANIFEST, ids=_ids(MANIFEST))
def test_header_matches_manifest(e):
    info = soundfile.info(str(ROOT / e["file"]))
    assert (info.format, info.subtype, info.channels, info.samplerate) == ("WAV", "PCM_16", 1, e["rate"])


def test_every_utterance_exists_at_both_rates():
    pairs: dict[tuple[str, str], set[int]] = {}
    for e in BY_KIND["utterance"]:
        pairs.setdefault((e["language"], e["text"]), set()).add(e["rate"])
    assert pairs and all(rates == {8000, 16000} for rates in pairs.values()), pairs
    names = {e["id"].split(".")[1] for e in BY_KIND["utterance"] if e["language"] == "zh-CN"}
    assert {"door", "station", "locker", "agent", "dnc", "backchannel", "weather", "goodbye"} <= names
    ko = {(e["text"], e["intent"]) for e in BY_KIND["utterance"] if e["language"] == "ko-KR"}
    assert ko == {("네", "yes"), ("아니요", "no"), ("상담원", "agent")}


@pytest.mark.parametrize("e", BY_KIND["utterance"], ids=_ids(BY_KIND["utterance"]))
def test_utterance_has_speech_between_clean_silences(e):
    pcm, rate = _load(e), e["rate"]
    seconds = audio.duration(pcm, rate)
    assert LEAD_S + TRAIL_S + 0.15 < seconds < 6.0
    head = pcm[: audio.frame_bytes(rate, int(LEAD_S * 1000) - 20)]
    tail = pcm[-audio.frame_bytes(rate, int(TRAIL_S * 1000) - 20) :]
    assert audio.rms_dbfs(head) < -70 and audio.rms_dbfs(tail) < -70
    middle = pcm[audio.frame_bytes(rate, int(LEAD_S * 1000)) : -audio.frame_bytes(rate, int(TRAIL_S * 1000))]
    assert audio.rms_dbfs(middle) > -35.0


def test_long_speech_is_long_and_mostly_voiced():
    (e,) = BY_KIND["long_speech"]
    pcm = _load(e)
    assert 15.0 < audio.duration(pcm, e["rate"]) < 30.0
    frames = list(audio.chunks(pcm, rate=e["rate"], ms=500))
    voiced = sum(audio.rms_dbfs(f) > -40 for f in frames)
    assert voiced > 0.7 * len(frames)


@pytest.mark.parametrize("e", BY_KIND["silence"], ids=_ids(BY_KIND["silence"]))
def test_silence_is_silent(e):
    pcm = _load(e)
    assert audio.duration(pcm, e["rate"]) == pytest.approx(3.0)
    assert not any(pcm)


def test_noise_is_quiet_but_present():
    (e,) = BY_KIND["noise"]
    pcm = _load(e)
    assert audio.duration(pcm, e["rate"]) == pytest.approx(3.0)
    assert -43.0 < audio.rms_dbfs(pcm) < -37.0


@pytest.mark.parametrize("e", BY_KIND["dtmf"], ids=_ids(BY_KIND["dtmf"]))
def test_dtmf_fixture_holds_its_digits(e):
    pcm = _load(e)
    assert audio.duration(pcm, e["rate"]) > 0.16 * len(e["digits"])
    detector = DtmfDetector(rate=e["rate"])
    heard = [d for chunk in audio.chunks(pcm, rate=e["rate"]) for d in detector.feed(chunk)]
    assert "".join(heard) == e["digits"]
