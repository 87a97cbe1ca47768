"""Slot extraction: digits, phone and tracking numbers, yes/no, dates, times and ordinals from speech."""

from __future__ import annotations

import calendar
import re
from collections.abc import Callable
from datetime import date, datetime, timedelta

from .textnorm import is_zh, normalize, to_arabic, tokens

SLOT_TYPES = frozenset({"digits", "phone", "tracking_number", "yes_no", "date", "time", "datetime", "ordinal",
                        "number", "text"})
MAX_TEXT_CHARS = 300  # a free-text slot (complaint details) keeps this much of what was said
# Words that alone say nothing: "呃 那个" is not a description.
_HESITATIONS = frozenset({"那个", "这个", "就是", "就是说", "然后", "嗯", "呃", "额", "啊", "um", "uh", "er", "hmm",
                          "well", "so", "like"})

# Idioms that contain a negator yet mean yes ("没问题") or are politeness ("不好意思"), masked first.
_YES_IDIOMS = ("没问题", "没事", "没关系", "不错", "no problem", "of course", "why not", "not a problem")
_POLITE = ("不好意思", "不客气", "对不起")
_NO_WORDS = ("不是", "不对", "不用", "不要", "不可以", "不行", "不好", "不需要", "不同意", "不方便", "没有", "不", "别",
             "否", "no", "nope", "nah", "not", "dont", "negative", "incorrect", "wrong", "아니요", "아니", "아뇨",
             "싫어요")
_YES_WORDS = ("是", "对", "好", "可以", "行", "要", "需要", "同意", "确认", "当然", "没错", "嗯", "ok", "okay",
              "yes", "yeah", "yep", "yup", "sure", "correct", "right", "alright", "absolutely", "certainly",
              "네", "예", "맞아요", "좋아요")
_LATIN_WORD_RE = re.compile(r"^[a-z]+$")

_WEEKDAYS_ZH = {"1": 0, "2": 1, "3": 2, "4": 3, "5": 4, "6": 5, "7": 6, "日": 6, "天": 6}
_WEEKDAYS_EN = {name.lower(): i for i, name in enumerate(calendar.day_name)}
_MONTHS_EN = {name.lower(): i for i, name in enumerate(calendar.month_name) if name}
_MONTHS_EN.update({name.lower(): i for i, name in enumerate(calendar.month_abbr) if name})
_ZH_RELATIVE_DAYS = (("大后天", 3), ("后天", 2), ("明天", 1), ("明日", 1), ("明儿", 1), ("明早", 1), ("明晚", 1),
                     ("今天", 0), ("今日", 0), ("今儿", 0), ("今晚", 0))
_ZH_PERIODS = {"凌晨": "am", "早上": "am", "早晨": "am", "上午": "am", "明早": "am", "中午": "noon",
               "下午": "pm", "傍晚": "pm", "晚上": "pm", "今晚": "pm", "明晚": "pm", "夜里": "pm"}
_ZH_TIME_RE = re.compile(r"(凌晨|早上|早晨|上午|明早|中午|下午|傍晚|晚上|今晚|明晚|夜里)?(\d{1,2})(?:点钟?|时|:)"
                         r"(半|1刻|3刻|(\d{1,2})分?)?")
_EN_TIME_RE = re.compile(r"(?:\b(half|quarter) (past|to) )?\b(\d{1,2})(?:[: ](\d{2}))?\s*(a ?m|p ?m|oclock)?\b")

_TRACKING_PREFIXES = {"顺丰": "sf", "圆通": "yt", "极兔": "jt"}
_TRACKING_RE = re.compile(r"(SF\d{12,13}|YT\d{13}|JT\d{13})")
_EN_ORDINAL_WORDS = {"first": 1, "second": 2, "third": 3, "fourth": 4, "fifth": 5, "sixth": 6, "seventh": 7,
                     "eighth": 8, "ninth": 9, "tenth": 10}


def extract(slot_type: str, text: str, *, language: str = "zh-CN", now: datetime | None = None) -> object | None:
    """The value of a `slot_type` slot said in `text` (JSON-friendly), or None if there is none.

    datetime gives {"date": "YYYY-MM-DD" | None, "time": "HH:MM" | None} when either part is present.
    Relative dates count from `now` (the current local time when omitted).
    """
    if slot_type not in SLOT_TYPES:
        raise ValueError(f"unknown slot type {slot_type!r}; expected one of {', '.join(sorted(SLOT_TYPES))}")
    norm = normalize(text, language=language)
    if not norm:
        return None
    if slot_type == "text":  # whatever the caller said, as said: a description, not a value to parse
        if all(t in _HESITATIONS for t in tokens(text, language=language)):
            return None
        return " ".join(text.split())[:MAX_TEXT_CHARS]
    extractor: Callable[[str, str, datetime], object | None] = _EXTRACTORS[slot_type]
    return extractor(norm, language, now or datetime.now())


