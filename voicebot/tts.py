"""Speech synthesis: the pyttsx3/espeak-ng adapter, the on-disk prompt cache, and prompt rendering."""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import hashlib
import json
import logging
import os
import queue
import tempfile
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from voicebot import audio
from voicebot.errors import AudioFormatError, TtsError, VoicebotError
from voicebot.events import PromptPart

log = logging.getLogger(__name__)

# espeak-ng voice per call language.
VOICES = {"zh-CN": "cmn", "en-US": "en-us", "ko-KR": "ko", "yue-HK": "yue"}
MAX_TEXT_CHARS = 2000
# A recorded prompt larger than this is a mistake (about 10 minutes of 44.1 kHz stereo).
MAX_WAV_BYTES = 100 * 1024 * 1024
# espeak-ng's own voices all speak at this rate (pyttsx3's driver assumes the same).
ESPEAK_RATE = 22050
# Far beyond what MAX_TEXT_CHARS takes to render; reaching it means espeak-ng is stuck.
RENDER_TIMEOUT = 30.0


def voice_for(language: str) -> str:
    """The espeak-ng voice for `language`, or TtsError listing the languages we speak."""
    try:
        return VOICES[language]
    except KeyError:
        raise TtsError(f"no TTS voice for language {language!r}; known: {sorted(VOICES)}") from None


def _check_text(text: str) -> str:
    if not isinstance(text, str):
        raise TtsError(f"TTS text must be str, not {type(text).__name__}")
    if len(text) > MAX_TEXT_CHARS:
        raise TtsError(f"TTS text is {len(text)} characters; the limit is {MAX_TEXT_CHARS}")
    return text


class Synthesizer(Protocol):
    """Anything that turns text into PCM16 mono audio at a given rate."""

    engine_id: str

    async def synthesize(self, text: str, *, language: str, rate: int) -> bytes:
        """Render `text` in `language` as PCM16 mono at `rate` Hz."""
        ...


@dataclass(slots=True)
class _Request:
    text: str
    voice: str
    rate: int
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[bytes]


_STOP = object()


def _deliver(req: _Request, result: bytes | BaseException) -> None:
    # Runs on the event loop; a caller that was cancelled meanwhile simply gets nothing.
    if req.future.done():
        return
    if isinstance(result, BaseException):
        req.future.set_exception(result)
    else:
        req.future.set_result(result)


