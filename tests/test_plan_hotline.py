"""The inbound hotline plan: every outcome reached by a call driven by recorded caller WAVs and keys."""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
from collections.abc import Mapping
from datetime import UTC, datetime

import pytest
from conftest import PLANS, REPO, fixture_entry, scripted_caller

from voicebot.events import Error, Invoke, Say, ServiceResult, Transfer
from voicebot.services import ServiceError, SqliteServices
from voicebot.simulate import simulate

HOTLINE = PLANS / "hotline.yaml"
PARCELS = PLANS / "data" / "parcels.csv"
OPEN = datetime(2026, 11, 23, 2, 0, tzinfo=UTC)  # Monday 10:00 in Shanghai
CLOSED = datetime(2026, 11, 23, 15, 0, tzinfo=UTC)  # Monday 23:00 in Shanghai
SATURDAY_EVENING = datetime(2026, 11, 28, 10, 30, tzinfo=UTC)  # 18:30: open on weekdays, closed at weekends


@pytest.fixture
async def services(tmp_path):
    async with SqliteServices(tmp_path / "services.db", parcels=PARCELS, clock=lambda: OPEN) as svc:
        yield svc


async def call(settings, script: list[str], *, services, language="zh-CN", clock=OPEN, events=None):
    steps, recognizer = scripted_caller(language, script)
    return await simulate(plan=HOTLINE, steps=steps, variables={}, settings=settings,
                          emit=(events if events is not None else []).append, language=language,
                          recognizer=recognizer, clock=lambda: clock, services=services)


def said(events: list) -> str:
    return " | ".join(e.text for e in events if isinstance(e, Say))


async def test_tracking_by_number_reads_back_confirms_and_reads_the_status(settings, services):
    events: list = []
    record = await call(settings, ["keys:1", "hl_tracking_number", "yes", "no"], services=services, events=events)
    assert record.outcome == "tracked"
    assert record.variables["in_business_hours"] == "yes"
    assert record.variables["tracking_number"] == "1234567890"
    text = said(events)
    assert "欢迎致电" in text and "非工作时间" not in text
    assert "您的运单号是1 2 3 4 5 6 7 8 9 0，对吗" in text
    assert "正在派送中，由南京鼓楼营业部派送" in text
    assert [t.state for t in record.turns if t.intent] == ["main_menu", "ask_tracking", "confirm_tracking",
                                                           "anything_else"]


async def test_tracking_by_phone_a_no_asks_again(settings, services):
    """A wrong read-back is answered no: the number is asked again, then confirmed and looked up."""
    events: list = []
    script = ["keys:1", "keys:9", "dtmf_phone", "no", "keys:13812345678#", "yes", "no"]
    record = await call(settings, script, services=services, events=events)
    assert record.outcome == "tracked"
    text = said(events)
    assert text.count("手机号是1 3 8 1 2 3 4 5 6 7 8，对吗") == 2
    assert "这个手机号下有2个快递，最近的一个尾号是9 0 1 2" in text
    assert [t.state for t in record.turns if t.intent].count("ask_phone") == 2
    # The phone number is personal: masked in the stored record, also where it was read out digit by digit.
    assert record.variables["lookup_phone"] == "138****5678"
    assert all("1 3 8 1 2 3 4 5 6 7 8" not in t.prompt for t in record.turns)


async def test_unknown_tracking_number_keyed_in(settings, services):
    record = await call(settings, ["keys:1", "keys:9999999999#", "yes", "no"], services=services)
    assert record.outcome == "tracking_not_found"
    assert record.variables["tracking_number"] == "9999999999"


async def test_complaint_creates_a_ticket_row_and_reads_its_number(settings, services):
    events: list = []
    record = await call(settings, ["complaint", "keys:1", "hl_details", "dtmf_phone", "yes", "no"],
                        services=services, events=events)
    assert record.outcome == "ticket_created"
    rows = await services.query("SELECT ticket_id, category, details, callback_number, call_id FROM tickets")
    assert rows == [("T20261123-0001", "delay", "还没到", "13812345678", record.call_id)]
    assert "工单号是2 0 2 6 1 1 2 3 0 0 0 1" in said(events)
    assert record.variables["ticket_id"] == "T20261123-0001"
    # Events leave the process (MQTT): the callback number in the service call is masked there.
    invoke = next(e for e in events if isinstance(e, Invoke))
    assert invoke.service == "tickets.create" and invoke.args["callback_number"] == "138****5678"
    result = next(e for e in events if isinstance(e, ServiceResult))
    assert result.status == "ok" and result.values["id"] == "T20261123-0001"


