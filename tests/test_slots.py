"""Slot extraction from realistic (and ASR-mangled) phrasings."""

from datetime import datetime

import pytest

from voicebot.slots import SLOT_TYPES, extract

NOW = datetime(2024, 6, 12, 10, 0)  # a Wednesday


def zh(slot: str, text: str) -> object:
    return extract(slot, text, language="zh-CN", now=NOW)


def en(slot: str, text: str) -> object:
    return extract(slot, text, language="en-US", now=NOW)


@pytest.mark.parametrize(
    ("slot", "text", "expected"),
    [
        ("digits", "五六七八", "5678"),
        ("digits", "尾号 五 六 七 八", "5678"),
        ("digits", "０１２３", "0123"),
        ("digits", "我不知道", None),
        ("phone", "幺三八 一二三四 五六七八", "13812345678"),
        ("phone", "１３８１２３４５６７８", "13812345678"),
        ("phone", "我的手机号是13812345678", "13812345678"),
        ("phone", "+86 138 1234 5678", "13812345678"),
        ("phone", "零一零 八八八八 八八八八", "01088888888"),
        ("phone", "一二三", None),
        ("phone", "12812345678", None),  # 12x is not a mobile prefix
        ("tracking_number", "S F 1234 5678 9012", "SF123456789012"),
        ("tracking_number", "顺丰 一二三四五六七八九零一二", "SF123456789012"),
        ("tracking_number", "yt1234567890123", "YT1234567890123"),
        ("tracking_number", "极兔 一二三四五六七八九零一二三", "JT1234567890123"),
        ("tracking_number", "七七三一二三四五六七八九零", "7731234567890"),
        ("tracking_number", "一二三", None),
        ("yes_no", "是的", True),
        ("yes_no", "对对对", True),
        ("yes_no", "好的吧", True),
        ("yes_no", "没问题", True),  # contains 没 yet means yes
        ("yes_no", "不好意思，是的", True),
        ("yes_no", "嗯", True),
        ("yes_no", "不是的", False),  # negation wins
        ("yes_no", "不用了", False),
        ("yes_no", "不可以", False),
        ("yes_no", "今天天气", None),
        ("date", "今天", "2024-06-12"),
        ("date", "明天 下午 三 点", "2024-06-13"),
        ("date", "后天", "2024-06-14"),
        ("date", "大后天", "2024-06-15"),
        ("date", "下周一", "2024-06-17"),
        ("date", "下个星期一", "2024-06-17"),
        ("date", "周三", "2024-06-19"),  # a bare weekday is the next one after today
        ("date", "星期五", "2024-06-14"),
        ("date", "礼拜天", "2024-06-16"),
        ("date", "十二月二十五号", "2024-12-25"),
        ("date", "5月1日", "2025-05-01"),  # already past this year
        ("date", "二十五号", "2024-06-25"),
        ("date", "十号", "2024-07-10"),  # the 10th has passed this month
        ("date", "随便", None),
        ("time", "下午三点", "15:00"),
        ("time", "下午 三 点", "15:00"),
        ("time", "上午十点半", "10:30"),
        ("time", "晚上八点", "20:00"),
        ("time", "中午十二点", "12:00"),
        ("time", "中午一点", "13:00"),
        ("time", "三点一刻", "03:15"),  # no 下午 said: taken as said
        ("time", "下午三点一刻", "15:15"),
        ("time", "下午两点四十", "14:40"),
        ("time", "下午", None),
        ("datetime", "明天下午三点再送", {"date": "2024-06-13", "time": "15:00"}),
        ("datetime", "后天", {"date": "2024-06-14", "time": None}),
        ("datetime", "晚上八点", {"date": None, "time": "20:00"}),
        ("datetime", "随便吧", None),
        ("ordinal", "第二个", 2),
        ("ordinal", "第 一 个", 1),
        ("ordinal", "最后一个", -1),
        ("ordinal", "倒数第二个", -2),
        ("ordinal", "都不要", None),
        ("number", "一百二十三", 123),
        ("number", "两个", 2),
        ("number", "三点五", 3.5),
        ("number", "没有", None),
    ],
)
def test_extract_zh(slot: str, text: str, expected: object) -> None:
    assert zh(slot, text) == expected


@pytest.mark.parametrize(
    ("slot", "text", "expected"),
    [
        ("digits", "one two three four", "1234"),
        ("phone", "one three eight one two three four five six seven eight", "13812345678"),
        ("phone", "four one five five five five one two one two", "4155551212"),
        ("phone", "one two", None),
        ("tracking_number", "s f one two three four five six seven eight nine zero one two", "SF123456789012"),
        ("yes_no", "yeah sure", True),
        ("yes_no", "yes please", True),
        ("yes_no", "no problem", True),
        ("yes_no", "nope", False),
        ("yes_no", "I don't think so", False),
        ("yes_no", "nothing", None),  # "no" only as a whole word
        ("date", "tomorrow", "2024-06-13"),
        ("date", "the day after tomorrow", "2024-06-14"),
        ("date", "next monday", "2024-06-17"),
        ("date", "on friday", "2024-06-14"),
        ("date", "December 25", "2024-12-25"),
        ("date", "december twenty fifth", "2024-12-25"),
        ("date", "the 3rd of july", "2024-07-03"),
        ("date", "whenever", None),
        ("time", "3 pm", "15:00"),
        ("time", "three thirty pm", "15:30"),
        ("time", "noon", "12:00"),
        ("time", "half past three in the afternoon", "15:30"),
        ("time", "quarter to four", "03:45"),
        ("time", "at five", "05:00"),
        ("time", "I have 3 boxes", None),
        ("datetime", "tomorrow at 3 pm", {"date": "2024-06-13", "time": "15:00"}),
        ("ordinal", "the second one", 2),
        ("ordinal", "first", 1),
        ("ordinal", "the last one", -1),
        ("number", "twenty five", 25),
        ("number", "3.5", 3.5),
    ],
)
def test_extract_en(slot: str, text: str, expected: object) -> None:
    assert en(slot, text) == expected


def test_korean_yes_no() -> None:
    assert extract("yes_no", "네", language="ko-KR") is True
    assert extract("yes_no", "아니요", language="ko-KR") is False


def test_unknown_slot_type_names_the_allowed_ones() -> None:
    with pytest.raises(ValueError, match="phone") as info:
        extract("colour", "红色")
    assert "colour" in str(info.value)
    assert "datetime" in SLOT_TYPES


@pytest.mark.parametrize("slot", sorted(SLOT_TYPES))
def test_empty_or_filler_only_input_gives_none(slot: str) -> None:
    assert extract(slot, "", now=NOW) is None
    assert extract(slot, "？。", now=NOW) is None
    assert extract(slot, "呃 那个", now=NOW) is None or slot == "yes_no"


def test_default_now_is_today() -> None:
    assert extract("date", "今天") == datetime.now().date().isoformat()


def test_clock_notation_with_colon() -> None:
    assert zh("time", "下午3:30") == "15:30"
    assert en("time", "3:30 pm") == "15:30"
