"""Back-end services a plan calls with `invoke:`: parcel lookup, complaint tickets, pickup bookings (SQLite)."""

from __future__ import annotations

import asyncio
import csv
import json
import logging
import re
from collections.abc import Callable, Mapping
from datetime import datetime
from pathlib import Path
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import VoicebotError
from .record import mask_number, subscriber_key
from .sqlite_db import SqliteDatabase

log = logging.getLogger(__name__)

MAX_PARCELS_BYTES = 50_000_000
MAX_ARG_CHARS = 500  # a plan's argument, e.g. complaint details; longer is cut
PARCEL_STATUSES = ("in_transit", "out_for_delivery", "delivered", "at_station", "exception")

# Each entry upgrades the schema by one version; never edit a shipped entry, append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE parcels (
            tracking_number TEXT PRIMARY KEY, phone TEXT NOT NULL, status TEXT NOT NULL,
            location TEXT NOT NULL, location_en TEXT NOT NULL, eta TEXT NOT NULL,
            station TEXT NOT NULL, station_en TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        "CREATE INDEX parcels_phone ON parcels(phone, updated_at)",
        """CREATE TABLE tickets (
            ticket_id TEXT PRIMARY KEY, day TEXT NOT NULL, seq INTEGER NOT NULL, category TEXT NOT NULL,
            details TEXT NOT NULL, callback_number TEXT NOT NULL, tracking_number TEXT NOT NULL,
            call_id TEXT NOT NULL, created_at TEXT NOT NULL, UNIQUE (day, seq))""",
        """CREATE TABLE bookings (
            booking_id TEXT PRIMARY KEY, day TEXT NOT NULL, seq INTEGER NOT NULL, address TEXT NOT NULL,
            pickup_time TEXT NOT NULL, phone TEXT NOT NULL, call_id TEXT NOT NULL, created_at TEXT NOT NULL,
            UNIQUE (day, seq))""",
    ),
    (
        # Parcels are found by phone on the subscriber key: stored as +8613812345678, asked for as 13812345678.
        # Rows here were validated as `+?digits`, so the last 10 characters without the + are the key.
        "ALTER TABLE parcels ADD COLUMN phone_key TEXT NOT NULL DEFAULT ''",
        "UPDATE parcels SET phone_key = substr(replace(phone, '+', ''), -10)",
        "CREATE INDEX parcels_phone_key ON parcels(phone_key, updated_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


class ServiceError(VoicebotError):
    """A service call failed (unknown service, bad arguments, database trouble): the plan's `error` branch."""

    code = "service_error"


class ServiceNotFound(VoicebotError):
    """The service worked but found nothing for these arguments (no such parcel): the `not_found` branch."""

    code = "service_not_found"


class Services(Protocol):
    """What a CallSession calls for an `invoke:` state."""

    async def invoke(self, service: str, args: Mapping[str, str], *, call_id: str = "") -> Mapping[str, str]:
        """Run `service` with `args`; raise ServiceNotFound when nothing matches, ServiceError on failure."""
        ...


class ParcelRow(BaseModel):
    """One parcel of the operator's data file (CSV or JSON)."""

    model_config = ConfigDict(frozen=True, extra="ignore", str_strip_whitespace=True)

    tracking_number: str = Field(pattern=r"^(SF\d{12,13}|YT\d{13}|JT\d{13}|\d{10,15})$")
    phone: str = Field(pattern=r"^\+?\d{7,15}$")
    status: Literal["in_transit", "out_for_delivery", "delivered", "at_station", "exception"]
    location: str = ""
    location_en: str = ""
    eta: str = ""
    station: str = ""
    station_en: str = ""
    updated_at: str = ""


def read_parcels(path: str | Path) -> list[ParcelRow]:
    """Parse a parcels file (.csv with a header row, or .json: a list of objects); errors name the row."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_PARCELS_BYTES:
            raise ServiceError(f"{path}: larger than {MAX_PARCELS_BYTES} bytes", code="parcels_file")
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as err:
        raise ServiceError(f"{path}: cannot read parcels: {err}", code="parcels_file") from err
    if path.suffix.lower() == ".json":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as err:
            raise ServiceError(f"{path}:{err.lineno}: not valid JSON: {err.msg}", code="parcels_file") from err
        if not isinstance(rows, list):
            raise ServiceError(f"{path}: expected a JSON list of parcels", code="parcels_file")
        first = 1  # rows are numbered from 1
    elif path.suffix.lower() == ".csv":
        rows = list(csv.DictReader(text.splitlines()))
        first = 2  # row 1 is the header
    else:
        raise ServiceError(f"{path}: parcels must be a .csv or .json file", code="parcels_file")
    out: list[ParcelRow] = []
    for number, row in enumerate(rows, start=first):
        try:
            out.append(ParcelRow.model_validate(row))
        except ValidationError as err:
            first_error = err.errors(include_url=False)[0]
            field = ".".join(str(p) for p in first_error["loc"]) or "row"
            raise ServiceError(f"{path}: row {number}: {field}: {first_error['msg']}", code="parcels_file") from err
    return out


def _arg(args: Mapping[str, str], name: str) -> str:
    return " ".join(str(args.get(name, "") or "").split())[:MAX_ARG_CHARS]


def _digits(text: str) -> str:
    return re.sub(r"\D", "", text)


class SqliteServices(SqliteDatabase):
    """The built-in services over one SQLite file; use as `async with SqliteServices(path) as services:`.

    Its own file, not the call store's: each database carries one schema version (PRAGMA user_version).
    """

    label = "services database"
    error = ServiceError
    migrations = MIGRATIONS

    def __init__(self, path: str | Path, *, parcels: str | Path | None = None,
                 clock: Callable[[], datetime] | None = None, busy_timeout: float = 10.0) -> None:
        super().__init__(path, busy_timeout=busy_timeout)
        self._parcels_file = parcels
        self._clock = clock or (lambda: datetime.now().astimezone())
        self._handlers: dict[str, Callable[[Mapping[str, str], str], dict[str, str]]] = {
            "parcels.lookup": self._lookup_sync,
            "tickets.create": self._create_ticket_sync,
            "bookings.create": self._create_booking_sync,
        }

    @property
    def names(self) -> list[str]:
        """The services this object offers."""
        return sorted(self._handlers)

    async def open(self) -> None:
        """Open or create the database, bring its schema up to date, and load the parcels file if given."""
        rows = await asyncio.to_thread(read_parcels, self._parcels_file) if self._parcels_file else None
        await super().open()
        if rows is None:
            return
        try:
            count = await self._call(self._load_parcels_sync, rows)
        except BaseException:
            await self.aclose()
            raise
        log.info("loaded %d parcels from %s", count, self._parcels_file)

    async def invoke(self, service: str, args: Mapping[str, str], *, call_id: str = "") -> Mapping[str, str]:
        """Run one built-in service on the database thread."""
        handler = self._handlers.get(service)
        if handler is None:
            raise ServiceError(f"no service {service!r} (known: {', '.join(self.names)})", code="unknown_service")
        return await self._call(handler, dict(args), call_id)

    async def load_parcels(self, rows: list[ParcelRow]) -> int:
        """Insert or replace parcels (by tracking number); returns how many."""
        return await self._call(self._load_parcels_sync, rows)

    async def query(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """Run a read-only query (for reports and tests)."""
        return await self._query(sql, params)

    # Everything below runs on the services thread only.

    def _load_parcels_sync(self, rows: list[ParcelRow]) -> int:
        cols = (*ParcelRow.model_fields, "phone_key")
        sql = (f"INSERT OR REPLACE INTO parcels ({', '.join(cols)}) VALUES ({', '.join('?' * len(cols))})")
        with self._transaction() as conn:
            conn.executemany(sql, [(*(getattr(r, c) for c in ParcelRow.model_fields), subscriber_key(r.phone))
                                   for r in rows])
        return len(rows)

    def _lookup_sync(self, args: Mapping[str, str], call_id: str) -> dict[str, str]:
        tracking, phone = _arg(args, "tracking_number").upper().replace(" ", ""), subscriber_key(_arg(args, "phone"))
        conn = self.conn
        cols = "tracking_number, status, location, location_en, eta, station, station_en, updated_at"
        if tracking:
            rows = conn.execute(f"SELECT {cols} FROM parcels WHERE tracking_number = ?", (tracking,)).fetchall()
        elif phone:
            # The newest parcel for this number, however either side wrote the country code; the caller hears
            # how many there are.
            rows = conn.execute(f"SELECT {cols} FROM parcels WHERE phone_key = ? ORDER BY updated_at DESC",
                                (phone,)).fetchall()
        else:
            raise ServiceError("parcels.lookup needs tracking_number or phone", code="service_args")
        if not rows:
            what = f"tracking number {tracking}" if tracking else f"phone {mask_number(_digits(_arg(args, 'phone')))}"
            raise ServiceNotFound(f"no parcel for {what}")
        values = dict(zip([c.strip() for c in cols.split(",")], rows[0], strict=True))
        values["tail"] = values["tracking_number"][-4:]
        values["count"] = str(len(rows))
        return values

    def _next_id(self, table: str, prefix: str) -> tuple[str, str, int]:
        """(id, day, seq): today's next number, e.g. T20261123-0001; runs inside a write transaction."""
        day = self._clock().strftime("%Y%m%d")
        seq = self.conn.execute(f"SELECT COALESCE(MAX(seq), 0) + 1 FROM {table} WHERE day = ?", (day,)).fetchone()[0]
        return f"{prefix}{day}-{seq:04d}", day, seq

    def _create_ticket_sync(self, args: Mapping[str, str], call_id: str) -> dict[str, str]:
        category, details = _arg(args, "category"), _arg(args, "details")
        callback = _digits(_arg(args, "callback_number"))
        if not category or not callback:
            raise ServiceError("tickets.create needs category and callback_number", code="service_args")
        with self._transaction() as conn:  # the number and the row in one transaction: no two calls share one
            ticket_id, day, seq = self._next_id("tickets", "T")
            conn.execute("INSERT INTO tickets VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (ticket_id, day, seq, category, details, callback,
                          _arg(args, "tracking_number"), call_id, self._clock().isoformat(timespec="seconds")))
        log.info("ticket %s created: %s, callback %s, call %s", ticket_id, category, mask_number(callback), call_id)
        return {"id": ticket_id, "digits": _digits(ticket_id)}

    def _create_booking_sync(self, args: Mapping[str, str], call_id: str) -> dict[str, str]:
        address, when, phone = _arg(args, "address"), _arg(args, "time"), _digits(_arg(args, "phone"))
        if not address or not when:
            raise ServiceError("bookings.create needs address and time", code="service_args")
        with self._transaction() as conn:
            booking_id, day, seq = self._next_id("bookings", "B")
            conn.execute("INSERT INTO bookings VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                         (booking_id, day, seq, address, when, phone, call_id,
                          self._clock().isoformat(timespec="seconds")))
        log.info("pickup %s booked for %s, call %s", booking_id, when, call_id)
        return {"id": booking_id, "digits": _digits(booking_id)}
