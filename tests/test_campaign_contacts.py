"""Campaign contacts: CSV and JSONL rows checked against the plan, every bad row named in one error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import PLANS

from voicebot.campaign.contacts import ContactsError, load_contacts, normalize_phone
from voicebot.dialog.load import load_plan
from voicebot.record import subscriber_key

PLAN = load_plan(PLANS / "pre_delivery.yaml").plan  # needs customer_name and tracking_tail; zh-CN and en-US
FULL = "13812345678"


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load_error(path: Path, **kwargs) -> str:
    with pytest.raises(ContactsError) as info:
        load_contacts(path, plan=PLAN, **kwargs)
    assert info.value.code == "contacts_invalid"
    return info.value.message


def test_csv_maps_columns_to_variables_and_reserved_columns(tmp_path):
    path = write(tmp_path, "list.csv",
                 "id, phone ,customer_name,tracking_tail,timezone,language,station_name\n"
                 "a1,+86 138 1234 5678,王先生,1234,,,\n"
                 "a2,415-555-0100,Ms Lee,0042,America/New_York,en-US,Main St station\n"
                 ",0086 139-0000-1111,李女士,9999,Asia/Shanghai,zh-CN,\n")
    first, second, third = load_contacts(path, plan=PLAN)
    assert (first.contact_id, first.row, first.phone, first.timezone, first.language) == (
        "a1", 2, "+8613812345678", "Asia/Shanghai", "")
    # Reserved columns are not variables; every other column is, kept as text (leading zeros survive).
    assert first.variables == {"customer_name": "王先生", "tracking_tail": "1234", "station_name": ""}
    assert second.phone == "4155550100" and second.timezone == "America/New_York" and second.language == "en-US"
    assert second.variables["tracking_tail"] == "0042" and second.variables["station_name"] == "Main St station"
    assert third.contact_id == "row4" and third.phone == "+8613900001111"  # no id: named by its line
    assert first.masked_phone == "+86138****5678"


def test_default_timezone_applies_to_rows_without_one(tmp_path):
    path = write(tmp_path, "list.csv", "phone,customer_name,tracking_tail\n13812345678,王先生,1234\n")
    (contact,) = load_contacts(path, plan=PLAN, default_timezone="Asia/Urumqi")
    assert contact.timezone == "Asia/Urumqi"
    with pytest.raises(ValueError, match="unknown time zone 'Mars/Base'"):
        load_contacts(path, plan=PLAN, default_timezone="Mars/Base")


def test_jsonl_rows_numbers_become_text_and_blank_lines_are_skipped(tmp_path):
    lines = [
        {"id": "j1", "phone": 13812345678, "customer_name": "王先生", "tracking_tail": "0007"},
        {"phone": "(415) 555.0100", "customer_name": "Ann", "tracking_tail": 42, "language": "en-US",
         "timezone": "America/Los_Angeles", "vip": True},
    ]
    path = write(tmp_path, "list.jsonl", json.dumps(lines[0], ensure_ascii=False) + "\n\n"
                 + json.dumps(lines[1]) + "\n")
    first, second = load_contacts(path, plan=PLAN)
    assert first.phone == FULL and first.variables["tracking_tail"] == "0007"
    assert (second.row, second.contact_id, second.phone) == (3, "row3", "4155550100")
    assert second.variables == {"customer_name": "Ann", "tracking_tail": 42, "vip": True}


@pytest.mark.parametrize(("raw", "normal"), [
    ("+86 138 1234 5678", "+8613812345678"),
    ("0086 138-1234-5678", "+8613812345678"),
    ("138-1234-5678", "13812345678"),
    ("(021) 6123.4567", "02161234567"),
    (" +1 (415) 555-0100 ", "+14155550100"),
])
def test_phone_normalisation(raw, normal):
    assert normalize_phone(raw) == normal


@pytest.mark.parametrize("raw", ["", "12", "138x1234", "++8613812345678", "1" * 21, "call me"])
def test_not_a_phone_number(raw):
    with pytest.raises(ValueError, match="is not a phone number"):
        normalize_phone(raw)


def test_subscriber_key_ignores_the_country_code():
    assert subscriber_key("+8613812345678") == subscriber_key("13812345678") == subscriber_key("0086 138 1234 5678")
    assert subscriber_key("+14155550100") == subscriber_key("4155550100")
    assert subscriber_key("13812345678") != subscriber_key("13812345679")


def test_every_bad_csv_row_is_listed_by_line_in_one_error(tmp_path):
    path = write(tmp_path, "bad.csv",
                 "id,phone,customer_name,tracking_tail,timezone,language\n"
                 "ok1,13812345678,王先生,1234,,\n"  # 2: fine
                 "m1,13812345679,,1234,,\n"  # 3: customer_name missing
                 "p1,1381234567x,王先生,1234,,\n"  # 4: not a phone number
                 "t1,13812345670,王先生,1234,Asia/Shangai,\n"  # 5: misspelt time zone
                 "l1,13812345671,王先生,1234,,ja-JP\n"  # 6: language the plan does not speak
                 "ok1,13812345672,王先生,1234,,\n"  # 7: duplicate id
                 "x1,13812345673,王先生,1234,,,extra\n"  # 8: one field too many
                 "f1,13812345674,王先生\n"  # 9: too few fields
                 "n1,,王先生,\n")  # 10: too few fields
    message = load_error(path)
    assert message.startswith("8 problem(s) in ") and "nothing was called" in message
    lines = message.splitlines()[1:]
    assert [line.split(":")[1] for line in lines] == ["3", "4", "5", "6", "7", "8", "9", "10"]
    assert "bad.csv:3: missing plan variable: customer_name" in message
    assert "bad.csv:4: phone: " in message and "is not a phone number" in message
    assert "bad.csv:5: timezone: unknown time zone 'Asia/Shangai'" in message
    assert "bad.csv:6: language: 'ja-JP' is not one of the plan's ['zh-CN', 'en-US']" in message
    assert "bad.csv:7: id 'ok1' already used on line 2" in message
    assert "bad.csv:8: 7 fields, but the header has 6" in message
    assert "bad.csv:9: fewer fields than the header's 6" in message


def test_one_row_with_several_problems_lists_each(tmp_path):
    path = write(tmp_path, "bad.csv", "phone,customer_name,tracking_tail,timezone\n,,,Nowhere/City\n")
    message = load_error(path)
    assert message.startswith("3 problem(s)")
    assert "bad.csv:2: phone: missing" in message
    assert "bad.csv:2: timezone: unknown time zone 'Nowhere/City'" in message
    assert "bad.csv:2: missing plan variables: customer_name, tracking_tail" in message


def test_bad_jsonl_lines_are_listed_by_line(tmp_path):
    good = json.dumps({"phone": FULL, "customer_name": "王", "tracking_tail": "1"}, ensure_ascii=False)
    path = write(tmp_path, "bad.jsonl", "\n".join([
        good,  # 1
        '{"phone": "13812345679", "customer_name": "王"',  # 2: cut off
        '["13812345670", "王", "1"]',  # 3: an array, not an object
        '"13812345670"',  # 4: a string
        '{"phone": "13812345671", "customer_name": {"first": "王"}, "tracking_tail": "1"}',  # 5: nested
        '{"phone": "13812345672", "customer_name": "王", "tracking_tail": "' + "9" * 2001 + '"}',  # 6: too long
    ]) + "\n")
    message = load_error(path)
    assert message.startswith("5 problem(s)")
    assert "bad.jsonl:2: not JSON (" in message
    assert "bad.jsonl:3: a line must be a JSON object" in message
    assert "bad.jsonl:4: a line must be a JSON object" in message
    assert "bad.jsonl:5: customer_name: must be text or a number, not dict" in message
    assert "bad.jsonl:6: tracking_tail: longer than 2000 characters" in message
    assert "bad.jsonl:1:" not in message


def test_long_error_lists_are_cut_with_a_count(tmp_path):
    rows = "".join(f"bad{i},王先生,1234\n" for i in range(30))
    message = load_error(write(tmp_path, "many.csv", "phone,customer_name,tracking_tail\n" + rows))
    assert message.startswith("30 problem(s)") and message.endswith("... and 10 more")
    assert "many.csv:21:" in message and "many.csv:22:" not in message


def test_error_messages_never_show_the_whole_number(tmp_path):
    # Unreadable cells are often two numbers run together: only the last four digits may show.
    path = write(tmp_path, "bad.csv", "phone,customer_name,tracking_tail\n"
                 f"{FULL}x,,1234\n+86 {FULL}99999999999,王,1\n{FULL};13900001111,王,1\n{FULL}\n")
    message = load_error(path)
    assert message.startswith("5 problem(s)")
    digits_only = "".join(ch for ch in message if ch.isdigit() or ch == "\n")
    assert FULL not in digits_only and "1234567" not in digits_only and "13900001111" not in digits_only
    assert "'*******5678x' is not a phone number" in message
    assert "'***********;*******1111' is not a phone number" in message
    assert "bad.csv:5: fewer fields" in message


def test_utf8_with_bom_reads_the_first_column(tmp_path):
    path = tmp_path / "excel.csv"
    path.write_bytes("phone,customer_name,tracking_tail\r\n13812345678,王先生,1234\r\n".encode("utf-8-sig"))
    (contact,) = load_contacts(path, plan=PLAN)
    assert contact.phone == FULL and contact.variables == {"customer_name": "王先生", "tracking_tail": "1234"}
    jsonl = tmp_path / "bom.jsonl"
    jsonl.write_bytes(('{"phone": "13812345678", "customer_name": "王", "tracking_tail": "1"}\n').encode("utf-8-sig"))
    assert load_contacts(jsonl, plan=PLAN)[0].phone == FULL


def test_quoted_field_with_newline_counts_lines(tmp_path):
    path = write(tmp_path, "multi.csv", 'phone,customer_name,tracking_tail\n13812345678,"王\n先生",1234\n'
                 "13812345679,,1234\n")
    message = load_error(path)
    assert "multi.csv:4: missing plan variable: customer_name" in message  # the quoted newline is line 3


def test_not_utf8_says_so(tmp_path):
    path = tmp_path / "gbk.csv"
    path.write_bytes("phone,customer_name,tracking_tail\n13812345678,王先生,1234\n".encode("gbk"))
    message = load_error(path)
    assert "not UTF-8 text (byte" in message and "save it as UTF-8" in message


@pytest.mark.parametrize(("name", "text"), [
    ("empty.csv", ""),
    ("header_only.csv", "phone,customer_name,tracking_tail\n"),
    ("blank.jsonl", "\n\n"),
])
def test_no_contacts_is_an_error(tmp_path, name, text):
    assert "no contacts" in load_error(write(tmp_path, name, text))


def test_missing_file_and_duplicate_header(tmp_path):
    assert "cannot read" in load_error(tmp_path / "absent.csv")
    message = load_error(write(tmp_path, "dup.csv", "phone,phone,customer_name\n1,2,3\n"))
    assert "dup.csv:1: duplicate column names in the header" in message


def test_no_phone_column_flags_every_row(tmp_path):
    message = load_error(write(tmp_path, "nophone.csv", "tel,customer_name,tracking_tail\n1381,王,1\n1382,李,2\n"))
    assert "nophone.csv:2: phone: missing" in message and "nophone.csv:3: phone: missing" in message


def test_a_json_array_file_is_refused_with_the_formats_that_work(tmp_path):
    path = tmp_path / "list.json"
    path.write_text('[{"phone": "13812345678"}]', encoding="utf-8")
    with pytest.raises(ContactsError, match=r"list.json:1: a .json file is not read: give CSV \(.csv\) or one"):
        load_contacts(path, plan=PLAN)
