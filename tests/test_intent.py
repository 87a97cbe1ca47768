"""Intent matching for a pre-delivery call, with ASR errors, fillers, negation, DTMF and grammars."""

from datetime import datetime

import pytest

from voicebot.events import Intent, NoMatch
from voicebot.intent import CAPTURED, Expectation, IntentSpec, SlotSpec, grammar, match, match_dtmf

NOW = datetime(2024, 6, 12, 10, 0)  # a Wednesday

ZH_INTENTS = (
    IntentSpec("door", ("送货上门", "送到家", "放门口", "送上门")),
    IntentSpec("station", ("放驿站", "驿站", "代收点")),
    IntentSpec("locker", ("快递柜", "丰巢")),
    IntentSpec("another_time", ("改天", "换个时间", "再送", "晚点送"), slots=(SlotSpec("when", "datetime"),)),
    IntentSpec("agent", ("转人工", "人工客服"), dtmf=("0",)),
    IntentSpec("repeat", ("再说一遍", "没听清")),
    IntentSpec("stop_calling", ("不要再打了", "别再打了")),
    IntentSpec("not_mine", ("不是我的",)),
)
ZH = Expectation(intents=ZH_INTENTS)
EN = Expectation(
    language="en-US",
    intents=(
        IntentSpec("door", ("deliver to my door", "leave it at the door", "door")),
        IntentSpec("station", ("pickup station", "collection point")),
        IntentSpec("locker", ("parcel locker", "locker")),
        IntentSpec("another_time", ("another time", "later", "reschedule"), slots=(SlotSpec("when", "datetime"),)),
        IntentSpec("agent", ("agent", "human", "operator"), dtmf=("0",)),
        IntentSpec("repeat", ("say that again", "repeat", "pardon")),
        IntentSpec("yes", ("yes", "yeah", "sure")),
    ),
)


def name_of(result: Intent | NoMatch) -> str | None:
    return result.name if isinstance(result, Intent) else None


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("送货上门", "door"),
        ("送 货 上 门", "door"),  # Vosk spacing
        ("送货上们", "door"),  # homophone character
        ("宋货上门", "door"),
        ("送货上面", "door"),  # near-homophone, fuzzy on pinyin
        ("嗯，那个，送到家吧", "door"),  # fillers and particle
        ("送到家里", "door"),
        ("家里没人放门口", "door"),  # 没人 does not negate 放门口
        ("要不送货上门吧", "door"),  # 要不 = "how about", not a negation
        ("能不能送到家", "door"),  # A-not-A question
        ("放驿站不方便，送到家吧", "door"),  # the negated option is dropped, the other wins
        ("放驿站", "station"),
        ("放一站吧", "station"),  # 驿站 heard as 一站
        ("一站", "station"),
        ("嗯那个就是放驿站吧", "station"),
        ("我不在家放驿站", "station"),  # 不 negates 在家, not 放驿站
        ("驿站就行", "station"),
        ("丰巢柜", "locker"),
        ("风潮", "locker"),  # 丰巢 heard as 风潮
        ("放快递柜里", "locker"),
        ("那就改天吧", "another_time"),
        ("转 人工", "agent"),
        ("我要找人工客服", "agent"),
        ("没 听 清", "repeat"),
        ("你说什么我没听清楚", "repeat"),
        ("不要再打了", "stop_calling"),  # the phrase's own negation matches normally
        ("以后别再打了", "stop_calling"),
        ("这个不是我的", "not_mine"),
    ],
)
def test_zh_matches(text: str, intent: str) -> None:
    result = match(text, ZH, now=NOW)
    assert isinstance(result, Intent), result
    assert result.name == intent
    assert result.text == text
    assert result.source == "speech"
    assert 0.72 <= result.confidence <= 1.0


@pytest.mark.parametrize(
    "text",
    [
        "不要送货上门",
        "不用放驿站",
        "别放驿站",
        "放驿站不行",
        "快递柜不方便",
        "不要放快递柜",
        "快递员",  # shares 快递 with 快递柜 but is something else
        "快递到了吗",
        "今天天气不错",
        "什么",
        "",
        "嗯",
    ],
)
def test_zh_no_match(text: str) -> None:
    assert isinstance(match(text, ZH, now=NOW), NoMatch)


