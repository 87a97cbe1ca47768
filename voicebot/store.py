"""Call-record persistence: SQLite behind one thread that owns the connection."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from voicebot.errors import VoicebotError
from voicebot.record import CallRecord
from voicebot.sqlite_db import SqliteDatabase

T = TypeVar("T")

MAX_RECORD_BYTES = 5_000_000
MAX_LIST_LIMIT = 1000

# Each entry upgrades the schema by one version; never edit a shipped entry, append a new one.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        """CREATE TABLE calls (
            call_id TEXT PRIMARY KEY, plan TEXT NOT NULL, plan_version TEXT NOT NULL,
            language TEXT NOT NULL, direction TEXT NOT NULL, caller TEXT NOT NULL,
            variables TEXT NOT NULL, started_at TEXT NOT NULL, ended_at TEXT NOT NULL,
            duration REAL NOT NULL, outcome TEXT NOT NULL, ended_by TEXT NOT NULL,
            transfer TEXT, updated_at TEXT NOT NULL)""",
        """CREATE TABLE turns (
            call_id TEXT NOT NULL REFERENCES calls(call_id) ON DELETE CASCADE,
            idx INTEGER NOT NULL, state TEXT NOT NULL, prompt_id TEXT NOT NULL, prompt TEXT NOT NULL,
            heard TEXT NOT NULL, confidence REAL NOT NULL, source TEXT NOT NULL, intent TEXT NOT NULL,
            intent_confidence REAL NOT NULL, slots TEXT NOT NULL, next_state TEXT NOT NULL,
            started_at REAL NOT NULL, speech_ended_at REAL, reply_latency REAL,
            barged_in INTEGER NOT NULL, heard_prompt_until REAL,
            PRIMARY KEY (call_id, idx))""",
        "CREATE INDEX calls_outcome ON calls(outcome)",
        "CREATE INDEX calls_started_at ON calls(started_at)",
        "CREATE INDEX calls_plan ON calls(plan)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

_CALL_FIELDS = ("call_id", "plan", "plan_version", "language", "direction", "caller", "variables",
                "started_at", "ended_at", "duration", "outcome", "ended_by", "transfer")
_TURN_FIELDS = ("index", "state", "prompt_id", "prompt", "heard", "confidence", "source", "intent",
                "intent_confidence", "slots", "next_state", "started_at", "speech_ended_at",
                "reply_latency", "barged_in", "heard_prompt_until")
_TURN_COLS = tuple("idx" if f == "index" else f for f in _TURN_FIELDS)
_JSON_FIELDS = frozenset({"variables", "transfer", "slots"})

_UPSERT_CALL = (
    f"INSERT INTO calls ({', '.join(_CALL_FIELDS)}, updated_at) "
    f"VALUES ({', '.join('?' * (len(_CALL_FIELDS) + 1))}) ON CONFLICT(call_id) DO UPDATE SET "
    + ", ".join(f"{c} = excluded.{c}" for c in (*_CALL_FIELDS[1:], "updated_at"))
)
_INSERT_TURN = (f"INSERT INTO turns (call_id, {', '.join(_TURN_COLS)}) "
                f"VALUES ({', '.join('?' * (len(_TURN_COLS) + 1))})")


class StoreError(VoicebotError):
    """The call store could not read or write its database file."""

    code = "store"


@dataclass(frozen=True)
class CallSummary:
    """One line of a call listing."""

    call_id: str
    plan: str
    started_at: str
    duration: float
    outcome: str
    turns: int
    caller: str


def _encode(value: Any) -> str | None:
    return None if value is None else json.dumps(value, ensure_ascii=False)


def _decode(text: str | None) -> Any:
    return None if text is None else json.loads(text)


class CallStore(SqliteDatabase):
    """Saves and queries call records; use as `async with CallStore(path) as store:`."""

    label = "call store"
    error = StoreError
    migrations = MIGRATIONS

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0,
                 max_record_bytes: int = MAX_RECORD_BYTES) -> None:
        super().__init__(path, busy_timeout=busy_timeout)
        self._max_record_bytes = max_record_bytes

    async def save(self, record: CallRecord) -> None:
        """Insert or update a call and replace its turns, all in one transaction."""
        # Snapshot on the loop: the session may keep mutating the record while the thread writes.
        data = record.to_dict()
        await self._call(self._save_sync, data)

    async def get(self, call_id: str) -> CallRecord | None:
        """The saved record for `call_id`, or None."""
        data = await self._call(self._get_sync, call_id)
        return None if data is None else CallRecord.from_dict(data)

    async def list(self, *, limit: int = 50, outcome: str | None = None, plan: str | None = None,
                   since: str | None = None) -> list[CallSummary]:
        """Calls newest first, optionally filtered by outcome, plan and start time (ISO, inclusive)."""
        if isinstance(limit, bool) or not isinstance(limit, int) or not 1 <= limit <= MAX_LIST_LIMIT:
            raise ValueError(f"limit must be an integer from 1 to {MAX_LIST_LIMIT}, got {limit!r}")
        where, args = self._filters(outcome=outcome, plan=plan, since=since)
        sql = ("SELECT call_id, plan, started_at, duration, outcome, "
               "(SELECT COUNT(*) FROM turns t WHERE t.call_id = c.call_id), caller "
               f"FROM calls c {where} ORDER BY started_at DESC, call_id DESC LIMIT ?")
        rows = await self._call(self._query_sync, sql, (*args, limit))
        return [CallSummary(*row) for row in rows]

    async def outcome_counts(self, *, plan: str | None = None) -> dict[str, int]:
        """Number of calls per outcome ("" for calls still in progress)."""
        where, args = self._filters(plan=plan)
        rows = await self._call(
            self._query_sync, f"SELECT outcome, COUNT(*) FROM calls {where} GROUP BY outcome", args)
        return dict(rows)

    @staticmethod
    def _filters(**filters: str | None) -> tuple[str, tuple[str, ...]]:
        ops = {"outcome": "outcome = ?", "plan": "plan = ?", "since": "started_at >= ?"}
        used = [(ops[k], v) for k, v in filters.items() if v is not None]
        if not used:
            return "", ()
        return "WHERE " + " AND ".join(c for c, _ in used), tuple(v for _, v in used)

    # Everything below runs on the store's thread only.

    def _save_sync(self, data: dict[str, Any]) -> None:
        try:
            size = len(json.dumps(data, ensure_ascii=False).encode("utf-8"))
            call_row = [_encode(data[f]) if f in _JSON_FIELDS else data[f] for f in _CALL_FIELDS]
            turn_rows = [
                [data["call_id"], *(_encode(t[f]) if f in _JSON_FIELDS else t[f] for f in _TURN_FIELDS)]
                for t in data["turns"]
            ]
        except (TypeError, ValueError) as err:
            raise StoreError(f"call {data['call_id']!r} cannot be stored in {self.path}: {err}",
                             code="store_record_invalid") from err
        if size > self._max_record_bytes:
            raise StoreError(
                f"call {data['call_id']!r} is {size} bytes serialized, over the {self._max_record_bytes} "
                f"byte limit of {self.path}; the previously saved version is kept",
                code="store_record_too_large")
        call_row.append(datetime.now(UTC).isoformat())
        with self._transaction() as conn:
            conn.execute(_UPSERT_CALL, call_row)
            conn.execute("DELETE FROM turns WHERE call_id = ?", (data["call_id"],))
            conn.executemany(_INSERT_TURN, turn_rows)

    def _get_sync(self, call_id: str) -> dict[str, Any] | None:
        conn = self.conn
        # One read transaction so the call row and its turns come from the same snapshot.
        conn.execute("BEGIN")
        try:
            row = conn.execute(f"SELECT {', '.join(_CALL_FIELDS)} FROM calls WHERE call_id = ?",
                               (call_id,)).fetchone()
            turn_rows = conn.execute(f"SELECT {', '.join(_TURN_COLS)} FROM turns WHERE call_id = ? "
                                     "ORDER BY idx", (call_id,)).fetchall()
        finally:
            conn.execute("COMMIT")
        if row is None:
            return None
        data = {f: _decode(v) if f in _JSON_FIELDS else v for f, v in zip(_CALL_FIELDS, row, strict=True)}
        turns = []
        for tr in turn_rows:
            turn = {f: _decode(v) if f in _JSON_FIELDS else v for f, v in zip(_TURN_FIELDS, tr, strict=True)}
            turn["barged_in"] = bool(turn["barged_in"])
            turns.append(turn)
        data["turns"] = turns
        return data
