"""Speech synthesis with the real espeak-ng: the synthesizer, the prompt cache and prompt rendering."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from voicebot import audio
from voicebot.errors import TtsError
from voicebot.events import PromptPart
from voicebot.tts import MAX_TEXT_CHARS, PromptCache, Pyttsx3Synthesizer, render_prompt

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
async def synth():
    async with Pyttsx3Synthesizer() as s:
        yield s


@pytest.fixture
def cache(synth, tmp_path):
    return PromptCache(synth, tmp_path / "cache")


@pytest.mark.parametrize("rate", [8000, 16000])
@pytest.mark.parametrize(
    ("language", "text"),
    [
        ("zh-CN", "您好，这里是快递服务中心"),
        ("en-US", "hello, this is the parcel service"),
        ("ko-KR", "안녕하세요"),
    ],
)
async def test_renders_speech_of_plausible_length(synth, language, text, rate):
    pcm = await synth.synthesize(text, language=language, rate=rate)
    seconds = audio.duration(pcm, rate)
    assert 0.5 < seconds < 6.0
    assert audio.rms_dbfs(pcm) > -35.0  # speech, not silence


async def test_empty_text_gives_empty_audio(synth):
    assert await synth.synthesize("  ", language="zh-CN", rate=8000) == b""


async def test_second_request_is_a_byte_identical_cache_hit(cache):
    first = await cache.get_or_render("您的快递到了", language="zh-CN", rate=8000)
    second = await cache.get_or_render("您的快递到了", language="zh-CN", rate=8000)
    assert (cache.misses, cache.hits) == (1, 1)
    assert first == second and first
    key = cache.key("您的快递到了", language="zh-CN", rate=8000)
    path = cache.path_for(key)
    assert path == cache.root / key[:2] / f"{key}.wav" and path.is_file()
    assert audio.read_wav(path) == (first, 8000)
    # Another rate is another prompt.
    await cache.get_or_render("您的快递到了", language="zh-CN", rate=16000)
    assert cache.misses == 2


async def test_concurrent_misses_for_one_text_render_once(cache):
    results = await asyncio.gather(
        *(cache.get_or_render("请问您什么时候在家", language="zh-CN", rate=8000) for _ in range(6))
    )
    assert cache.misses == 1 and cache.hits == 5
    assert len(set(results)) == 1 and results[0]


async def test_many_concurrent_texts_all_complete_and_differ(synth):
    texts = [f"parcel number {i}" for i in range(20)]
    results = await asyncio.gather(*(synth.synthesize(t, language="en-US", rate=8000) for t in texts))
    assert all(len(r) > 8000 for r in results)
    assert len(set(results)) == 20


async def test_languages_sound_different(synth):
    zh = await synth.synthesize("你好", language="zh-CN", rate=8000)
    yue = await synth.synthesize("你好", language="yue-HK", rate=8000)
    en = await synth.synthesize("hello", language="en-US", rate=8000)
    assert len({zh, yue, en}) == 3


async def test_cancelled_caller_does_not_break_the_worker(synth):
    task = asyncio.create_task(synth.synthesize("这句话没人听了" * 20, language="zh-CN", rate=8000))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    pcm = await synth.synthesize("还在工作", language="zh-CN", rate=8000)
    assert audio.rms_dbfs(pcm) > -35.0


async def test_prerender_fills_the_cache(cache):
    items = [("您好", "zh-CN"), ("goodbye", "en-US"), ("您好", "zh-CN"), ("", "zh-CN")]
    assert await cache.prerender(items, rate=8000) == 2
    assert cache.misses == 2
    await cache.get_or_render("goodbye", language="en-US", rate=8000)
    assert cache.hits == 1 and cache.misses == 2


async def test_damaged_cache_file_is_rendered_again(cache):
    key = cache.key("再见", language="zh-CN", rate=8000)
    cache.path_for(key).parent.mkdir(parents=True)
    cache.path_for(key).write_bytes(b"not a wav")
    pcm = await cache.get_or_render("再见", language="zh-CN", rate=8000)
    assert cache.misses == 1 and audio.read_wav(cache.path_for(key)) == (pcm, 8000)


async def test_recorded_head_plus_tts_tail(cache, tmp_path):
    head = audio.from_array(0.3 * np.sin(2 * np.pi * 440 * np.arange(12800) / 16000))  # 0.8 s tone
    (tmp_path / "prompts").mkdir()
    audio.write_wav(tmp_path / "prompts" / "head.wav", head, 16000)
    tail = await cache.get_or_render("明天下午三点", language="zh-CN", rate=8000)
    parts = (PromptPart(wav="prompts/head.wav"), PromptPart(text="明天下午三点"))
    pcm = await render_prompt(parts, language="zh-CN", rate=8000, cache=cache, base_dir=tmp_path)
    assert abs(audio.duration(pcm, 8000) - (0.8 + audio.duration(tail, 8000))) < 0.01
    assert pcm.endswith(tail)
    assert cache.hits == 1  # the text part came from the cache


@pytest.mark.parametrize("language", ["fr-FR", "zh", ""])
async def test_unknown_language_is_refused_with_the_list(synth, cache, language):
    with pytest.raises(TtsError, match="zh-CN"):
        await synth.synthesize("hi", language=language, rate=8000)
    with pytest.raises(TtsError, match="en-US"):
        await cache.get_or_render("hi", language=language, rate=8000)


async def test_too_long_text_is_refused(synth, cache):
    text = "长" * (MAX_TEXT_CHARS + 1)
    with pytest.raises(TtsError, match=str(MAX_TEXT_CHARS)):
        await synth.synthesize(text, language="zh-CN", rate=8000)
    with pytest.raises(TtsError, match=str(MAX_TEXT_CHARS)):
        await cache.get_or_render(text, language="zh-CN", rate=8000)
    assert cache.misses == 0


async def test_bad_rate_is_refused(synth):
    with pytest.raises(TtsError, match="rate"):
        await synth.synthesize("hello", language="en-US", rate=7000)


@pytest.mark.parametrize(
    ("wav", "message"),
    [
        ("missing.wav", "missing.wav"),
        ("../x.wav", "outside"),
        ("/etc/passwd", "outside"),
        ("bad.wav", "bad.wav"),
    ],
)
async def test_bad_recorded_prompts_are_refused(cache, tmp_path, wav, message):
    (tmp_path / "bad.wav").write_bytes(b"RIFF....WAVEjunk")
    (tmp_path.parent / "x.wav").write_bytes(audio.wav_bytes(audio.silence(0.1, 8000), 8000))
    parts = (PromptPart(wav=wav),)
    with pytest.raises(TtsError, match=message):
        await render_prompt(parts, language="zh-CN", rate=8000, cache=cache, base_dir=tmp_path)


async def test_part_with_both_text_and_wav_is_refused(cache, tmp_path):
    with pytest.raises(TtsError, match="both"):
        await render_prompt(
            (PromptPart(text="hi", wav="a.wav"),), language="en-US", rate=8000, cache=cache, base_dir=tmp_path
        )


async def test_close_ends_the_thread_and_refuses_work(tmp_path: Path):
    synth = Pyttsx3Synthesizer()
    with pytest.raises(TtsError, match="not running"):
        await synth.synthesize("hi", language="en-US", rate=8000)
    await synth.start()
    thread = synth.thread
    assert thread is not None and thread.is_alive()
    pending = asyncio.gather(*(synth.synthesize(f"item {i}", language="en-US", rate=8000) for i in range(5)))
    await asyncio.sleep(0)
    await synth.aclose()
    assert not thread.is_alive()
    assert all(await pending)  # work accepted before close is finished, not lost
    with pytest.raises(TtsError, match="not running"):
        await synth.synthesize("hi", language="en-US", rate=8000)
    await synth.aclose()  # idempotent
