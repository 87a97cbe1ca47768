"""Intent matching: what the caller said (or keyed) against what the dialog state expects."""

from __future__ import annotations

import re
import unicodedata
from bisect import bisect_right
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache

from rapidfuzz import fuzz

from . import slots as slotlib
from .events import Intent, NoMatch
from .textnorm import is_zh, normalize, syllables, tokens

CAPTURED = "captured"
STRONG = 0.9  # a named intent at least this sure beats a captured slot value
MARGIN = 0.05  # two intents closer than this are ambiguous
MAX_CHARS = 500  # one utterance; longer input is cut, which bounds the quadratic scorers
_FUZZY_WEIGHT = 0.85  # fuzzy similarity is scaled below containment, which always ranks higher
_FUZZY_FLOOR = 0.8  # character similarity below this is noise, whatever the threshold
_PINYIN_FLOOR = 0.88  # pinyin strings share many letters, so they must agree more closely

# Words with a negator character that do not negate what follows ("要不送货上门吧" = "how about door").
_ZH_NOT_NEGATIONS = (
    "不好意思", "不客气", "对不起", "不错", "不过", "不然", "要不", "不管", "差不多", "没问题", "没关系", "没事",
    # A-not-A questions ask, they do not refuse: "能不能送到家".
    "能不能", "可不可以", "是不是", "行不行", "好不好", "用不用", "会不会", "方不方便",
)
_ZH_NEG_BEFORE_RE = re.compile(r"(不|没|别|甭)(要|用|是|需要|想|想要|能|必|必要|有|太)?(给我|帮我|给|帮)?"
                               r"(放|送|放在|放到|送到|到|在|寄|寄到)?$")
_ZH_NEG_AFTER_RE = re.compile(r"^(就|也|都|还是)?(不行|不要|不用|不好|不方便|不可以|算了|不太方便|不了|不合适)")
_EN_NEGATORS = frozenset({"dont", "not", "never", "cant", "wont", "without", "doesnt", "didnt", "no", "nope"})
_EN_CLAUSE_BREAKS = frozenset({"so", "but", "and", "then", "just", "instead", "rather", "please"})
_KO_NEGATORS = ("안", "못")
_KO_NEG_AFTER = ("말고", "싫어", "안돼", "안 돼")  # "택배함 말고" = "not the locker"

