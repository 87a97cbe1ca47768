"""Shared test helpers: repository paths, the fixture manifest, settings in a temporary cache."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from voicebot.config import Settings

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
