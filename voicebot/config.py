"""One typed settings object, read once from the environment and passed down."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigError

ENV_PREFIX = "VOICEBOT_"


def _default_cache_dir(environ: Mapping[str, str]) -> Path:
    """Where downloaded models and rendered prompts live unless told otherwise (XDG rules)."""
    base = environ.get("XDG_CACHE_HOME") or str(Path(environ.get("HOME", "~")).expanduser() / ".cache")
    return Path(base) / "voicebot"


class Settings(BaseModel):
    """Everything voicebot can be told from outside; strict, so "false" is never True."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=False)

    cache_dir: Path = Field(description="Downloaded models and rendered TTS prompts")
    data_dir: Path = Field(default=Path("var"), description="Call records (SQLite) and other state")
    model_paths: dict[str, Path] = Field(
        default_factory=dict, description="Explicit Vosk model directory per language, e.g. zh-CN"
    )
    model_base_url: str = Field(
        default="https://alphacephei.com/vosk/models", description="Where `models fetch` downloads from"
    )
    # One decoding thread per core: more only contend with the event loop (measured: 50 calls on 2 cores,
    # reply p95 beyond end-of-speech 396 ms with 4 threads, 207-231 ms with 2).
    asr_workers: int = Field(default_factory=lambda: max(1, min(8, os.cpu_count() or 1)), ge=1, le=64,
                             description="Threads decoding speech off the event loop (default: one per core)")
    tts_sample_rate: int = Field(default=8000, description="Rate prompts are rendered at (the line's rate)")
    mqtt_url: str = Field(default="", description="mqtt://host:port/prefix for call events; empty disables MQTT")
    gateway_tokens: frozenset[str] = Field(default=frozenset(), description="Tokens gateways must present")
    twilio_auth_token: str = Field(default="", description="Checks Twilio's X-Twilio-Signature on /twilio")
    public_url: str = Field(default="", description="The wss:// base URL gateways are given (for signatures)")
    log_level: str = Field(default="INFO")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> Settings:
        """Build settings from VOICEBOT_* variables (and explicit overrides, which win)."""
        env = os.environ if environ is None else environ
        values: dict[str, object] = {"cache_dir": _default_cache_dir(env)}
        simple = {
            "CACHE_DIR": "cache_dir",
            "DATA_DIR": "data_dir",
            "MODEL_BASE_URL": "model_base_url",
            "ASR_WORKERS": "asr_workers",
            "TTS_SAMPLE_RATE": "tts_sample_rate",
            "MQTT_URL": "mqtt_url",
            "LOG_LEVEL": "log_level",
            "TWILIO_AUTH_TOKEN": "twilio_auth_token",
            "PUBLIC_URL": "public_url",
        }
        if raw_tokens := env.get(ENV_PREFIX + "GATEWAY_TOKENS"):
            values["gateway_tokens"] = frozenset(t.strip() for t in raw_tokens.split(",") if t.strip())
        for suffix, name in simple.items():
            if (raw := env.get(ENV_PREFIX + suffix)) is not None:
                values[name] = raw
        # VOICEBOT_MODEL_ZH_CN=/path sets the model for zh-CN.
        models = {}
        for key, raw in env.items():
            if key.startswith(ENV_PREFIX + "MODEL_") and key != ENV_PREFIX + "MODEL_BASE_URL":  # MODEL_<LANG>
                lang = key.removeprefix(ENV_PREFIX + "MODEL_").replace("_", "-")
                lang = lang[:2].lower() + lang[2:]
                models[lang] = Path(raw)
        if models:
            values["model_paths"] = models
        values.update(overrides)
        try:
            return cls.model_validate(values)
        except ValidationError as err:
            raise ConfigError(f"invalid settings: {err}") from err
