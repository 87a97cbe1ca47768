"""`voicebot campaign ...`: run, watch, pause, resume, cancel and report outbound campaigns."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from ..config import Settings
from ..errors import VoicebotError

campaign_app = typer.Typer(no_args_is_help=True, help="Run outbound call campaigns and read their results.")
dnc_app = typer.Typer(no_args_is_help=True, help="The do-not-call list, checked before every dial.")
campaign_app.add_typer(dnc_app, name="dnc")
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)

DbOption = Annotated[Path | None, typer.Option("--db", help="Campaign database (default: DATA_DIR/campaigns.db)")]


def _db(db: Path | None) -> Path:
    return db or Settings.from_env().data_dir / "campaigns.db"


def _fail(err: VoicebotError | str) -> typer.Exit:
    err_console.print(f"error: {err}", highlight=False, markup=False)
    return typer.Exit(1)


def _run_db(coro):
    """Run one database coroutine; a coded error (e.g. --db is not a campaign database) exits 1 with its message."""
    try:
        return asyncio.run(coro)
    except VoicebotError as err:
        raise _fail(err) from err


@campaign_app.command("run")
def run(
    contacts: Annotated[Path, typer.Argument(help="Contacts: CSV with a header, or JSONL; a `phone` column, the "
                                             "plan's variables, optional id, timezone, language")],
    plan: Annotated[Path, typer.Option("--plan", help="The dialog plan to run")],
    name: Annotated[str | None, typer.Option(help="Campaign name (default: the contacts file's name)")] = None,
    db: DbOption = None,
    dialer: Annotated[str | None, typer.Option(help="simulator (built in), http or mqtt")] = None,
    concurrency: Annotated[int | None, typer.Option(help="Calls at once [10]")] = None,
    cps: Annotated[float | None, typer.Option(help="New calls per second [2]")] = None,
    max_attempts: Annotated[int | None, typer.Option(help="Attempts per contact, retries included [3]")] = None,
    retry_delay: Annotated[str | None, typer.Option(help="Wait before a retry, e.g. 90s, 30m, 2h [30m]")] = None,
    retry_on: Annotated[list[str] | None, typer.Option(help="Outcomes retried (repeat the option) "
                                                       "[busy no_answer powered_off failed dropped voicemail]")] = None,
    window: Annotated[str | None, typer.Option(help="Calling hours in the callee's time zone: 09:00-21:00 or "
                                               "'mon-fri=09:00-21:00;sat-sun=10:00-18:00' [09:00-21:00]")] = None,
    timezone: Annotated[str | None, typer.Option(help="Callee time zone when a contact has none "
                                                 "[Asia/Shanghai]")] = None,
    max_per_number: Annotated[int | None, typer.Option(help="Attempts per number per cap period, over all "
                                                       "campaigns [3]")] = None,
    cap_period: Annotated[str | None, typer.Option(help="The frequency cap's period [24h]")] = None,
    dnc: Annotated[Path | None, typer.Option(help="A file of numbers (one per line) to add to the do-not-call "
                                             "list first")] = None,
    redial_interrupted: Annotated[bool | None, typer.Option(
        "--redial-interrupted/--no-redial-interrupted",
        help="Ring again callees whose call a crash cut off (default: no, they were rung once)")] = None,
    seed: Annotated[int | None, typer.Option(help="Simulator: the seed of the callees' fates [0]")] = None,
    mix: Annotated[str | None, typer.Option(help="Simulator: fate weights, e.g. answer=70,busy=8,no_answer=10,"
                                            "powered_off=4,voicemail=5,hang_up=3")] = None,
    time_scale: Annotated[float | None, typer.Option(help="Simulator: real seconds per simulated second "
                                                     "(0: as fast as possible) [0]")] = None,
    callees: Annotated[str | None, typer.Option(help="Simulator: scripted callees YAML (default: callees "
                                                "who answer what each state asks)")] = None,
    originate_url: Annotated[str | None, typer.Option(help="http/mqtt dialer: the gateway's originate endpoint "
                                                      "(http://... or mqtt://host:1883)")] = None,
    originate_topic: Annotated[str | None, typer.Option(help="mqtt dialer: the topic originate commands go "
                                                        "to [voicebot/originate]")] = None,
    public_url: Annotated[str | None, typer.Option(help="http/mqtt dialer: ws(s)://host:port at which the "
                                                   "gateway reaches this process")] = None,
    listen: Annotated[str | None, typer.Option(help="http/mqtt dialer: HOST:PORT to serve the answered calls' "
                                               "websockets on [0.0.0.0:8090]")] = None,
    gateway_path: Annotated[str | None, typer.Option(help="http/mqtt dialer: the codec route the gateway "
                                                     "speaks, e.g. /native, /twilio, /audio_fork [/native]")] = None,
    amd: Annotated[bool | None, typer.Option("--amd/--no-amd", help="http/mqtt dialer: answering-machine "
                                             "detection before the first prompt [on]")] = None,
    report: Annotated[Path | None, typer.Option(help="Write results.csv, results.json, report.json and "
                                                "funnel.svg here at the end")] = None,
    store: Annotated[Path | None, typer.Option(help="Also save every call record to this call store "
                                               "(for `voicebot calls show`)")] = None,
    progress: Annotated[bool, typer.Option("--progress/--no-progress", help="Live progress display")] = True,
) -> None:
    """Dial every contact under the rules; run it again after a crash or stop and it continues where it was."""
    from .launch import Launch, run_campaign
    from .progress import ProgressView

    given = {"dialer": dialer, "concurrency": concurrency, "cps": cps, "max_attempts": max_attempts,
             "retry_delay": retry_delay, "retry_on": retry_on, "window": window, "timezone": timezone,
             "max_per_number": max_per_number, "cap_period": cap_period, "redial_interrupted": redial_interrupted,
             "seed": seed, "mix": mix, "time_scale": time_scale, "callees": callees,
             "originate_url": originate_url, "originate_topic": originate_topic, "public_url": public_url,
             "listen": listen, "gateway_path": gateway_path, "amd": amd}
    launch = Launch(contacts=contacts, plan=plan, name=name or contacts.stem, db=_db(db), given=given,
                    dnc_file=dnc, store=store)
    view = ProgressView(console, enabled=progress)
    try:
        with view:
            status, added = asyncio.run(run_campaign(launch, settings=Settings.from_env(), emit=view))
    except VoicebotError as err:
        raise _fail(err) from err
    except (asyncio.CancelledError, KeyboardInterrupt):
        # The second Ctrl-C: calls in progress were cut; the next run closes them as interrupted.
        err_console.print(f"stopped at once; run `voicebot campaign run` again to continue {launch.name!r}")
        raise typer.Exit(130) from None
    if added:
        console.print(f"{added} number(s) added to the do-not-call list from {dnc}")
    console.print(f"campaign [bold]{escape(launch.name)}[/]: {status}")
    _print_report(launch.db, launch.name, report)


def _print_report(db: Path, name: str, out: Path | None) -> None:
    from .db import CampaignDB
    from .report import build_report, funnel_svg, results_csv, results_json

    async def fetch():
        async with CampaignDB(db) as cdb:
            return await build_report(cdb, name), await cdb.results(name)

    try:
        rep, results = asyncio.run(fetch())
    except VoicebotError as err:
        raise _fail(err) from err
    pct = lambda part, whole: f"{100 * part / whole:.1f}%" if whole else "-"  # noqa: E731
    table = Table(title=f"campaign {rep.name} ({rep.plan}): {rep.status}", show_header=False)
    for label, value in (("contacts", f"{rep.contacts} ({rep.finished} finished, {rep.pending} pending)"),
                         ("attempts", str(rep.attempts)), ("dialled", f"{rep.dialled}"),
                         ("answered", f"{rep.answered} ({pct(rep.answered, rep.dialled)} of dialled)"),
                         ("talked with the robot", f"{rep.reached} ({pct(rep.reached, rep.dialled)})"),
                         ("completed", f"{rep.completed} ({pct(rep.completed, rep.contacts)} of contacts)"),
                         ("talk time", f"{rep.talk_minutes:.1f} min")):
        table.add_row(label, value)
    outcomes = Table("outcome", "contacts", "share")
    for outcome, count in rep.outcomes.items():
        outcomes.add_row(escape(outcome), str(count), pct(count, rep.contacts))
    console.print(table, outcomes)
    if out is not None:
        import json

        out.mkdir(parents=True, exist_ok=True)
        (out / "results.csv").write_text(results_csv(results), encoding="utf-8")
        (out / "results.json").write_text(results_json(results), encoding="utf-8")
        (out / "report.json").write_text(json.dumps(rep.to_dict(), ensure_ascii=False, indent=1), encoding="utf-8")
        (out / "funnel.svg").write_text(funnel_svg(rep), encoding="utf-8")
        console.print(f"report written to {out}/ (results.csv, results.json, report.json, funnel.svg)")


@campaign_app.command("report")
def report_cmd(
    name: str,
    db: DbOption = None,
    out: Annotated[Path | None, typer.Option(help="Write results.csv, results.json, report.json, funnel.svg")]
    = None,
) -> None:
    """Counts and rates of a campaign; with --out, the per-contact results and the funnel picture."""
    _print_report(_db(db), name, out)


@campaign_app.command("status")
def status(name: Annotated[str | None, typer.Argument(help="One campaign (default: list all)")] = None,
           db: DbOption = None) -> None:
    """List campaigns with their progress, or report on one."""
    if name is not None:
        _print_report(_db(db), name, None)
        return
    from .db import CampaignDB

    async def fetch():
        async with CampaignDB(_db(db)) as cdb:
            out = []
            for info in await cdb.campaigns():
                results = await cdb.results(info.name)
                out.append((info, len(results), sum(r.state == "done" for r in results)))
            return out

    try:
        rows = asyncio.run(fetch())
    except VoicebotError as err:
        raise _fail(err) from err
    table = Table("campaign", "plan", "status", "finished", "created")
    for info, total, done in rows:
        table.add_row(escape(info.name), escape(info.plan), info.status, f"{done}/{total}", info.created_at)
    console.print(table)


def _set_status(name: str, db: Path | None, status: str, allowed: tuple[str, ...]) -> None:
    from .db import CampaignDB, CampaignError

    async def change():
        async with CampaignDB(_db(db)) as cdb:
            info = await cdb.require(name)
            if info.status not in allowed:
                raise CampaignError(f"campaign {name!r} is {info.status}; cannot make it {status}")
            await cdb.set_status(name, status)

    try:
        asyncio.run(change())
    except VoicebotError as err:
        raise _fail(err) from err


@campaign_app.command("pause")
def pause(name: str, db: DbOption = None) -> None:
    """Stop dialling new calls (calls in progress finish); a running `campaign run` waits."""
    _set_status(name, db, "paused", ("running",))
    console.print(f"campaign {escape(name)} paused")


@campaign_app.command("resume")
def resume(name: str, db: DbOption = None) -> None:
    """Dial again after a pause (a waiting `campaign run` continues; else run it again)."""
    _set_status(name, db, "running", ("paused",))
    console.print(f"campaign {escape(name)} resumed; if no `campaign run` is waiting on it, start one again")


@campaign_app.command("cancel")
def cancel(name: str, db: DbOption = None) -> None:
    """End the campaign: nobody else is dialled; pending contacts end as cancelled."""
    _set_status(name, db, "cancelled", ("running", "paused", "done"))
    console.print(f"campaign {escape(name)} cancelled")


@dnc_app.command("add")
def dnc_add(numbers: list[str], db: DbOption = None,
            source: Annotated[str, typer.Option(help="Why, for the record")] = "cli") -> None:
    """Add numbers to the do-not-call list."""
    from .contacts import normalize_phone
    from .db import CampaignDB

    try:
        phones = [normalize_phone(n) for n in numbers]
    except ValueError as err:
        raise _fail(str(err)) from err

    async def add():
        async with CampaignDB(_db(db)) as cdb:
            return await cdb.add_dnc(phones, source=source)

    console.print(f"{_run_db(add())} number(s) added")


@dnc_app.command("remove")
def dnc_remove(number: str, db: DbOption = None) -> None:
    """Take a number off the do-not-call list."""
    from .db import CampaignDB

    async def remove():
        async with CampaignDB(_db(db)) as cdb:
            return await cdb.remove_dnc(number)

    if not _run_db(remove()):
        raise _fail("that number is not on the do-not-call list")
    console.print("removed")


@dnc_app.command("list")
def dnc_list(db: DbOption = None) -> None:
    """Show the do-not-call list (numbers masked)."""
    from .db import CampaignDB

    async def fetch():
        async with CampaignDB(_db(db)) as cdb:
            return await cdb.dnc_entries()

    table = Table("number", "source", "added")
    for masked, source, added in _run_db(fetch()):
        table.add_row(masked, escape(source), added)
    console.print(table)
