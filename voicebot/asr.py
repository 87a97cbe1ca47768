"""Streaming speech recognition: the Recognizer protocol, the Vosk engine behind it, and a replay fake."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from pathlib import Path
from typing import Any, Protocol, TypeVar

from .config import Settings
from .errors import AsrError, AudioFormatError, ModelNotFoundError
from .events import Transcript
from .models import read_vocabulary, resolve_model_path

log = logging.getLogger(__name__)

T = TypeVar("T")

SUPPORTED_RATES = (8000, 16000)
MAX_CHUNK_SECONDS = 1.0  # one accept() call; gateways send 20-100 ms
UNK = "[unk]"
MAX_WORD_CHARS = 8  # longest vocabulary word tried when splitting unspaced Chinese; model words are shorter
_CJK_RE = re.compile("[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")  # as textnorm, without its heavy imports


class Recognizer(Protocol):
    """A per-call streaming recogniser: feed audio, read partials, close each utterance with final()."""

    async def accept(self, pcm: bytes) -> Transcript | None:
        """Feed PCM16 audio; return a partial Transcript when the partial text changed."""
        ...

    async def final(self) -> Transcript:
        """Finish the current utterance and return its text ("" if nothing); ready for the next."""
        ...

    async def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Restrict recognition to `phrases` (None = free decoding) from the next utterance on."""
        ...

    async def aclose(self) -> None:
        """Release the recogniser."""
        ...


def check_chunk(pcm: bytes, rate: int) -> None:
    """Reject audio a recogniser must not be fed: odd byte counts and oversized chunks."""
    if len(pcm) % 2:
        raise AudioFormatError(f"PCM16 audio must have an even number of bytes, got {len(pcm)}")
    limit = int(rate * 2 * MAX_CHUNK_SECONDS)
    if len(pcm) > limit:
        raise AudioFormatError(f"audio chunk of {len(pcm)} bytes exceeds {MAX_CHUNK_SECONDS:g} s ({limit})")


def _check_rate(rate: int) -> int:
    if rate not in SUPPORTED_RATES:
        raise AudioFormatError(f"sample rate {rate} Hz is not supported; use one of {SUPPORTED_RATES}")
    return rate


def _load_model(path: Path) -> Any:
    import vosk

    vosk.SetLogLevel(-1)
    return vosk.Model(str(path))


def segment(token: str, vocabulary: Collection[str], *, longest: int = MAX_WORD_CHARS) -> list[str] | None:
    """Split unspaced text into vocabulary words, longest match first; None if some part is not covered."""
    words: list[str] = []
    i = 0
    while i < len(token):
        for n in range(min(longest, len(token) - i), 0, -1):
            if token[i : i + n] in vocabulary:
                words.append(token[i : i + n])
                i += n
                break
        else:
            # Greedy matching can strand a character another split would cover ("ab|c" vs "a|bc").
            return _fewest_words(token, vocabulary, longest)
    return words


def _fewest_words(token: str, vocabulary: Collection[str], longest: int) -> list[str] | None:
    """The split of `token` into the fewest vocabulary words, or None when there is none."""
    best: list[list[str] | None] = [[]] + [None] * len(token)  # best[i]: split of token[:i]
    for end in range(1, len(token) + 1):
        for n in range(min(longest, end), 0, -1):
            head, current, word = best[end - n], best[end], token[end - n : end]
            if head is not None and word in vocabulary and (current is None or len(head) + 1 < len(current)):
                best[end] = [*head, word]
    return best[-1]


def _gaps(token: str, vocabulary: Collection[str], longest: int) -> list[str]:
    """The runs of `token` that no vocabulary word covers (the token itself if only the split fails)."""
    covered = [False] * len(token)
    for i in range(len(token)):
        for n in range(1, min(longest, len(token) - i) + 1):
            if token[i : i + n] in vocabulary:
                covered[i : i + n] = [True] * n
    runs, start = [], None
    for i, ok in enumerate([*covered, True]):
        if not ok and start is None:
            start = i
        elif ok and start is not None:
            runs.append(token[start:i])
            start = None
    return runs or [token]


def _fit(phrase: str, vocabulary: Collection[str]) -> tuple[list[str], list[str]]:
    """A phrase as vocabulary words, and the parts that could not be made of them."""
    if phrase in vocabulary:
        return [phrase], []
    words: list[str] = []
    missing: list[str] = []
    for token in phrase.split():
        if token in vocabulary:
            words.append(token)
        elif _CJK_RE.search(token) and (parts := segment(token, vocabulary)) is not None:
            # Chinese models know segmented words ("送货 上门"), plans write phrases unspaced ("送货上门").
            words.extend(parts)
        elif token != UNK:
            missing.extend(_gaps(token, vocabulary, MAX_WORD_CHARS) if _CJK_RE.search(token) else [token])
    return words, missing


def fit_phrase(phrase: str, vocabulary: Collection[str]) -> str | None:
    """`phrase` as space-separated vocabulary words for a grammar, unknown parts left out; None if none fit."""
    words, _ = _fit(phrase, vocabulary)
    return " ".join(words) or None


