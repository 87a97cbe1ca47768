"""The built-in SQLite services: parcels file loading, lookups, ticket and booking numbering, schema versions."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
from datetime import UTC, datetime, timedelta

import pytest
from conftest import PLANS

from voicebot.services import MIGRATIONS, SCHEMA_VERSION, ServiceError, ServiceNotFound, SqliteServices, read_parcels

PARCELS = PLANS / "data" / "parcels.csv"
NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def test_sample_parcels_file_parses():
    rows = read_parcels(PARCELS)
    assert len(rows) == 12
    assert {r.status for r in rows} == {"in_transit", "out_for_delivery", "delivered", "at_station", "exception"}


def test_json_parcels_file(tmp_path):
    path = tmp_path / "p.json"
    path.write_text(json.dumps([{"tracking_number": "SF000000000001", "phone": "13800000000", "status": "delivered"}]))
    [row] = read_parcels(path)
    assert row.tracking_number == "SF000000000001" and row.location == ""


@pytest.mark.parametrize(
    ("name", "content", "message"),
    [
        ("p.csv", "tracking_number,phone,status\nSF1,13800000000,delivered\n", "row 2: tracking_number"),
        ("p.csv", "tracking_number,phone,status\n1234567890,13800000000,lost_in_space\n", "row 2: status"),
        ("p.json", '[{"tracking_number": "1234567890", "status": "delivered"}]', "row 1: phone: Field required"),
        ("p.json", "{not json", "p.json:1: not valid JSON"),
        ("p.json", '{"a": 1}', "expected a JSON list"),
        ("p.txt", "x", "must be a .csv or .json file"),
    ],
)
def test_bad_parcels_files_name_the_row(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content, encoding="utf-8")
    with pytest.raises(ServiceError) as info:
        read_parcels(path)
    assert message in info.value.message and info.value.code == "parcels_file"


def test_missing_parcels_file(tmp_path):
    with pytest.raises(ServiceError, match="cannot read parcels"):
        read_parcels(tmp_path / "nope.csv")


@pytest.fixture
async def services(tmp_path):
    async with SqliteServices(tmp_path / "s.db", parcels=PARCELS, clock=lambda: NOW) as svc:
        yield svc


async def test_lookup_by_tracking_number_and_by_phone(services):
    found = await services.invoke("parcels.lookup", {"tracking_number": "sf323456789015"})
    assert found["status"] == "at_station" and found["station"] == "菜鸟驿站科技园店" and found["count"] == "1"
    newest = await services.invoke("parcels.lookup", {"phone": "138 1234 5678"})
    assert newest["tracking_number"] == "SF123456789012" and newest["count"] == "2" and newest["tail"] == "9012"
    assert "phone" not in newest  # a lookup never reads the recipient's number back out


async def test_lookup_errors(services):
    with pytest.raises(ServiceNotFound):
        await services.invoke("parcels.lookup", {"tracking_number": "SF999999999999"})
    with pytest.raises(ServiceNotFound, match=r"138\*\*\*\*0000"):
        await services.invoke("parcels.lookup", {"phone": "13800000000"})
    with pytest.raises(ServiceError) as info:
        await services.invoke("parcels.lookup", {})
    assert info.value.code == "service_args"
    with pytest.raises(ServiceError) as info:
        await services.invoke("parcels.delete", {})
    assert info.value.code == "unknown_service" and "parcels.lookup" in info.value.message


async def test_ticket_numbers_count_per_day_and_survive_a_reopen(tmp_path, caplog):
    clock = [NOW]
    path = tmp_path / "s.db"
    args = {"category": "delay", "details": "还没到", "callback_number": "138-1234-5678"}
    caplog.set_level(logging.INFO, logger="voicebot.services")
    async with SqliteServices(path, clock=lambda: clock[0]) as svc:
        # Concurrent calls: the number and its row are one transaction, so no two tickets share a number.
        made = await asyncio.gather(*(svc.invoke("tickets.create", args, call_id=f"c{i}") for i in range(3)))
    assert sorted(m["id"] for m in made) == ["T20261123-0001", "T20261123-0002", "T20261123-0003"]
    assert {m["digits"] for m in made} >= {"202611230001"}
    assert "13812345678" not in caplog.text and "138****5678" in caplog.text
    clock[0] = NOW + timedelta(days=1)
    async with SqliteServices(path, clock=lambda: clock[0]) as svc:
        assert (await svc.invoke("tickets.create", args))["id"] == "T20261124-0001"
        rows = await svc.query("SELECT callback_number, call_id FROM tickets ORDER BY ticket_id")
    assert rows[0] == ("13812345678", "c0") and len(rows) == 4


SPELLINGS = ("+8613912345678", "008613912345678", "13912345678")


@pytest.mark.parametrize("stored", SPELLINGS)
@pytest.mark.parametrize("asked", [*SPELLINGS, "+86 139-1234-5678"])
async def test_lookup_by_phone_ignores_how_the_country_code_is_written(tmp_path, stored, asked):
    path = tmp_path / "p.csv"
    path.write_text(f"tracking_number,phone,status\nSF900000000001,{stored},in_transit\n"
                    "SF900000000002,13912345679,delivered\n", encoding="utf-8")
    async with SqliteServices(tmp_path / "s.db", parcels=path) as svc:
        found = await svc.invoke("parcels.lookup", {"phone": asked})
        assert found["tracking_number"] == "SF900000000001" and found["count"] == "1"
        with pytest.raises(ServiceError, match="needs tracking_number or phone"):
            await svc.invoke("parcels.lookup", {"phone": "no digits"})


async def test_a_version_1_database_is_migrated_and_its_parcels_found_by_phone(tmp_path):
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    for sql in MIGRATIONS[0]:
        conn.execute(sql)
    conn.execute("INSERT INTO parcels VALUES ('SF900000000003', '+8613912345678', 'delivered', '', '', '', '', '', '')")
    conn.execute("PRAGMA user_version = 1")
    conn.commit()
    conn.close()
    async with SqliteServices(path) as svc:
        assert (await svc.invoke("parcels.lookup", {"phone": "13912345678"}))["tracking_number"] == "SF900000000003"
        assert await svc.query("PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 2


async def test_ticket_and_booking_need_their_fields(services):
    with pytest.raises(ServiceError, match="category and callback_number"):
        await services.invoke("tickets.create", {"category": "delay"})
    with pytest.raises(ServiceError, match="address and time"):
        await services.invoke("bookings.create", {"address": "x"})
    booked = await services.invoke("bookings.create", {"address": "建国路88号", "time": "2026-11-24 15:00",
                                                       "phone": "13812345678"}, call_id="c9")
    assert booked == {"id": "B20261123-0001", "digits": "202611230001"}


async def test_reloading_parcels_replaces_by_tracking_number(tmp_path):
    path = tmp_path / "p.csv"
    path.write_text("tracking_number,phone,status\n1234567890,13800000000,in_transit\n", encoding="utf-8")
    async with SqliteServices(tmp_path / "s.db", parcels=path) as svc:
        pass
    path.write_text("tracking_number,phone,status\n1234567890,13800000000,delivered\n", encoding="utf-8")
    async with SqliteServices(tmp_path / "s.db", parcels=path) as svc:
        assert (await svc.invoke("parcels.lookup", {"tracking_number": "1234567890"}))["status"] == "delivered"
        assert await svc.query("SELECT COUNT(*) FROM parcels") == [(1,)]


async def test_a_newer_schema_is_refused_and_closed_services_say_so(tmp_path):
    path = tmp_path / "s.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    conn.close()
    with pytest.raises(ServiceError, match="newer than"):
        await SqliteServices(path).open()
    svc = SqliteServices(tmp_path / "other.db")
    with pytest.raises(ServiceError, match="not open"):
        await svc.invoke("parcels.lookup", {"tracking_number": "1234567890"})
