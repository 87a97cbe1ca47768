"""Campaign contacts: read a CSV or JSONL file and check every row against the plan before any call."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..dialog.plan import Plan
from ..errors import VoicebotError
from ..hours import zone
from ..record import mask_number

MAX_FILE_BYTES = 200 * 1024 * 1024
MAX_ROWS = 1_000_000
MAX_FIELD_CHARS = 2000
MAX_ERRORS_SHOWN = 20
# Columns with a meaning of their own; every other column is a plan variable.
PHONE, ID, TIMEZONE, LANGUAGE = "phone", "id", "timezone", "language"
RESERVED = (PHONE, ID, TIMEZONE, LANGUAGE)
_PHONE_CHARS = re.compile(r"[\s\-().]")
_PHONE = re.compile(r"^\+?\d{5,20}$")


class ContactsError(VoicebotError):
    """A contacts file that cannot be used; the message lists the bad rows by number."""

    code = "contacts_invalid"


@dataclass(frozen=True)
class Contact:
    """One callee: who, where (time zone), in which language, and the plan's variables."""

    contact_id: str
    row: int  # line of the file (CSV: counting the header as line 1)
    phone: str
    timezone: str
    language: str = ""
    variables: dict[str, Any] = field(default_factory=dict)

    @property
    def masked_phone(self) -> str:
        """The phone number as logs and reports show it."""
        return mask_number(self.phone)


def normalize_phone(raw: str) -> str:
    """Strip spaces, dashes, dots and brackets; 00 becomes +. ValueError when it is not a number."""
    text = _PHONE_CHARS.sub("", raw)
    if text.startswith("00"):
        text = "+" + text[2:]
    if not _PHONE.match(text):
        raise ValueError(f"{_mask_unreadable(raw)!r} is not a phone number (5 to 20 digits, optional leading +)")
    return text


def _mask_unreadable(raw: str) -> str:
    """Every digit but the last four hidden: a cell that is not one number may hold two whole ones."""
    raw = raw.strip()[:40]
    count = sum(ch.isdigit() for ch in raw)
    keep = 4 if count >= 7 else 0
    seen, out = 0, []
    for ch in raw:
        seen += ch.isdigit()
        out.append("*" if ch.isdigit() and seen <= count - keep else ch)
    return "".join(out)


def file_digest(path: Path) -> str:
    """SHA-256 of the file, so a resumed campaign can tell its contacts were not swapped."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                digest.update(block)
    except OSError as err:  # read before the rows are checked: a missing file must still say so plainly
        raise ContactsError(f"{path}: cannot read: {err.strerror or err}") from err
    return digest.hexdigest()


def _rows(path: Path, text: str) -> Iterator[tuple[int, dict[str, Any] | str]]:
    """(line number, row dict) per record, or (line number, error text) for a row that cannot be read."""
    if path.suffix.lower() == ".json":
        yield 1, "a .json file is not read: give CSV (.csv) or one JSON object per line (.jsonl)"
        return
    if path.suffix.lower() in (".jsonl", ".ndjson"):
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                value = json.loads(line)
            except json.JSONDecodeError as err:
                yield number, f"not JSON ({err.msg})"
                continue
            yield number, value if isinstance(value, dict) else "a line must be a JSON object"
        return
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None:
        return
    headers = [h.strip() for h in reader.fieldnames]
    if len(set(headers)) != len(headers):
        yield 1, f"duplicate column names in the header: {headers}"
        return
    reader.fieldnames = headers
    for values in reader:
        number = reader.line_num
        if None in values:
            yield number, f"{len(headers) + len(values[None])} fields, but the header has {len(headers)}"
        elif any(v is None for v in values.values()):
            yield number, f"fewer fields than the header's {len(headers)}"
        else:
            yield number, values


def _check(number: int, raw: dict[str, Any], plan: Plan, default_tz: str,
           seen: dict[str, int]) -> Contact | list[str]:
    problems: list[str] = []
    values = {str(k).strip(): ("" if v is None else v) for k, v in raw.items()}
    for name, value in values.items():
        if not isinstance(value, str | int | float | bool):
            problems.append(f"{name}: must be text or a number, not {type(value).__name__}")
        elif len(str(value)) > MAX_FIELD_CHARS:
            problems.append(f"{name}: longer than {MAX_FIELD_CHARS} characters")
    values = {k: str(v).strip() if isinstance(v, str) else v for k, v in values.items()}
    phone = ""
    try:
        phone = normalize_phone(str(values.get(PHONE, "")))
    except ValueError as err:
        problems.append(f"phone: {err}" if values.get(PHONE) else "phone: missing")
    tz = str(values.get(TIMEZONE) or default_tz)
    try:
        zone(tz)
    except ValueError as err:
        problems.append(f"timezone: {err}")
    language = str(values.get(LANGUAGE) or "")
    if language and language not in plan.languages:
        problems.append(f"language: {language!r} is not one of the plan's {plan.languages}")
    variables = {k: v for k, v in values.items() if k not in RESERVED}
    missing = [n for n, spec in plan.variables.items() if spec.required and variables.get(n) in (None, "")]
    if missing:
        problems.append(f"missing plan variable{'s' if len(missing) > 1 else ''}: {', '.join(missing)}")
    contact_id = str(values.get(ID) or f"row{number}")
    if contact_id in seen:
        problems.append(f"id {contact_id!r} already used on line {seen[contact_id]}")
    seen.setdefault(contact_id, number)
    if problems:
        return problems
    return Contact(contact_id=contact_id, row=number, phone=phone, timezone=tz, language=language,
                   variables=variables)


def load_contacts(path: str | Path, *, plan: Plan, default_timezone: str = "Asia/Shanghai") -> list[Contact]:
    """Read and check every contact; ContactsError lists each bad row by line number, and nothing is called."""
    path = Path(path)
    try:
        size = path.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ContactsError(f"{path}: {size} bytes, over the {MAX_FILE_BYTES} byte limit; split the file")
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as err:
        raise ContactsError(f"{path}: cannot read: {err.strerror or err}") from err
    except UnicodeDecodeError as err:
        raise ContactsError(f"{path}: not UTF-8 text (byte {err.start}); save it as UTF-8") from err
    zone(default_timezone)
    contacts: list[Contact] = []
    errors: list[str] = []
    seen: dict[str, int] = {}
    for number, row in _rows(path, text):
        if len(contacts) + len(errors) >= MAX_ROWS:
            raise ContactsError(f"{path}: more than {MAX_ROWS} contacts; split the file")
        result = row if isinstance(row, str) else _check(number, row, plan, default_timezone, seen)
        if isinstance(result, Contact):
            contacts.append(result)
        else:
            for problem in [result] if isinstance(result, str) else result:
                errors.append(f"{path.name}:{number}: {problem}")
    if errors:
        shown = errors[:MAX_ERRORS_SHOWN]
        more = f"\n... and {len(errors) - len(shown)} more" if len(errors) > len(shown) else ""
        raise ContactsError(f"{len(errors)} problem(s) in {path}; nothing was called:\n" + "\n".join(shown) + more)
    if not contacts:
        raise ContactsError(f"{path}: no contacts (a CSV needs a header row with a `phone` column)")
    return contacts