def unfit_words(phrase: str, vocabulary: Collection[str]) -> list[str]:
    """The parts of `phrase` that cannot be made of vocabulary words (empty when it fits whole)."""
    return _fit(phrase, vocabulary)[1]


class VoskEngine:
    """One per process: Vosk models per language (loaded once, lazily) and one bounded decoding pool."""

    def __init__(
        self, *, settings: Settings, resolve: Callable[..., Path] = resolve_model_path
    ) -> None:
        self.settings = settings
        self._resolve = resolve
        self._executor = ThreadPoolExecutor(max_workers=settings.asr_workers, thread_name_prefix="vosk")
        self._models: dict[str, Any] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._vocab: dict[str, frozenset[str] | None] = {}
        self._vocab_lock = threading.Lock()
        self._closed = False
        self.loads = 0  # models loaded so far; lets tests and metrics see loading happened once

    async def __aenter__(self) -> VoskEngine:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Stop the decoding threads (waiting for running calls to finish)."""
        if self._closed:
            return
        self._closed = True
        await asyncio.to_thread(self._executor.shutdown, wait=True, cancel_futures=True)

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        """Run blocking Vosk work in the engine's pool; Vosk failures become AsrError."""
        if self._closed:
            raise AsrError("the ASR engine is closed")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (AsrError, AudioFormatError, ModelNotFoundError):
            raise
        except RuntimeError as err:
            if self._closed:
                raise AsrError("the ASR engine is closed") from err
            raise AsrError(f"Vosk failed: {err}") from err
        except Exception as err:
            raise AsrError(f"Vosk failed: {err}") from err

    async def model(self, language: str) -> Any:
        """The loaded vosk.Model for `language`, loading it on first use (once, even when raced)."""
        if (model := self._models.get(language)) is not None:
            return model
        lock = self._locks.setdefault(language, asyncio.Lock())
        async with lock:
            if (model := self._models.get(language)) is None:
                path = await self.run(partial(self._resolve, language, settings=self.settings))
                model = await self.run(_load_model, path)
                self.loads += 1
                self._models[language] = model
        return model

    def vocabulary(self, language: str) -> frozenset[str] | None:
        """The model's word list for `language` (cached; blocking on first call), or None if unknown."""
        with self._vocab_lock:
            if language not in self._vocab:
                try:
                    path = self._resolve(language, settings=self.settings)
                except ModelNotFoundError:
                    return None
                self._vocab[language] = read_vocabulary(path)
            return self._vocab[language]

    def missing_words(self, language: str, phrases: Iterable[str]) -> list[str]:
        """Parts of `phrases` the model cannot recognise (empty if the vocabulary is unknown)."""
        vocab = self.vocabulary(language)
        if vocab is None:
            return []
        missing: dict[str, None] = {}
        for phrase in phrases:
            missing.update(dict.fromkeys(unfit_words(phrase, vocab)))
        return list(missing)

    def grammar_json(self, language: str, phrases: Sequence[str] | None) -> str | None:
        """The JSON grammar Vosk gets for `phrases`, or None for free decoding (blocking: vocabulary)."""
        if phrases is None:
            return None
        if isinstance(phrases, str):
            raise TypeError("grammar must be a sequence of phrases, not a string")
        vocab = self.vocabulary(language)
        kept: dict[str, None] = {}
        missing: dict[str, None] = {}
        for phrase in phrases:
            if vocab is None:
                words = phrase.split()
            else:
                # Vosk drops unknown words itself, with a warning per recogniser; do it once here.
                words, unfit = _fit(phrase, vocab)
                missing.update(dict.fromkeys(unfit))
            if words:
                kept[" ".join(words)] = None
        if missing:
            log.debug("words not in the %s vocabulary, left out of the grammar: %s", language, list(missing))
        if not kept or set(kept) == {UNK}:
            # A grammar with nothing recognisable would hear nothing, ever; free text can still match.
            log.warning("no grammar phrase of %s is in the %s vocabulary; decoding freely", phrases, language)
            return None
        return json.dumps(list(kept), ensure_ascii=False)  # ASCII escapes make every word "missing"

    async def recognizer(
        self, *, language: str, rate: int, grammar: Sequence[str] | None = None
    ) -> VoskRecognizer:
        """A new streaming recogniser for one call, in `language` at `rate` Hz, optionally grammar-bound."""
        _check_rate(rate)
        model = await self.model(language)
        grammar_json = await self.run(self.grammar_json, language, grammar)
        kaldi = await self.run(_new_kaldi, model, rate, grammar_json)
        return VoskRecognizer(engine=self, kaldi=kaldi, model=model, language=language, rate=rate)


def _new_kaldi(model: Any, rate: int, grammar_json: str | None) -> Any:
    import vosk

    args = (model, rate, grammar_json) if grammar_json else (model, rate)
    kaldi = vosk.KaldiRecognizer(*args)
    kaldi.SetWords(True)
    return kaldi


