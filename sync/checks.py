"""Checks on a value a person types, beyond its field's type: one set for the tablet's forms, the
township workbench and the command line, so that none of them saves what another refuses.

The schema refuses, from any source, what is malformed. What is checked here a node does not apply to
synced ops, so that an op queued on a tablet stays valid however long it waits, and whatever app version
wrote it: a date or time that is not on the calendar (an older form let some through), and what depends
on the clock or on other fields — a birth date after today, a service dated more than a day ahead, an ID
number whose date part or check digit is wrong or whose gender digit contradicts the gender. Callers
check only the fields a person changed, so a value saved before a check existed never blocks an edit of
another field.

Each problem has a machine-readable ``code``, an English ``message`` (the command line) and a Chinese
``zh`` (the tablet's and the township's pages). ``command_values`` checks a command's values; the command
line (``checked`` in ``server/cli_common.py``, for the tablet's commands and the node's) turns a problem
into click's usage error, so that the engine does not depend on click.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import unicodedata
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from .errors import BadRequest, InvalidValue
from .schema import NOTE_MAX, REPORT_STATUSES, SCHEMA, Date, DateTime
from .types import SET, china_time

#: Fields typed as digits and signs, where a Chinese input method in full-width mode types ５１０９ and －：
TYPED_AS_DIGITS = frozenset({"id_number", "phone", "birth_date", "due_date", "served_at", "minutes",
                             "people_served"})
#: Date fields, which also take a date typed as 8 digits on a numeric keypad that has no "-" (19420308)
TYPED_AS_DATE = frozenset({"birth_date", "due_date"})
#: GB 11643: the weights of an ID number's first 17 digits, and the check character for the sum mod 11
_ID_WEIGHTS = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
_ID_CHECK = "10X98765432"
_PHONE = re.compile(r"\+?[0-9]+(?:[ -][0-9]+)*")
#: A service may be entered up to a day ahead of the device's clock (a clock a little behind, a visit
#: booked for tomorrow morning); further is a slip of the year.
SERVED_AHEAD = dt.timedelta(days=1)
EARLIEST_BIRTH_YEAR = 1890
#: The code of a date or time that has the shape of one but is not on the calendar (2024-02-30, 25:00)
NO_SUCH_DATE = "no_such_date"


@dataclass(frozen=True)
class Problem:
    "What is wrong with a value, for a program (``code``), the command line and a page"

    code: str
    message: str
    zh: str


def normalize(name: str, text: str) -> str:
    """Text typed into a field, full-width digits and signs made ASCII where the field takes digits, and
    a date typed as 8 digits written as one: 19420308 is 1942-03-08 (whether it is on the calendar is
    ``check``'s to say)"""
    if name not in TYPED_AS_DIGITS:
        return text
    text = unicodedata.normalize("NFKC", text)
    if name in TYPED_AS_DATE and re.fullmatch(r"[0-9]{8}", text):
        return f"{text[:4]}-{text[4:6]}-{text[6:]}"
    return text


def node_url(text: str) -> str:
    """A node's URL as typed (``http://10.0.0.5:8000``), full-width colons and digits made ASCII and any
    trailing ``/`` dropped; raises ``BadRequest`` (``invalid_url``), saying how to write it, for one that
    is not http(s) with a host and a numeric port"""
    url = unicodedata.normalize("NFKC", text).strip().rstrip("/")
    try:
        parsed = httpx.URL(url)
        ok = (parsed.scheme in ("http", "https") and bool(parsed.host) and " " not in url
              and (parsed.port is None or 0 < parsed.port < 65536))
    except httpx.InvalidURL:
        ok = False
    if not ok:
        raise BadRequest(f"{text!r} is not a node's URL; write it as http://HOST:PORT, e.g. http://10.0.0.5:8000 "
                         "(http:// or https://, ASCII colon, port in digits)", code="invalid_url",
                         details={"url": text})
    return url


def shown_values(sent: object, current: dict[str, Any]) -> dict[str, Any]:
    """The record's values as an edit form showed them: the JSON of its hidden ``shown`` field, as sent
    back; ``current`` (the record now) for a form without one"""
    try:
        shown = json.loads(str(sent))
    except ValueError:
        return current
    return shown if isinstance(shown, dict) else current


def typed_key(name: str, value: object) -> str:
    """A stored value as two are compared to find one person twice: an older app let full-width digits
    and a lower-case x through"""
    return normalize(name, str(value or "")).upper()


def sent_back(coll: str, name: str, text: str, shown: Any) -> bool:
    """Whether ``text``, a form field as a browser sent it, is the value the form showed (``shown``; None
    shows as empty). A browser sends a textarea's line breaks as CRLF, and an <input type=date> or
    datetime-local cannot show a date or time not on the calendar (2024-02-30, saved before such were
    refused), so it sends that back empty. Compared before the text is normalised: a value saved before
    a check existed (full-width digits, a wrong check digit) and sent back as shown is no change."""
    text, was = (str(v).replace("\r\n", "\n").strip() for v in (text, "" if shown is None else shown))
    if text == was:
        return True
    kind = SCHEMA.field(coll, name).type
    return not text and was != "" and kind in (Date, DateTime) and not _on_calendar(kind, was)


def id_check_digit(first17: str) -> str:
    "The check character (GB 11643) that ends an ID number beginning with these 17 digits"
    return _ID_CHECK[sum(int(d) * w for d, w in zip(first17, _ID_WEIGHTS)) % 11]


def id_number_facts(id_number: str) -> tuple[str, str] | None:
    "The birth date (ISO) and gender an ID number states; None if it is not 18 long or its date part is no date"
    if len(id_number) != 18:
        return None
    try:
        born = dt.date(int(id_number[6:10]), int(id_number[10:12]), int(id_number[12:14]))
        odd = int(id_number[16]) % 2
    except ValueError:
        return None
    return born.isoformat(), ("男" if odd else "女")


def check(coll: str, name: str, value: Any, *, now: dt.datetime | None = None) -> Problem | None:
    """What is wrong with a value typed into ``coll.name``, or None. A value of the wrong shape is None
    too: the schema refuses it, and its field's format help says how to write it. ``now``: the time in
    China (naive, as values are written; ``china_time()`` by default, whatever the system's zone)."""
    if value is None:
        return None
    try:
        SCHEMA.validate(coll, name, SET, value)
    except InvalidValue:
        return None
    f = SCHEMA.field(coll, name)
    if f.type in (Date, DateTime) and not _on_calendar(f.type, value):
        what, zh = ("date", "日期") if f.type is Date else ("time", "时间")
        return Problem(NO_SUCH_DATE, f"{value} is no {what} on the calendar", f"{f.label}不是一个存在的{zh}，请核对")
    found = _CHECKS.get(name)
    return found(value, now or china_time()) if found else None


def _on_calendar(kind: Any, value: str) -> bool:
    "Whether a value of the shape of a ``Date`` or ``DateTime`` is one (and nothing follows it)"
    try:
        (dt.date if kind is Date else dt.datetime).fromisoformat(value)
    except ValueError:
        return False
    return value.isascii()


def _birth_date(value: str, now: dt.datetime) -> Problem | None:
    born = dt.date.fromisoformat(value)
    if born > now.date():
        return Problem("birth_date_in_future", f"birth date {value} is after today", "出生日期不能晚于今天")
    if born.year < EARLIEST_BIRTH_YEAR:
        return Problem("birth_date_too_early", f"birth date {value} is before {EARLIEST_BIRTH_YEAR}",
                       "出生日期太早了，请核对")
    return None


def _served_at(value: str, now: dt.datetime) -> Problem | None:
    if dt.datetime.fromisoformat(value) > now + SERVED_AHEAD:
        return Problem("served_at_in_future", f"service time {value} is more than a day ahead of this device's clock",
                       "服务时间比现在晚了一天以上，请核对年、月、日")
    return None


def _id_number(value: str, now: dt.datetime) -> Problem | None:
    if id_number_facts(value) is None:
        return Problem("id_number_date", "the ID number's 7th to 14th digits are no date",
                       "身份证号中的出生日期（第7到14位）不是一个存在的日期，请核对")
    if id_check_digit(value[:17]) != value[17]:
        return Problem("id_number_check_digit", "the ID number's last character (its check digit) does not match"
                       " the other 17; one of them is mistyped", "身份证号最后一位校验码不对，请核对")
    return None


def _phone(value: str, now: dt.datetime) -> Problem | None:
    if not _PHONE.fullmatch(value) or sum(c.isdigit() for c in value) < 5:
        return Problem("phone_shape", "a phone number is digits, at least 5, optionally starting with + and"
                       " grouped by single spaces or dashes", "电话号码只能填数字（可带 + 或 -），5到20位")
    return None


_CHECKS: dict[str, Callable[[str, dt.datetime], Problem | None]] = {
    "birth_date": _birth_date, "served_at": _served_at, "id_number": _id_number, "phone": _phone,
}


def task_report(status: str, note: str) -> Problem | None:
    "What is wrong with a village's progress on a task as given (its status and note), or None"
    if status not in REPORT_STATUSES:
        return Problem("invalid_status", f"a task report's status is one of {', '.join(REPORT_STATUSES)}, not {status!r}",
                       f"进度只能是{'、'.join(REPORT_STATUSES)}之一")
    if len(note) > NOTE_MAX:
        return Problem("note_too_long", f"the note has {len(note)} characters; it may have at most {NOTE_MAX}",
                       f"说明太长了：最多 {NOTE_MAX} 个字，现在 {len(note)} 个字，请删短后再保存")
    return None


def disagreements(person: Mapping[str, Any], changed: Collection[str]) -> dict[str, Problem]:
    """Where a person's birth date or gender contradicts their ID number, by the field to correct: the
    one of the two that changed, else the ID number if it changed; nothing when none of them changed"""
    idn = person.get("id_number")
    facts = id_number_facts(idn) if isinstance(idn, str) else None
    if facts is None:
        return {}
    born, gender = facts
    found: dict[str, Problem] = {}
    for name, stated, problem in (
            ("gender", gender, Problem("gender_disagrees", f"the ID number's 17th digit says {gender}",
                                       f"性别与身份证号不一致（身份证号第17位表示{gender}性）")),
            ("birth_date", born, Problem("birth_date_disagrees", f"the ID number says born {born}",
                                         f"出生日期与身份证号不一致（身份证号上是 {born}）"))):
        if person.get(name) in (None, stated):
            continue
        field = name if name in changed else "id_number" if "id_number" in changed else None
        if field is not None:
            found.setdefault(field, problem)
    return found


def typed_values(coll: str, values: dict[str, Any]) -> dict[str, Any]:
    """``command_values`` for values a program sends (the staff API's, through ``sync.reference``): the
    values typed, or the first problem raised as ``InvalidValue`` with its code, naming the field"""
    typed, found = command_values(coll, values)
    for name, problem in found.items():
        raise InvalidValue(f"{coll}.{name}: {problem.message}", code=problem.code,
                           details={"collection": coll, "field": name})
    return typed


def command_values(coll: str, values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Problem]]:
    """The values a command was given (unset ones left out), full-width digits made ASCII, and their
    problems by field, as the tablet's forms find them: a record the command line saves stays editable in
    the tablet app. The command line's refusal of them is ``checked`` (``server/cli_common.py``)."""
    typed = {k: normalize(k, v) if isinstance(v, str) else v for k, v in values.items() if v not in (None, [])}
    found = {name: p for name in typed if (p := check(coll, name, typed[name])) is not None}
    if coll == "person":
        found.update(disagreements(typed, typed))
    return typed, found
