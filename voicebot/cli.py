"""The command line: dialplan tools, offline simulation, models, call records, the demo."""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from .campaign.cli import campaign_app
from .config import Settings
from .errors import VoicebotError

app = typer.Typer(no_args_is_help=True, add_completion=False, help="voicebot: a voice robot for call centers.")
dialplan_app = typer.Typer(no_args_is_help=True, help="Check, draw and describe dialog plans.")
models_app = typer.Typer(no_args_is_help=True, help="Find and download Vosk speech models.")
calls_app = typer.Typer(no_args_is_help=True, help="Read call records back from the store.")
app.add_typer(dialplan_app, name="dialplan")
app.add_typer(models_app, name="models")
app.add_typer(calls_app, name="calls")
app.add_typer(campaign_app, name="campaign")

# soft_wrap: never break a `file:line:col: ...` message or a transcript line across lines.
console = Console(soft_wrap=True)
err_console = Console(stderr=True, soft_wrap=True)
REPO_ROOT = Path(__file__).resolve().parents[1]


def _fail(err: VoicebotError | str, code: int = 1) -> typer.Exit:
    """Print an error for people and give the exit to raise."""
    err_console.print(f"error: {err}", highlight=False, markup=False)
    return typer.Exit(code)


# --- dialplan ---------------------------------------------------------------------------------


@dialplan_app.command("check")
def dialplan_check(
    files: Annotated[list[Path], typer.Argument(help="Plan files to check")],
    asr: Annotated[bool, typer.Option("--asr/--no-asr", help="Check phrases against installed Vosk models' words")]
    = True,
) -> None:
    """Validate and lint plans (and their phrases against the speech models); exit 0 only when all are clean."""
    from .dialog.lint import lint
    from .dialog.load import load_plan
    from .dialog.vocab import ModelVocabularies, vocabulary_problems

    vocabularies = ModelVocabularies(settings=Settings.from_env()) if asr else None
    noted: set[str] = set()
    dirty = False
    for path in files:
        try:
            loaded = load_plan(path)
        except VoicebotError as err:
            console.print(err.message, highlight=False, markup=False)
            dirty = True
            continue
        problems = lint(loaded)
        if vocabularies is not None:
            problems = sorted([*problems, *vocabulary_problems(loaded, vocabularies)],
                              key=lambda p: (p.severity != "error", p.line, p.column))
            for language in loaded.plan.languages:
                if language in vocabularies.notes and language not in noted:
                    noted.add(language)
                    console.print(f"{language}: {vocabularies.notes[language]}, vocabulary not checked",
                                  style="dim", highlight=False, markup=False)
        for problem in problems:
            console.print(problem.format(str(path)), highlight=False, markup=False)
        dirty |= bool(problems)
        if not problems:
            console.print(f"{path}: ok ({len(loaded.plan.states)} states, {len(loaded.plan.intents)} intents)",
                          highlight=False)
    raise typer.Exit(1 if dirty else 0)


@dialplan_app.command("show")
def dialplan_show(
    file: Path,
    fmt: Annotated[str, typer.Option("--format", "-f", help="mermaid, dot or svg")] = "mermaid",
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")] = None,
) -> None:
    """Draw a plan's flow as Mermaid text, Graphviz DOT, or SVG (needs graphviz)."""
    from .dialog import diagram
    from .dialog.load import load_plan

    render = {"mermaid": diagram.mermaid, "dot": diagram.dot, "svg": diagram.svg}.get(fmt)
    if render is None:
        raise _fail(f"unknown format {fmt!r}: use mermaid, dot or svg", 2)
    try:
        text = render(load_plan(file).plan)
    except VoicebotError as err:
        raise _fail(err) from err
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