class Pyttsx3Synthesizer:
    """espeak-ng through pyttsx3, confined to one worker thread that owns the engine."""

    # espeak-ng is one engine per process (pyttsx3 hands out a shared instance and espeak keeps
    # global state), so synthesizers in one process take turns even though each has its own thread.
    _engine_lock = threading.Lock()

    def __init__(self, *, queue_size: int = 64, speed: int = 175, pitch: int = 50) -> None:
        if queue_size < 1:
            raise TtsError(f"queue_size must be >= 1, got {queue_size}")
        self.speed = speed
        self.pitch = pitch
        self.engine_id = f"pyttsx3-espeak-ng/speed={speed}/pitch={pitch}"
        self._queue: queue.Queue[Any] = queue.Queue(maxsize=queue_size + 1)  # +1: the stop marker
        self._slots = asyncio.Semaphore(queue_size)
        self._thread: threading.Thread | None = None
        self._closing = False

    @property
    def thread(self) -> threading.Thread | None:
        """The worker thread while the synthesizer runs (exposed so tests can see it end)."""
        return self._thread

    async def start(self) -> None:
        """Start the worker thread and wait until the engine is initialised."""
        if self._thread is not None:
            raise TtsError("synthesizer already started")
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        self._thread = threading.Thread(target=self._run, args=(loop, ready), name="tts-pyttsx3", daemon=True)
        self._thread.start()
        try:
            await ready
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Finish queued requests and stop the worker thread."""
        if self._closing:
            return
        self._closing = True
        if self._thread is not None:
            # Room for the marker is reserved by the +1 in maxsize, so this never blocks for long.
            await asyncio.to_thread(self._queue.put, _STOP)
            await asyncio.to_thread(self._thread.join)

    async def __aenter__(self) -> Pyttsx3Synthesizer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def synthesize(self, text: str, *, language: str, rate: int) -> bytes:
        """Render `text` in `language` as PCM16 mono at `rate` Hz; empty text gives empty audio."""
        voice = voice_for(language)
        _check_text(text)
        try:
            audio.check_rate(rate)
        except AudioFormatError as err:
            raise TtsError(str(err)) from err
        if not text.strip():
            return b""
        if self._thread is None or self._closing:
            raise TtsError("synthesizer is not running (use `async with` or start())")
        loop = asyncio.get_running_loop()
        # Bounds the queue: callers wait here, never in the thread. The worker releases the slot
        # when it takes the request, so a cancelled caller cannot overfill the queue.
        await self._slots.acquire()
        if self._closing:
            self._slots.release()
            raise TtsError("synthesizer closed")
        req = _Request(text, voice, rate, loop, loop.create_future())
        self._queue.put_nowait(req)
        return await req.future

    # --- worker thread ----------------------------------------------------------------------------

    def _run(self, loop: asyncio.AbstractEventLoop, ready: asyncio.Future[None]) -> None:
        try:
            with self._engine_lock:
                espeak = _Espeak()
        except Exception as err:  # the engine failing to load is reported to start()
            exc = TtsError(f"cannot initialise pyttsx3/espeak-ng: {err}")
            loop.call_soon_threadsafe(lambda: ready.done() or ready.set_exception(exc))
            return
        loop.call_soon_threadsafe(lambda: ready.done() or ready.set_result(None))
        while (req := self._queue.get()) is not _STOP:
            with contextlib.suppress(RuntimeError):
                req.loop.call_soon_threadsafe(self._slots.release)
            if req.future.cancelled():  # the caller gave up while queued: skip the work
                continue
            try:
                with self._engine_lock:
                    pcm = espeak.render(req.text, voice=req.voice, speed=self.speed, pitch=self.pitch)
                result: bytes | BaseException = audio.resample(pcm, from_rate=ESPEAK_RATE, to_rate=req.rate)
            except VoicebotError as err:
                result = err
            except Exception as err:
                result = TtsError(f"espeak-ng failed on {req.text[:40]!r}: {err}")
                result.__cause__ = err
            with contextlib.suppress(RuntimeError):  # the loop may already be closed
                req.loop.call_soon_threadsafe(_deliver, req, result)


class _Espeak:
    """The process's espeak-ng, reached through pyttsx3's binding; used from one worker thread only.

    pyttsx3 initialises espeak-ng in asynchronous retrieval mode, and its own save_to_file() +
    runAndWait() return before the file is written (and sometimes cancel the utterance), so we
    collect the samples from espeak-ng's callback and wait for its end-of-message event instead.
    """

    def __init__(self) -> None:
        import pyttsx3
        from pyttsx3.drivers import _espeak

        self._engine = pyttsx3.init("espeak")  # keeps the one-per-process espeak-ng initialised
        self._lib = _espeak
        # Voice ids look like "sit/cmn"; requests name the part after the slash.
        self.voices = {str(v.id).rsplit("/", 1)[-1] for v in self._engine.getProperty("voices")}
        self._chunks: list[bytes] = []
        self._done = threading.Event()
        self._tag = 0

    def _on_synth(self, wav: Any, numsamples: int, events: Any) -> int:
        # Runs on espeak-ng's thread. Events carry the tag of the utterance they belong to, so
        # late audio from an utterance we gave up on never leaks into the next one.
        i, ours, finished = 0, False, False
        while (event := events[i]).type != self._lib.EVENT_LIST_TERMINATED:
            ours = ours or (event.user_data or 0) == self._tag
            finished = finished or event.type == self._lib.EVENT_MSG_TERMINATED
            i += 1
        if numsamples > 0 and (ours or i == 0):
            self._chunks.append(ctypes.string_at(wav, numsamples * 2))
        if finished and ours:
            self._done.set()
        return 0

    def render(self, text: str, *, voice: str, speed: int, pitch: int) -> bytes:
        """Synthesise `text` with espeak-ng voice `voice`; PCM16 at ESPEAK_RATE."""
        lib = self._lib
        if voice not in self.voices:
            # espeak-ng silently keeps the previous voice for an unknown name: refuse instead.
            raise TtsError(f"espeak-ng has no voice {voice!r} installed")
        self._tag += 1
        self._chunks = []
        self._done.clear()
        lib.SetSynthCallback(self._on_synth)  # ours again, should anything have replaced it
        for rc, what in (
            (lib.SetVoiceByName(voice.encode()), f"voice {voice}"),
            (lib.SetParameter(lib.RATE, speed, 0), f"speed {speed}"),
            (lib.SetParameter(lib.PITCH, pitch, 0), f"pitch {pitch}"),
            (lib.Synth(text, flags=lib.ENDPAUSE | lib.CHARS_UTF8, user_data=self._tag), "synthesis"),
        ):
            if rc != lib.EE_OK:
                raise TtsError(f"espeak-ng refused {what} (error {rc})")
        if not self._done.wait(RENDER_TIMEOUT):
            lib.Cancel()
            raise TtsError(f"espeak-ng did not finish {text[:40]!r} within {RENDER_TIMEOUT} s")
        return b"".join(self._chunks)


class PromptCache:
    """Rendered prompts on disk, addressed by a hash of engine, voice, rate and text."""

    def __init__(self, synth: Synthesizer, cache_dir: Path) -> None:
        self.synth = synth
        self.root = Path(cache_dir) / "tts"
        self.hits = 0  # calls served without rendering (from disk or by joining a render in flight)
        self.misses = 0  # renders
        self._inflight: dict[str, asyncio.Future[bytes]] = {}

    def key(self, text: str, *, language: str, rate: int) -> str:
        """The cache key of a prompt (sha256 hex)."""
        blob = json.dumps([self.synth.engine_id, voice_for(language), rate, text], ensure_ascii=False)
        return hashlib.sha256(blob.encode("utf-8")).hexdigest()

    def path_for(self, key: str) -> Path:
        """Where the prompt with `key` is stored."""
        return self.root / key[:2] / f"{key}.wav"

    async def get_or_render(self, text: str, *, language: str, rate: int) -> bytes:
        """PCM16 for `text`: from disk when cached, else synthesised once and stored."""
        _check_text(text)
        if not text.strip():
            return b""
        key = self.key(text, language=language, rate=rate)
        fut = self._inflight.get(key)
        if fut is None:
            fut = asyncio.ensure_future(self._load_or_render(key, text, language, rate))
            self._inflight[key] = fut
            fut.add_done_callback(lambda f: self._settle(key, f))
        else:
            self.hits += 1
        # shield: one impatient caller must not cancel the render others are waiting for.
        return await asyncio.shield(fut)

    def _settle(self, key: str, fut: asyncio.Future[bytes]) -> None:
        self._inflight.pop(key, None)
        if not fut.cancelled() and fut.exception() is not None:
            log.debug("prompt render failed: %s", fut.exception())  # retrieved: no "never retrieved"

    async def _load_or_render(self, key: str, text: str, language: str, rate: int) -> bytes:
        path = self.path_for(key)
        cached = await asyncio.to_thread(self._read, path, rate)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        pcm = await self.synth.synthesize(text, language=language, rate=rate)
        await asyncio.to_thread(self._write, path, pcm, rate)
        return pcm

    @staticmethod
    def _read(path: Path, rate: int) -> bytes | None:
        try:
            pcm, file_rate = audio.read_wav(path)
        except AudioFormatError:
            if path.exists():  # unreadable entry: render again and overwrite it
                log.warning("ignoring damaged TTS cache file %s", path)
            return None
        return pcm if file_rate == rate else None

    @staticmethod
    def _write(path: Path, pcm: bytes, rate: int) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(audio.wav_bytes(pcm, rate))
            os.replace(tmp, path)  # readers see the old file or the whole new one, never a part
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    async def prerender(self, items: Iterable[tuple[str, str]], *, rate: int) -> int:
        """Make sure every (text, language) is cached at `rate`; returns how many distinct prompts."""
        unique = list(dict.fromkeys((text, lang) for text, lang in items if text.strip()))
        await asyncio.gather(*(self.get_or_render(t, language=lang, rate=rate) for t, lang in unique))
        return len(unique)


def _resolve_wav(wav: str, base_dir: Path) -> Path:
    base = Path(base_dir).resolve()
    path = (base / wav).resolve()
    if Path(wav).is_absolute() or not path.is_relative_to(base):
        raise TtsError(f"recorded prompt {wav!r} lies outside the plan directory {base}")
    return path


def _load_recording(path: Path, rate: int) -> bytes:
    try:
        size = path.stat().st_size
        if size > MAX_WAV_BYTES:
            raise TtsError(f"recorded prompt {path} is {size} bytes; the limit is {MAX_WAV_BYTES}")
        pcm, file_rate = audio.read_wav(path)
        return audio.resample(pcm, from_rate=file_rate, to_rate=rate)
    except (OSError, AudioFormatError) as err:
        raise TtsError(f"cannot play recorded prompt {path}: {err}") from err


async def render_prompt(
    parts: Sequence[PromptPart], *, language: str, rate: int, cache: PromptCache, base_dir: Path
) -> bytes:
    """Concatenate a prompt's parts as PCM16 at `rate`: text via the TTS cache, recordings as they are."""
    voice_for(language)
    out: list[bytes] = []
    for part in parts:
        if part.text and part.wav:
            raise TtsError(f"a prompt part has both text and wav ({part.wav!r}); give one")
        if part.wav:
            path = _resolve_wav(part.wav, base_dir)
            out.append(await asyncio.to_thread(_load_recording, path, rate))
        elif part.text:
            out.append(await cache.get_or_render(part.text, language=language, rate=rate))
    return b"".join(out)
