"""Reference data and escalations as authors write them and replicas read them.

Reference data (the unit tree, the catalogues, notices, tasks) is authored at a township, county or city
node through that node's ``Editor`` (so its ops carry the node's tier) and flows down to every tablet
below, where it is read-only. Concurrent edits at two tiers resolve through the ordinary merge: the
higher tier's value shows.

A catalogue entry is named by its kind and code, so its record id is derived from them (a UUIDv5 made by
hashing, not a UUIDv7): the same entry created at two tiers is one record, and the tiers' values for it
merge by tier instead of leaving two entries with one code. A ``unit`` record's id is derived from its
code the same way, and a ``task_report``'s from its task and village (``task_report_id``): two tablets of
one village marking a task offline make one report, whose values merge by tier, then clock, instead of
two reports of which the counts would need to pick one. These are the only exceptions to DESIGN.md's "a
record's id is a UUIDv7 made where the record is created": still no server round trip, and still made
where the record is created.
"""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterable
from typing import Any

from . import checks, units as unitlib
from .edit import Editor
from .errors import InvalidValue, NotFound, ReadOnly
from .schema import CATALOGUE_KINDS, CATEGORIES, REPORT_STATUSES, TASK_STATUSES
from .store import Record, Store
from .types import CHINA_TIME

_NAMESPACE = uuid.UUID("6f0c1a52-3d1e-4e7b-9a55-0b1c7c5e2a10")


def catalogue_id(kind: str, code: str) -> str:
    "The record id of a catalogue entry: the same for the same kind and code on every replica"
    return str(uuid.uuid5(_NAMESPACE, f"catalogue/{kind}/{code}"))


def unit_id(code: str) -> str:
    "The record id of a unit's ``unit`` record: the same on every replica, whichever tier publishes it"
    return str(uuid.uuid5(_NAMESPACE, f"unit/{code}"))


def task_report_id(task: str, village: str) -> str:
    "The record id of a village's report on a task: the same on every tablet of the village and its township"
    return str(uuid.uuid5(_NAMESPACE, f"task_report/{task}/{village}"))


def now_text() -> str:
    "The time in China (UTC+8, whatever the system's zone) as reference records store it: ``YYYY-MM-DDTHH:MM``"
    return dt.datetime.now(CHINA_TIME).strftime("%Y-%m-%dT%H:%M")


def _author(editor: Editor) -> None:
    if editor.tier == "village":
        raise ReadOnly("reference data is authored at a township, county or city node, not on a tablet")


# -- authoring ------------------------------------------------------------------------------------

def set_catalogue(editor: Editor, kind: str, code: str, *, name: str | None = None, order: int | None = None,
                  retired: bool | None = None) -> str:
    """Add a catalogue entry, or change the name, order or retired flag of one; returns its record id.
    A new entry needs a name, except one that overrides a built-in (``CATEGORIES``), which is named by its
    code (so ``retired`` or ``order`` alone hides or moves a built-in); its unit is the author's."""
    _author(editor)
    if kind not in CATALOGUE_KINDS:
        raise InvalidValue(f"unknown catalogue kind {kind!r}; use one of {', '.join(CATALOGUE_KINDS)}")
    rid = catalogue_id(kind, code)
    values: dict[str, Any] = {k: v for k, v in (("name", name), ("order", order), ("retired", retired))
                              if v is not None}
    with editor.store.transaction():
        if editor.store.get(rid) is None:
            if name is None and code not in CATEGORIES:
                raise InvalidValue(f"a new catalogue entry needs a name ({kind} {code})")
            fields = {"unit": editor.unit, "kind": kind, "code": code, "name": code, **values}
            return editor.create("catalogue", fields, record=rid)
        if values:
            editor.update(rid, values)
    return rid


def add_notice(editor: Editor, title: str, body: str = "", *, published_at: str | None = None) -> str:
    "Publish a notice from the author's unit to every tablet below it; returns its record id"
    _author(editor)
    return editor.create("notice", {"unit": editor.unit, "title": title, "body": body,
                                    "published_at": published_at or now_text()})