async def test_pickup_booking_creates_a_booking_row(settings, services):
    events: list = []
    # The address is typed: the fixture set has no recorded address (it must stay small).
    script = ["keys:3", "say:建国路八十八号", "another_time", "dtmf_phone", "yes", "no"]
    record = await call(settings, script, services=services, events=events)
    assert record.outcome == "pickup_booked"
    rows = await services.query("SELECT booking_id, address, pickup_time, phone, call_id FROM bookings")
    assert rows == [("B20261123-0001", "建国路八十八号", "2026-11-24 15:00", "13812345678", record.call_id)]
    assert "2026-11-24 15:00到建国路八十八号上门取件" in said(events)


async def test_faq_answer(settings, services):
    events: list = []
    record = await call(settings, ["keys:4", "keys:2", "no"], services=services, events=events)
    assert record.outcome == "faq_answered"
    assert "首重一公斤十二元起" in said(events)


# The most common ways callers put it in the main menu: typed text through the real matcher.
@pytest.mark.parametrize(
    ("language", "text", "intent", "state"),
    [
        ("zh-CN", "查一下我的快递", "track", "ask_tracking"),
        ("zh-CN", "我的快递怎么还没到", "track", "ask_tracking"),
        ("zh-CN", "我要寄个快递", "pickup", "pickup_address"),
        ("zh-CN", "我的快递丢了", "lost_parcel", "complaint_details"),
        ("zh-CN", "我想问一下运费", "ask_fees", "anything_else"),
        ("en-US", "where is my parcel", "track", "ask_tracking"),
        ("en-US", "my package hasn't arrived", "track", "ask_tracking"),
        ("en-US", "I want to send a parcel", "pickup", "pickup_address"),
        ("en-US", "my parcel is lost", "lost_parcel", "complaint_details"),
        ("en-US", "how much does shipping cost", "ask_fees", "anything_else"),
    ],
)
@pytest.mark.parametrize("clock", [OPEN, CLOSED], ids=["open", "closed"])
async def test_common_requests_in_the_main_menu(settings, services, language, text, intent, state, clock):
    record = await call(settings, [f"say:{text}", "silence"], services=services, language=language, clock=clock)
    first = record.turns[0]
    assert first.state in ("main_menu", "main_menu_closed") and first.intent == intent
    assert first.next_state == state


async def test_a_lost_parcel_is_registered_as_a_complaint_without_asking_the_category(settings, services):
    events: list = []
    script = ["say:我的快递丢了", "say:三天前寄的一直没有消息", "keys:13812345678#", "say:是的", "no"]
    record = await call(settings, script, services=services, events=events)
    assert record.outcome == "ticket_created"
    assert "complaint_category" not in [t.state for t in record.turns]
    rows = await services.query("SELECT category, details, callback_number FROM tickets")
    assert rows == [("lost_or_damaged", "三天前寄的一直没有消息", "13812345678")]


async def test_a_fee_question_in_the_main_menu_is_answered_at_once(settings, services):
    events: list = []
    record = await call(settings, ["say:我想问一下运费", "no"], services=services, events=events)
    assert record.outcome == "faq_answered"
    assert "首重一公斤十二元起" in said(events) and "faq_menu" not in [t.state for t in record.turns]


async def test_tracking_by_phone_finds_parcels_stored_with_the_country_code(settings, tmp_path):
    parcels = tmp_path / "parcels.csv"
    parcels.write_text("tracking_number,phone,status,location\nSF900000000001,+8613912345678,in_transit,上海转运中心\n",
                       encoding="utf-8")
    async with SqliteServices(tmp_path / "s.db", parcels=parcels, clock=lambda: OPEN) as svc:
        record = await call(settings, ["keys:1", "keys:9", "keys:13912345678#", "yes", "no"], services=svc)
    assert record.outcome == "tracked"
    assert record.variables["parcel_tracking_number"] == "SF900000000001"


@pytest.mark.parametrize(
    ("script", "reason", "state"),
    [
        (["agent"], "caller_request", "main_menu"),
        (["keys:0"], "caller_request", "main_menu"),
        (["keys:1", "say:什么破快递，气死了"], "anger", "ask_tracking"),
        (["keys:1", "complaint"], "anger", "ask_tracking"),  # 投诉 outside the complaint flow
        (["weather", "weather"], "max_failures", "main_menu"),
    ],
)
async def test_transfers_in_business_hours_carry_context(settings, services, script, reason, state):
    events: list = []
    record = await call(settings, script, services=services, events=events)
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert (record.outcome, transfer.reason, transfer.target) == ("transferred", reason, "hotline_agents")
    assert transfer.context["plan"] == "hotline"
    assert transfer.context["variables"]["in_business_hours"] == "yes"
    assert [t.state for t in record.turns if t.intent][-1] == state
    heard = [line["text"] for line in transfer.context["transcript"] if line["speaker"] == "caller"]
    last = script[-1]
    assert heard[-1] == (last.split(":", 1)[1] if ":" in last else fixture_entry("zh-CN", last)["text"])


