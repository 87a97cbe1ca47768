"""Coded errors: every failure voicebot reports has a stable code and a message for people."""

from __future__ import annotations


class VoicebotError(Exception):
    """Base of all voicebot errors; `code` is stable across versions, safe to match on."""

    code = "voicebot"

    def __init__(self, message: str, *, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code

    def __str__(self) -> str:
        return f"[{self.code}] {self.message}"


class ConfigError(VoicebotError):
    """Settings that cannot be used."""

    code = "config"


class AudioFormatError(VoicebotError):
    """Audio that is not in a format we accept (rate, width, channels, length)."""

    code = "audio_format"


class ModelNotFoundError(VoicebotError):
    """No speech model could be found for a language."""

    code = "model_not_found"


class ModelFetchError(VoicebotError):
    """Downloading or unpacking a speech model failed."""

    code = "model_fetch"


class AsrError(VoicebotError):
    """The speech recogniser failed."""

    code = "asr"


class TtsError(VoicebotError):
    """Speech synthesis failed."""

    code = "tts"


class PlanError(VoicebotError):
    """A dialog plan that cannot be loaded: the message names file, line, column and field."""

    code = "plan_invalid"


class DialogError(VoicebotError):
    """The dialog engine met a situation the plan does not cover."""

    code = "dialog"
