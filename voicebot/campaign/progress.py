"""The live campaign display: dialled, answered, in progress, outcomes, ETA."""

from __future__ import annotations

import time
from collections import Counter

from rich.console import Console, Group
from rich.live import Live
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from .runner import AttemptEnded, AttemptStarted, CampaignStarted, CampaignStopped, CampaignWaiting, ContactSkipped


class ProgressView:
    """Subscribes to the runner's events and redraws a rich panel; use as `with view:` around the run."""

    def __init__(self, console: Console, *, enabled: bool = True) -> None:
        self.console = console
        self.progress = Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TextColumn("{task.fields[eta]}"), TimeElapsedColumn(), console=console)
        self.task = self.progress.add_task("contacts finished", total=1, eta="")
        self.live = Live(console=console, refresh_per_second=4, transient=False) if enabled else None
        self.dialled = self.answered = self.live_calls = self.finished = self.total = self.attempts = 0
        self.outcomes: Counter[str] = Counter()
        self.note = ""
        self._started = time.monotonic()
        self._finished_at_start = 0

    def __enter__(self) -> ProgressView:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.update(self._render())
            self.live.__exit__(None, None, None)
            self.console.line()  # the last live line has no newline of its own

    def __call__(self, event: object) -> None:
        """Take one runner event."""
        match event:
            case CampaignStarted():
                self.total, self.finished, self._finished_at_start = event.total, event.done, event.done
                self._started = time.monotonic()
                if event.recovered:
                    self.note = f"{event.recovered} call(s) cut off by an earlier run were closed as interrupted"
            case AttemptStarted():
                self.attempts += 1
                self.live_calls += 1
                self.dialled += event.attempt == 1
            case AttemptEnded():
                self.live_calls -= 1
                self.answered += event.answered
                if event.final:
                    self.finished += 1
                    self.outcomes[event.outcome] += 1
            case ContactSkipped() if event.until is None:
                self.finished += 1
                self.outcomes[event.reason] += 1
            case CampaignWaiting():
                self.note = event.reason
            case CampaignStopped():
                self.note = f"stopped: {event.status}"
        if self.live is not None:
            self.live.update(self._render())

    def _eta(self) -> str:
        done_now = self.finished - self._finished_at_start
        elapsed = time.monotonic() - self._started
        if done_now <= 0 or elapsed <= 0:
            return ""
        left = (self.total - self.finished) / (done_now / elapsed)
        return f"ETA {int(left // 60)}:{int(left % 60):02d}"

    def _render(self) -> Group:
        self.progress.update(self.task, total=max(self.total, 1), completed=self.finished, eta=self._eta())
        stats = Table.grid(padding=(0, 2))
        stats.add_row(f"dialled [bold]{self.dialled}[/]", f"attempts [bold]{self.attempts}[/]",
                      f"answered calls [bold]{self.answered}[/]", f"in progress [bold]{self.live_calls}[/]")
        outcomes = Table.grid(padding=(0, 2))
        for name, count in self.outcomes.most_common(8):
            outcomes.add_row(name, str(count))
        return Group(self.progress, stats, outcomes, f"[dim]{self.note}[/]")
