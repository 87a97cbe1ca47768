"""Benchmark: a simulated outbound campaign end to end (real dialogs, TTS, SQLite), as `campaign run` does it.

Run: .venv/bin/python scripts/bench_campaign.py [--contacts 1000] [--concurrency 50] [--cps 100]

Prints wall time, attempts and calls per minute, peak memory (RSS), and the outcome counts.
The cache and database live in a temporary folder, so the TTS cache starts cold, as on a new machine.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voicebot.campaign.db import CampaignDB  # noqa: E402
from voicebot.campaign.demo import write_contacts  # noqa: E402
from voicebot.campaign.launch import Launch, run_campaign  # noqa: E402
from voicebot.campaign.report import build_report  # noqa: E402
from voicebot.config import Settings  # noqa: E402


async def _report(db: Path):
    async with CampaignDB(db) as cdb:
        return await build_report(cdb, "bench")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--contacts", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument("--cps", type=float, default=100.0)
    parser.add_argument("--seed", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-campaign-") as tmp:
        work = Path(tmp)
        settings = Settings.from_env({**os.environ, "HOME": tmp}, cache_dir=work / "cache", data_dir=work / "data")
        contacts = work / "contacts.csv"
        write_contacts(contacts, count=args.contacts, seed=args.seed)
        launch = Launch(contacts=contacts, plan=ROOT / "dialplans" / "pre_delivery.yaml", name="bench",
                        db=work / "campaigns.db", given={
                            "dialer": "simulator", "concurrency": args.concurrency, "cps": args.cps,
                            "max_attempts": 3, "retry_delay": "0s", "window": "00:00-24:00", "seed": args.seed,
                            "max_per_number": 10})
        started = time.perf_counter()
        cpu = time.process_time()
        status, _ = asyncio.run(run_campaign(launch, settings=settings, emit=lambda event: None))
        wall = time.perf_counter() - started
        cpu = time.process_time() - cpu
        report = asyncio.run(_report(launch.db))
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console = Console()
    console.print(f"campaign: {args.contacts} contacts, concurrency {args.concurrency}, {args.cps:g} calls/s cap "
                  f"-> {status}")
    console.print(f"wall time           {wall:8.1f} s   (process CPU {cpu:.1f} s)")
    console.print(f"attempts            {report.attempts:8d}   ({60 * report.attempts / wall:.0f} per minute)")
    console.print(f"contacts finished   {report.finished:8d}   ({60 * report.finished / wall:.0f} per minute)")
    console.print(f"answered contacts   {report.answered:8d}   completed {report.completed}")
    console.print(f"simulated talk time {report.talk_minutes:8.1f} min")
    console.print(f"peak RSS            {peak_mb:8.0f} MB")
    console.print(f"outcomes            {report.outcomes}")


if __name__ == "__main__":
    main()
