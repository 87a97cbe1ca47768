"""Checking a plan's phrases against the words its Vosk models can recognise."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from ..asr import unfit_words
from ..config import Settings
from ..errors import ModelNotFoundError
from ..models import read_vocabulary, resolve_model_path
from ..textnorm import normalize
from .load import LoadedPlan, Problem

VocabularyFor = Callable[[str], frozenset[str] | None]


def vocabulary_problems(loaded: LoadedPlan, vocabulary_for: VocabularyFor) -> list[Problem]:
    """A warning for every intent phrase that a grammar for its language's model could not hold whole."""
    plan = loaded.plan
    problems: list[Problem] = []
    for language in plan.languages:
        vocabulary = vocabulary_for(language)
        if vocabulary is None:
            continue  # no model here: nothing to check against, which the caller reports
        for name, intent in plan.intents.items():
            for i, phrase in enumerate(intent.phrases.get(language, [])):
                # The grammar holds phrases as intent.grammar() normalises them; check that same form.
                missing = unfit_words(normalize(phrase, language=language), vocabulary)
                if not missing:
                    continue
                path = ("intents", name, "phrases", language, i)
                line, column = loaded.locate(path)
                words = ", ".join(f"'{w}'" for w in dict.fromkeys(missing))
                problems.append(Problem(
                    code="asr_vocabulary",
                    message=f"phrase '{phrase}' cannot be recognised in {language}: the Vosk model does not "
                            f"know {words}, so the grammar leaves it out",
                    path=path, line=line, column=column, severity="warning",
                ))
    return problems


class ModelVocabularies:
    """The word lists of the installed Vosk models, read once per language (never the models themselves)."""

    def __init__(self, *, settings: Settings, resolve: Callable[..., Path] = resolve_model_path) -> None:
        self.settings = settings
        self._resolve = resolve
        self._words: dict[str, frozenset[str] | None] = {}
        self.notes: dict[str, str] = {}  # language -> why its vocabulary is unavailable

    def __call__(self, language: str) -> frozenset[str] | None:
        """The vocabulary for `language`, or None (with a note saying why) when there is none to read."""
        if language not in self._words:
            self._words[language] = self._read(language)
        return self._words[language]

    def _read(self, language: str) -> frozenset[str] | None:
        try:
            path = self._resolve(language, settings=self.settings)
        except ModelNotFoundError as err:
            # A configured path that is wrong deserves its own message; a missing model is routine.
            configured = language in self.settings.model_paths
            self.notes[language] = err.message if configured else "no Vosk model installed"
            return None
        words = read_vocabulary(path)
        if words is None:
            self.notes[language] = f"the Vosk model at {path} has no word list"
        return words
