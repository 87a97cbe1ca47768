"""The campaign loop: pick due contacts, check the rules, pace and cap the calls, store every result at once."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import VoicebotError
from ..events import Intent
from ..record import mask_number
from ..store import CallStore
from . import rules
from .db import CampaignDB, DueContact
from .dialer import Dialer, DialResult, OutboundCall

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunOptions:
    """How fast, how wide, and under which rules a campaign dials."""

    concurrency: int = 10
    calls_per_second: float = 2.0
    retry: rules.RetryPolicy = field(default_factory=rules.RetryPolicy)
    calling: rules.CallingPolicy = field(default_factory=rules.CallingPolicy)
    redial_interrupted: bool = False  # re-ring callees whose call a crash cut off (they were rung once)
    poll_interval: float = 1.0  # how often pause/cancel (set by other processes) are looked for

    def __post_init__(self) -> None:
        if not 1 <= self.concurrency <= 1000:
            raise ValueError("concurrency must be between 1 and 1000")
        if not 0 < self.calls_per_second <= 1000:
            raise ValueError("calls per second must be above 0 and at most 1000")


# --- what the runner tells its watchers (progress display, logs) -------------------------------


@dataclass(frozen=True)
class CampaignStarted:
    """A run begins: how many contacts are finished, pending, and were interrupted by a previous run."""

    name: str
    total: int
    done: int
    recovered: int


@dataclass(frozen=True)
class AttemptStarted:
    """Dialling a contact."""

    contact_id: str
    attempt: int
    phone_masked: str


@dataclass(frozen=True)
class AttemptEnded:
    """An attempt is over and stored; `final` says whether the contact is finished."""

    contact_id: str
    attempt: int
    outcome: str
    final: bool
    answered: bool
    talk_seconds: float


@dataclass(frozen=True)
class ContactSkipped:
    """A contact was not dialled now: do-not-call, outside its window, over its cap."""

    contact_id: str
    reason: str
    until: float | None  # when it becomes callable again; None when it never will in this campaign


@dataclass(frozen=True)
class CampaignWaiting:
    """Nothing to dial until `until` (a window, a retry delay, a pause)."""

    reason: str
    until: float | None


@dataclass(frozen=True)
class CampaignStopped:
    """The run ends: `status` is done, paused, cancelled or interrupted."""

    status: str


class CampaignRunner:
    """Runs one campaign to its end (or until paused, cancelled or stopped); safe to kill and run again."""

    def __init__(self, *, db: CampaignDB, name: str, dialer: Dialer, options: RunOptions,
                 emit: Callable[[object], None] = lambda event: None,
                 call_emit: Callable[[object], None] = lambda event: None,
                 store: CallStore | None = None, clock: Callable[[], float] = time.time) -> None:
        self.db, self.name, self.dialer, self.options = db, name, dialer, options
        self.emit, self.call_emit, self.store, self.clock = emit, call_emit, store, clock
        self._live: set[asyncio.Task] = set()
        self._side: set[asyncio.Task] = set()  # do-not-call writes made during calls
        self._live_numbers: set[str] = set()  # subscribers (phone keys) on a call with us right now
        self._stopping = False
        self._next_dial = 0.0

    def stop(self) -> None:
        """Dial nobody new; calls in progress finish and are stored, then `run` returns."""
        self._stopping = True

    async def run(self) -> str:
        """Dial until every contact is finished; returns the campaign's status when the run ends."""
        info = await self.db.require(self.name)
        if info.status in ("cancelled", "done"):
            return info.status
        recovered = await self.db.recover(self.name, redial=self.options.redial_interrupted, now=self.clock())
        results = await self.db.results(self.name)
        self.emit(CampaignStarted(name=self.name, total=len(results),
                                  done=sum(r.state == "done" for r in results), recovered=recovered))
        status = "interrupted"
        try:
            status = await self._loop()
        finally:
            if self._live and status == "interrupted":
                for task in self._live:
                    task.cancel()  # hard stop: their attempts stay open and are recovered next run
            await asyncio.gather(*self._live, return_exceptions=True)
            await asyncio.gather(*self._side, return_exceptions=True)
            self.emit(CampaignStopped(status=status))
        return status

    async def _loop(self) -> str:
        loop = asyncio.get_running_loop()
        self._next_dial = loop.time()
        last_poll, status = -1e9, "running"
        while True:
            if loop.time() - last_poll >= self.options.poll_interval or not self._live:
                status = (await self.db.require(self.name)).status
                last_poll = loop.time()
            if status == "cancelled" or self._stopping:
                await self._drain()
                if status == "cancelled":
                    await self.db.cancel_pending(self.name)
                    return "cancelled"
                return "stopped"
            started = 0
            if status == "running":
                started = await self._dial_due()
            if not self._live and started == 0:
                if status == "paused":
                    self.emit(CampaignWaiting(reason="paused", until=None))
                    await asyncio.sleep(self.options.poll_interval)
                    continue
                next_at = await self.db.next_due_at(self.name)
                if next_at is None:
                    await self.db.set_status(self.name, "done")
                    return "done"
                wait = max(0.0, min(next_at - self.clock(), self.options.poll_interval))
                self.emit(CampaignWaiting(reason="waiting for the next due contact", until=next_at))
                await asyncio.sleep(wait)
                continue
            if self._live and (started == 0 or len(self._live) >= self.options.concurrency):
                await asyncio.wait(self._live, timeout=self.options.poll_interval,
                                   return_when=asyncio.FIRST_COMPLETED)

    async def _drain(self) -> None:
        if self._live:
            await asyncio.gather(*self._live, return_exceptions=True)

    async def _dial_due(self) -> int:
        """Start calls for due contacts, up to the free capacity; returns how many were started."""
        free = self.options.concurrency - len(self._live)
        if free <= 0:
            return 0
        started = 0
        for contact in await self.db.due(self.name, now=self.clock(), limit=free):
            if self._stopping:
                break
            if contact.phone_key in self._live_numbers:
                continue  # one person, two contacts (two parcels): never ring them twice at once
            if not await self._may_call(contact):
                continue
            if await self._pace() and not await self._may_call(contact):
                continue  # the wait for our pacing slot took us past the window, or onto the DNC list
            # A pause, cancel or stop made while this batch was being paced holds from the very next dial.
            if self._stopping or (await self.db.require(self.name)).status != "running":
                break
            claimed = await self.db.claim(self.name, contact.contact_id, now=self.clock())
            if claimed is None:
                continue
            attempt_id, attempt = claimed
            call = OutboundCall(campaign=self.name, attempt_id=attempt_id, attempt=attempt,
                                contact_id=contact.contact_id, phone=contact.phone, language=contact.language,
                                variables=contact.variables)
            self.emit(AttemptStarted(contact_id=contact.contact_id, attempt=attempt,
                                     phone_masked=mask_number(contact.phone)))
            task = asyncio.create_task(self._attempt(call, contact), name=f"attempt-{attempt_id}")
            self._live.add(task)
            self._live_numbers.add(contact.phone_key)
            task.add_done_callback(lambda _task, key=contact.phone_key: self._live_numbers.discard(key))
            task.add_done_callback(self._attempt_done)
            started += 1
        return started

    def _attempt_done(self, task: asyncio.Task) -> None:
        self._live.discard(task)
        if not task.cancelled() and (err := task.exception()) is not None:
            log.error("attempt task %s failed; its attempt stays open until the next run", task.get_name(),
                      exc_info=err)

    async def _pace(self) -> bool:
        """Calls per second: each dial waits for its slot; returns whether it had to wait."""
        loop = asyncio.get_running_loop()
        now = loop.time()
        waited = self._next_dial > now
        if waited:
            await asyncio.sleep(self._next_dial - now)
        self._next_dial = max(self._next_dial, now) + 1.0 / self.options.calls_per_second
        return waited

    async def _may_call(self, contact: DueContact) -> bool:
        """Do-not-call, calling window, frequency cap: checked right before every dial."""
        now = self.clock()
        if await self.db.is_dnc(contact.phone_key):
            await self.db.close_contact(self.name, contact.contact_id, outcome=rules.DNC_SKIPPED)
            self.emit(ContactSkipped(contact_id=contact.contact_id, reason=rules.DNC_SKIPPED, until=None))
            return False
        calling = self.options.calling
        allowed = calling.next_allowed(now, contact.timezone)
        if allowed is None:
            await self.db.close_contact(self.name, contact.contact_id, outcome=rules.NO_WINDOW)
            self.emit(ContactSkipped(contact_id=contact.contact_id, reason=rules.NO_WINDOW, until=None))
            return False
        if allowed <= now:
            recent = await self.db.recent_attempts(contact.phone_key, since=now - calling.per_seconds)
            allowed = calling.cap_free_at(now, recent)
            reason = "frequency cap"
        else:
            reason = "outside calling window"
        if allowed > now:
            await self.db.postpone(self.name, contact.contact_id, until=allowed)
            self.emit(ContactSkipped(contact_id=contact.contact_id, reason=reason, until=allowed))
            return False
        return True

    async def _attempt(self, call: OutboundCall, contact: DueContact) -> None:
        """One attempt: dial, then store the outcome and the contact's next step in one transaction."""
        dnc_heard = False

        def on_event(event: object) -> None:
            nonlocal dnc_heard
            if isinstance(event, Intent) and event.name == rules.DO_NOT_CALL and not dnc_heard:
                # The callee asked not to be called again: on the list now, not when the campaign ends.
                dnc_heard = True
                task = asyncio.create_task(self.db.add_dnc([call.phone], source=f"asked on call {call.call_id}"))
                self._side.add(task)
                task.add_done_callback(self._side.discard)
            self.call_emit(event)

        try:
            result = await self.dialer.dial(call, emit=on_event)
        except VoicebotError as err:
            log.warning("attempt %s to %s failed: %s", call.attempt_id, mask_number(call.phone), err)
            result = DialResult(outcome=rules.FAILED, detail=str(err))
        except Exception as err:  # a broken dialer must not leave the attempt open with its error unseen
            log.exception("attempt %s to %s: the dialer crashed", call.attempt_id, mask_number(call.phone))
            result = DialResult(outcome=rules.FAILED, detail=f"dialer error: {type(err).__name__}: {err}")
        if result.outcome == rules.DO_NOT_CALL and not dnc_heard:
            await self.db.add_dnc([call.phone], source=f"outcome of call {call.call_id}")
        now = self.clock()
        retry_at = self.options.retry.retry_at(result.outcome, call.attempt, now)
        record = result.record
        summary = {
            "outcome": result.outcome, "attempt": call.attempt, "call_id": record.call_id if record else "",
            "ring_seconds": result.ring_seconds, "talk_seconds": result.talk_seconds, "detail": result.detail,
            "variables": dict(record.variables) if record else {}, "ended_by": record.ended_by if record else "",
        }
        # The campaign's own result first: a failing extra copy must not lose it.
        await self.db.finish(call.attempt_id, outcome=result.outcome, now=now,
                             call_id=record.call_id if record else "", talk_seconds=result.talk_seconds,
                             record=record.to_dict() if record else None, retry_at=retry_at, result=summary)
        if record is not None and self.store is not None:
            try:
                await self.store.save(record)
            except VoicebotError as err:
                log.warning("call %s: not copied to the call store: %s", record.call_id, err)
        self.emit(AttemptEnded(contact_id=call.contact_id, attempt=call.attempt, outcome=result.outcome,
                               final=retry_at is None, answered=record is not None or result.outcome == "voicemail",
                               talk_seconds=result.talk_seconds))

