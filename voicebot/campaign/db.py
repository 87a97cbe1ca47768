"""Campaign state in SQLite: contacts, every attempt, the do-not-call list. Each change is one transaction."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ..errors import VoicebotError
from ..record import mask_number, subscriber_key
from ..sqlite_db import SqliteDatabase
from .contacts import Contact

MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE campaigns (
            name TEXT PRIMARY KEY, plan TEXT NOT NULL, plan_path TEXT NOT NULL, contacts_path TEXT NOT NULL,
            contacts_digest TEXT NOT NULL, options TEXT NOT NULL, status TEXT NOT NULL,
            created_at TEXT NOT NULL, updated_at TEXT NOT NULL)""",
        """CREATE TABLE contacts (
            campaign TEXT NOT NULL REFERENCES campaigns(name) ON DELETE CASCADE, contact_id TEXT NOT NULL,
            row INTEGER NOT NULL, phone TEXT NOT NULL, phone_key TEXT NOT NULL, timezone TEXT NOT NULL,
            language TEXT NOT NULL, variables TEXT NOT NULL,
            state TEXT NOT NULL,                -- pending, dialing, done
            attempts INTEGER NOT NULL DEFAULT 0, next_at REAL NOT NULL DEFAULT 0,
            outcome TEXT NOT NULL DEFAULT '', result TEXT, updated_at TEXT NOT NULL,
            PRIMARY KEY (campaign, contact_id))""",
        "CREATE INDEX contacts_due ON contacts(campaign, state, next_at)",
        """CREATE TABLE attempts (
            id INTEGER PRIMARY KEY, campaign TEXT NOT NULL, contact_id TEXT NOT NULL, n INTEGER NOT NULL,
            phone_key TEXT NOT NULL, started_at REAL NOT NULL, ended_at REAL,
            status TEXT NOT NULL,               -- dialing, ended
            outcome TEXT NOT NULL DEFAULT '', call_id TEXT NOT NULL DEFAULT '', talk_seconds REAL,
            record TEXT,
            FOREIGN KEY (campaign, contact_id) REFERENCES contacts(campaign, contact_id) ON DELETE CASCADE)""",
        "CREATE INDEX attempts_phone ON attempts(phone_key, started_at)",
        "CREATE INDEX attempts_campaign ON attempts(campaign, status)",
        """CREATE TABLE dnc (
            phone_key TEXT PRIMARY KEY, masked TEXT NOT NULL, source TEXT NOT NULL, added_at TEXT NOT NULL)""",
    ),
)
STATUSES = ("running", "paused", "cancelled", "done")
MAX_RECORD_BYTES = 2_000_000


class CampaignError(VoicebotError):
    """A campaign that cannot be created, found or changed as asked."""

    code = "campaign"


@dataclass(frozen=True)
class CampaignInfo:
    """A campaign as stored: its plan, contacts file, options and status."""

    name: str
    plan: str
    plan_path: str
    contacts_path: str
    contacts_digest: str
    options: dict[str, Any]
    status: str
    created_at: str


@dataclass(frozen=True)
class DueContact:
    """A contact ready for its next attempt."""

    contact_id: str
    row: int
    phone: str
    phone_key: str
    timezone: str
    language: str
    variables: dict[str, Any]
    attempts: int


