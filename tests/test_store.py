"""CallStore against real SQLite files: round trips, queries, persistence, concurrency, bad input."""

from __future__ import annotations

import asyncio
import re
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from voicebot.errors import VoicebotError
from voicebot.record import CallRecord, Turn, mask_number
from voicebot.store import SCHEMA_VERSION, CallStore, CallSummary, StoreError


def make_record(call_id: str = "c1", *, turns: int = 2, outcome: str = "", plan: str = "delivery",
                started_at: str = "2025-01-02T09:00:00+08:00") -> CallRecord:
    record = CallRecord(
        call_id=call_id, plan=plan, plan_version="3", language="zh-CN", direction="outbound",
        caller=mask_number("13812345678"), variables={"name": "张三", "parcel": {"id": "SF123", "n": 2}},
        started_at=started_at, duration=12.5, outcome=outcome, ended_by="robot" if outcome else "",
        transfer={"queue": "售后", "context": ["转人工"]} if outcome == "transferred" else None,
    )
    for i in range(turns):
        record.turns.append(Turn(
            index=i, state=f"s{i}", prompt_id=f"p{i}", prompt="您好，请问是张三吗？", heard="是的，我是",
            confidence=0.87, source="speech", intent="affirm", intent_confidence=0.93,
            slots={"时间": "明天下午", "count": i, "nested": {"ok": True, "list": [1, 2.5, None]}},
            next_state=f"s{i + 1}", started_at=1.25 * i, speech_ended_at=1.25 * i + 0.8 if i else None,
            reply_latency=0.42 if i else None, barged_in=bool(i % 2),
            heard_prompt_until=0.7 if i % 2 else None,
        ))
    return record