@dialplan_app.command("schema")
def dialplan_schema(
    output: Annotated[Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")] = None,
) -> None:
    """Write the plan schema as JSON Schema, for editors that check YAML as you type."""
    from .dialog.schema import json_schema

    text = json.dumps(json_schema(), ensure_ascii=False, indent=2) + "\n"
    if output:
        output.write_text(text, encoding="utf-8")
        console.print(f"wrote {output}")
    else:
        typer.echo(text, nl=False)


# --- simulate ---------------------------------------------------------------------------------


def _parse_steps(args: list[str]):
    """The caller's steps in the order given: --say TEXT, --wav FILE, --keys DIGITS, --silence."""
    from .simulate import CallerStep

    steps, i = [], 0
    takes_value = {"--say": "say", "--wav": "wav", "--keys": "keys"}
    while i < len(args):
        arg = args[i]
        if arg == "--silence":
            steps.append(CallerStep("silence"))
            i += 1
        elif arg in takes_value and i + 1 < len(args):
            kind, value = takes_value[arg], args[i + 1]
            if kind == "wav" and not Path(value).is_file():
                raise _fail(f"--wav {value}: no such file", 2)
            steps.append(CallerStep(kind, value))
            i += 2
        else:
            raise _fail(f"unexpected argument {arg!r}: use --say TEXT, --wav FILE, --keys DIGITS or --silence", 2)
    return steps


def _parse_vars(pairs: list[str]) -> dict[str, object]:
    out: dict[str, object] = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not sep or not name:
            raise _fail(f"--var {pair!r}: expected NAME=VALUE", 2)
        out[name.strip()] = value
    return out


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def simulate(
    ctx: typer.Context,
    dialplan: Annotated[Path, typer.Argument(help="The plan to run")],
    var: Annotated[list[str] | None, typer.Option("--var", help="Call variable NAME=VALUE (repeatable)")] = None,
    lang: Annotated[str | None, typer.Option("--lang", help="Language of the call (default: the plan's first)")] = None,
    rate: Annotated[int, typer.Option(help="Line sample rate: 8000 or 16000")] = 8000,
    record: Annotated[Path | None, typer.Option("--record", help="Write both sides of the call to this WAV")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the call record as JSON at the end")] = False,
    db: Annotated[Path | None, typer.Option(help="Also save the call record in this store file")] = None,
    services_db: Annotated[Path | None, typer.Option(
        help="Built-in services (parcel lookup, tickets, bookings) on this SQLite file")] = None,
    parcels: Annotated[Path | None, typer.Option(
        help="Load parcels for parcels.lookup from this .csv/.json (with no --services-db: in memory)")] = None,
) -> None:
    """Run one call offline: --say TEXT / --wav FILE / --keys DIGITS / --silence, in order; none = chat."""
    from .simulate import CallerStep, ConversationPrinter
    from .simulate import simulate as run_simulation

    steps = _parse_steps(list(ctx.args))
    interactive = not steps

    async def ask() -> CallerStep | None:
        try:
            line = await asyncio.to_thread(console.input, "[bold green]you   [/] ")
        except EOFError:
            return None
        line = line.strip()
        if line in ("/quit", "/hangup"):
            return None
        if line.startswith("/keys "):
            return CallerStep("keys", line.removeprefix("/keys ").strip())
        return CallerStep("silence") if line in ("", "/silence") else CallerStep("say", line)

    if interactive:
        console.print("[dim]Chat with the plan. Enter = silence, /keys 123 = keypad, /quit = hang up.[/]")
    settings = Settings.from_env()
    variables = _parse_vars(var or [])

    async def run():
        from .store import CallStore

        async with contextlib.AsyncExitStack() as stack:
            store = await stack.enter_async_context(CallStore(db)) if db else None
            services = None
            if services_db or parcels:
                from .services import SqliteServices

                services = await stack.enter_async_context(
                    SqliteServices(services_db or ":memory:", parcels=parcels))
            return await run_simulation(plan=dialplan, steps=steps, variables=variables, settings=settings,
                                        emit=ConversationPrinter(console), language=lang, rate=rate,
                                        record_to=record, ask=ask if interactive else None, store=store,
                                        services=services)

    try:
        record_ = asyncio.run(run())
    except VoicebotError as err:
        raise _fail(err) from err
    if record:
        console.print(f"recording: {record}")
    if as_json:
        typer.echo(json.dumps(record_.to_dict(), ensure_ascii=False, indent=2))


# --- models -----------------------------------------------------------------------------------


@models_app.command("fetch")
def models_fetch(
    language: Annotated[str, typer.Argument(help="zh-CN, en-US or ko-KR")],
    force: Annotated[bool, typer.Option(help="Download again even if present")] = False,
) -> None:
    """Download the official small Vosk model for a language into the cache, verified and unpacked."""
    from .models import fetch_model, rich_progress

    settings = Settings.from_env()
    try:
        with rich_progress() as progress:
            path = asyncio.run(fetch_model(language, settings=settings, progress=progress, force=force))
    except VoicebotError as err:
        raise _fail(err) from err
    console.print(f"{language}: {path}")


@models_app.command("list")
def models_list() -> None:
    """Show which models are known, and where each one is installed."""
    from .models import list_models

    for entry in list_models(Settings.from_env()):
        console.print(str(entry), highlight=False, markup=False)


# --- calls ------------------------------------------------------------------------------------


def _db_path(db: Path | None) -> Path:
    return db or Settings.from_env().data_dir / "calls.db"


@calls_app.command("list")
def calls_list(
    db: Annotated[Path | None, typer.Option(help="Store file (default: DATA_DIR/calls.db)")] = None,
    outcome: Annotated[str | None, typer.Option(help="Only calls with this outcome")] = None,
    plan: Annotated[str | None, typer.Option(help="Only calls of this plan")] = None,
    limit: Annotated[int, typer.Option(min=1, max=1000)] = 50,
) -> None:
    """List recent calls, newest first."""
    from rich.markup import escape
    from rich.table import Table

    from .store import CallStore

    async def fetch():
        async with CallStore(_db_path(db)) as store:
            return await store.list(limit=limit, outcome=outcome, plan=plan)

    try:
        rows = asyncio.run(fetch())
    except VoicebotError as err:
        raise _fail(err) from err
    table = Table("call", "plan", "started", "seconds", "turns", "outcome", "caller")
    for r in rows:
        table.add_row(*(escape(v) for v in (r.call_id, r.plan, r.started_at, f"{r.duration:.1f}", str(r.turns),
                                             r.outcome, r.caller)))
    console.print(table)


@calls_app.command("show")
def calls_show(
    call_id: str,
    db: Annotated[Path | None, typer.Option(help="Store file (default: DATA_DIR/calls.db)")] = None,
) -> None:
    """Print one call's full record as JSON."""
    from .store import CallStore

    async def fetch():
        async with CallStore(_db_path(db)) as store:
            return await store.get(call_id)

    try:
        record = asyncio.run(fetch())
    except VoicebotError as err:
        raise _fail(err) from err
    if record is None:
        raise _fail(f"no call {call_id!r}", 1)
    typer.echo(json.dumps(record.to_dict(), ensure_ascii=False, indent=2))


# --- serve ------------------------------------------------------------------------------------


def _route_plans(pairs: list[str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for pair in pairs:
        codec, sep, plan = pair.partition("=")
        if not sep or not codec or not plan:
            raise _fail(f"--route {pair!r}: expected CODEC=PLAN, e.g. twilio=pre_delivery", 2)
        out[codec.strip()] = plan.strip()
    return out


@app.command()
def serve(
    plans: Annotated[Path, typer.Option(help="Folder of dialog plans (reloaded on change and on SIGHUP)")] = Path(
        "dialplans"),
    host: Annotated[str, typer.Option(help="Address to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Websocket port")] = 8080,
    plan: Annotated[str, typer.Option(help="Default plan when the gateway names none")] = "",
    route: Annotated[list[str] | None, typer.Option(help="Plan per codec, CODEC=PLAN (repeatable)")] = None,
    token: Annotated[list[str] | None, typer.Option(help="Accepted gateway token (repeatable; also "
                                                          "VOICEBOT_GATEWAY_TOKENS=a,b)")] = None,
    no_auth: Annotated[bool, typer.Option("--no-auth", help="Accept gateways without a token (tests only)")] = False,
    max_calls: Annotated[int, typer.Option(min=1, help="Concurrent calls per route")] = 100,
    tls_cert: Annotated[Path | None, typer.Option(help="TLS certificate (PEM) for wss://")] = None,
    tls_key: Annotated[Path | None, typer.Option(help="TLS private key (PEM)")] = None,
    audiosocket: Annotated[int | None, typer.Option(help="Also serve Asterisk AudioSocket on this TCP port")] = None,
    metrics_port: Annotated[int | None, typer.Option(help="Serve Prometheus /metrics on this port")] = None,
    asr_language: Annotated[str, typer.Option(help="Language of the vosk-server compatible /asr")] = "ko-KR",
    db: Annotated[Path | None, typer.Option(help="Call store (default: DATA_DIR/calls.db)")] = None,
    services_db: Annotated[Path | None, typer.Option(
        help="Built-in services for plans' invoke: states (default with --parcels: DATA_DIR/services.db)")] = None,
    parcels: Annotated[Path | None, typer.Option(help="Load parcels for parcels.lookup from this .csv/.json")] = None,
) -> None:
    """Serve live calls to telephony gateways over websockets (and AudioSocket), until SIGTERM."""
    import logging

    from .serve import ServeOptions, run_server

    settings = Settings.from_env()
    logging.basicConfig(level=settings.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    tokens = frozenset(token or ()) | settings.gateway_tokens
    if not tokens and not settings.twilio_auth_token and not no_auth:
        raise _fail("give gateways a token: --token T (or VOICEBOT_GATEWAY_TOKENS); --no-auth only for tests", 2)
    if (tls_cert is None) != (tls_key is None):
        raise _fail("--tls-cert and --tls-key go together", 2)
    options = ServeOptions(plans_dir=plans, host=host, port=port, default_plan=plan,
                           route_plans=_route_plans(route or []), tokens=tokens, require_auth=not no_auth,
                           max_calls=max_calls, tls_cert=tls_cert, tls_key=tls_key, audiosocket_port=audiosocket,
                           metrics_port=metrics_port, asr_language=asr_language, db=db,
                           services_db=services_db, parcels=parcels)
    try:
        asyncio.run(run_server(options, settings))
    except VoicebotError as err:
        raise _fail(err) from err


# --- demo -------------------------------------------------------------------------------------


@app.command()
def demo(
    call: Annotated[bool, typer.Option("--call", help="Just one call, printed turn by turn")] = False,
) -> None:
    """Run a demo campaign of pre-delivery calls on the simulator gateway and show its report."""
    plan = REPO_ROOT / "dialplans" / "pre_delivery.yaml"
    if not call:
        from .campaign.demo import run_demo

        try:
            raise typer.Exit(run_demo(console, settings=Settings.from_env(), plan=plan))
        except VoicebotError as err:
            raise _fail(err) from err
    from .simulate import CallerStep, ConversationPrinter
    from .simulate import simulate as run_simulation

    steps = [CallerStep("say", "什么快递啊"), CallerStep("silence"), CallerStep("say", "那个，明天下午三点再送吧")]
    variables = {"customer_name": "王先生", "tracking_tail": "5678"}
    console.rule("voicebot demo: 派前电联 (pre-delivery confirmation), zh-CN")
    try:
        record = asyncio.run(run_simulation(plan=plan, steps=steps, variables=variables,
                                            settings=Settings.from_env(), emit=ConversationPrinter(console)))
    except VoicebotError as err:
        raise _fail(err) from err
    console.rule(f"outcome: {record.outcome}; recorded choice: {record.variables.get('choice')}")


def main() -> None:
    """Entry point of the `voicebot` command."""
    app()