@dataclass(frozen=True)
class ContactResult:
    """Where one contact stands: attempts so far and the last or final outcome."""

    contact_id: str
    row: int
    phone_masked: str
    state: str
    attempts: int
    outcome: str
    next_at: float
    result: dict[str, Any] | None


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class CampaignDB(SqliteDatabase):
    """Durable campaign state; `async with CampaignDB(path) as db:`."""

    label = "campaign database"
    error = CampaignError
    migrations = MIGRATIONS

    # --- campaigns ------------------------------------------------------------------------------

    async def create(self, *, name: str, plan: str, plan_path: str, contacts_path: str, digest: str,
                     options: dict[str, Any], contacts: list[Contact]) -> CampaignInfo:
        """Create the campaign with all its contacts in one transaction; CampaignError if the name is taken."""
        await self._call(self._create_sync, name, plan, plan_path, contacts_path, digest, options, contacts)
        info = await self.get(name)
        assert info is not None
        return info

    async def get(self, name: str) -> CampaignInfo | None:
        """The campaign called `name`, or None."""
        rows = await self._query("SELECT name, plan, plan_path, contacts_path, contacts_digest, options, status, "
                                 "created_at FROM campaigns WHERE name = ?", (name,))
        if not rows:
            return None
        row = list(rows[0])
        row[5] = json.loads(row[5])
        return CampaignInfo(*row)

    async def require(self, name: str) -> CampaignInfo:
        """The campaign called `name`; CampaignError naming the known ones otherwise."""
        info = await self.get(name)
        if info is None:
            known = [c.name for c in await self.campaigns()]
            raise CampaignError(f"no campaign {name!r} in {self.path}; known: {', '.join(known) or 'none'}",
                                code="campaign_not_found")
        return info

    async def campaigns(self) -> list[CampaignInfo]:
        """Every campaign, oldest first."""
        rows = await self._query("SELECT name FROM campaigns ORDER BY created_at, name")
        return [info for (name,) in rows if (info := await self.get(name)) is not None]

    async def set_status(self, name: str, status: str, *, options: dict[str, Any] | None = None) -> None:
        """Change a campaign's status (and options, when resuming with new ones)."""
        if status not in STATUSES:
            raise CampaignError(f"unknown status {status!r}; one of {STATUSES}")
        await self.require(name)
        sql, args = "UPDATE campaigns SET status = ?, updated_at = ?", [status, _now_iso()]
        if options is not None:
            sql, args = sql + ", options = ?", [*args, json.dumps(options)]
        await self._call(self._write_sync, sql + " WHERE name = ?", (*args, name))

    # --- attempts -------------------------------------------------------------------------------

    async def recover(self, name: str, *, redial: bool, now: float) -> int:
        """Close attempts a killed run left open: their calls died with it. Returns how many."""
        return await self._call(self._recover_sync, name, redial, now)

    async def due(self, name: str, *, now: float, limit: int) -> list[DueContact]:
        """Pending contacts whose next attempt is due, earliest first."""
        rows = await self._query(
            "SELECT contact_id, row, phone, phone_key, timezone, language, variables, attempts FROM contacts "
            "WHERE campaign = ? AND state = 'pending' AND next_at <= ? ORDER BY next_at, row LIMIT ?",
            (name, now, limit))
        return [DueContact(*r[:6], json.loads(r[6]), r[7]) for r in rows]

    async def next_due_at(self, name: str) -> float | None:
        """When the earliest pending contact becomes due; None when none is pending."""
        rows = await self._query("SELECT MIN(next_at) FROM contacts WHERE campaign = ? AND state = 'pending'",
                                 (name,))
        return rows[0][0]

    async def claim(self, name: str, contact_id: str, *, now: float) -> tuple[int, int] | None:
        """Record that we are dialling, before we dial: (attempt id, attempt number), or None if not pending."""
        return await self._call(self._claim_sync, name, contact_id, now)

    async def finish(self, attempt_id: int, *, outcome: str, now: float, call_id: str = "",
                     talk_seconds: float | None = None, record: dict[str, Any] | None = None,
                     retry_at: float | None = None, result: dict[str, Any] | None = None) -> None:
        """Store an attempt's outcome and the contact's new state in one transaction."""
        record_json = None if record is None else json.dumps(record, ensure_ascii=False)
        if record_json is not None and len(record_json) > MAX_RECORD_BYTES:
            record_json = json.dumps({"truncated": True, "outcome": outcome})
        await self._call(self._finish_sync, attempt_id, outcome, now, call_id, talk_seconds, record_json,
                         retry_at, None if result is None else json.dumps(result, ensure_ascii=False))

    async def postpone(self, name: str, contact_id: str, *, until: float) -> None:
        """Not now (outside the window, over the cap): try this contact again at `until`."""
        await self._call(self._write_sync, "UPDATE contacts SET next_at = ?, updated_at = ? "
                         "WHERE campaign = ? AND contact_id = ? AND state = 'pending'",
                         (until, _now_iso(), name, contact_id))

    async def close_contact(self, name: str, contact_id: str, *, outcome: str) -> None:
        """Finish a contact without dialling (do-not-call, cancelled, never callable)."""
        await self._call(self._write_sync, "UPDATE contacts SET state = 'done', outcome = ?, updated_at = ? "
                         "WHERE campaign = ? AND contact_id = ? AND state = 'pending'",
                         (outcome, _now_iso(), name, contact_id))

    async def cancel_pending(self, name: str) -> int:
        """Close every contact not yet finished as cancelled; returns how many."""
        return await self._call(self._cancel_sync, name)

    async def recent_attempts(self, phone_key: str, *, since: float) -> list[float]:
        """Start times of attempts to this number since `since`, over every campaign."""
        rows = await self._query("SELECT started_at FROM attempts WHERE phone_key = ? AND started_at > ?",
                                 (phone_key, since))
        return [r[0] for r in rows]

    # --- do not call ----------------------------------------------------------------------------

    async def add_dnc(self, phones: list[str], *, source: str) -> int:
        """Add numbers to the do-not-call list; returns how many were new."""
        rows = [(subscriber_key(p), mask_number(p), source, _now_iso()) for p in phones if subscriber_key(p)]
        return await self._call(self._add_dnc_sync, rows)

    async def remove_dnc(self, phone: str) -> bool:
        """Take a number off the do-not-call list; whether it was on it."""
        return await self._call(self._write_sync, "DELETE FROM dnc WHERE phone_key = ?", (subscriber_key(phone),)) > 0

    async def is_dnc(self, phone_key: str) -> bool:
        """Whether the number is on the do-not-call list."""
        return bool(await self._query("SELECT 1 FROM dnc WHERE phone_key = ?", (phone_key,)))

    async def dnc_entries(self) -> list[tuple[str, str, str]]:
        """(masked number, source, added at) for every entry."""
        return [tuple(r) for r in await self._query("SELECT masked, source, added_at FROM dnc ORDER BY added_at")]

    # --- reporting ------------------------------------------------------------------------------

    async def results(self, name: str) -> list[ContactResult]:
        """Every contact of the campaign, in file order."""
        rows = await self._query("SELECT contact_id, row, phone, state, attempts, outcome, next_at, result "
                                 "FROM contacts WHERE campaign = ? ORDER BY row", (name,))
        return [ContactResult(r[0], r[1], mask_number(r[2]), r[3], r[4], r[5], r[6],
                              None if r[7] is None else json.loads(r[7])) for r in rows]

    async def attempts(self, name: str) -> list[tuple[str, int, float, float | None, str, float | None]]:
        """(contact id, attempt number, started, ended, outcome, talk seconds) of every attempt."""
        return [tuple(r) for r in await self._query(
            "SELECT contact_id, n, started_at, ended_at, outcome, talk_seconds FROM attempts "
            "WHERE campaign = ? ORDER BY id", (name,))]

    async def first_record(self, name: str, *, outcomes: tuple[str, ...]) -> dict[str, Any] | None:
        """The stored call record of the first attempt that ended in one of `outcomes`, or None."""
        marks = ", ".join("?" * len(outcomes))
        rows = await self._query(f"SELECT record FROM attempts WHERE campaign = ? AND record IS NOT NULL "
                                 f"AND outcome IN ({marks}) ORDER BY id LIMIT 1", (name, *outcomes))
        return json.loads(rows[0][0]) if rows else None

    # Everything below runs on the database's thread only.

    def _write_sync(self, sql: str, args: tuple[Any, ...]) -> int:
        with self._transaction() as conn:
            return conn.execute(sql, args).rowcount

    def _create_sync(self, name: str, plan: str, plan_path: str, contacts_path: str, digest: str,
                     options: dict[str, Any], contacts: list[Contact]) -> None:
        now = _now_iso()
        with self._transaction() as conn:
            if conn.execute("SELECT 1 FROM campaigns WHERE name = ?", (name,)).fetchone():
                raise CampaignError(f"campaign {name!r} already exists in {self.path}", code="campaign_exists")
            conn.execute("INSERT INTO campaigns VALUES (?, ?, ?, ?, ?, ?, 'running', ?, ?)",
                         (name, plan, plan_path, contacts_path, digest, json.dumps(options), now, now))
            conn.executemany(
                "INSERT INTO contacts (campaign, contact_id, row, phone, phone_key, timezone, language, variables, "
                "state, updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                [(name, c.contact_id, c.row, c.phone, subscriber_key(c.phone), c.timezone, c.language,
                  json.dumps(c.variables, ensure_ascii=False), now) for c in contacts])

    def _recover_sync(self, name: str, redial: bool, now: float) -> int:
        with self._transaction() as conn:
            open_ = conn.execute("SELECT id, contact_id FROM attempts WHERE campaign = ? AND status = 'dialing'",
                                 (name,)).fetchall()
            for attempt_id, contact_id in open_:
                conn.execute("UPDATE attempts SET status = 'ended', ended_at = ?, outcome = 'interrupted' "
                             "WHERE id = ?", (now, attempt_id))
                # A call cut off by our own crash was placed: unless asked, the callee is not rung again.
                state = "pending" if redial else "done"
                conn.execute("UPDATE contacts SET state = ?, outcome = 'interrupted', next_at = ?, updated_at = ? "
                             "WHERE campaign = ? AND contact_id = ?", (state, now, _now_iso(), name, contact_id))
            return len(open_)

    def _claim_sync(self, name: str, contact_id: str, now: float) -> tuple[int, int] | None:
        with self._transaction() as conn:
            row = conn.execute("SELECT attempts, phone_key FROM contacts WHERE campaign = ? AND contact_id = ? "
                               "AND state = 'pending'", (name, contact_id)).fetchone()
            if row is None:
                return None
            n = row[0] + 1
            cur = conn.execute("INSERT INTO attempts (campaign, contact_id, n, phone_key, started_at, status) "
                               "VALUES (?, ?, ?, ?, ?, 'dialing')", (name, contact_id, n, row[1], now))
            conn.execute("UPDATE contacts SET state = 'dialing', attempts = ?, updated_at = ? "
                         "WHERE campaign = ? AND contact_id = ?", (n, _now_iso(), name, contact_id))
            return cur.lastrowid, n

    def _finish_sync(self, attempt_id: int, outcome: str, now: float, call_id: str, talk: float | None,
                     record: str | None, retry_at: float | None, result: str | None) -> None:
        with self._transaction() as conn:
            row = conn.execute("SELECT campaign, contact_id FROM attempts WHERE id = ? AND status = 'dialing'",
                               (attempt_id,)).fetchone()
            if row is None:
                raise CampaignError(f"attempt {attempt_id} is not in progress", code="attempt_closed")
            conn.execute("UPDATE attempts SET status = 'ended', ended_at = ?, outcome = ?, call_id = ?, "
                         "talk_seconds = ?, record = ? WHERE id = ?", (now, outcome, call_id, talk, record, attempt_id))
            state = "done" if retry_at is None else "pending"
            conn.execute("UPDATE contacts SET state = ?, outcome = ?, next_at = ?, result = COALESCE(?, result), "
                         "updated_at = ? WHERE campaign = ? AND contact_id = ?",
                         (state, outcome, retry_at or now, result, _now_iso(), *row))

    def _cancel_sync(self, name: str) -> int:
        with self._transaction() as conn:
            return conn.execute("UPDATE contacts SET state = 'done', outcome = 'cancelled', updated_at = ? "
                                "WHERE campaign = ? AND state = 'pending'", (_now_iso(), name)).rowcount

    def _add_dnc_sync(self, rows: list[tuple[str, str, str, str]]) -> int:
        with self._transaction() as conn:
            return sum(conn.execute("INSERT OR IGNORE INTO dnc VALUES (?, ?, ?, ?)", r).rowcount for r in rows)


def default_db_path(data_dir: Path) -> Path:
    """Where campaigns live unless --db says otherwise."""
    return data_dir / "campaigns.db"