def _digits(norm: str, language: str, now: datetime) -> str | None:
    """Every digit said, in order, as one string."""
    digits = re.sub(r"\D", "", to_arabic(norm))
    return digits or None


def _phone(norm: str, language: str, now: datetime) -> str | None:
    """A Chinese mobile (1[3-9] + 9 digits) or fixed line with area code; a NANP number in English."""
    digits = _digits(norm, language, now) or ""
    for prefix in ("0086", "86"):
        if digits.startswith(prefix) and re.fullmatch(r"1[3-9]\d{9}", digits[len(prefix):]):
            digits = digits[len(prefix):]
    if re.fullmatch(r"1[3-9]\d{9}", digits) or re.fullmatch(r"0\d{2,3}\d{7,8}", digits):
        return digits
    if not is_zh(language) and re.fullmatch(r"1?[2-9]\d{2}[2-9]\d{6}", digits):
        return digits
    return None


def _tracking_number(norm: str, language: str, now: datetime) -> str | None:
    """A courier waybill number: SF/YT/JT prefixed or 10-15 plain digits, upper-case."""
    text = to_arabic(norm)
    for name, code in _TRACKING_PREFIXES.items():
        text = text.replace(name, code)
    squeezed = re.sub(r"[^0-9a-z]", "", text).upper()
    if m := _TRACKING_RE.search(squeezed):
        return m.group(1)
    digits = re.sub(r"\D", "", squeezed)
    return digits if 10 <= len(digits) <= 15 else None


def _yes_no(norm: str, language: str, now: datetime) -> bool | None:
    """True for an agreement, False for a refusal; a negation anywhere wins ("不是的" is False)."""
    text = f" {norm} "
    for idiom in _YES_IDIOMS:
        if _contains(text, idiom):
            return True
    for polite in _POLITE:
        text = text.replace(polite, " ")
    if any(_contains(text, w) for w in _NO_WORDS):
        return False
    if any(_contains(text, w) for w in _YES_WORDS):
        return True
    return None


def _contains(padded: str, word: str) -> bool:
    """Whether `word` occurs in space-padded text; Latin words must stand alone."""
    if _LATIN_WORD_RE.match(word.replace(" ", "")):
        return f" {word} " in padded
    return word in padded


def _date(norm: str, language: str, now: datetime) -> str | None:
    """A calendar date as ISO YYYY-MM-DD."""
    found = _find_date(to_arabic(norm), now.date())
    return found.isoformat() if found else None


def _find_date(text: str, today: date) -> date | None:
    """The first date expression in normalised, Arabic-numeral text."""
    for word, days in _ZH_RELATIVE_DAYS:
        if word in text:
            return today + timedelta(days=days)
    if m := re.search(r"(下下|下|这|本)?(?:个)?(周|星期|礼拜)([1-7日天])", text):
        return _weekday(today, _WEEKDAYS_ZH[m.group(3)], {"下下": 2, "下": 1, "这": 0, "本": 0}.get(m.group(1) or ""))
    if m := re.search(r"(\d{1,2})月(\d{1,2})[号日]", text):
        return _month_day(today, int(m.group(1)), int(m.group(2)))
    if m := re.search(r"(\d{1,2})[号日]", text):
        return _month_day(today, None, int(m.group(1)))
    words = text.split()
    if "day after tomorrow" in text:
        return today + timedelta(days=2)
    if "tomorrow" in words:
        return today + timedelta(days=1)
    if "today" in words or "tonight" in words:
        return today
    for i, w in enumerate(words):
        if w in _WEEKDAYS_EN:
            before = words[i - 1] if i else ""
            return _weekday(today, _WEEKDAYS_EN[w], {"next": 1, "this": 0}.get(before))
    for i, w in enumerate(words):
        if w in _MONTHS_EN:
            near = words[i + 1: i + 2] + words[max(0, i - 2): i]  # "december 25th" or "25th of december"
            for cand in near:
                if m := re.fullmatch(r"(\d{1,2})(?:st|nd|rd|th)?", cand):
                    return _month_day(today, _MONTHS_EN[w], int(m.group(1)))
    return None


def _weekday(today: date, weekday: int, weeks_ahead: int | None) -> date:
    """The given weekday: in this/next calendar week, or (None) the next one strictly after today."""
    if weeks_ahead is None:
        return today + timedelta(days=(weekday - today.weekday() - 1) % 7 + 1)
    monday = today - timedelta(days=today.weekday())
    return monday + timedelta(weeks=weeks_ahead, days=weekday)


