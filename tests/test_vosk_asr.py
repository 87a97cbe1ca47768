"""The vosk-server compatible endpoint, driven by clients written like vosk-server's own websocket tests."""

from __future__ import annotations

import asyncio
import json
import wave

import pytest
from conftest import fixture_path
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve
from websockets.exceptions import ConnectionClosed

from voicebot.asr import VoskEngine
from voicebot.config import Settings
from voicebot.gateways.vosk_asr import serve_asr

pytestmark = pytest.mark.vosk

YES_NO_AGENT = ["네", "아니요", "상담원"]
# Every key a vosk-server reply may have (Vosk's own JSON): partial, result, final and alternatives.
VOSK_KEYS = [{"partial"}, {"text"}, {"result", "text"}, {"alternatives"}]


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """One engine for the module: the Korean model loads once."""
    eng = VoskEngine(settings=Settings(cache_dir=tmp_path_factory.mktemp("cache"), asr_workers=2))
    yield eng
    asyncio.run(eng.aclose())


@pytest.fixture
async def server(engine):
    """A real websocket server on 127.0.0.1; yields (uri, outcomes of finished handlers)."""
    outcomes: list[str] = []

    async def handler(ws):
        try:
            await serve_asr(ws, engine=engine, language="ko-KR", max_frame_bytes=64_000, idle_timeout=2.0)
            outcomes.append("ok")
        except BaseException as err:  # the test fails on any escape, cancellation included
            outcomes.append(repr(err))
            raise

    async with serve(handler, "127.0.0.1", 0, max_size=None) as srv:
        port = srv.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}", outcomes


async def settled(outcomes: list[str], count: int) -> list[str]:
    """The handler outcomes once `count` handlers finished (they end just after the client sees the close)."""
    for _ in range(250):
        if len(outcomes) >= count:
            break
        await asyncio.sleep(0.02)
    return outcomes


def wav(name: str, rate: int = 8000) -> wave.Wave_read:
    """One Korean fixture, opened as vosk-server's test.py opens its input."""
    return wave.open(str(fixture_path("ko-KR", name, rate)), "rb")


async def run_test(uri: str, wf: wave.Wave_read, config: str | None) -> list[dict]:
    """vosk-server's websocket/test.py: config, 0.2 s chunks with one reply each, eof, final reply."""
    replies = []
    with wf:
        async with connect(uri) as websocket, asyncio.timeout(30):
            if config is not None:
                await websocket.send(config % wf.getframerate())
            buffer_size = int(wf.getframerate() * 0.2)  # 0.2 seconds of audio
            while True:
                data = wf.readframes(buffer_size)
                if len(data) == 0:
                    break
                await websocket.send(data)
                replies.append(json.loads(await websocket.recv()))
            await websocket.send('{"eof" : 1}')
            replies.append(json.loads(await websocket.recv()))
            with pytest.raises(ConnectionClosed):
                await websocket.recv()
            assert websocket.close_code == 1000
    for reply in replies:
        assert set(reply) in VOSK_KEYS, reply
    return replies


PHRASES = '{"config" : {"sample_rate" : %d, "phrase_list" : ["네", "아니요", "상담원"], "words" : 1}}'


@pytest.mark.parametrize("name, text", [("yes", "네"), ("no", "아니요"), ("agent", "상담원")])
async def test_grammar_client_gets_partials_and_word_results(server, name, text):
    uri, outcomes = server
    replies = await run_test(uri, wav(name), PHRASES)
    final = replies[-1]
    assert final["text"] == text
    # words=1: every word with conf/start/end, times inside the clip.
    assert [w["word"] for w in final["result"]] == [text]
    word = final["result"][0]
    assert set(word) == {"conf", "start", "end", "word"} and 0 <= word["start"] < word["end"] < 2.0
    assert 0 < word["conf"] <= 1
    assert any(r.get("partial") for r in replies[:-1]), replies
    assert await settled(outcomes, 1) == ["ok"]


async def test_16k_config_and_words_off(server):
    uri, _ = server
    replies = await run_test(uri, wav("agent", 16000), PHRASES.replace('"words" : 1', '"words" : 0'))
    assert replies[-1] == {"text": "상담원"}


async def test_default_config_is_8k_free_decoding_with_words(server):
    uri, _ = server
    replies = await run_test(uri, wav("no"), None)
    assert replies[-1]["text"].strip()
    assert all({"conf", "start", "end", "word"} == set(w) for w in replies[-1]["result"])