async def test_failures_over_several_states_escalate_to_a_human(settings, services):
    """Four misunderstandings in one call, never two in a row in one state: max_failures transfers."""
    script = ["weather", "keys:1", "weather", "hl_tracking_number", "weather", "weather"]
    events: list = []
    record = await call(settings, script, services=services, events=events)
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert transfer.reason == "max_failures" and record.outcome == "transferred"
    assert [t.intent for t in record.turns if t.intent].count("nomatch") == 4


async def test_complaint_words_inside_the_complaint_flow_are_the_complaint(settings, services):
    """投诉 and angry words while describing the problem are recorded, not a reason to transfer."""
    record = await call(settings, ["complaint", "keys:1", "complaint", "dtmf_phone", "yes", "no"],
                        services=services)
    assert record.outcome == "ticket_created" and record.transfer is None
    rows = await services.query("SELECT details FROM tickets")
    assert rows == [("我要投诉",)]


async def test_silence_escalates_to_a_polite_hangup(settings, services):
    record = await call(settings, ["silence", "silence"], services=services)
    assert record.outcome == "no_input"
    assert [t.intent for t in record.turns if t.intent] == ["noinput", "noinput"]


# --- outside business hours ------------------------------------------------------------------------


async def test_outside_hours_greeting_and_self_service_goodbye(settings, services):
    events: list = []
    record = await call(settings, ["goodbye"], services=services, clock=CLOSED, events=events)
    assert record.outcome == "closed_hours_self_service"
    assert record.variables["in_business_hours"] == "no"
    assert "现在是非工作时间" in said(events) and "登记回电请按5" in said(events)


async def test_outside_hours_agent_request_offers_a_callback_instead(settings, services):
    events: list = []
    record = await call(settings, ["agent", "yes", "dtmf_phone", "yes"], services=services, clock=CLOSED,
                        events=events)
    assert record.outcome == "callback_requested" and record.transfer is None
    assert not any(isinstance(e, Transfer) for e in events)
    rows = await services.query("SELECT ticket_id, category, callback_number FROM tickets")
    assert rows == [("T20261123-0001", "callback", "13812345678")]
    assert "已为您登记回电，登记号是2 0 2 6 1 1 2 3 0 0 0 1" in said(events)


async def test_outside_hours_anger_apologises_and_declined_callback_is_self_service(settings, services):
    events: list = []
    record = await call(settings, ["keys:1", "complaint", "no", "no"], services=services, clock=CLOSED,
                        events=events)
    assert record.outcome == "closed_hours_self_service" and record.transfer is None
    assert "非常抱歉给您带来不好的体验" in said(events)


async def test_outside_hours_repeated_nomatch_hangs_up(settings, services):
    record = await call(settings, ["weather", "weather"], services=services, clock=CLOSED)
    assert record.outcome == "input_failed"


async def test_weekend_hours_differ_from_weekdays(settings, services):
    """Saturday 18:30 in Shanghai is after the weekend hours (10-18) though inside weekday hours."""
    record = await call(settings, ["keys:0", "no", "no"], services=services, clock=SATURDAY_EVENING)
    assert record.variables["in_business_hours"] == "no" and record.transfer is None


async def test_self_service_tracking_works_outside_hours(settings, services):
    record = await call(settings, ["keys:1", "hl_tracking_number", "yes", "no"], services=services, clock=CLOSED)
    assert record.outcome == "tracked"


# --- services missing, failing or slow ---------------------------------------------------------------


class _FailingServices:
    """A real (if useless) services object: every call fails the way a broken back end does."""

    def __init__(self, error: Exception) -> None:
        self.error = error

    async def invoke(self, service: str, args: Mapping[str, str], *, call_id: str = "") -> Mapping[str, str]:
        raise self.error


class _SlowServices:
    """A back end that answers only after `delay` seconds."""

    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def invoke(self, service: str, args: Mapping[str, str], *, call_id: str = "") -> Mapping[str, str]:
        await asyncio.sleep(self.delay)
        return {"status": "delivered"}


@pytest.mark.parametrize(
    ("svc", "code"),
    [
        (None, "no_services"),
        (_FailingServices(ServiceError("database is locked")), "service_error"),
        (_FailingServices(RuntimeError("bug in a custom service")), "service_failed"),
    ],
)
async def test_service_failure_in_hours_transfers_with_the_reason(settings, svc, code):
    events: list = []
    record = await call(settings, ["keys:1", "hl_tracking_number", "yes"], services=svc, events=events)
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert record.outcome == "transferred" and transfer.reason == "service_error"
    assert [e.code for e in events if isinstance(e, Error)] == [code]
    assert "系统暂时无法处理" in said(events)