def _month_day(today: date, month: int | None, day: int) -> date | None:
    """A day (of a month) on or after today, rolling to the next month/year; None if no such day."""
    candidates = []
    if month is None:
        for k in range(3):  # this month, next month, the one after (for 31st)
            y, mo = divmod(today.month - 1 + k, 12)
            candidates.append((today.year + y, mo + 1))
    else:
        candidates = [(today.year, month), (today.year + 1, month)]
    for year, mo in candidates:
        try:
            d = date(year, mo, day)
        except ValueError:
            continue
        if d >= today:
            return d
    return None


def _time(norm: str, language: str, now: datetime) -> str | None:
    """A time of day as HH:MM (24-hour)."""
    text = to_arabic(norm)
    found = _zh_time(text) or _en_time(text) if is_zh(language) else _en_time(text) or _zh_time(text)
    if found:
        hour, minute = found
        if 0 <= hour <= 23 and 0 <= minute <= 59:
            return f"{hour:02d}:{minute:02d}"
    return None


def _zh_time(text: str) -> tuple[int, int] | None:
    """下午3点半 -> (15, 30); the period word decides am/pm, none means as said."""
    m = _ZH_TIME_RE.search(text)
    if not m:
        return None
    period = m.group(1) or ""
    hour = int(m.group(2))
    tail = m.group(3) or ""
    minute = {"半": 30, "1刻": 15, "3刻": 45}.get(tail, int(m.group(4) or 0))
    if not period:  # a period word said before the date part ("下午 明天 3点") still counts
        period = next((p for p in _ZH_PERIODS if p in text[: m.start()]), "")
    kind = _ZH_PERIODS.get(period, "")
    if kind == "pm" and hour < 12:
        hour += 12
    elif kind == "pm" and hour == 12 and period in ("晚上", "夜里", "今晚", "明晚"):
        hour = 0
    elif kind == "noon" and hour < 6:
        hour += 12
    return hour, minute


def _en_time(text: str) -> tuple[int, int] | None:
    """"3 pm", "3 30 pm", "half past 3", "noon"; a bare number only when it is all that was said."""
    words = text.split()
    if "noon" in words or "midday" in words:
        return 12, 0
    if "midnight" in words:
        return 0, 0
    for m in _EN_TIME_RE.finditer(text):
        rel, direction, hour_s, minute_s, suffix = m.groups()
        hour, minute = int(hour_s), int(minute_s or 0)
        before = text[: m.start()].split()[-1:]
        marked = rel or minute_s or suffix or before == ["at"] or text.strip() == m.group(0).strip()
        if not marked:
            continue
        if rel:
            delta = 30 if rel == "half" else 15
            hour, minute = (hour, delta) if direction == "past" else (hour - 1, 60 - delta)
        suffix = (suffix or "").replace(" ", "")
        pm = suffix == "pm" or any(w in words for w in ("afternoon", "evening", "tonight"))
        if pm and hour < 12:
            hour += 12
        elif suffix == "am" and hour == 12:
            hour = 0
        return hour, minute
    return None


def _datetime(norm: str, language: str, now: datetime) -> dict[str, str | None] | None:
    """{"date": ..., "time": ...} with None for a missing part; None when neither was said."""
    d, t = _date(norm, language, now), _time(norm, language, now)
    return {"date": d, "time": t} if d or t else None


def _ordinal(norm: str, language: str, now: datetime) -> int | None:
    """第二个 / "the second one" -> 2; 最后一个 / "the last one" -> -1; 倒数第二个 -> -2."""
    text = to_arabic(norm)
    if m := re.search(r"倒数第(\d+)", text):
        return -int(m.group(1))
    if m := re.search(r"第(\d+)", text):
        return int(m.group(1))
    if "最后" in text or "last" in text.split():
        return -1
    if "头一个" in text:
        return 1
    if m := re.search(r"\b(\d+)(?:st|nd|rd|th)\b", text):
        return int(m.group(1))
    if m := re.search(r"\b(?:number|option) (\d+)\b", text):
        return int(m.group(1))
    for word, value in _EN_ORDINAL_WORDS.items():
        if word in norm.split():
            return value
    return None


def _number(norm: str, language: str, now: datetime) -> int | float | None:
    """The first number said, Chinese or Arabic numerals; "3点5" and "3.5" are 3.5."""
    text = to_arabic(norm)
    m = re.search(r"(\d+)(?:(?:\.|点)(\d+))?", text)
    if not m:
        return None
    return float(f"{m.group(1)}.{m.group(2)}") if m.group(2) else int(m.group(1))


_EXTRACTORS: dict[str, Callable[[str, str, datetime], object | None]] = {
    "digits": _digits,
    "phone": _phone,
    "tracking_number": _tracking_number,
    "yes_no": _yes_no,
    "date": _date,
    "time": _time,
    "datetime": _datetime,
    "ordinal": _ordinal,
    "number": _number,
}
