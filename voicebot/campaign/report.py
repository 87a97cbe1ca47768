"""The campaign report: counts and rates, per-contact results as CSV/JSON, and an SVG funnel."""

from __future__ import annotations

import csv
import io
import json
from collections import Counter
from dataclasses import asdict, dataclass, field
from html import escape
from typing import Any

from . import rules
from .db import CampaignDB, ContactResult

# Outcomes that are not a conversation's result: the network's, the runner's, or a cut-off call.
NOT_CONVERSATION = rules.UNANSWERED | {rules.VOICEMAIL, rules.DROPPED, rules.DNC_SKIPPED, rules.INTERRUPTED,
                                       rules.CANCELLED, rules.NO_WINDOW, "error", ""}


@dataclass(frozen=True)
class Report:
    """Everything the end-of-campaign summary says."""

    name: str
    plan: str
    status: str
    contacts: int
    finished: int
    pending: int
    attempts: int
    dialled: int  # contacts with at least one attempt
    answered: int  # contacts whose call was picked up at least once (people and machines)
    reached: int  # contacts who talked with the robot
    completed: int  # contacts whose conversation reached an outcome of the plan
    outcomes: dict[str, int] = field(default_factory=dict)  # final (or latest) outcome per contact
    attempt_outcomes: dict[str, int] = field(default_factory=dict)
    talk_minutes: float = 0.0
    first_started: float | None = None
    last_ended: float | None = None

    def rate(self, part: int, whole: int) -> float:
        """part/whole as a fraction, 0 when there is no whole."""
        return part / whole if whole else 0.0

    @property
    def answer_rate(self) -> float:
        """Share of dialled contacts who picked up."""
        return self.rate(self.answered, self.dialled)

    @property
    def completion_rate(self) -> float:
        """Share of all contacts whose conversation reached a plan outcome."""
        return self.rate(self.completed, self.contacts)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, rates included."""
        return {**asdict(self), "answer_rate": round(self.answer_rate, 4),
                "completion_rate": round(self.completion_rate, 4),
                "outcome_rates": {k: round(self.rate(v, self.contacts), 4) for k, v in self.outcomes.items()}}


async def build_report(db: CampaignDB, name: str) -> Report:
    """Compute the report from the campaign database."""
    info = await db.require(name)
    results = await db.results(name)
    attempts = await db.attempts(name)
    not_answered = rules.UNANSWERED | {rules.INTERRUPTED, ""}
    answered_ids = {a[0] for a in attempts if a[4] not in not_answered}
    reached_ids = {a[0] for a in attempts if a[4] not in not_answered | {rules.VOICEMAIL}}
    finished = [r for r in results if r.state == "done"]
    starts = [a[2] for a in attempts]
    ends = [a[3] for a in attempts if a[3] is not None]
    return Report(
        name=name, plan=info.plan, status=info.status, contacts=len(results), finished=len(finished),
        pending=len(results) - len(finished), attempts=len(attempts), dialled=len({a[0] for a in attempts}),
        answered=len(answered_ids), reached=len(reached_ids),
        completed=sum(r.state == "done" and r.outcome not in NOT_CONVERSATION for r in results),
        outcomes=dict(Counter(r.outcome or "(not yet called)" for r in results).most_common()),
        attempt_outcomes=dict(Counter(a[4] or "(in progress)" for a in attempts).most_common()),
        talk_minutes=round(sum(a[5] or 0 for a in attempts) / 60, 2),
        first_started=min(starts) if starts else None, last_ended=max(ends) if ends else None,
    )


CSV_FIELDS = ("contact_id", "row", "phone", "state", "attempts", "outcome", "call_id", "talk_seconds", "detail",
              "variables")


def results_csv(results: list[ContactResult]) -> str:
    """One line per contact: masked number, attempts, final outcome, what the callee said (as JSON)."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_FIELDS)
    for r in results:
        res = r.result or {}
        writer.writerow([r.contact_id, r.row, r.phone_masked, r.state, r.attempts, r.outcome, res.get("call_id", ""),
                         res.get("talk_seconds", ""), res.get("detail", ""),
                         json.dumps(res.get("variables", {}), ensure_ascii=False, sort_keys=True)])
    return out.getvalue()


def results_json(results: list[ContactResult]) -> str:
    """The same as the CSV, as a JSON array."""
    return json.dumps([{"contact_id": r.contact_id, "row": r.row, "phone": r.phone_masked, "state": r.state,
                        "attempts": r.attempts, "outcome": r.outcome, "result": r.result} for r in results],
                      ensure_ascii=False, indent=1)


PALETTE = ("#2b6cb0", "#3182ce", "#38a169", "#2f855a", "#d69e2e", "#dd6b20", "#e53e3e", "#805ad5", "#718096")


def funnel_svg(report: Report) -> str:
    """The funnel (contacts → dialled → answered → reached → completed) and the outcome bars, as one SVG."""
    steps = [("contacts", report.contacts), ("dialled", report.dialled), ("answered", report.answered),
             ("talked with the robot", report.reached), ("completed the dialog", report.completed)]
    width, bar_h, gap, label_w, max_w = 760, 26, 8, 200, 440
    scale = max_w / max(report.contacts, 1)
    rows: list[str] = []
    y = 50
    rows.append(f'<text x="20" y="30" class="h">Campaign {escape(report.name)} — plan {escape(report.plan)}'
                f' ({escape(report.status)})</text>')
    for i, (label, value) in enumerate(steps):
        w = max(1.0, value * scale)
        x = label_w + (max_w - w) / 2
        pct = f"{100 * report.rate(value, report.contacts):.1f}%"
        rows.append(f'<text x="20" y="{y + 18}">{escape(label)}</text>')
        rows.append(f'<rect x="{x:.1f}" y="{y}" width="{w:.1f}" height="{bar_h}" fill="{PALETTE[i]}"/>')
        rows.append(f'<text x="{label_w + max_w + 10}" y="{y + 18}">{value} ({pct})</text>')
        y += bar_h + gap
    y += 20
    rows.append(f'<text x="20" y="{y}" class="h">Outcomes per contact</text>')
    y += 14
    top = max(report.outcomes.values(), default=1)
    for i, (outcome, count) in enumerate(report.outcomes.items()):
        w = max(1.0, count / top * max_w)
        rows.append(f'<text x="20" y="{y + 15}">{escape(outcome)}</text>')
        rows.append(f'<rect x="{label_w}" y="{y}" width="{w:.1f}" height="20" fill="{PALETTE[(i + 2) % 9]}"/>')
        rows.append(f'<text x="{label_w + w + 8:.1f}" y="{y + 15}">{count}</text>')
        y += 26
    height = y + 20
    return (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="13">'
            '<style>.h{font-weight:bold;font-size:15px}</style>'
            f'<rect width="100%" height="100%" fill="white"/>{"".join(rows)}</svg>\n')
