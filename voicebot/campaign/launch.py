"""Start or continue a campaign: options merged with the stored ones, contacts checked, dialer chosen."""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..config import Settings
from ..dialog.load import LoadedPlan, load_plan
from ..hours import WeeklyHours
from ..store import CallStore
from . import rules
from .contacts import file_digest, load_contacts
from .db import CampaignDB, CampaignError
from .dialer import Dialer
from .runner import CampaignRunner, RunOptions
from .simulator import SimulatedGateway, load_personas, parse_mix

# Every option a run can take, with its default; what a run was given is stored and reused on resume.
DEFAULTS: dict[str, Any] = {
    "dialer": "simulator", "concurrency": 10, "cps": 2.0, "max_attempts": 3, "retry_delay": "30m",
    "retry_on": sorted(rules.RETRYABLE_DEFAULT), "window": "09:00-21:00", "timezone": "Asia/Shanghai",
    "max_per_number": 3, "cap_period": "24h", "redial_interrupted": False, "seed": 0,
    "mix": "", "time_scale": 0.0, "callees": "", "originate_url": "", "originate_topic": "voicebot/originate",
    "public_url": "", "listen": "0.0.0.0:8090",
    "gateway_path": "/native", "amd": True,
}


def parse_windows(spec: str) -> WeeklyHours:
    """'09:00-21:00' or 'mon-fri=09:00-21:00;sat-sun=10:00-18:00' → weekly windows."""
    if "=" not in spec:
        return WeeklyHours.parse(spec)
    pairs = {}
    for part in filter(None, (p.strip() for p in spec.split(";"))):
        days, sep, hours = part.partition("=")
        if not sep:
            raise ValueError(f"{part!r}: expected DAYS=HH:MM-HH:MM")
        if days.strip() in pairs:  # a dict would keep only the last one, silently
            raise ValueError(f"{days.strip()} is given twice")
        pairs[days.strip()] = hours.strip()
    return WeeklyHours.parse(pairs)


def run_options(opts: dict[str, Any]) -> RunOptions:
    """Check and convert the merged options; ValueError names the bad one."""
    try:
        retry = rules.RetryPolicy(max_attempts=int(opts["max_attempts"]),
                                  delay=rules.parse_duration(str(opts["retry_delay"])),
                                  retryable=frozenset(opts["retry_on"]))
        calling = rules.CallingPolicy(windows=parse_windows(str(opts["window"])),
                                      max_per_number=int(opts["max_per_number"]),
                                      per_seconds=rules.parse_duration(str(opts["cap_period"])))
        return RunOptions(concurrency=int(opts["concurrency"]), calls_per_second=float(opts["cps"]),
                          retry=retry, calling=calling, redial_interrupted=bool(opts["redial_interrupted"]))
    except ValueError as err:
        raise CampaignError(f"bad campaign option: {err}", code="campaign_options") from err


@dataclass
class Launch:
    """What `campaign run` was asked to do."""

    contacts: Path
    plan: Path
    name: str
    db: Path
    given: dict[str, Any] = field(default_factory=dict)  # options given on this command line (None = not given)
    dnc_file: Path | None = None
    store: Path | None = None


async def prepare(launch: Launch, db: CampaignDB) -> tuple[LoadedPlan, dict[str, Any], int]:
    """Create the campaign, or check that a rerun names the same contacts; returns plan, options, DNC added."""
    loaded = await asyncio.to_thread(load_plan, launch.plan)
    digest = await asyncio.to_thread(file_digest, launch.contacts)
    existing = await db.get(launch.name)
    if existing is None:
        options = {**DEFAULTS, **{k: v for k, v in launch.given.items() if v is not None}}
        run_options(options)
        contacts = await asyncio.to_thread(load_contacts, launch.contacts, plan=loaded.plan,
                                           default_timezone=str(options["timezone"]))
        await db.create(name=launch.name, plan=loaded.plan.plan, plan_path=str(launch.plan.resolve()),
                        contacts_path=str(launch.contacts.resolve()), digest=digest, options=options,
                        contacts=contacts)
    else:
        if existing.contacts_digest != digest:
            raise CampaignError(f"campaign {launch.name!r} was started with other contacts ({existing.contacts_path}"
                                "); give a new --name for a new campaign", code="campaign_contacts_changed")
        if existing.plan != loaded.plan.plan:
            raise CampaignError(f"campaign {launch.name!r} runs plan {existing.plan!r}, not {loaded.plan.plan!r}",
                                code="campaign_plan_changed")
        if existing.status == "cancelled":
            raise CampaignError(f"campaign {launch.name!r} was cancelled", code="campaign_cancelled")
        options = {**DEFAULTS, **existing.options, **{k: v for k, v in launch.given.items() if v is not None}}
        run_options(options)
        # A paused campaign stays paused until `campaign resume`; a finished one looks again for due contacts.
        await db.set_status(launch.name, "running" if existing.status == "done" else existing.status,
                            options=options)
    added = 0
    if launch.dnc_file is not None:
        numbers = await asyncio.to_thread(_read_numbers, launch.dnc_file)
        added = await db.add_dnc(numbers, source=f"file {launch.dnc_file.name}")
    return loaded, options, added


