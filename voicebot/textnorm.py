"""Text normalisation for recognised speech: width, case, punctuation, fillers, numerals, pinyin."""

from __future__ import annotations

import re
import unicodedata

import cn2an
from pypinyin import Style, lazy_pinyin

_CJK = r"\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff"
_CJK_RE = re.compile(f"[{_CJK}]")
_CJK_RUN_RE = re.compile(f"[{_CJK}]+")
# Vosk's Chinese model separates words with spaces; meaning lives in the characters, not the gaps.
_SPACE_NEAR_CJK_RE = re.compile(f"(?<=[{_CJK}]) +| +(?=[{_CJK}])")

# Leading discourse fillers. 就是 alone means "exactly / that's right", so it is only a filler after
# another filler ("嗯 就是 放驿站") or as 就是说; see _strip_zh.
_ZH_LEAD_FILLERS = ("就是说", "那个", "这个", "然后", "嗯", "呃", "额", "啊", "唔", "哎", "诶", "欸", "哦", "噢")
# Pure interjections that never carry content, wherever they appear.
_ZH_INTERJECTIONS_RE = re.compile("[嗯呃额唔]+")
# Standalone Vosk tokens that are hesitations mid-sentence ("放 那个 驿站").
_ZH_FILLER_TOKENS = frozenset({"那个", "这个", "嗯", "呃", "额", "啊", "唔", "就是说"})
_ZH_END_PARTICLES = "吧呢呀哦啊嘛啦哈喔噢"
_EN_FILLERS = frozenset({"um", "uh", "uhm", "umm", "er", "erm", "hmm", "hm", "ah"})
_EN_LEAD_FILLERS = (("you", "know"), ("i", "mean"), ("like",), ("well",), ("so",), ("oh",), ("okay", "so"))
_KO_FILLERS = frozenset({"음", "어", "아", "저기", "그", "저"})

_ZH_DIGITS = {"零": "0", "〇": "0", "一": "1", "幺": "1", "二": "2", "两": "2", "三": "3", "四": "4",
              "五": "5", "六": "6", "七": "7", "八": "8", "九": "9"}
_ZH_NUM_RUN_RE = re.compile("[零〇一幺二两三四五六七八九十百千万亿]+")
# Words that contain a numeral character but are not numbers ("再说一遍" is not "再说1遍").
_ZH_NOT_NUMBERS = ("一下", "一点儿", "一会", "一起", "一直", "一样", "一般", "一定", "一些", "一切", "一遍",
                   "一次", "一声", "统一", "万一", "唯一", "一一", "一边", "一向", "一共", "一旦", "三思")

_EN_UNITS = {"zero": 0, "oh": None, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6,
             "seven": 7, "eight": 8, "nine": 9}
_EN_TEENS = {"ten": 10, "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15,
             "sixteen": 16, "seventeen": 17, "eighteen": 18, "nineteen": 19}
_EN_TENS = {"twenty": 20, "thirty": 30, "forty": 40, "fifty": 50}
_EN_ORDINALS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
                "eighth": 8, "ninth": 9, "tenth": 10, "eleventh": 11, "twelfth": 12, "thirteenth": 13,
                "fourteenth": 14, "fifteenth": 15, "sixteenth": 16, "seventeenth": 17, "eighteenth": 18,
                "nineteenth": 19, "twentieth": 20, "thirtieth": 30}

# Near-homophones that southern accents and ASR confuse, folded to one form (longest first).
_INITIAL_FOLDS = (("zh", "z"), ("ch", "c"), ("sh", "s"), ("n", "l"))
_FINAL_FOLDS = (("ang", "an"), ("eng", "en"), ("ing", "in"))


def is_zh(language: str) -> bool:
    """True for Chinese language tags (zh, zh-CN, cmn...)."""
    return language.lower().startswith(("zh", "cmn"))


def is_cjk(ch: str) -> bool:
    """True if `ch` is a CJK ideograph."""
    return bool(_CJK_RE.fullmatch(ch))