_DIGIT_VOCAB = {"zh": tuple("零一二三四五六七八九幺两"),
                "en": ("zero", "oh", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
                "ko": ("영", "공", "일", "이", "삼", "사", "오", "육", "칠", "팔", "구")}
_CAPTURE_VOCAB = {
    "zh": {"number": ("十", "百", "千", "万", "点"),
           "tracking_number": ("顺丰", "圆通", "极兔"),
           "ordinal": ("第一个", "第二个", "第三个", "第四个", "最后一个", "倒数第二个"),
           "yes_no": ("是", "是的", "对", "对的", "好", "好的", "可以", "行", "没问题", "不是", "不对", "不用",
                      "不要", "不行", "不可以"),
           "date": ("今天", "明天", "后天", "大后天", "下周", "这周", "周", "星期", "礼拜", "天", "日", "月", "号",
                    "十"),
           "time": ("早上", "上午", "中午", "下午", "傍晚", "晚上", "点", "半", "一刻", "分", "十")},
    "en": {"number": ("ten", "eleven", "twelve", "twenty", "thirty", "forty", "fifty", "point"),
           "ordinal": ("first", "second", "third", "fourth", "last", "one"),
           "yes_no": ("yes", "yeah", "yep", "sure", "correct", "right", "okay", "no", "nope", "not"),
           "date": ("today", "tomorrow", "next", "this", "monday", "tuesday", "wednesday", "thursday", "friday",
                    "saturday", "sunday"),
           "time": ("am", "pm", "noon", "oclock", "half", "past", "quarter", "thirty", "fifteen", "morning",
                    "afternoon", "evening")},
    "ko": {"yes_no": ("네", "예", "아니요", "아니")},
}


@dataclass(frozen=True)
class SlotSpec:
    """A named slot and its type (one of slots.SLOT_TYPES)."""

    name: str
    type: str


@dataclass(frozen=True)
class IntentSpec:
    """An intent a state listens for: phrases to hear, keys to press, slots said along with it."""

    name: str
    phrases: tuple[str, ...]
    dtmf: tuple[str, ...] = ()
    slots: tuple[SlotSpec, ...] = ()
    yields: bool = False  # a sign-off: loses to any other intent heard in the same utterance


@dataclass(frozen=True)
class Expectation:
    """What one dialog state expects: its intents, language, an optional slot to capture, the threshold."""

    intents: tuple[IntentSpec, ...]
    language: str = "zh-CN"
    capture: SlotSpec | None = None
    threshold: float = 0.72


@dataclass(frozen=True, slots=True)
class _Text:
    """A normalised utterance or phrase, in the forms the scorers compare."""

    norm: str  # words separated by spaces (non-zh) / CJK joined (zh)
    flat: str  # every space removed
    bounds: frozenset[int]  # offsets in `flat` where the recogniser's words start or end
    syl: tuple[tuple[str, int], ...]  # folded pinyin units with their offsets in `flat` (zh only)


@dataclass(frozen=True, slots=True)
class _Hit:
    """One phrase found in the utterance."""

    intent: str
    phrase: str
    score: float
    start: int
    end: int


def _prepare(text: str, language: str) -> _Text:
    """Normalise once and derive the forms the scorers need."""
    text = text[:MAX_CHARS]
    words = tokens(text, language=language)
    norm = normalize(text, language=language)
    offsets, pos = {0}, 0
    for w in words:
        pos += len(w)
        offsets.add(pos)
    flat = "".join(words)
    return _Text(norm, flat, frozenset(offsets), tuple(syllables(flat)) if is_zh(language) else ())


@lru_cache(maxsize=512)
def _compile(expectation: Expectation) -> tuple[tuple[str, _Text], ...]:
    """Every phrase of every intent, normalised for the expectation's language (cached per state)."""
    out = []
    for spec in expectation.intents:
        for phrase in spec.phrases:
            prepared = _prepare(phrase, expectation.language)
            if prepared.flat:
                out.append((spec.name, prepared))
    return tuple(out)


def match(text: str, expectation: Expectation, *, now: datetime | None = None) -> Intent | NoMatch:
    """Understand one recognised utterance in the context of `expectation`."""
    lang = expectation.language
    heard = text[:MAX_CHARS]
    utt = _prepare(heard, lang)
    if not utt.flat:
        return NoMatch(text=text, source="speech")
    result = _rank(utt, expectation)
    if expectation.capture is not None:
        value = slotlib.extract(expectation.capture.type, heard, language=lang, now=now)
        if value is not None and not (isinstance(result, Intent) and result.confidence >= STRONG):
            return Intent(name=CAPTURED, confidence=0.9, text=text, slots={expectation.capture.name: value},
                          source="speech")
    if isinstance(result, Intent):
        spec = next(s for s in expectation.intents if s.name == result.name)
        found = {}
        for slot in spec.slots:
            value = slotlib.extract(slot.type, heard, language=lang, now=now)
            if value is not None:
                found[slot.name] = value
        return Intent(name=result.name, confidence=result.confidence, text=text, slots=found, source="speech")
    return NoMatch(text=text, source="speech", best=result.best, score=result.score)


def _rank(utt: _Text, expectation: Expectation) -> Intent | NoMatch:
    """Score every intent, drop negated ones, and settle ties in favour of the more specific phrase."""
    lang = expectation.language
    best: dict[str, _Hit] = {}
    negated: dict[str, float] = {}  # the intent's strongest negated occurrence
    for name, phrase in _compile(expectation):
        for hit in _hits(name, phrase, utt, lang):
            if _is_negated(utt, hit, phrase, lang):
                negated[name] = max(hit.score, negated.get(name, 0.0))
            elif name not in best or hit.score > best[name].score:
                best[name] = hit
    # "don't leave it at the door" also contains a bare "door": a negated reading at least as strong as
    # the best plain one rules the intent out.
    alive = (h for n, h in best.items() if h.score > negated.get(n, 0.0))
    ranked = sorted(alive, key=lambda h: (-h.score, -len(h.phrase)))
    # "放驿站吧，再见": the sign-off does not compete with what the caller actually chose.
    soft = {i.name for i in expectation.intents if i.yields}
    firm = [h for h in ranked if h.intent not in soft]
    if soft and firm and firm[0].score >= expectation.threshold:
        ranked = firm
    if not ranked:
        return NoMatch(text=utt.norm)
    top = ranked[0]
    if top.score < expectation.threshold:
        return NoMatch(text=utt.norm, best=top.intent, score=round(top.score, 3))
    if len(ranked) > 1:
        second = ranked[1]
        close = second.score >= expectation.threshold and top.score - second.score < MARGIN
        overlap = top.start < second.end and second.start < top.end
        if close and not (overlap and len(top.phrase) > len(second.phrase)):
            return NoMatch(text=utt.norm, best=top.intent, score=round(top.score, 3))
    return Intent(name=top.intent, confidence=round(min(1.0, top.score), 3), text=utt.norm)


def _hits(name: str, p: _Text, utt: _Text, lang: str) -> list[_Hit]:
    """Where phrase `p` occurs in the utterance: exactly, contained, by pinyin, or fuzzily."""
    n, total = len(p.flat), len(utt.flat)
    if utt.flat == p.flat or (total % n == 0 and utt.flat == p.flat * (total // n)):  # "对对对"
        return [_Hit(name, p.flat, 1.0, 0, total)]
    zh, flat = is_zh(lang), is_zh(lang) or lang.lower().startswith("ko")
    # One character ("是", "对") is contained only as a whole word; two are never matched fuzzily.
    single, short = n <= 1, n <= (2 if flat else 4)
    found: list[_Hit] = []
    hay, needle = (utt.flat, p.flat) if flat else (f" {utt.norm} ", f" {p.norm} ")
    start = hay.find(needle)
    while start >= 0:
        s, e = _span(utt, start, needle, flat)
        if not single or (s in utt.bounds and e in utt.bounds):
            found.append(_Hit(name, p.flat, 0.9 + 0.1 * n / total, s, e))
        start = hay.find(needle, start + 1)
    if zh and len(p.syl) >= 2:
        found.extend(_pinyin_hits(name, p, utt, short))
    if not short and not found:
        found.extend(_fuzzy_hits(name, p, utt, lang))
    return found


def _span(utt: _Text, start: int, needle: str, flat: bool) -> tuple[int, int]:
    """Map a find() offset to a span in `utt.flat` coordinates."""
    if flat:
        return start, start + len(needle)
    # Offsets in " norm " -> offsets in flat: subtract the spaces before them.
    padded = f" {utt.norm} "
    s = start + 1 - padded.count(" ", 0, start + 1)
    return s, s + len(needle.replace(" ", ""))


def _pinyin_hits(name: str, p: _Text, utt: _Text, short: bool) -> list[_Hit]:
    """Homophone containment: the phrase's folded syllables appear in a row in the utterance."""
    want = [u for u, _ in p.syl]
    have = [u for u, _ in utt.syl]
    out = []
    for i in range(len(have) - len(want) + 1):
        if have[i: i + len(want)] == want:
            s = utt.syl[i][1]
            e = utt.syl[i + len(want)][1] if i + len(want) < len(utt.syl) else len(utt.flat)
            whole = s == 0 and e == len(utt.flat)
            if not short or whole or (s in utt.bounds and e in utt.bounds):
                out.append(_Hit(name, p.flat, 0.85 + 0.07 * len(want) / max(1, len(have)), s, e))
    return out


def _fuzzy_hits(name: str, p: _Text, utt: _Text, lang: str) -> list[_Hit]:
    """Character- and pinyin-level approximate matches, scaled below any exact containment."""
    if not is_zh(lang):
        # Hangul compared as jamo (NFD), so one misheard consonant costs one letter, not a syllable.
        return _word_window_hits(name, p, utt, jamo=lang.lower().startswith("ko"))
    out = []
    candidates = [(p.flat, utt.flat, None)]
    if p.syl:
        candidates.append((" ".join(u for u, _ in p.syl), " ".join(u for u, _ in utt.syl), utt.syl))
    for needle, hay, syl in candidates:
        if len(hay) >= len(needle):
            al = fuzz.partial_ratio_alignment(needle, hay)
            sim, s, e = al.score / 100, al.dest_start, al.dest_end
        else:
            sim, s, e = fuzz.ratio(needle, hay) / 100, 0, len(hay)
        if sim < (_PINYIN_FLOOR if syl is not None else _FUZZY_FLOOR):
            continue
        if syl is not None:
            s, e = _syl_span(hay, syl, s, e, len(utt.flat))
        out.append(_Hit(name, p.flat, _FUZZY_WEIGHT * sim, s, e))
    return out


def _word_window_hits(name: str, p: _Text, utt: _Text, *, jamo: bool) -> list[_Hit]:
    """Compare the phrase with every run of about as many words (misheard words, not letters)."""
    words, want = utt.norm.split(), len(p.norm.split())
    best: _Hit | None = None
    starts = [0]
    for w in words:
        starts.append(starts[-1] + len(w))
    for k in range(max(1, want - 1), want + 2):
        for i in range(len(words) - k + 1):
            window = " ".join(words[i: i + k])
            if jamo:
                sim = fuzz.ratio(unicodedata.normalize("NFD", p.norm), unicodedata.normalize("NFD", window)) / 100
            else:
                sim = fuzz.ratio(p.norm, window) / 100
            if sim >= _FUZZY_FLOOR and (best is None or _FUZZY_WEIGHT * sim > best.score):
                best = _Hit(name, p.flat, _FUZZY_WEIGHT * sim, starts[i], starts[i + k])
    return [best] if best else []


def _syl_span(joined: str, syl: tuple[tuple[str, int], ...], s: int, e: int, total: int) -> tuple[int, int]:
    """Map offsets in the space-joined pinyin string back to character offsets."""
    starts, pos = [], 0
    for u, _ in syl:
        starts.append(pos)
        pos += len(u) + 1
    first = max(0, bisect_right(starts, s) - 1)
    last = max(0, bisect_right(starts, max(s, e - 1)) - 1)
    end = syl[last + 1][1] if last + 1 < len(syl) else total
    return syl[first][1], end


def _is_negated(utt: _Text, hit: _Hit, phrase: _Text, lang: str) -> bool:
    """Whether a negator governs this occurrence (unless the phrase itself starts with one)."""
    if is_zh(lang):
        masked = utt.flat
        for word in _ZH_NOT_NEGATIONS:
            masked = masked.replace(word, "＿" * len(word))
        before, after = masked[max(0, hit.start - 6): hit.start], masked[hit.end:]
        return bool(_ZH_NEG_BEFORE_RE.search(before) or _ZH_NEG_AFTER_RE.search(after))
    if lang.lower().startswith("ko"):
        after = utt.flat[hit.end:].lstrip("은는을를이가에")
        return utt.flat[: hit.start].endswith(_KO_NEGATORS) or after.startswith(_KO_NEG_AFTER)
    words_before = _words_before(utt.norm, hit.start)
    window: list[str] = []
    for w in reversed(words_before[-3:]):
        if w in _EN_CLAUSE_BREAKS:
            break
        window.append(w)
    return any(w in _EN_NEGATORS for w in window) and phrase.norm.split()[0] not in _EN_NEGATORS


def _words_before(norm: str, flat_offset: int) -> list[str]:
    """The words of `norm` that end at or before `flat_offset` (an offset with spaces removed)."""
    out, pos = [], 0
    for w in norm.split():
        if pos + len(w) > flat_offset:
            break
        out.append(w)
        pos += len(w)
    return out


def match_dtmf(digits: str, expectation: Expectation) -> Intent | NoMatch:
    """Understand keys pressed: an intent's DTMF sequence, else the capture slot ('#' ends entry)."""
    keys = digits.strip().removesuffix("#")
    for spec in expectation.intents:
        if (keys and keys in spec.dtmf) or digits in spec.dtmf:
            return Intent(name=spec.name, confidence=1.0, text=digits, source="dtmf")
    capture = expectation.capture
    if capture is not None and keys and re.fullmatch(r"[0-9*]+", keys):
        value: object | None = None
        if capture.type == "digits":
            value = keys
        elif capture.type in ("phone", "tracking_number"):
            value = slotlib.extract(capture.type, keys, language=expectation.language)
        elif capture.type in ("number", "ordinal") and keys.isdigit():
            value = int(keys)
        if value is not None:
            return Intent(name=CAPTURED, confidence=1.0, text=digits, slots={capture.name: value}, source="dtmf")
    return NoMatch(text=digits, source="dtmf", best=CAPTURED if capture is not None else "")


def grammar(expectation: Expectation) -> tuple[str, ...]:
    """Phrases for a per-state Vosk grammar: the intents' phrases, the capture's vocabulary, "[unk]".

    Empty when the state captures free text: the recogniser then decodes freely.
    """
    lang = expectation.language
    if expectation.capture is not None and expectation.capture.type == "text":
        return ()
    family = "zh" if is_zh(lang) else "ko" if lang.lower().startswith("ko") else "en"
    out: dict[str, None] = {}
    for spec in expectation.intents:
        for phrase in spec.phrases:
            if norm := normalize(phrase, language=lang):
                out[norm] = None
    if expectation.capture is not None:
        kind = expectation.capture.type
        vocab = _CAPTURE_VOCAB.get(family, {})
        parts = {"datetime": ("date", "time"), "phone": ("digits",), "tracking_number": ("digits", kind)}
        for sub in parts.get(kind, (kind,)):
            if sub in ("digits", "number", "date", "time", "ordinal", "tracking_number"):
                out.update(dict.fromkeys(_DIGIT_VOCAB[family]))
            out.update(dict.fromkeys(vocab.get(sub, ())))
    out["[unk]"] = None
    return tuple(out)
