"""The demo campaign: a few dozen pre-delivery calls through the simulator gateway, then the report."""

from __future__ import annotations

import asyncio
import csv
import json
import random
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ..config import Settings
from .db import CampaignDB
from .launch import Launch, run_campaign
from .progress import ProgressView

SURNAMES = "王李张刘陈杨赵黄周吴徐孙马朱胡郭何高林罗"
STATIONS = ("小区门口驿站", "菜鸟驿站(东门)", "兔喜生活超市", "妈妈驿站")


def write_contacts(path: Path, *, count: int, seed: int) -> None:
    """Made-up recipients with the pre-delivery plan's variables."""
    rng = random.Random(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["id", "phone", "customer_name", "tracking_tail", "station_name"])
        for i in range(count):
            name = rng.choice(SURNAMES) + rng.choice(("先生", "女士"))
            writer.writerow([f"D{i + 1:03d}", f"13{rng.randint(0, 9)}{rng.randint(10_000_000, 99_999_999)}", name,
                             f"{rng.randint(0, 9999):04d}", rng.choice(STATIONS)])


async def _sample_call(db_path: Path, name: str) -> dict | None:
    """The record of one answered call that reached a consent, for showing a whole conversation."""
    async with CampaignDB(db_path) as db:
        return await db.first_record(name, outcomes=("station_consent", "locker_consent", "leave_with_someone",
                                                     "rescheduled"))


def run_demo(console: Console, *, settings: Settings, plan: Path, contacts: int = 36, seed: int = 11) -> int:
    """Run the demo campaign from scratch; returns the exit code."""
    from .cli import _print_report

    work = settings.data_dir / "demo"
    db_path, contacts_path, report_dir = work / "campaigns.db", work / "contacts.csv", work / "report"
    for stale in (db_path, db_path.with_name(db_path.name + "-wal"), db_path.with_name(db_path.name + "-shm")):
        stale.unlink(missing_ok=True)  # every demo starts over
    write_contacts(contacts_path, count=contacts, seed=seed)
    console.rule(f"voicebot demo: a 派前电联 (pre-delivery) campaign of {contacts} simulated callees")
    console.print(f"contacts: {contacts_path}\nplan: {plan}\nSimulated network: most callees answer and choose; "
                  "some are busy, out, powered off, hang up, or have voicemail (detected, then retried).\n"
                  "The demo calls around the clock; real campaigns keep to 09:00-21:00 in the callee's time zone.",
                  highlight=False)
    launch = Launch(contacts=contacts_path, plan=plan, name="demo", db=db_path, given={
        "dialer": "simulator", "concurrency": 8, "cps": 8.0, "max_attempts": 3, "retry_delay": "3s",
        "window": "00:00-24:00", "seed": seed, "time_scale": 0.02})
    with ProgressView(console) as view:
        status, _ = asyncio.run(run_campaign(launch, settings=settings, emit=view))
    sample = asyncio.run(_sample_call(db_path, "demo"))
    if sample is not None:
        console.rule(f"one of the calls: {sample['call_id']} → {sample['outcome']}")
        for turn in sample["turns"]:
            if turn["prompt"]:
                console.print(f"[bold cyan]robot [/] {escape(turn['prompt'])}", highlight=False)
            if turn["heard"]:
                console.print(f"[bold green]callee[/] {escape(turn['heard'])}  [dim]→ {turn['intent']}[/]",
                              highlight=False)
        consent = {k: v for k, v in sample["variables"].items() if k.startswith(("choice", "consent"))}
        console.print(f"[dim]recorded: {escape(json.dumps(consent, ensure_ascii=False))}[/]", highlight=False)
    console.rule(f"campaign demo: {status}")
    _print_report(db_path, "demo", report_dir)
    return 0 if status == "done" else 1
