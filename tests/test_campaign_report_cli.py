"""The campaign report (numbers, CSV, JSON, SVG funnel) and the `voicebot campaign ...` command line."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path

import pytest
from conftest import PLANS, REPO

from voicebot.campaign import rules
from voicebot.campaign.contacts import file_digest, load_contacts
from voicebot.campaign.db import CampaignDB
from voicebot.campaign.report import CSV_FIELDS, build_report, funnel_svg, results_csv, results_json
from voicebot.campaign.runner import CampaignRunner, RunOptions
from voicebot.campaign.simulator import SimulatedGateway
from voicebot.dialog.load import load_plan
from voicebot.hours import WeeklyHours

VOICEBOT = REPO / ".venv" / "bin" / "voicebot"
PLAN_FILE = PLANS / "pre_delivery.yaml"
LOADED = load_plan(PLAN_FILE)
# Every outcome the pre-delivery plan itself can record.
PLAN_OUTCOMES = {"door_delivery", "station_consent", "locker_consent", "leave_with_someone", "rescheduled",
                 "refused", "wrong_number", "do_not_call", "default_door", "transferred"}
NOT_ANSWERED = {"busy", "no_answer", "powered_off", "invalid_number", "failed", "interrupted", ""}
SVG = "{http://www.w3.org/2000/svg}"


def phone(n: int) -> str:
    return f"1391234{n:04d}"


def write_contacts(path: Path, count: int, *, start: int = 0) -> Path:
    lines = ["phone,customer_name,tracking_tail"] + [f"{phone(n)},李女士,{n:04d}" for n in range(start, start + count)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


# --- the report, recomputed from the database --------------------------------------------------------


async def _run(db: CampaignDB, name: str, path: Path, settings, **sim) -> None:
    await db.create(name=name, plan="pre_delivery", plan_path=str(PLAN_FILE), contacts_path=str(path),
                    digest=name, options={}, contacts=load_contacts(path, plan=LOADED.plan))
    opts = RunOptions(concurrency=8, calls_per_second=1000, poll_interval=0.05,
                      retry=rules.RetryPolicy(max_attempts=2, delay=0),
                      calling=rules.CallingPolicy(windows=WeeklyHours.parse("00:00-24:00"), max_per_number=10))
    async with SimulatedGateway(plan=LOADED, settings=settings, **sim) as gateway:
        assert await CampaignRunner(db=db, name=name, dialer=gateway, options=opts).run() == "done"


async def test_report_numbers_equal_counts_recomputed_from_the_database(tmp_path, settings):
    db_path = tmp_path / "c.db"
    async with CampaignDB(db_path) as db:
        await db.add_dnc([phone(3)], source="test")
        await _run(db, "rep", write_contacts(tmp_path / "rep.csv", 16), settings, seed=11)
        report = await build_report(db, "rep")
        results = await db.results("rep")

    with sqlite3.connect(db_path) as conn:
        def one(sql: str) -> int:
            return conn.execute(sql, ("rep",)).fetchone()[0]

        contacts = one("SELECT COUNT(*) FROM contacts WHERE campaign = ?")
        finished = one("SELECT COUNT(*) FROM contacts WHERE campaign = ? AND state = 'done'")
        attempts = conn.execute("SELECT contact_id, outcome, talk_seconds FROM attempts WHERE campaign = ?",
                                ("rep",)).fetchall()
        outcomes = Counter(o for (o,) in conn.execute("SELECT outcome FROM contacts WHERE campaign = ?", ("rep",)))
    answered = {c for c, o, _ in attempts if o not in NOT_ANSWERED}
    reached = {c for c, o, _ in attempts if o not in NOT_ANSWERED | {"voicemail"}}
    assert (report.contacts, report.finished, report.pending) == (contacts, finished, 0) == (16, 16, 0)
    assert report.attempts == len(attempts)
    assert report.dialled == len({c for c, _, _ in attempts}) == 15  # the do-not-call contact was never dialled
    assert report.answered == len(answered) and report.reached == len(reached)
    assert report.completed == sum(n for o, n in outcomes.items() if o in PLAN_OUTCOMES)
    assert set(outcomes) - PLAN_OUTCOMES <= rules.RETRYABLE_DEFAULT | {"dnc_skipped", "dropped"}
    assert report.outcomes == dict(outcomes) and report.outcomes["dnc_skipped"] == 1
    assert report.attempt_outcomes == dict(Counter(o for _, o, _ in attempts))
    assert report.talk_minutes == round(sum(t or 0 for _, _, t in attempts) / 60, 2) > 0
    assert 0 < report.completed <= report.reached <= report.answered <= report.dialled <= report.contacts
    data = report.to_dict()
    assert data["answer_rate"] == round(len(answered) / 15, 4)
    assert data["completion_rate"] == round(report.completed / 16, 4)
    assert data["outcome_rates"]["dnc_skipped"] == round(1 / 16, 4)
    assert data["first_started"] <= data["last_ended"]

    # Per-contact results: the CSV and JSON say the same, with masked numbers only.
    rows = list(csv.DictReader(io.StringIO(results_csv(results))))
    assert tuple(rows[0]) == CSV_FIELDS and len(rows) == 16
    as_json = json.loads(results_json(results))
    assert [r["contact_id"] for r in rows] == [r["contact_id"] for r in as_json] == [r.contact_id for r in results]
    for row, item, result in zip(rows, as_json, results, strict=True):
        assert row["phone"] == item["phone"] == result.phone_masked and "****" in row["phone"]
        assert row["outcome"] == item["outcome"] == result.outcome and int(row["attempts"]) == item["attempts"]
        assert row["call_id"] == (item["result"] or {}).get("call_id", "")
        assert json.loads(row["variables"]) == (item["result"] or {}).get("variables", {})
    text = results_csv(results) + results_json(results)
    assert not any(phone(n) in text for n in range(16))
    consent = [r for r in rows if r["outcome"] in ("station_consent", "locker_consent")]
    assert all(json.loads(r["variables"])["consent_at"] for r in consent)

    # The funnel: well-formed SVG showing each count.
    root = ET.fromstring(funnel_svg(report))
    assert root.tag == f"{SVG}svg"
    texts = [t.text for t in root.iter(f"{SVG}text")]
    assert "16 (100.0%)" in texts and f"{report.dialled} ({100 * report.dialled / 16:.1f}%)" in texts
    assert f"{report.completed} ({100 * report.completed / 16:.1f}%)" in texts
    for outcome, count in report.outcomes.items():
        assert outcome in texts and str(count) in texts
    assert len(list(root.iter(f"{SVG}rect"))) == 1 + 5 + len(report.outcomes)


async def test_report_of_an_unstarted_campaign_and_odd_names(tmp_path):
    name = 'a&b <"双11">'
    async with CampaignDB(tmp_path / "c.db") as db:
        path = write_contacts(tmp_path / "c.csv", 3)
        await db.create(name=name, plan="pre_delivery", plan_path=str(PLAN_FILE), contacts_path=str(path),
                        digest="d", options={}, contacts=load_contacts(path, plan=LOADED.plan))
        report = await build_report(db, name)
    assert (report.contacts, report.pending, report.attempts, report.dialled) == (3, 3, 0, 0)
    assert report.outcomes == {"(not yet called)": 3} and report.answer_rate == 0.0
    assert report.first_started is None and report.talk_minutes == 0
    root = ET.fromstring(funnel_svg(report))  # the name is escaped: still well-formed
    assert any(name in (t.text or "") for t in root.iter(f"{SVG}text"))


# --- the command line -------------------------------------------------------------------------------------


@pytest.fixture
def env(tmp_path) -> dict[str, str]:
    return {**os.environ, "VOICEBOT_CACHE_DIR": str(tmp_path / "cache"), "VOICEBOT_DATA_DIR": str(tmp_path / "data"),
            "COLUMNS": "200", "NO_COLOR": "1"}


def cli(env: dict[str, str], *args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(VOICEBOT), "campaign", *map(str, args)], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=120)


RUN_FLAGS = ("--plan", PLAN_FILE, "--window", "00:00-24:00", "--cps", "100", "--concurrency", "10",
             "--retry-delay", "0s", "--no-progress")


def db_rows(db: Path, sql: str) -> list[tuple]:
    with sqlite3.connect(db) as conn:
        return conn.execute(sql).fetchall()


def test_cli_run_writes_the_report_and_reruns_continue_without_calling_again(tmp_path, env):
    contacts = write_contacts(tmp_path / "list.csv", 12)
    dnc = tmp_path / "dnc.txt"
    dnc.write_text(f"# numbers that asked us\n+86 {phone(5)}\n", encoding="utf-8")
    db, out = tmp_path / "camp.db", tmp_path / "report"
    done = cli(env, "run", contacts, *RUN_FLAGS, "--name", "demo", "--db", db, "--dnc", dnc, "--report", out)
    assert done.returncode == 0, done.stderr
    assert "1 number(s) added to the do-not-call list" in done.stdout and "campaign demo: done" in done.stdout
    assert sorted(p.name for p in out.iterdir()) == ["funnel.svg", "report.json", "results.csv", "results.json"]
    report = json.loads((out / "report.json").read_text(encoding="utf-8"))
    assert (report["name"], report["contacts"], report["finished"]) == ("demo", 12, 12)
    assert report["outcomes"]["dnc_skipped"] == 1 and report["dialled"] == 11
    rows = list(csv.DictReader((out / "results.csv").open(encoding="utf-8")))
    assert len(rows) == 12 and all("****" in r["phone"] for r in rows)
    assert next(r for r in rows if r["row"] == "7")["outcome"] == "dnc_skipped"
    assert len(json.loads((out / "results.json").read_text(encoding="utf-8"))) == 12
    ET.parse(out / "funnel.svg")
    assert "12 (12 finished, 0 pending)" in done.stdout and "dnc_skipped" in done.stdout
    attempts = db_rows(db, "SELECT COUNT(*) FROM attempts")[0][0]
    assert attempts >= 11

    # Stored options are reused; a finished campaign run again dials nobody.
    again = cli(env, "run", contacts, "--plan", PLAN_FILE, "--name", "demo", "--db", db, "--no-progress")
    assert again.returncode == 0, again.stderr
    assert "campaign demo: done" in again.stdout
    assert db_rows(db, "SELECT COUNT(*) FROM attempts")[0][0] == attempts
    options = json.loads(db_rows(db, "SELECT options FROM campaigns")[0][0])
    assert (options["window"], options["cps"], options["retry_delay"]) == ("00:00-24:00", 100.0, "0s")

    # Other contacts under the same name: refused, nothing changed.
    other = write_contacts(tmp_path / "other.csv", 3, start=50)
    refused = cli(env, "run", other, *RUN_FLAGS, "--name", "demo", "--db", db)
    assert refused.returncode == 1
    assert "was started with other contacts" in refused.stderr and "give a new --name" in refused.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM contacts")[0][0] == 12

    listing = cli(env, "status", "--db", db)
    assert listing.returncode == 0 and "demo" in listing.stdout and "12/12" in listing.stdout
    assert "done" in listing.stdout

    again_out = tmp_path / "again"
    reported = cli(env, "report", "demo", "--db", db, "--out", again_out)
    assert reported.returncode == 0, reported.stderr
    assert json.loads((again_out / "report.json").read_text(encoding="utf-8")) == report
    assert (again_out / "results.csv").read_text(encoding="utf-8") == (out / "results.csv").read_text(encoding="utf-8")


def test_cli_bad_contacts_list_every_row_and_create_nothing(tmp_path, env):
    bad = tmp_path / "bad.csv"
    bad.write_text("phone,customer_name,tracking_tail,timezone\n13912340001,李,1,\n13912340002,,2,\n"
                   "not-a-phone,李,3,\n13912340004,李,4,Mars/Olympus\n", encoding="utf-8")
    result = cli(env, "run", bad, *RUN_FLAGS)  # default database: in VOICEBOT_DATA_DIR
    assert result.returncode == 1
    for line in ("bad.csv:3: missing plan variable: customer_name", "bad.csv:4: phone:",
                 "bad.csv:5: timezone: unknown time zone 'Mars/Olympus'"):
        assert line in result.stderr
    assert "3 problem(s)" in result.stderr and "nothing was called" in result.stderr
    assert "bad.csv:2" not in result.stderr
    db = tmp_path / "data" / "campaigns.db"
    assert not db.exists() or db_rows(db, "SELECT COUNT(*) FROM campaigns") == [(0,)]
    missing = cli(env, "run", tmp_path / "missing.csv", *RUN_FLAGS)
    assert missing.returncode == 1 and "missing.csv: cannot read: No such file" in missing.stderr
    assert "Traceback" not in missing.stderr


async def _create_campaign(db_path: Path, contacts: Path, name: str) -> None:
    async with CampaignDB(db_path) as db:
        await db.create(name=name, plan="pre_delivery", plan_path=str(PLAN_FILE), contacts_path=str(contacts),
                        digest=file_digest(contacts), options={}, contacts=load_contacts(contacts, plan=LOADED.plan))


def test_cli_pause_resume_cancel_and_their_refusals(tmp_path, env):
    db = tmp_path / "camp.db"
    contacts = write_contacts(tmp_path / "c.csv", 4)
    asyncio.run(_create_campaign(db, contacts, "ops"))

    def status() -> str:
        return db_rows(db, "SELECT status FROM campaigns WHERE name = 'ops'")[0][0]

    refused = cli(env, "resume", "ops", "--db", db)
    assert refused.returncode == 1 and "campaign 'ops' is running; cannot make it running" in refused.stderr
    paused = cli(env, "pause", "ops", "--db", db)
    assert paused.returncode == 0 and "campaign ops paused" in paused.stdout and status() == "paused"
    twice = cli(env, "pause", "ops", "--db", db)
    assert twice.returncode == 1 and "is paused; cannot make it paused" in twice.stderr
    resumed = cli(env, "resume", "ops", "--db", db)
    assert resumed.returncode == 0 and status() == "running"
    cancelled = cli(env, "cancel", "ops", "--db", db)
    assert cancelled.returncode == 0 and "campaign ops cancelled" in cancelled.stdout and status() == "cancelled"
    after = cli(env, "resume", "ops", "--db", db)
    assert after.returncode == 1 and "is cancelled; cannot make it running" in after.stderr
    rerun = cli(env, "run", contacts, *RUN_FLAGS, "--name", "ops", "--db", db)
    assert rerun.returncode == 1 and "campaign 'ops' was cancelled" in rerun.stderr
    assert db_rows(db, "SELECT COUNT(*) FROM attempts") == [(0,)]
    unknown = cli(env, "pause", "nope", "--db", db)
    assert unknown.returncode == 1 and "no campaign 'nope'" in unknown.stderr and "known: ops" in unknown.stderr
    report = cli(env, "status", "ops", "--db", db)
    assert report.returncode == 0 and "(not yet called)" in report.stdout
    assert "4 (0 finished, 4 pending)" in report.stdout


def test_cli_dnc_add_list_remove(tmp_path, env):
    added = cli(env, "dnc", "add", "+86 139 1234 0001", "0086-139-1234-0002", "--source", "complaint 42")
    assert added.returncode == 0 and "2 number(s) added" in added.stdout
    same = cli(env, "dnc", "add", "13912340001")  # the same subscriber without the country code
    assert same.returncode == 0 and "0 number(s) added" in same.stdout
    bad = cli(env, "dnc", "add", "call-me-maybe")
    assert bad.returncode == 1 and "is not a phone number" in bad.stderr
    listed = cli(env, "dnc", "list")
    assert listed.returncode == 0
    assert "+86139****0001" in listed.stdout and "+86139****0002" in listed.stdout
    assert "complaint 42" in listed.stdout and "13912340001" not in listed.stdout
    removed = cli(env, "dnc", "remove", "139 1234 0001")
    assert removed.returncode == 0 and "removed" in removed.stdout
    gone = cli(env, "dnc", "remove", "13912340001")
    assert gone.returncode == 1 and "not on the do-not-call list" in gone.stderr
    assert db_rows(tmp_path / "data" / "campaigns.db", "SELECT masked FROM dnc") == [("+86139****0002",)]
    notes = tmp_path / "notes.txt"
    notes.write_text("not a database, but plenty of text to read as a header\n" * 10, encoding="utf-8")
    not_a_db = cli(env, "dnc", "list", "--db", notes)
    assert not_a_db.returncode == 1 and "file is not a database" in not_a_db.stderr
    assert "Traceback" not in not_a_db.stderr