def _read_numbers(path: Path) -> list[str]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except (OSError, UnicodeDecodeError) as err:
        raise CampaignError(f"{path}: cannot read the do-not-call file: {err}") from err
    return [line.split(",")[0].strip() for line in lines if line.strip() and not line.startswith("#")]


def make_dialer(options: dict[str, Any], *, loaded: LoadedPlan, settings: Settings) -> Dialer:
    """The dialer the options name."""
    kind = options["dialer"]
    if kind == "simulator":
        try:
            mix = parse_mix(options["mix"]) if options["mix"] else None
        except ValueError as err:
            raise CampaignError(f"--mix: {err}", code="campaign_options") from err
        personas = load_personas(options["callees"]) if options["callees"] else None
        return SimulatedGateway(plan=loaded, settings=settings, mix=mix, seed=int(options["seed"]),
                                time_scale=float(options["time_scale"]), personas=personas)
    if kind in ("http", "mqtt"):
        return _gateway_dialer(kind, options, loaded=loaded, settings=settings)
    raise CampaignError(f"unknown dialer {kind!r}; one of: simulator, http, mqtt", code="campaign_options")


def _gateway_dialer(kind: str, options: dict[str, Any], *, loaded: LoadedPlan, settings: Settings) -> Dialer:
    from ..amd import AmdConfig
    from ..serve import CODECS
    from ..server import Route
    from .gateway import GatewayDialer, HttpOriginator, MqttOriginator

    url, public = str(options["originate_url"]), str(options["public_url"])
    if not url or not public:
        raise CampaignError(f"--dialer {kind} needs --originate-url and --public-url (the ws:// address the "
                            "gateway connects back to)", code="campaign_options")
    host, _, port = str(options["listen"]).rpartition(":")
    if not host or not port.isdigit():
        raise CampaignError(f"--listen must be HOST:PORT, not {options['listen']!r}", code="campaign_options")
    originator = (HttpOriginator(url, token=next(iter(sorted(settings.gateway_tokens)), ""))
                  if kind == "http" else MqttOriginator(url, str(options["originate_topic"])))
    routes = [Route(codec.path, codec, plan=loaded.plan.plan, max_calls=int(options["concurrency"]))
              for codec in CODECS]
    return GatewayDialer(plan=loaded, settings=settings, originator=originator, routes=routes, public_url=public,
                         host=host, port=int(port), gateway_path=str(options["gateway_path"]),
                         answer_detection=AmdConfig() if options["amd"] else None)


async def run_campaign(launch: Launch, *, settings: Settings, emit: Callable[[object], None],
                       make: Callable[..., Dialer] = make_dialer) -> tuple[str, int]:
    """Run (or continue) the campaign until it ends or is stopped; returns (status, numbers added to DNC)."""
    with _exclusive(launch.db, launch.name):
        return await _run_locked(launch, settings=settings, emit=emit, make=make)


@contextlib.contextmanager
def _exclusive(db: Path, name: str) -> Iterator[None]:
    """One `campaign run` per campaign at a time: a second would close the first one's live calls as cut off.

    An OS file lock, so a killed run never leaves it held.
    """
    db.parent.mkdir(parents=True, exist_ok=True)
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    with open(db.with_name(f"{db.name}.{digest}.lock"), "a+") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise CampaignError(f"campaign {name!r} is already being run by another process",
                                code="campaign_busy") from None
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


async def _run_locked(launch: Launch, *, settings: Settings, emit: Callable[[object], None],
                      make: Callable[..., Dialer]) -> tuple[str, int]:
    async with CampaignDB(launch.db) as db:
        loaded, options, added = await prepare(launch, db)
        store = CallStore(launch.store) if launch.store else None
        if store is not None:
            await store.open()
        try:
            async with make(options, loaded=loaded, settings=settings) as dialer:
                runner = CampaignRunner(db=db, name=launch.name, dialer=dialer, options=run_options(options),
                                        emit=emit, store=store)
                _on_signals(runner)
                return await runner.run(), added
        finally:
            if store is not None:
                await store.aclose()


def _on_signals(runner: CampaignRunner) -> None:
    """First Ctrl-C or SIGTERM: dial nobody new, let live calls finish. A second: stop at once."""
    loop = asyncio.get_running_loop()
    task = asyncio.current_task()
    hits = 0

    def handle() -> None:
        nonlocal hits
        hits += 1
        if hits == 1:
            runner.stop()
        elif task is not None:
            task.cancel()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, handle)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signals here
            return