async def test_service_failure_outside_hours_offers_a_callback(settings):
    record = await call(settings, ["keys:1", "hl_tracking_number", "yes", "no", "no"], services=None, clock=CLOSED)
    assert record.outcome == "closed_hours_self_service" and record.transfer is None


async def test_slow_service_times_out_into_the_error_branch(settings, tmp_path):
    """A back end slower than the invoke's timeout does not hang the call: the error branch runs."""
    plan = tmp_path / "hotline.yaml"
    plan.write_text(HOTLINE.read_text(encoding="utf-8").replace("      into: parcel\n",
                                                                "      into: parcel\n      timeout: 0.3\n", 1),
                    encoding="utf-8")
    events: list = []
    steps, recognizer = scripted_caller("zh-CN", ["keys:1", "hl_tracking_number", "yes"])
    started = asyncio.get_running_loop().time()
    record = await simulate(plan=plan, steps=steps, variables={}, settings=settings, emit=events.append,
                            recognizer=recognizer, clock=lambda: OPEN, services=_SlowServices(30))
    assert asyncio.get_running_loop().time() - started < 20
    assert record.outcome == "transferred" and record.transfer["reason"] == "service_error"
    error = next(e for e in events if isinstance(e, Error))
    assert error.code == "service_timeout" and "0.3 s" in error.message


# --- en-US ---------------------------------------------------------------------------------------------


async def test_english_tracking(settings, services):
    events: list = []
    record = await call(settings, ["keys:1", "keys:1234567890#", "yes", "no"], services=services,
                        language="en-US", events=events)
    assert record.outcome == "tracked"
    text = said(events)
    assert "Your tracking number is 1 2 3 4 5 6 7 8 9 0" in text
    assert "out for delivery from the Nanjing Gulou depot" in text


async def test_english_complaint_ticket(settings, services):
    record = await call(settings, ["keys:2", "keys:1", "say:still not here", "dtmf_phone", "yes", "no"],
                        services=services, language="en-US")
    assert record.outcome == "ticket_created"
    rows = await services.query("SELECT category, details FROM tickets")
    assert rows == [("delay", "still not here")]


async def test_english_anger_and_agent_request_transfer(settings, services):
    events: list = []
    record = await call(settings, ["say:this is terrible"], services=services, language="en-US", events=events)
    transfer = next(e for e in events if isinstance(e, Transfer))
    assert record.outcome == "transferred" and transfer.reason == "anger"
    assert "I am very sorry about your experience" in said(events)
    record = await call(settings, ["agent"], services=services, language="en-US")
    assert record.outcome == "transferred" and record.transfer["reason"] == "caller_request"


# --- the command line --------------------------------------------------------------------------------


def _cli(args: list[str], tmp_path) -> subprocess.CompletedProcess:
    env = {**os.environ, "HOME": str(tmp_path), "VOICEBOT_CACHE_DIR": str(tmp_path / "cache"),
           "VOICEBOT_DATA_DIR": str(tmp_path / "data"), "COLUMNS": "200"}
    return subprocess.run([sys.executable, "-m", "voicebot", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=240)


def test_cli_simulate_with_services_writes_the_ticket(tmp_path):
    """`voicebot simulate --parcels --services-db`: a typed complaint (at any hour) lands in the services file."""
    db = tmp_path / "services.db"
    answers = ["我要投诉", "快递延误了", "三天了还没到", "13812345678", "对的", "不用了"]
    done = _cli(["simulate", str(HOTLINE), "--parcels", str(PARCELS), "--services-db", str(db),
                 *[a for text in answers for a in ("--say", text)]], tmp_path)
    assert done.returncode == 0, done.stderr
    assert "service tickets.create: ok" in done.stdout and "outcome: ticket_created" in done.stdout
    rows = sqlite3.connect(db).execute("SELECT category, details, callback_number FROM tickets").fetchall()
    assert rows == [("delay", "三天了还没到", "13812345678")]


def test_cli_simulate_reports_a_bad_parcels_file(tmp_path):
    bad = tmp_path / "parcels.csv"
    bad.write_text("tracking_number,phone,status\nSF1,138,lost\n", encoding="utf-8")
    done = _cli(["simulate", str(HOTLINE), "--parcels", str(bad), "--say", "查快递"], tmp_path)
    assert done.returncode != 0
    assert "row 2: tracking_number" in done.stdout + done.stderr