def add_task(editor: Editor, title: str, description: str = "", *, due_date: str | None = None,
             status: str = "待办") -> str:
    """Set a task for every unit below the author's; returns its record id. Its due date is checked as a
    typed one (``checks.command_values``, as the command line's): full-width digits are made ASCII, and a
    date not on the calendar is refused (``InvalidValue``, ``no_such_date``) before anything is written"""
    _author(editor)
    due_date = checks.typed_values("task", {"due_date": due_date}).get("due_date")
    return editor.create("task", {"unit": editor.unit, "title": title, "description": description,
                                  "due_date": due_date, "status": status})


def set_task_status(editor: Editor, record: str, status: str) -> None:
    """Record a task's progress (``TASK_STATUSES``). Only the unit that set the task changes it: a node
    below would change it for its own tablets alone, and the unit above would never hear of it."""
    rec = editor.store.get(record)
    if rec is None or rec.coll != "task" or rec.deleted:
        raise NotFound(f"no task {record}", details={"record": record})
    if rec.unit != editor.unit:
        raise InvalidValue(f"task {record} was set by {rec.unit}; only that unit's node records its progress",
                           details={"record": record, "unit": rec.unit})
    if status not in TASK_STATUSES:
        raise InvalidValue(f"a task's status is one of {', '.join(TASK_STATUSES)}, not {status!r}")
    edit_reference(editor, record, {"status": status})


#: How a page says a report on a cancelled task is refused (``report_task``'s ``task_cancelled``)
TASK_CANCELLED = "这项任务已经取消，不用再报告进度。请刷新页面。"


def report_task(editor: Editor, task: str, village: str, status: str, note: str | None = None) -> str:
    """Record a village's progress on a task (``REPORT_STATUSES``), with a short note (None keeps the one
    there); returns the report's id. Written on the village's tablets or by its township node (whose tier
    beats a concurrent write on a tablet); only for a task set by a unit above the village, and not
    cancelled (``InvalidValue`` with the code ``task_cancelled``; ``TASK_CANCELLED`` says so on a page)."""
    rec = editor.store.get(task)
    if rec is None or rec.coll != "task" or rec.deleted:
        raise NotFound(f"no task {task}", details={"record": task})
    if rec.data.get("status") == "已取消":
        raise InvalidValue(f"task {task} is 已取消: its progress is no longer reported", code="task_cancelled",
                           details={"record": task})
    try:
        ok = unitlib.normalize_code(village) == village and unitlib.tier_of(village) == "village" \
            and unitlib.is_under(village, editor.unit)
    except unitlib.UnitCodeError:
        ok = False
    if not ok:
        raise InvalidValue(f"{village} is not a village within {editor.unit}; a report is written for one of them",
                           details={"unit": village})
    if rec.unit is None or rec.unit not in unitlib.ancestors(village):
        raise InvalidValue(f"task {task} was set by {rec.unit}, not for {village}", details={"record": task})
    problem = checks.task_report(status, note or "")
    if problem is not None:
        raise InvalidValue(problem.message, details={"problem": problem.code})
    rid = task_report_id(task, village)
    values: dict[str, Any] = {"status": status} if note is None else {"status": status, "note": note}
    with editor.store.transaction():
        if editor.store.get(rid) is None:  # the unit first: a node sees a new record's unit in its first batch
            return editor.create("task_report", {"unit": village, "task": task, **values}, record=rid)
        editor.update(rid, values)
    return rid


def edit_reference(editor: Editor, record: str, values: dict[str, Any]) -> None:
    "Change fields of a notice, task or catalogue entry (never its unit)"
    _author(editor)
    rec = editor.store.get(record)
    if rec is None or rec.coll not in ("notice", "task", "catalogue"):
        raise NotFound(f"no notice, task or catalogue entry {record}", details={"record": record})
    if "unit" in values:
        raise InvalidValue("the unit of a reference record is the unit that authored it; it does not change")
    editor.update(record, values)


