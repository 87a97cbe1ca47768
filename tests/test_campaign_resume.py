"""Kill a running campaign with SIGKILL, run it again: nobody is called twice and no stored result is lost."""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import PLANS, REPO

from voicebot.campaign.rules import RETRYABLE_DEFAULT

CONTACTS = 60


def _command(contacts: Path, db: Path) -> list[str]:
    return [sys.executable, "-m", "voicebot", "campaign", "run", str(contacts), "--plan",
            str(PLANS / "pre_delivery.yaml"), "--db", str(db), "--window", "00:00-24:00", "--cps", "50",
            "--concurrency", "8", "--retry-delay", "0s", "--time-scale", "0.03", "--seed", "7", "--no-progress"]


def _attempts(db: Path) -> dict[int, tuple]:
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = conn.execute("SELECT id, contact_id, n, status, outcome, call_id, ended_at FROM attempts").fetchall()
    finally:
        conn.close()
    return {r[0]: r[1:] for r in rows}


def test_sigkill_then_rerun_calls_nobody_twice_and_keeps_every_result(tmp_path):
    contacts = tmp_path / "contacts.csv"
    contacts.write_text("phone,customer_name,tracking_tail\n" + "".join(
        f"1390000{i:04d},客户{i},{i:04d}\n" for i in range(CONTACTS)), encoding="utf-8")
    db = tmp_path / "campaigns.db"
    env = {**os.environ, "HOME": str(tmp_path), "VOICEBOT_CACHE_DIR": str(tmp_path / "cache"),
           "VOICEBOT_DATA_DIR": str(tmp_path / "data")}
    proc = subprocess.Popen(_command(contacts, db), cwd=REPO, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert proc.poll() is None, f"the run ended before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no progress within 120 s"
            try:
                ended = [a for a in _attempts(db).values() if a[2] == "ended"] if db.exists() else []
            except sqlite3.OperationalError:
                ended = []  # the file exists but its tables are not created yet
            if len(ended) >= 20:
                break
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    before = _attempts(db)
    in_flight = {i for i, a in before.items() if a[2] == "dialing"}
    assert in_flight, "the kill should land while calls are in progress"
    finished_before = {a[0] for a in before.values() if a[2] == "ended" and a[3] not in RETRYABLE_DEFAULT}

    rerun = subprocess.run(_command(contacts, db), cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    after = _attempts(db)

    # Every result stored before the kill is still there, unchanged.
    for attempt_id, row in before.items():
        if row[2] == "ended":
            assert after[attempt_id] == row
    # Calls cut off by the kill are closed as interrupted, and those callees are not rung again.
    cut_off = {before[i][0] for i in in_flight}
    for attempt_id in in_flight:
        assert after[attempt_id][2:4] == ("ended", "interrupted")
    new = [a for i, a in after.items() if i not in before]
    assert not {a[0] for a in new} & (cut_off | finished_before), "a finished or cut-off callee was dialled again"
    # Attempts per contact run 1..n, each retry following a retryable outcome; nothing is left open.
    by_contact: dict[str, list[tuple]] = {}
    for attempt_id in sorted(after):
        by_contact.setdefault(after[attempt_id][0], []).append(after[attempt_id])
    assert len(by_contact) == CONTACTS
    for attempts in by_contact.values():
        assert [a[1] for a in attempts] == list(range(1, len(attempts) + 1))
        assert all(a[2] == "ended" for a in attempts)
        assert all(a[3] in RETRYABLE_DEFAULT for a in attempts[:-1])
    conn = sqlite3.connect(db)
    try:
        states = conn.execute("SELECT state, COUNT(*) FROM contacts GROUP BY state").fetchall()
        status = conn.execute("SELECT status FROM campaigns").fetchone()[0]
    finally:
        conn.close()
    assert states == [("done", CONTACTS)] and status == "done"


def test_a_second_run_of_the_same_campaign_is_refused_while_the_first_holds_it(tmp_path):
    """Two runners would close each other's live calls as cut off; the second is turned away, clearly."""
    from voicebot.campaign.db import CampaignError
    from voicebot.campaign.launch import _exclusive

    db = tmp_path / "campaigns.db"
    with _exclusive(db, "spring"):
        with pytest.raises(CampaignError, match="already being run by another process"), _exclusive(db, "spring"):
            pass
        with _exclusive(db, "autumn"):  # another campaign in the same database is free to run
            pass
    with _exclusive(db, "spring"):  # released when the first run ends
        pass
