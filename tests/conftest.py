"""Shared test helpers: repository paths, the fixture manifest, settings in a temporary cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicebot.asr import TranscriptReplayRecognizer
from voicebot.config import Settings
from voicebot.events import Say
from voicebot.simulate import CallerStep

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "audio_fixtures"
PLANS = REPO / "dialplans"


def fixture_entry(language: str, fixture_id: str, rate: int = 8000) -> dict:
    """The manifest entry of one recorded caller utterance (or a language-free one: tones, noise)."""
    manifest = json.loads((FIXTURES / "manifest.json").read_text(encoding="utf-8"))
    wanted = {f"{language}.{fixture_id}.{rate // 1000}k", f"{fixture_id}.{rate // 1000}k"}
    for entry in manifest:
        if entry["id"] in wanted and entry["rate"] == rate:
            return entry
    raise KeyError(f"no fixture {language}/{fixture_id} at {rate} Hz")


def fixture_path(language: str, fixture_id: str, rate: int = 8000) -> Path:
    """Path of one recorded caller utterance."""
    return FIXTURES / fixture_entry(language, fixture_id, rate)["file"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings whose cache and data live in this test's temporary folder."""
    return Settings.from_env({"HOME": str(tmp_path)}, cache_dir=tmp_path / "cache", data_dir=tmp_path / "data")


@pytest.fixture(scope="module")
def plan_settings(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """One prompt cache per test module: each call re-renders only what it has not heard before."""
    home = tmp_path_factory.mktemp(request.module.__name__.removeprefix("test_"))
    return Settings.from_env({"HOME": str(home)}, cache_dir=home / "cache", data_dir=home / "data")


def prompt_ids(events: list) -> list[str]:
    """Prompt ids in the order the robot spoke them."""
    return [e.prompt_id for e in events if isinstance(e, Say)]


def scripted_caller(language: str, answers: list[str], rate: int = 8000
                    ) -> tuple[list[CallerStep], TranscriptReplayRecognizer]:
    """A caller who answers each prompt in turn: a fixture id plays its WAV, "keys:5" presses keys,
    "say:text" types, "silence" answers nothing.

    The recogniser is the FAKE TranscriptReplayRecognizer (no zh/en Vosk model installs here): it "hears"
    each played utterance fixture as its manifest text. Tone fixtures (e.g. `dtmf_phone`, keys played in
    band) are heard by the DTMF detector, never the recogniser.
    """
    steps, texts = [], []
    for answer in answers:
        if answer == "silence":
            steps.append(CallerStep("silence"))
        elif answer.startswith(("keys:", "say:")):
            kind, _, value = answer.partition(":")
            steps.append(CallerStep(kind, value))
        else:
            entry = fixture_entry(language, answer, rate)
            steps.append(CallerStep("wav", str(FIXTURES / entry["file"])))
            if entry["kind"] == "utterance":
                texts.append(entry["text"])
    return steps, TranscriptReplayRecognizer(texts, rate=rate, language=language)