def normalize(text: str, *, language: str) -> str:
    """Canonical form of recognised text: NFKC, lower case, no punctuation or fillers, tidy spaces."""
    joined = " ".join(tokens(text, language=language))
    return _SPACE_NEAR_CJK_RE.sub("", joined) if is_zh(language) else joined


def tokens(text: str, *, language: str) -> list[str]:
    """The normalised words of `text` as the recogniser spaced them (before zh spaces are removed)."""
    text = unicodedata.normalize("NFKC", text).lower()
    # Apostrophes join ("don't" -> "dont"); every other punctuation or symbol becomes a gap.
    text = re.sub(r"['’`]", "", text)
    # A point or colon between digits is part of a number ("3.5", "3:30"), not punctuation.
    text = "".join(
        " " if unicodedata.category(c)[0] in "PSZC" and not _in_number(text, i) else c for i, c in enumerate(text)
    )
    words = text.split()
    if is_zh(language):
        return _strip_zh(words)
    if language.lower().startswith("ko"):
        return _strip_ko(words)
    return _strip_en(words)


def _in_number(text: str, i: int) -> bool:
    """Whether text[i] is a '.' or ':' with a digit on both sides."""
    return text[i] in ".:" and 0 < i < len(text) - 1 and text[i - 1].isdigit() and text[i + 1].isdigit()


def _strip_zh(words: list[str]) -> list[str]:
    """Drop Chinese hesitations and trailing particles, keeping the words that carry meaning."""
    # A filler token in last position is kept: "我要这个" ends in a pronoun, not a hesitation.
    words = [w for i, w in enumerate(words) if w not in _ZH_FILLER_TOKENS or i == len(words) - 1]
    chars = [(c, i) for i, w in enumerate(words) for c in w]
    if not chars:
        return []
    text = "".join(c for c, _ in chars)
    lo, hi = 0, len(text)
    # Leading fillers are found on the joined text because recognisers space them differently.
    dropped = True
    while dropped:
        dropped = False
        for filler in _ZH_LEAD_FILLERS:
            if text.startswith(filler, lo) and hi - lo > len(filler):
                lo += len(filler)
                dropped = True
                if text.startswith("就是", lo) and hi - lo > 2:
                    lo += 2  # 就是 right after a filler is a hesitation, not "exactly"
                break
    keep = [lo <= k < hi for k in range(len(text))]
    for m in _ZH_INTERJECTIONS_RE.finditer(text, lo, hi):
        if any(keep[k] for k in range(lo, hi) if not m.start() <= k < m.end()):
            for k in range(m.start(), m.end()):
                keep[k] = False
    kept = [k for k in range(len(text)) if keep[k]]
    while len(kept) > 1 and text[kept[-1]] in _ZH_END_PARTICLES:
        kept.pop()
    out: dict[int, str] = {}
    for k in kept:
        out[chars[k][1]] = out.get(chars[k][1], "") + text[k]
    return list(out.values())


def _strip_en(words: list[str]) -> list[str]:
    """Drop English hesitations anywhere and discourse markers at the start."""
    words = [w for w in words if w not in _EN_FILLERS] or words
    changed = True
    while changed:
        changed = False
        for lead in _EN_LEAD_FILLERS:
            if tuple(words[: len(lead)]) == lead and len(words) > len(lead):
                words, changed = words[len(lead):], True
    return words


def _strip_ko(words: list[str]) -> list[str]:
    """Drop Korean hesitation tokens unless they are all that was said."""
    return [w for w in words if w not in _KO_FILLERS] or words


def to_arabic(text: str) -> str:
    """Chinese and English number words to Arabic digits; digit-by-digit readings are joined."""
    return _en_to_arabic(_zh_to_arabic(text))