def test_intent_slots_come_from_the_same_utterance() -> None:
    result = match("明天 下午 三 点 再送", ZH, now=NOW)
    assert isinstance(result, Intent)
    assert result.name == "another_time"
    assert result.slots == {"when": {"date": "2024-06-13", "time": "15:00"}}
    plain = match("改天吧", ZH, now=NOW)
    assert isinstance(plain, Intent)
    assert plain.slots == {}  # nothing said, nothing invented


def test_ambiguous_answer_is_no_match_naming_the_best() -> None:
    result = match("放门口还是放驿站", ZH, now=NOW)
    assert isinstance(result, NoMatch)
    assert result.best in {"door", "station"}
    assert result.score >= 0.9


def test_more_specific_overlapping_phrase_wins() -> None:
    exp = Expectation(intents=(IntentSpec("cancel", ("取消",)), IntentSpec("cancel_order", ("取消订单",))))
    result = match("取消订单", exp)
    assert isinstance(result, Intent)
    assert result.name == "cancel_order"


def test_single_character_phrases_never_match_inside_words() -> None:
    exp = Expectation(intents=(IntentSpec("yes", ("是", "对", "好的")), IntentSpec("no", ("不是", "不对"))))
    assert name_of(match("是", exp)) == "yes"
    assert name_of(match("对对对", exp)) == "yes"
    assert name_of(match("好的 好的", exp)) == "yes"
    assert name_of(match("不是", exp)) == "no"
    assert name_of(match("不 是", exp)) == "no"  # whole token, but negated for "yes"
    assert name_of(match("但是", exp)) is None
    assert name_of(match("是非", exp)) is None
    assert name_of(match("市", exp)) is None  # homophone of 是: single characters are never fuzzy
    assert name_of(match("二十五号", exp)) is None  # 号 sounds like 好


def test_nomatch_reports_best_candidate_and_score() -> None:
    result = match("上门", ZH)
    assert isinstance(result, NoMatch)
    assert result.best == "door"
    assert 0 < result.score < 0.72


@pytest.mark.parametrize(
    ("text", "intent"),
    [
        ("Um, leave it at the door please", "door"),
        ("deliver to my dour", "door"),  # ASR misspelling
        ("I'm not home so leave it at the door", "door"),  # "not" belongs to another clause
        ("the pickup station", "station"),
        ("pick up station", "station"),
        ("collection points", "station"),
        ("parcel lockers", "locker"),
        ("I want to talk to a human", "agent"),
        ("operater", "agent"),
        ("say that again", "repeat"),
        ("yes please", "yes"),
        ("Yeah.", "yes"),
    ],
)
def test_en_matches(text: str, intent: str) -> None:
    assert name_of(match(text, EN)) == intent


@pytest.mark.parametrize(
    "text", ["don't leave it at the door", "no, not the locker", "yesterday", "door or locker", "hello there"]
)
def test_en_no_match(text: str) -> None:
    assert isinstance(match(text, EN), NoMatch)


def test_en_slots() -> None:
    result = match("could you reschedule to next monday at 3 pm", EN, now=NOW)
    assert isinstance(result, Intent)
    assert result.name == "another_time"
    assert result.slots == {"when": {"date": "2024-06-17", "time": "15:00"}}


def test_korean_exact_and_fuzzy() -> None:
    ko = Expectation(
        language="ko-KR",
        intents=(IntentSpec("door", ("문 앞에 놔 주세요", "문앞")), IntentSpec("locker", ("택배함",)),
                 IntentSpec("yes", ("네", "예"))),
    )
    assert name_of(match("문 앞에 놔주세요", ko)) == "door"
    assert name_of(match("택배함이요", ko)) == "locker"
    assert name_of(match("택배암", ko)) == "locker"  # one consonant misheard
    assert name_of(match("네네", ko)) == "yes"
    assert name_of(match("택배함 말고", ko)) is None  # "not the locker"
    assert name_of(match("안녕하세요", ko)) is None


PHONE = Expectation(intents=ZH_INTENTS, capture=SlotSpec("phone", "phone"))


