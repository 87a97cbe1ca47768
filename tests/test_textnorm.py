"""Text normalisation: width, punctuation, fillers, numerals and folded pinyin."""

import pytest

from voicebot.textnorm import normalize, pinyin_key, to_arabic, tokens


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("送 货 上 门", "送货上门"),  # Vosk spaces Chinese words apart
        ("嗯，送货 上门 吧。", "送货上门"),
        ("那个就是放驿站吧", "放驿站"),  # 就是 after a filler is a hesitation
        ("呃 就是说 明天吧", "明天"),
        ("放 那个 驿站", "放驿站"),  # standalone filler token mid-sentence
        ("我 要 这个", "我要这个"),  # a final 这个 is a pronoun, kept
        ("就是", "就是"),  # 就是 alone means "exactly": kept
        ("就是我", "就是我"),
        ("嗯", "嗯"),  # a bare backchannel is all the caller said: kept
        ("好的吧", "好的"),
        ("这个快递不是我的", "快递不是我的"),
        ("不要了", "不要了"),  # 了 changes meaning, never stripped
        ("１３８ １２３４", "138 1234"),  # full-width digits
        ("ＯＫ！", "ok"),
        ("转 人工 ok ok", "转人工ok ok"),
        ("明天 下午 三 点", "明天下午三点"),
        ("？！。", ""),
    ],
)
def test_normalize_zh(raw: str, expected: str) -> None:
    assert normalize(raw, language="zh-CN") == expected


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Um, you know, I don't want it at the door!", "i dont want it at the door"),
        ("Well uh leave it at the door", "leave it at the door"),
        ("Like tomorrow", "tomorrow"),
        ("I'd like that", "id like that"),  # "like" is only a filler at the start
        ("uh", "uh"),
        ("  YES   please ", "yes please"),
    ],
)
def test_normalize_en(raw: str, expected: str) -> None:
    assert normalize(raw, language="en-US") == expected


def test_normalize_korean_keeps_hangul_and_drops_hesitation() -> None:
    assert normalize("음, 택배함에 넣어 주세요.", language="ko-KR") == "택배함에 넣어 주세요"


def test_tokens_keep_recogniser_word_boundaries() -> None:
    assert tokens("嗯 好的 好的", language="zh-CN") == ["好的", "好的"]


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("幺三八一二三四五六七八", "13812345678"),
        ("幺三八 一二三四 五六七八", "13812345678"),
        ("十二月二十五号", "12月25号"),
        ("一百零五", "105"),
        ("两点", "2点"),
        ("第二个", "第2个"),
        ("再说一遍", "再说一遍"),  # not a number
        ("等一下", "等一下"),
        ("万", "万"),  # malformed numeral kept, no exception
        ("one three eight one two", "13812"),
        ("twenty five", "25"),
        ("three thirty pm", "3 30 pm"),
        ("the twenty fifth", "the 25th"),
        ("one oh one", "101"),
        ("oh okay", "oh okay"),
    ],
)
def test_to_arabic(raw: str, expected: str) -> None:
    assert to_arabic(raw) == expected


@pytest.mark.parametrize(
    ("a", "b"),
    [("送货上门", "送货上们"), ("送货上门", "宋货上门"), ("驿站", "一站"), ("丰巢", "风潮"), ("牛奶", "流来"),
     ("上门", "散门"), ("很好", "恨好")],
)
def test_pinyin_key_folds_near_homophones(a: str, b: str) -> None:
    assert pinyin_key(a) == pinyin_key(b)


def test_pinyin_key_distinguishes_real_differences() -> None:
    assert pinyin_key("送货上门") == "song huo san men"
    assert pinyin_key("快递柜") != pinyin_key("快递员")
    assert pinyin_key("转人工 ok") == "zuan ren gong ok"
