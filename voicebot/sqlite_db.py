"""SQLite behind one thread that owns the connection: open, migrate, run, close."""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Self, TypeVar

from .errors import VoicebotError

T = TypeVar("T")


class SqliteDatabase:
    """A database file with versioned migrations; subclasses add queries that run on its thread."""

    label = "database"  # how messages name it: "call store", "campaign database"
    error: type[VoicebotError] = VoicebotError
    migrations: tuple[tuple[str, ...], ...] = ()

    def __init__(self, path: str | Path, *, busy_timeout: float = 10.0) -> None:
        self.path = str(path)
        self._busy_timeout = busy_timeout
        self._executor: ThreadPoolExecutor | None = None
        self._conn: sqlite3.Connection | None = None

    @property
    def schema_version(self) -> int:
        """The version a fully migrated file has."""
        return len(self.migrations)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def open(self) -> None:
        """Open or create the database file and bring its schema up to date."""
        if self._executor is not None:
            raise self.error(f"{self.label} {self.path} is already open")
        # One worker: the connection is only ever touched by this thread, so calls are serialized.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"voicebot-{self.label}")
        try:
            await self._call(self._open_sync, opening=True)
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        """Close the database and stop its thread; safe to call twice."""
        executor, self._executor = self._executor, None
        if executor is None:
            return
        try:
            await asyncio.get_running_loop().run_in_executor(executor, self._close_sync)
        finally:
            executor.shutdown(wait=False)

    async def _call(self, fn: Callable[..., T], *args: Any, opening: bool = False) -> T:
        if self._executor is None or (self._conn is None and not opening):
            raise self.error(f"{self.label} {self.path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except (sqlite3.Error, OSError) as err:
            raise self.error(f"{self.label} {self.path}: {err}") from err

    async def _query(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        return await self._call(self._query_sync, sql, args)

    # Everything below runs on the database's thread only.

    @property
    def conn(self) -> sqlite3.Connection:
        """The open connection (database thread only)."""
        if self._conn is None:
            raise self.error(f"{self.label} {self.path} is not open")
        return self._conn

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any error: the write lock is taken up front."""
        conn = self.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.rollback()
            raise

    def _open_sync(self) -> None:
        if self.path != ":memory:" and not self.path.startswith("file:"):
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves so a change is exactly one transaction.
        conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
            conn.execute("PRAGMA foreign_keys = ON")
            conn.execute("PRAGMA journal_mode = WAL")
            self._conn = conn
            self._migrate()
        except BaseException:
            self._conn = None
            conn.close()
            raise

    def _migrate(self) -> None:
        # IMMEDIATE takes the write lock first, so two processes opening a new file do not both migrate.
        with self._transaction() as conn:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > self.schema_version:
                raise self.error(f"{self.label} {self.path} has schema version {version}, newer than "
                                 f"{self.schema_version} known to this voicebot; upgrade voicebot")
            for steps in self.migrations[version:]:
                for sql in steps:
                    conn.execute(sql)
            conn.execute(f"PRAGMA user_version = {self.schema_version}")

    def _close_sync(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _query_sync(self, sql: str, args: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        return self.conn.execute(sql, args).fetchall()