def test_capture_gives_captured_intent() -> None:
    result = match("我的手机号是 幺三八 一二三四 五六七八", PHONE)
    assert isinstance(result, Intent)
    assert result.name == CAPTURED
    assert result.slots == {"phone": "13812345678"}
    assert result.source == "speech"


def test_strong_named_intent_beats_capture() -> None:
    assert name_of(match("转人工", PHONE)) == "agent"
    yes_no = Expectation(intents=ZH_INTENTS, capture=SlotSpec("ok", "yes_no"))
    assert name_of(match("我要转人工", yes_no)) == "agent"  # 要 would read as yes
    captured = match("好的没问题", yes_no)
    assert isinstance(captured, Intent)
    assert captured.slots == {"ok": True}


def test_capture_without_value_falls_back_to_nomatch() -> None:
    result = match("一二三", PHONE)
    assert isinstance(result, NoMatch)


def test_dtmf() -> None:
    agent = match_dtmf("0", PHONE)
    assert isinstance(agent, Intent)
    assert (agent.name, agent.source, agent.confidence) == ("agent", "dtmf", 1.0)
    phone = match_dtmf("13812345678#", PHONE)
    assert isinstance(phone, Intent)
    assert phone.slots == {"phone": "13812345678"}
    assert phone.source == "dtmf"
    bad = match_dtmf("123#", PHONE)
    assert isinstance(bad, NoMatch)
    assert bad.source == "dtmf"
    digits = Expectation(intents=(), capture=SlotSpec("code", "digits"))
    assert match_dtmf("0123#", digits) == Intent(
        name=CAPTURED, confidence=1.0, text="0123#", slots={"code": "0123"}, source="dtmf")
    assert isinstance(match_dtmf("5", ZH), NoMatch)
    assert isinstance(match_dtmf("#", digits), NoMatch)


def test_grammar_contents() -> None:
    phrases = grammar(Expectation(intents=ZH_INTENTS, capture=SlotSpec("when", "datetime")))
    assert phrases[-1] == "[unk]"
    assert len(phrases) == len(set(phrases))
    for word in ("送货上门", "放驿站", "转人工", "不要再打了", "明天", "下午", "点", "半", "幺", "两", "九"):
        assert word in phrases
    assert "送 货 上 门" not in phrases
    assert grammar(Expectation(intents=ZH_INTENTS)) == grammar(Expectation(intents=ZH_INTENTS))
    en = grammar(Expectation(language="en-US", intents=EN.intents, capture=SlotSpec("n", "digits")))
    assert {"leave it at the door", "zero", "nine", "[unk]"} <= set(en)
    yes_no = grammar(Expectation(intents=(), capture=SlotSpec("ok", "yes_no")))
    assert {"是的", "不是", "[unk]"} <= set(yes_no)


def test_grammar_normalises_phrases() -> None:
    exp = Expectation(language="en-US", intents=(IntentSpec("x", ("Leave it, please!", "leave it please")),))
    assert grammar(exp) == ("leave it please", "[unk]")


def test_very_long_input_is_bounded_not_rejected() -> None:
    result = match("送货上门" + "啊哈" * 20000, ZH)
    assert isinstance(result, Intent)
    assert result.name == "door"
    assert isinstance(match("x" * 100000, EN), NoMatch)


def test_a_sign_off_said_with_a_choice_yields_to_the_choice():
    """"放驿站吧，再见" means the station; the sign-off wins only when it is all that was said."""
    from voicebot.intent import Expectation, IntentSpec, match

    def expect(yields: bool) -> Expectation:
        return Expectation(intents=(IntentSpec("station", ("放驿站", "驿站")), IntentSpec("door", ("送货上门",)),
                                    IntentSpec("goodbye", ("再见", "拜拜"), yields=yields)), language="zh-CN")

    assert match("放驿站吧再见", expect(True)).name == "station"
    assert match("送货上门吧，拜拜", expect(True)).name == "door"
    assert match("好的再见", expect(True)).name == "goodbye"
    assert type(match("放驿站吧再见", expect(False))).__name__ == "NoMatch"  # without the flag: a tie
    english = Expectation(intents=(IntentSpec("station", ("station",)),
                                   IntentSpec("goodbye", ("bye", "goodbye"), yields=True)), language="en-US")
    assert match("station please, bye", english).name == "station"