# -- reading --------------------------------------------------------------------------------------

def _rows(records: list[Record]) -> list[dict[str, Any]]:
    return [{"id": r.id, **r.data} for r in records]


def catalogue(store: Store, kind: str, *, include_retired: bool = False) -> list[dict[str, Any]]:
    "The entries of one catalogue in their order (then by code), retired ones only if asked"
    rows = [r for r in _rows(store.records("catalogue")) if r.get("kind") == kind
            and (include_retired or not r.get("retired"))]
    return sorted(rows, key=lambda r: (r.get("order", 0) or 0, str(r.get("code", ""))))


def offered(store: Store, kind: str, current: Any = None) -> list[str]:
    """The codes a worker or staff member picks from for a catalogue field (``need_category``,
    ``service_type``): the built-in list (in places 1 to 10) and the synced catalogue's entries together,
    by ``order`` (entries without one last), then code. An entry with a built-in's code overrides it: its
    ``order`` moves it, ``retired`` hides it. ``current``, the value of the record being edited, is always
    among them, so that a form can keep a value no longer offered."""
    places: dict[str, int | None] = {code: i for i, code in enumerate(CATEGORIES, 1)}
    for row in catalogue(store, kind, include_retired=True):
        code = str(row["code"])
        if row.get("retired"):
            places.pop(code, None)
        else:
            places[code] = row["order"] if row.get("order") is not None else places.get(code)
    return keep_current(sorted(places, key=lambda c: (places[c] is None, places[c] or 0, c)), current)


def keep_current(codes: list[str], current: Any) -> list[str]:
    "``codes`` with ``current`` (a record's value of a choice field) added at the end when it is not among them"
    return [*codes, current] if isinstance(current, str) and current and current not in codes else codes


def need_categories(store: Store) -> list[str]:
    "The need categories a worker picks from: the built-in list and the synced catalogue's (``offered``)"
    return offered(store, "need_category")


def service_types(store: Store) -> list[str]:
    "The service types a worker picks from: the built-in list and the synced catalogue's (``offered``)"
    return offered(store, "service_type")


def notices(store: Store) -> list[dict[str, Any]]:
    "Notices, newest first"
    return sorted(_rows(store.records("notice")), key=lambda r: str(r.get("published_at", "")), reverse=True)


def tasks(store: Store) -> list[dict[str, Any]]:
    "Tasks, the soonest due first (undated last)"
    return sorted(_rows(store.records("task")), key=lambda r: (not r.get("due_date"), str(r.get("due_date", ""))))


def task_reports(store: Store, *, units: tuple[str, str] | None = None) -> dict[tuple[str, str], dict[str, Any]]:
    "The task reports of the villages in a unit range (all held if None), by (task, village)"
    return {(str(r.data.get("task")), r.unit or ""): {"id": r.id, **r.data}
            for r in store.records("task_report", units=units)}


def progress_counts(statuses: Iterable[Any]) -> dict[str, int]:
    "How many villages are at each of ``REPORT_STATUSES``, given each village's; no report counts as 未开始"
    counts = dict.fromkeys(REPORT_STATUSES, 0)
    for s in statuses:
        counts[s if s in counts else REPORT_STATUSES[0]] += 1
    return counts


def escalations(store: Store, *, need: str | None = None, units: tuple[str, str] | None = None) -> list[dict[str, Any]]:
    """Escalations, newest first; of one need, or of the villages in a unit range. ``escalated_at`` has minute
    precision, so two of one minute (withdrawn and escalated again) go by id: a UUIDv7, the newer the greater"""
    rows = _rows(store.records("escalation", units=units, naming=("need", need) if need is not None else None))
    return sorted(rows, key=lambda r: (str(r.get("escalated_at", "")), r["id"]), reverse=True)