def _zh_to_arabic(text: str) -> str:
    """Convert Chinese numeral runs: positional ones via cn2an, digit strings ("幺三八") char by char."""
    masks = {}
    for i, word in enumerate(_ZH_NOT_NUMBERS):
        if word in text:
            key = chr(0xE000 + i)
            masks[key] = word
            text = text.replace(word, key)
    text = _SPACE_NEAR_CJK_RE.sub("", text) if _ZH_NUM_RUN_RE.search(text) else text
    text = _ZH_NUM_RUN_RE.sub(_convert_zh_run, text)
    for key, word in masks.items():
        text = text.replace(key, word)
    return text


def _convert_zh_run(m: re.Match[str]) -> str:
    """One run of Chinese numeral characters as digits."""
    run = m.group(0)
    if not any(c in "十百千万亿" for c in run):
        return "".join(_ZH_DIGITS[c] for c in run)
    try:
        value = cn2an.cn2an(run.replace("幺", "一").replace("两", "二"), "smart")
    except (ValueError, KeyError, IndexError, TypeError):
        # Not a well-formed number (e.g. "万"); keep the characters rather than guess.
        return "".join(_ZH_DIGITS.get(c, c) for c in run)
    return str(int(value)) if float(value).is_integer() else str(value)


def _en_to_arabic(text: str) -> str:
    """English number words to digits: "one three eight" -> "138", "twenty five" -> "25"."""
    words = text.split(" ")
    out: list[str] = []
    digit_run = False  # the previous output came from a single-digit word, so join the next one
    i = 0
    while i < len(words):
        w = words[i]
        nxt = words[i + 1] if i + 1 < len(words) else ""
        if w in _EN_TENS:
            value = _EN_TENS[w]
            if _EN_UNITS.get(nxt):
                out.append(str(value + _EN_UNITS[nxt]))
                i += 2
            elif nxt in _EN_ORDINALS and _EN_ORDINALS[nxt] < 10:
                out.append(f"{value + _EN_ORDINALS[nxt]}th")
                i += 2
            else:
                out.append(str(value))
                i += 1
            digit_run = False
            continue
        if w in _EN_UNITS and _EN_UNITS[w] is not None:
            if digit_run:
                out[-1] += str(_EN_UNITS[w])
            else:
                out.append(str(_EN_UNITS[w]))
            digit_run = True
        elif w == "oh" and digit_run:
            out[-1] += "0"  # "one oh one": only inside a digit string is "oh" a zero
        elif w in _EN_TEENS:
            out.append(str(_EN_TEENS[w]))
            digit_run = False
        elif w in _EN_ORDINALS:
            out.append(f"{_EN_ORDINALS[w]}th")
            digit_run = False
        else:
            out.append(w)
            digit_run = False
        i += 1
    return " ".join(out)


def syllables(text: str) -> list[tuple[str, int]]:
    """Folded toneless pinyin units of `text`, each with the index of the character it starts at."""
    units: list[tuple[str, int]] = []
    for m in re.finditer(f"[{_CJK}]+|[^\\s{_CJK}]+", text):
        chunk, start = m.group(0), m.start()
        if not is_cjk(chunk[0]):
            units.append((chunk.lower(), start))
            continue
        pys = lazy_pinyin(chunk, style=Style.NORMAL)
        if len(pys) != len(chunk):  # a character pypinyin cannot read; fall back to per-character
            pys = [lazy_pinyin(c, style=Style.NORMAL)[0] for c in chunk]
        units.extend((_fold(py), start + k) for k, py in enumerate(pys))
    return units


def pinyin_key(text: str) -> str:
    """Toneless pinyin of `text` with accent/ASR near-homophones folded, syllables space-separated."""
    return " ".join(u for u, _ in syllables(text))


def _fold(syllable: str) -> str:
    """Fold one pinyin syllable: zh/ch/sh -> z/c/s, n -> l, ang/eng/ing -> an/en/in."""
    s = syllable.lower().replace("ü", "v")
    for src, dst in _INITIAL_FOLDS:
        if s.startswith(src) and len(s) > len(src):
            s = dst + s[len(src):]
            break
    for src, dst in _FINAL_FOLDS:
        if s.endswith(src):
            s = s[: -len(src)] + dst
            break
    return s