def _words(result: dict[str, Any]) -> tuple[str, list[float]]:
    return result.get("text", ""), [float(w["conf"]) for w in result.get("result", []) if "conf" in w]


class VoskRecognizer:
    """A Recognizer on a Vosk KaldiRecognizer; calls run one at a time in the engine's pool."""

    def __init__(self, *, engine: VoskEngine, kaldi: Any, model: Any, language: str, rate: int) -> None:
        self.language = language
        self.rate = rate
        self._engine = engine
        self._kaldi = kaldi
        self._model = model
        self._lock = asyncio.Lock()
        self._segments: list[tuple[str, list[float]]] = []  # utterance parts Vosk endpointed itself
        self._partial = ""
        self._running = False  # audio accepted since the last final()
        self._closed = False

    def _live(self) -> Any:
        if self._closed:
            raise AsrError("the recognizer is closed")
        return self._kaldi

    def _text(self, tail: str) -> str:
        return " ".join(t for t in [*(s for s, _ in self._segments), tail] if t)

    def _accept_sync(self, pcm: bytes) -> str:
        kaldi = self._live()
        if kaldi.AcceptWaveform(pcm):
            # Vosk's own endpointer closed a segment; keep it: the VAD owns the utterance's end.
            if len(self._segments) < 64:
                self._segments.append(_words(json.loads(kaldi.Result())))
            return ""
        return json.loads(kaldi.PartialResult()).get("partial", "")

    async def accept(self, pcm: bytes) -> Transcript | None:
        """Feed PCM16 audio; return a partial Transcript when the partial text changed."""
        check_chunk(pcm, self.rate)
        if not pcm:
            return None
        async with self._lock:
            tail = await self._engine.run(self._accept_sync, pcm)
            self._running = True
            text = self._text(tail)
            if text == self._partial:
                return None
            self._partial = text
            return Transcript(text=text, final=False, language=self.language)

    async def final(self) -> Transcript:
        """Finish the current utterance and return its text ("" if nothing); ready for the next."""
        async with self._lock:
            result = await self._engine.run(lambda: json.loads(self._live().FinalResult()))
            self._segments.append(_words(result))
            text = self._text("")
            confs = [c for _, cs in self._segments for c in cs]
            self._segments, self._partial, self._running = [], "", False
        confidence = (sum(confs) / len(confs)) if confs else (1.0 if text else 0.0)
        return Transcript(text=text, final=True, confidence=round(confidence, 4), language=self.language)

    def _set_grammar_sync(self, grammar_json: str | None) -> None:
        kaldi = self._live()
        if grammar_json is None:
            # Back to free decoding: a fresh recogniser is the documented way to drop a grammar.
            self._kaldi = _new_kaldi(self._model, self.rate, None)
            return
        if self._running:
            # SetGrammar on a recogniser in mid-utterance aborts the process (KaldiFatalError).
            kaldi.Reset()
        kaldi.SetGrammar(grammar_json)

    async def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Restrict recognition to `phrases` (None = free); audio of an unfinished utterance is dropped."""
        async with self._lock:
            grammar_json = await self._engine.run(self._engine.grammar_json, self.language, phrases)
            await self._engine.run(self._set_grammar_sync, grammar_json)
            self._segments, self._partial, self._running = [], "", False

    async def aclose(self) -> None:
        """Release the Kaldi recogniser (its memory is freed when the object goes)."""
        async with self._lock:
            self._closed = True
            self._kaldi = None


class TranscriptReplayRecognizer:
    """FAKE recogniser for tests only: replays given texts as final results, one per utterance.

    Used end to end for languages whose Vosk model cannot be installed here (zh-CN, en-US). It
    validates and consumes audio but recognises nothing: final() returns the next text if audio
    was accepted since the last final(), else "" (so silence and no-input yield "").
    """

    def __init__(self, texts: Iterable[str], *, rate: int = 8000, language: str = "") -> None:
        self.rate = _check_rate(rate)
        self.language = language
        self._texts = iter(list(texts))
        self._heard = False
        self.grammars: list[tuple[str, ...] | None] = []  # every grammar set, for inspection
        self.closed = False

    async def accept(self, pcm: bytes) -> Transcript | None:
        """Validate and swallow audio; never returns a partial."""
        if self.closed:
            raise AsrError("the recognizer is closed")
        check_chunk(pcm, self.rate)
        if pcm:
            self._heard = True
        return None

    async def final(self) -> Transcript:
        """The next scripted text, or "" when no audio came since the last final() or none are left."""
        heard, self._heard = self._heard, False
        text = next(self._texts, "") if heard else ""
        return Transcript(text=text, final=True, confidence=1.0 if text else 0.0, language=self.language)

    async def set_grammar(self, phrases: Sequence[str] | None) -> None:
        """Record the grammar; the fake does not use it."""
        self.grammars.append(None if phrases is None else tuple(phrases))

    async def aclose(self) -> None:
        """Mark the fake closed."""
        self.closed = True