async def test_round_trip_with_turns_and_unicode(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "dir" / "calls.db"
    async with CallStore(path) as store:
        record = make_record(turns=3, outcome="transferred")
        await store.save(record)
        got = await store.get("c1")
        assert await store.get("missing") is None
    assert got == record
    assert got is not record
    assert got.turns[1].slots["时间"] == "明天下午"
    assert got.turns[1].barged_in is True and got.turns[0].speech_ended_at is None
    assert got.caller == "138****5678"


async def test_resave_replaces_turns(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db") as store:
        record = make_record(turns=1)
        await store.save(record)
        record.turns.append(make_record(turns=2).turns[1])
        await store.save(record)
        record.outcome, record.ended_at = "completed", "2025-01-02T09:01:00+08:00"
        await store.save(record)
        got = await store.get("c1")
        summaries = await store.list()
    assert got == record
    assert [t.index for t in got.turns] == [0, 1]
    expected = CallSummary("c1", "delivery", record.started_at, 12.5, "completed", 2, "138****5678")
    assert summaries == [expected]
    with sqlite3.connect(tmp_path / "calls.db") as raw:
        assert raw.execute("SELECT COUNT(*) FROM turns").fetchone()[0] == 2


async def test_list_ordering_filters_and_limit(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db") as store:
        for i, (outcome, plan) in enumerate([("completed", "a"), ("transferred", "a"), ("completed", "b"),
                                             ("refused", "b"), ("completed", "a")]):
            await store.save(make_record(f"c{i}", turns=i, outcome=outcome, plan=plan,
                                         started_at=f"2025-01-0{i + 1}T10:00:00+08:00"))
        everything = await store.list()
        assert [s.call_id for s in everything] == ["c4", "c3", "c2", "c1", "c0"]
        assert [s.turns for s in everything] == [4, 3, 2, 1, 0]
        assert [s.call_id for s in await store.list(limit=2)] == ["c4", "c3"]
        assert [s.call_id for s in await store.list(outcome="completed")] == ["c4", "c2", "c0"]
        assert [s.call_id for s in await store.list(outcome="completed", plan="a")] == ["c4", "c0"]
        assert [s.call_id for s in await store.list(since="2025-01-03T00:00:00+08:00")] == ["c4", "c3", "c2"]
        assert await store.list(outcome="nope") == []
        for bad in (0, -1, 1001, 2.5, True):
            with pytest.raises(ValueError, match="limit"):
                await store.list(limit=bad)
        assert await store.outcome_counts() == {"completed": 3, "transferred": 1, "refused": 1}
        assert await store.outcome_counts(plan="b") == {"completed": 1, "refused": 1}
        assert await store.outcome_counts(plan="none") == {}


async def test_reopen_persists_and_does_not_rerun_migrations(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with CallStore(path) as store:
        await store.save(make_record("keep", turns=2, outcome="completed"))
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 1
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    # Migration 1 uses plain CREATE TABLE, so re-running it would fail on reopen.
    async with CallStore(path) as store:
        got = await store.get("keep")
    assert got == make_record("keep", turns=2, outcome="completed")


async def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with CallStore(path):
        pass
    with sqlite3.connect(path) as raw:
        raw.execute("PRAGMA user_version = 99")
    with pytest.raises(StoreError, match="schema version 99") as info:
        async with CallStore(path):
            pass
    assert info.value.code == "store"


async def test_two_stores_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    async with CallStore(path) as writer, CallStore(path) as reader:
        await writer.save(make_record("w1", outcome="completed"))
        assert await reader.get("w1") == make_record("w1", outcome="completed")
        await reader.save(make_record("r1"))
        assert {s.call_id for s in await writer.list()} == {"w1", "r1"}
        # Both writing at once: WAL plus the busy timeout serialize them without losing any.
        await asyncio.gather(*(s.save(make_record(f"x{i}")) for i in range(20) for s in (writer, reader)))
        assert len(await reader.list(limit=1000)) == 22


async def test_other_process_sees_saved_record(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    repo = Path(__file__).parents[1]
    script = textwrap.dedent(f"""
        import asyncio
        from voicebot.record import CallRecord
        from voicebot.store import CallStore
        async def main():
            async with CallStore({str(path)!r}) as store:
                await store.save(CallRecord(call_id="child", plan="p", plan_version="1", language="en-US",
                                            outcome="completed"))
                print((await store.get("parent")).variables["name"])
        asyncio.run(main())
    """)
    async with CallStore(path) as store:
        await store.save(make_record("parent"))
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", script, cwd=repo,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        out, err = await asyncio.wait_for(proc.communicate(), 30)
        assert proc.returncode == 0, err.decode()
        assert out.decode().strip() == "张三"
        child = await store.get("child")
    assert child is not None and child.outcome == "completed"


async def test_concurrent_saves_all_land(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db") as store:
        records = [make_record(f"c{i:02d}", turns=i % 5, outcome="completed") for i in range(50)]
        await asyncio.gather(*(store.save(r) for r in records))
        assert len(await store.list(limit=100)) == 50
        assert await store.outcome_counts() == {"completed": 50}
        for r in records[::7]:
            assert await store.get(r.call_id) == r


async def test_too_large_record_keeps_previous_version(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db") as store:
        record = make_record(turns=2)
        await store.save(record)
        record.turns[0].slots["blob"] = "话" * 2_000_000  # 6 MB of UTF-8
        record.outcome = "completed"
        with pytest.raises(VoicebotError, match="byte limit") as info:
            await store.save(record)
        assert info.value.code == "store_record_too_large"
        assert await store.get("c1") == make_record(turns=2)


async def test_failing_transaction_rolls_back(tmp_path: Path) -> None:
    async with CallStore(tmp_path / "calls.db") as store:
        await store.save(make_record(turns=2))
        broken = make_record(turns=3, outcome="completed")
        broken.turns[2].index = 1  # duplicate turn index violates the primary key mid-transaction
        with pytest.raises(StoreError, match=r"calls\.db") as info:
            await store.save(broken)
        assert info.value.code == "store"
        assert await store.get("c1") == make_record(turns=2)
        unserializable = make_record(turns=1)
        unserializable.turns[0].slots["bad"] = {1, 2}
        with pytest.raises(StoreError) as info:
            await store.save(unserializable)
        assert info.value.code == "store_record_invalid"
        assert await store.get("c1") == make_record(turns=2)
        await store.save(make_record(turns=4))  # the store still works after failures
        assert len((await store.get("c1")).turns) == 4


async def test_corrupt_file_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "calls.db"
    path.write_bytes(b"this is not an sqlite database, just text\n" * 200)
    with pytest.raises(StoreError, match=re.escape(str(path))) as info:
        async with CallStore(path):
            pass
    assert info.value.code == "store"
    assert path.read_bytes().startswith(b"this is not")  # left untouched
    with pytest.raises(StoreError, match=re.escape(str(tmp_path))):
        async with CallStore(tmp_path):  # a directory, not a file
            pass


async def test_use_outside_lifetime_is_refused(tmp_path: Path) -> None:
    store = CallStore(tmp_path / "calls.db")
    with pytest.raises(StoreError, match="not open"):
        await store.get("c1")
    async with store:
        await store.save(make_record())
    await store.aclose()  # second close is harmless
    with pytest.raises(StoreError, match="not open"):
        await store.save(make_record())


async def test_event_loop_keeps_running_during_big_save(tmp_path: Path) -> None:
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    async with CallStore(tmp_path / "calls.db") as store:
        big = make_record("big", turns=3000)
        task = asyncio.create_task(ticker())
        await asyncio.sleep(0)
        before = ticks
        await store.save(big)
        during = ticks - before
        task.cancel()
        # A save run on the loop would finish without yielding, leaving the ticker at zero.
        assert during >= 3
        assert len((await store.get("big")).turns) == 3000


async def test_memory_path_works() -> None:
    async with CallStore(":memory:") as store:
        await store.save(make_record())
        assert (await store.list())[0].call_id == "c1"
