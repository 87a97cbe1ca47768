"""The call record: masking of phone numbers and the JSON round trip."""

from __future__ import annotations

import json

import pytest

from voicebot.record import CallRecord, Turn, mask_number


@pytest.mark.parametrize(
    ("number", "masked"),
    [
        ("13812345678", "138****5678"),
        ("+86 138-1234-5678", "+86 138-****-5678"),
        ("+8613812345678", "+86138****5678"),
        ("010-62345678", "010-****5678"),
        ("62345678", "****5678"),
        ("12345", "*****"),
        ("", ""),
    ],
)
def test_mask_number_hides_the_identifying_digits(number, masked):
    """The middle of a mobile number and all but the last four of a short one are hidden."""
    assert mask_number(number) == masked


def test_record_round_trips_through_json():
    """to_dict/from_dict (via JSON, as the store and MQTT carry it) give the same record back."""
    record = CallRecord(call_id="c1", plan="p", plan_version="1+abc", language="zh-CN", caller="138****5678",
                        variables={"name": "王"}, outcome="door_delivery",
                        turns=[Turn(index=0, state="ask", prompt="您好", heard="送货上门", intent="door",
                                    slots={"when": {"date": "2026-11-24", "time": None}}, reply_latency=0.01)])
    again = CallRecord.from_dict(json.loads(json.dumps(record.to_dict(), ensure_ascii=False)))
    assert again == record
    assert isinstance(again.turns[0], Turn)