async def test_vosk_endpoint_mid_stream_sends_result_and_alternatives(server, tmp_path):
    uri, _ = server
    # "yes", 1.5 s of silence, "no": Vosk's own endpointer closes the first segment before eof.
    with wav("yes") as yes, wav("no") as no, wave.open(str(tmp_path / "two.wav"), "wb") as out:
        out.setparams(yes.getparams())
        out.writeframes(yes.readframes(yes.getnframes()) + bytes(24000) + no.readframes(no.getnframes()))
    config = '{"config" : {"sample_rate" : %d, "phrase_list" : ["네", "아니요"], "unknown" : true}}'
    with wave.open(str(tmp_path / "two.wav"), "rb") as two:
        replies = await run_test(uri, two, config)
    mid = [r for r in replies[:-1] if r.get("text")]  # silence-only segments end as {"text": ""}
    assert [r["text"] for r in mid] == ["네"] and mid[0]["result"][0]["word"] == "네"
    assert replies[-1]["text"] == "아니요"

    replies = await run_test(uri, wav("no"), '{"config" : {"sample_rate" : %d, "max_alternatives" : 3}}')
    alternatives = replies[-1]["alternatives"]
    assert 1 <= len(alternatives) <= 3 and all({"confidence", "text"} <= set(a) for a in alternatives)


async def test_replies_are_vosks_own_json_strings_byte_for_byte(server, engine):
    """What vosk-server sends is KaldiRecognizer's output as is: compare with a bare recogniser."""
    import vosk

    uri, _ = server
    model = await engine.model("ko-KR")
    rec = vosk.KaldiRecognizer(model, 8000, json.dumps(YES_NO_AGENT, ensure_ascii=False))
    rec.SetWords(True)
    rec.SetMaxAlternatives(0)
    expected = []
    with wav("agent") as wf:
        while data := wf.readframes(1600):
            expected.append(rec.Result() if rec.AcceptWaveform(data) else rec.PartialResult())
    expected.append(rec.FinalResult())
    got = []
    async with connect(uri) as websocket:
        await websocket.send('{"config" : {"phrase_list" : ["네", "아니요", "상담원"]}}')
        with wav("agent") as wf:
            while data := wf.readframes(1600):
                await websocket.send(data)
                got.append(await websocket.recv())
        await websocket.send(json.dumps({"eof": 1}))  # eof is parsed, not matched: any spacing works
        got.append(await websocket.recv())
    # Vosk's word times can differ by a few ms between two recognisers of one model (seen: 0.570 vs
    # 0.575), so compare the decoded structure exactly and the times within 20 ms.
    assert len(got) == len(expected)
    for g, e in zip(got, expected, strict=True):
        gj, ej = json.loads(g), json.loads(e)
        assert list(gj) == list(ej)
        assert (gj.get("text"), gj.get("partial")) == (ej.get("text"), ej.get("partial"))
        for gw, ew in zip(gj.get("result", []), ej.get("result", []), strict=True):
            assert list(gw) == list(ew) and gw["word"] == ew["word"]
            assert all(abs(gw[k] - ew[k]) < 0.02 for k in ("start", "end", "conf"))
    assert all(" : " in g for g in got) and "\n" in got[-1]  # Vosk's own layout, not re-serialised


async def test_eof_without_audio_gives_empty_text(server):
    uri, _ = server
    async with connect(uri) as websocket:
        await websocket.send('{"eof":1}')
        assert json.loads(await websocket.recv()) == {"text": ""}


async def test_two_clients_concurrently_get_their_own_results(server):
    uri, outcomes = server
    yes, no = await asyncio.gather(run_test(uri, wav("yes"), PHRASES), run_test(uri, wav("no"), PHRASES))
    assert (yes[-1]["text"], no[-1]["text"]) == ("네", "아니요")
    assert await settled(outcomes, 2) == ["ok", "ok"]


@pytest.mark.parametrize(
    "frames, code",
    [
        (["{not json"], 1007),
        (['{"config" : {"sample_rate" : -8000}}'], 1007),
        (['{"config" : {"sample_rate" : "fast"}}'], 1007),
        (['{"config" : {"sample_rate" : 1}}'], 1007),  # Vosk would resample every byte 16000-fold
        (['{"config" : {"sample_rate" : 8000, "phrase_list" : "네"}}'], 1007),
        (['{"config" : {"max_alternatives" : -1}}'], 1007),
        (['{"config" : [1]}'], 1007),
        ([b"\x00\x01\x02"], 1007),
        (['{"hello" : 1}'], 1003),
        (["[1, 2]"], 1003),
        ([bytes(64_002)], 1009),
        ([bytes(3200), b"\x00"], 1007),  # a good frame, then an odd one: closed after the first reply
    ],
)
async def test_malformed_input_closes_with_a_code_and_sends_nothing(server, frames, code):
    uri, outcomes = server
    async with connect(uri) as websocket:
        for frame in frames:
            await websocket.send(frame)
        if len(frames) > 1:
            assert "partial" in json.loads(await websocket.recv())
        with pytest.raises(ConnectionClosed):
            await websocket.recv()
        assert websocket.close_code == code
        assert websocket.close_reason
    assert await settled(outcomes, 1) == ["ok"]


async def test_idle_client_is_closed_and_a_vanishing_client_ends_the_handler(server):
    uri, outcomes = server
    async with connect(uri) as websocket:
        with pytest.raises(ConnectionClosed):
            await websocket.recv()
        assert websocket.close_code == 1008
    async with connect(uri) as websocket:
        await websocket.send(bytes(3200))
        await websocket.recv()
        websocket.transport.abort()  # gone mid-stream, no closing handshake
    assert await settled(outcomes, 2) == ["ok", "ok"]
