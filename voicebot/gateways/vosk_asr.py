"""A vosk-server compatible ASR websocket endpoint: existing vosk-server clients work unchanged.

Protocol (alphacep/vosk-server websocket/asr_server.py): optional text frames
`{"config": {"sample_rate": .., "phrase_list": [..], "words": .., "max_alternatives": ..}}`,
binary PCM16 frames each answered by Vosk's own JSON (`Result()` when its endpointer closed a segment,
else `PartialResult()`), then the text frame `{"eof" : 1}` answered by `FinalResult()` before closing.
Vosk's JSON strings are forwarded as they are, so field names and layout match vosk-server byte for byte.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
from dataclasses import dataclass, replace
from typing import Any

from websockets.exceptions import ConnectionClosed

from ..asr import VoskEngine
from ..errors import VoicebotError
from .base import CLOSE_BAD_DATA, CLOSE_POLICY, CLOSE_TOO_BIG, CLOSE_UNSUPPORTED, ProtocolError

log = logging.getLogger(__name__)

# Vosk resamples any rate, but a tiny one makes every byte cost thousands of samples (a DoS).
MIN_RATE, MAX_RATE = 4000, 192_000
MAX_PHRASES = 10_000
MAX_ALTERNATIVES = 100
CLOSE_INTERNAL = 1011


@dataclass(frozen=True, slots=True)
class VoskConfig:
    """One connection's recogniser settings, as vosk-server's config message sets them."""

    sample_rate: float = 8000.0
    phrase_list: tuple[str, ...] | None = None
    words: bool = True  # vosk-server's default (VOSK_SHOW_WORDS)
    max_alternatives: int = 0


@dataclass(frozen=True, slots=True)
class Eof:
    """The client's end of audio: answer with the final result, then close."""


def _bad(message: str) -> ProtocolError:
    return ProtocolError(message, close_code=CLOSE_BAD_DATA)


def _rate(value: Any) -> float:
    # vosk-server does float(value), so "8000" works there and must work here.
    try:
        rate = float(value) if not isinstance(value, bool) else math.nan
    except (TypeError, ValueError):
        rate = math.nan
    if not MIN_RATE <= rate <= MAX_RATE:  # also rejects NaN and inf
        raise _bad(f"config sample_rate must be a number {MIN_RATE}..{MAX_RATE}, got {value!r}")
    return rate


def _phrases(value: Any) -> tuple[str, ...] | None:
    if value is None:
        return None
    if not isinstance(value, list) or not all(isinstance(p, str) for p in value):
        raise _bad("config phrase_list must be a list of strings")
    if len(value) > MAX_PHRASES:
        raise _bad(f"config phrase_list has {len(value)} phrases, at most {MAX_PHRASES} allowed")
    return tuple(value)


def _words(value: Any) -> bool:
    if not isinstance(value, bool | int | float):  # vosk-server does bool(value): 0/1 and true/false
        raise _bad(f"config words must be a boolean, got {value!r}")
    return bool(value)


def _alternatives(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_ALTERNATIVES:
        raise _bad(f"config max_alternatives must be an integer 0..{MAX_ALTERNATIVES}, got {value!r}")
    return value


_FIELDS = {"sample_rate": _rate, "phrase_list": _phrases, "words": _words, "max_alternatives": _alternatives}


def parse_text(text: str, config: VoskConfig) -> VoskConfig | Eof:
    """Decode one text frame: the updated config, or Eof; ProtocolError for anything else."""
    try:
        obj = json.loads(text)
    except ValueError as err:
        raise _bad(f"text frame is not JSON: {err}") from err
    if isinstance(obj, dict) and "config" in obj:
        if not isinstance(obj["config"], dict):
            raise _bad("config must be a JSON object")
        # Unknown keys are ignored, as vosk-server does.
        changes = {key: cast(obj["config"][key]) for key, cast in _FIELDS.items() if key in obj["config"]}
        return replace(config, **changes)
    if isinstance(obj, dict) and "eof" in obj:
        return Eof()
    raise ProtocolError("text frames must be a config or an eof message", close_code=CLOSE_UNSUPPORTED)


def _new_recognizer(model: Any, config: VoskConfig, grammar_json: str | None) -> Any:
    import vosk

    args = (model, config.sample_rate, grammar_json) if grammar_json else (model, config.sample_rate)
    rec = vosk.KaldiRecognizer(*args)
    rec.SetWords(config.words)
    rec.SetMaxAlternatives(config.max_alternatives)
    return rec


def _accept(rec: Any, pcm: bytes) -> str:
    # The endpoint is Vosk's own, as in vosk-server: True means a segment is complete.
    return rec.Result() if rec.AcceptWaveform(pcm) else rec.PartialResult()


def _final(rec: Any) -> str:
    return rec.FinalResult()


async def serve_asr(
    ws: Any,
    *,
    engine: VoskEngine,
    language: str,
    default_rate: int = 8000,
    max_frame_bytes: int = 1 << 20,
    idle_timeout: float = 30.0,
) -> None:
    """Serve one vosk-server protocol connection on `ws` (a websockets ServerConnection) until eof or close."""
    config = VoskConfig(sample_rate=float(default_rate))
    rec: Any = None
    try:
        while True:
            try:
                async with asyncio.timeout(idle_timeout):
                    message = await ws.recv()
            except TimeoutError:
                raise ProtocolError(f"no frame for {idle_timeout:g} s", close_code=CLOSE_POLICY) from None
            if len(message) > max_frame_bytes:
                too_big = f"frame of {len(message)} bytes exceeds {max_frame_bytes}"
                raise ProtocolError(too_big, close_code=CLOSE_TOO_BIG)
            if isinstance(message, str):
                parsed = parse_text(message, config)
                if isinstance(parsed, VoskConfig):
                    # Like vosk-server, a config only shapes a recogniser not yet created.
                    config = parsed
                    continue
            elif len(message) % 2:
                raise _bad(f"PCM16 audio must have an even number of bytes, got {len(message)}")
            if rec is None:
                # vosk-server passes an empty phrase_list as free decoding too.
                model = await engine.model(language)
                grammar = await engine.run(engine.grammar_json, language, config.phrase_list or None)
                rec = await engine.run(_new_recognizer, model, config, grammar)
            if isinstance(message, str):
                await ws.send(await engine.run(_final, rec))
                await ws.close()
                return
            await ws.send(await engine.run(_accept, rec, message))
    except ConnectionClosed:
        log.debug("vosk asr client went away")
    except ProtocolError as err:
        log.info("closing vosk asr connection: %s", err)
        # Close reasons are capped at 123 bytes of UTF-8.
        await ws.close(err.close_code, err.message.encode()[:120].decode(errors="ignore"))
    except VoicebotError as err:
        log.warning("vosk asr connection failed: %s", err)
        await ws.close(CLOSE_INTERNAL, err.code)
