"""The township workbench: the pages township staff reconcile their villages' records on.

    /staff                          overview: what waits (open conflicts, overdue needs, silent tablets)
    /staff/people                   the township's residents, by village; search by name, pinyin, ID
                                    number or phone: the search form posts, and the results' page
                                    (``?s=``) names a token the node keeps the query under, so an ID
                                    number never reaches the address bar, the history or a log
    /staff/conflicts                each open conflict with its competing values side by side; keep one
                                    with one click, or type the value (a resolve op through the Editor)
    /staff/records/{record}         a record's values, its every change (who, device, tier, when, old →
                                    new), and a form to correct it
    /staff/records/{record}/remove  a resident who moved to another township or died (迁出/注销): asks to
                                    confirm, then cancels the open needs (withdrawing their escalations)
                                    and deletes the resident
    /staff/duplicates               residents that may be one person (``server.duplicates``); merge, or
                                    mark a pair as two people (``?dismissed=1`` lists those, to restore);
                                    residents an older version left half-merged, to finish their merge
                                    or keep as residents of their own
    /staff/needs                    the needs board: by status and village; assign, due dates, status

The residents list's pinyin order and the duplicates page's pairs are worked out once for each staff
scope and kept until a resident changes, and the needs board's order and counts (and the home page's)
until a need changes (``server.kept``); the rows shown, their needs and services counted, and the pairs
dismissed are read on every request.

Every write is an op made by ``Node.editor`` with the signed-in staff member as author at the node's
tier, so it reaches the tablets at their next sync like any other edit. Devices are in
``server.devicepages``, exports in ``server.export``.
"""

from __future__ import annotations

import datetime as dt
import json
import secrets
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any, get_args
from urllib.parse import urlencode

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sync import checks
from sync import units as unitlib
from sync.errors import InvalidValue, OutOfScope
from sync.lookup import FOUND_BY, find_people, sort_key
from sync.reference import escalations as list_escalations, offered
from sync.schema import ESCALATION_OPEN, GROUPS, NEED_CLOSED, NEED_TRANSITIONS, RECORD_COLLECTIONS, SCHEMA, STATUSES, \
    DateTime, Field, LongText, RecordRef, Text, UnitCode
from sync.shortterm import ShortTerm
from sync.store import Change, Conflict, Record, Store, no_cycles
from sync.types import DELETED, SET

from . import escalations
from .auth import Staff
from .devicepages import SILENT_DAYS, device_flags
from . import duplicates as dup
from .duplicates import find_pairs
from .pages import CST, TIER_LABELS, PageError, Pages, decode_choice, field_label, invalid, local_time, parse_typed, \
    required, short_id, show, value_hint
from .kept import Kept
from .staff import session_id

#: Needs in these states are finished: never overdue, never escalated (``escalations.escalatable``).
CLOSED = NEED_CLOSED
#: Why a finished need's page offers no 上报县区, and what an escalation of one is refused with
NOT_ESCALATABLE = ("这条需求{status}，不能上报县区。"
                   "如果问题还没有解决，请先把需求重新打开（改为“服务中”或“待处理”），再上报。")
#: At most this many residents on one page; a search narrows the rest.
PEOPLE_SHOWN = 200
#: Needs on one page of the needs board; the rest on the next pages.
NEEDS_SHOWN = 200
#: Searches kept on the node for their results' page (Back and Reload show it again): at most so many, each
#: for so many seconds, and a query at most so many characters long.
SEARCHES_KEPT = 1000
SEARCH_SECONDS = 30 * 60
SEARCH_LENGTH = 100
#: The residents' page after its search was forgotten (too old, the node restarted, or another session's).
SEARCH_GONE = f"搜索结果已过期（只保留 {SEARCH_SECONDS // 60} 分钟），请重新搜索。"
#: Fields staff correct on a record's page (the others are set by moves, merges or the needs board).
EDITABLE = {
    "person": ("name", "gender", "birth_date", "id_number", "phone", "address", "groups", "notes"),
    "need": ("category", "urgency", "description"),
    "service": ("service_type", "provider_kind", "provider_name", "served_at", "minutes", "people_served", "notes"),
}
#: Why a resident leaves the township's records (迁出/注销), as the record page offers them.
REMOVE_REASONS = ("迁出到其他镇街", "去世", "其他")


def choices(store: Store, coll: str, name: str, current: Any = None) -> list[str]:
    """The values a choice field takes (性别, 紧急程度, ...), or [] for free text. A catalogue field (需求类别,
    服务类型) offers what the tablets offer, from the node's catalogue, with ``current`` (the record's value)
    kept among them"""
    f = SCHEMA.field(coll, name)
    if f.catalogue:
        return offered(store, f.catalogue, current)
    return [a for a in get_args(f.type) if isinstance(a, str)]


def is_free_text(f: Field) -> bool:
    "A free-text field (住址, 备注, 需求描述, ...): pages edit it in a <textarea>, which keeps its line breaks"
    return f.type in (Text, LongText)


def time_text(value: Any) -> str:
    "A date and time as a page shows it: 2025-05-01 09:30 (stored as 2025-05-01T09:30)"
    return str(value).replace("T", " ", 1)


def today() -> str:
    return dt.datetime.now(CST).strftime("%Y-%m-%d")


def is_overdue(need: Record, on: str) -> bool:
    due = need.data.get("due_date")
    return bool(due) and str(due) < on and need.data.get("status") not in CLOSED


#: The rules above as SQL over a need's ``data``, for pages that count or order needs without decoding
#: them: its status as the board counts it (待处理 when it has none), whether it is closed (0 or 1), and
#: ``is_overdue`` on the date ``:on`` (0 or 1)
STATUS_SQL = "CASE WHEN json_type(data, '$.status') IS NULL THEN '待处理' ELSE json_extract(data, '$.status') END"
CLOSED_SQL = f"coalesce(json_extract(data, '$.status'), '') IN ({', '.join(repr(s) for s in CLOSED)})"
OVERDUE_SQL = (f"(coalesce(json_extract(data, '$.due_date'), '') <> '' AND json_extract(data, '$.due_date') < :on"
               f" AND NOT {CLOSED_SQL})")
#: The needs in a staff member's scope (``:lo`` to ``:hi``), found through ``records_coll`` (coll, unit)
SCOPED_NEEDS = "FROM records WHERE coll = 'need' AND deleted = 0 AND unit BETWEEN :lo AND :hi"
#: The needs board's order: overdue first, then open before closed, the soonest due, the most urgent
BOARD_ORDER_SQL = (f"NOT {OVERDUE_SQL}, {CLOSED_SQL}, coalesce(nullif(json_extract(data, '$.due_date'), ''), '9999'),"
                   " CASE json_extract(data, '$.urgency') WHEN '紧急' THEN 0 WHEN '较急' THEN 1 WHEN '一般' THEN 2 ELSE 3 END,"
                   " id")


@dataclass
class NeedsBoard:
    "A scope's needs on a day, in the board's order, and their counts (``Workbench.needs_of``)"

    rows: list[tuple[str, str, Any, int, int]]  # id, village, status, overdue, closed
    matrix: Counter[tuple[str, str]]  # by (village, status)
    overdue: Counter[str]  # by village


def _edit_error(coll: str, values: dict[str, Any], e: InvalidValue) -> PageError:
    "An Editor refusal, in Chinese"
    d = e.details if isinstance(e.details, dict) else {}
    if "from" in d:
        allowed = "、".join(NEED_TRANSITIONS.get(d["from"], ()))
        return PageError(f"需求状态不能从“{d['from']}”直接改为“{d['to']}”；从“{d['from']}”可以改为：{allowed}。")
    name = d.get("field")
    if isinstance(name, str) and name in values:
        return invalid(coll, name, values[name])
    if "missing" in d:
        return PageError("缺少必填内容：" + "、".join(field_label(coll, n) for n in d["missing"]) + "。")
    return PageError("输入有误：" + e.message)


def _merge_error(e: InvalidValue) -> PageError:
    "An Editor refusal of a merge, in Chinese"
    d = e.details if isinstance(e.details, dict) else {}
    if isinstance(d.get("field"), str):  # a value of one of them the schema refuses now
        return PageError(f"无法合并：其中一条记录的“{field_label(d.get('collection', 'person'), d['field'])}”"
                         "不符合要求，请先在记录页面更正，再合并。")
    return PageError("其中一位居民已被删除或已合并，请刷新页面。")


def _shown(form: Any, current: dict[str, Any]) -> dict[str, Any]:
    return checks.shown_values(form.get("shown", ""), current)


def _refuse_stale(rec: Record, shown: dict[str, Any], values: dict[str, Any]) -> None:
    """Refuse a save whose changed fields also changed since the page was shown (a tablet synced meanwhile):
    writing them would override a value staff never saw"""
    def same(a: Any, b: Any) -> bool:
        return sorted(a or []) == sorted(b or []) if isinstance(a, list) or isinstance(b, list) else a == b

    stale = [n for n in values if not same(rec.data.get(n), shown.get(n))]
    if stale:
        raise PageError("在您打开页面后，" + "、".join(field_label(rec.coll, n) for n in stale)
                        + "已被更新（平板同步了新的内容）。请刷新页面，核对后再改。", status=409)


def _seen(c: Conflict) -> str:
    "The competing values of a conflict as a page shows them, to tell later whether new ones came"
    return json.dumps(sorted(json.dumps(o.value, ensure_ascii=False, sort_keys=True) for o in c.candidates),
                      ensure_ascii=False)


class Workbench:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.node = pages.node
        self.store = pages.node.store
        dup.ensure_table(self.store)
        #: each search's query, by its session and the token its results' address names
        self._searches: ShortTerm[tuple[str, str], str] = ShortTerm(SEARCHES_KEPT, SEARCH_SECONDS)
        #: the duplicates page's pairs and residents left half-merged, by scope, until a resident changes
        self._pairs = Kept(self.store, self.pairs_of, "person")
        #: the residents list, by scope, until a resident changes
        self._residents = Kept(self.store, self.residents_of, "person")
        #: the needs of a scope on a day, in the board's order, with their counts, until a need changes
        self._needs = Kept(self.store, self.needs_of, "need")

    # -- reading, under the store's lock ----------------------------------------------------------

    def person_name(self, pid: Any) -> str:
        if not isinstance(pid, str):
            return "（未知居民）"
        rec = self.store.get(self.store.resolve_id(pid))
        return self.title(rec) if rec else "（不在本镇街）"

    def title(self, rec: Record) -> str:
        "A record as a person names it: 张秀英; 张秀英的需求（养老服务）"
        if rec.coll == "person":
            name = rec.data.get("name") or (self.store.last_value(rec.id, "name") if rec.deleted else None)
            return str(name or "（无名）")
        who = self.person_name(rec.data.get("person"))
        if rec.coll == "need":
            return f"{who}的需求（{rec.data.get('category', '')}）"
        if rec.coll == "service":
            return f"{who}的服务记录（{rec.data.get('service_type', '')}，{time_text(rec.data.get('served_at', ''))}）"
        return f"{SCHEMA.collections[rec.coll].label if rec.coll in SCHEMA.collections else rec.coll} {short_id(rec.id)}"

    def villages(self, staff: Staff) -> dict[str, str]:
        """The villages the residents list and the needs board offer, by code: the unit tree's, then any
        the staff member's records lie in that the tree lacks (a tablet enrolled for a village before
        ``cunsync units import`` listed it), named by its code so that nothing they hold is hidden"""
        names = {c: n for c, n in self.pages.villages().items() if c != self.node.unit}
        with self.store.lock:
            held = self.store.units_held(RECORD_COLLECTIONS, *staff.scope)
        return {**names, **{u: unitlib.unnamed(u) for u in held if u not in names and u != self.node.unit}}

    def pairs_of(self, scope: tuple[str, str]) -> tuple[list[dup.Pair], list[dup.HalfMerged]]:
        "The residents of a scope that may be one person, and those an older version left half-merged"
        with no_cycles():  # tens of thousands of records and keys, none in a cycle
            with self.store.lock:
                people = self.store.records("person", units=scope)
                half = dup.half_merged(self.store, people)
            return find_pairs(people), half

    def residents_of(self, scope: tuple[str, str]) -> list[Record]:
        """The current residents of a scope but those merged into another, in pinyin order (by id where
        names sort alike), each holding only the values a search reads (``FOUND_BY``)"""
        with no_cycles():
            with self.store.lock:
                people = [p for p in self.store.records("person", units=scope) if p.merged_into is None]
            people.sort(key=lambda p: sort_key(str(p.data.get("name", ""))))
            return [Record(p.id, p.coll, p.unit, p.deleted, {k: p.data[k] for k in FOUND_BY if k in p.data}, [],
                           p.seq) for p in people]

    def kept(self, staff: Staff, rec: Record) -> dict[str, str] | None:
        """Where a resident merged into another lives on (following merges): its id and name as a page
        shows them; None if ``rec`` was not merged away. The name only if the kept resident lies in the
        staff member's scope."""
        if rec.merged_into is None:
            return None
        kept = self.visible(staff, self.store.resolve_id(rec.id))
        if kept is None:
            return {"id": "", "name": "另一位居民（不在您负责的范围内）"}
        return {"id": kept.id, "name": f"{self.title(kept)}（{short_id(kept.id)}）"}

    def linked(self, pid: str, scope: tuple[str, str] | None = None, *, via: str = "person") -> dict[str, list[Record]]:
        """The needs and services of a resident, and the residents merged into it; only those in the unit
        range ``scope`` when given (staff of one village see none of another village's records). With
        ``via="need"``, the services of a need"""
        out = {coll: self.store.records(coll, units=scope, naming=(via, pid)) for coll in ("need", "service")}
        out["merged"] = self.store.records("person", units=scope, include_deleted=True, naming=("merged_into", pid))
        return out

    def needs_of(self, key: tuple[tuple[str, str], str]) -> NeedsBoard:
        """The needs of a scope (``key[0]``) in the board's order (``BOARD_ORDER_SQL``) on a day (``key[1]``),
        each as (id, village, status as ``STATUS_SQL`` gives it, overdue, closed), and their counts: by village
        and status (a null status counts as "None", which no page shows), and the overdue ones by village"""
        (lo, hi), on = key
        with self.store.lock:
            rows = self.store.conn.execute(
                f"SELECT id, coalesce(unit, ''), {STATUS_SQL}, {OVERDUE_SQL}, {CLOSED_SQL} {SCOPED_NEEDS}"
                f" ORDER BY {BOARD_ORDER_SQL}", {"lo": lo, "hi": hi, "on": on}).fetchall()
        matrix = Counter((unit, str(status)) for _, unit, status, _, _ in rows)
        return NeedsBoard(rows, matrix, Counter(unit for _, unit, _, late, _ in rows if late))

    def need_counts(self, staff: Staff, on: str) -> tuple[Counter[tuple[str, str]], Counter[str]]:
        """The needs in the staff member's scope by village and status, and the overdue ones on ``on`` by
        village (``needs_of``, kept until a need changes)"""
        board = self._needs.get((staff.scope, on))
        return Counter(board.matrix), Counter(board.overdue)

    def visible(self, staff: Staff, rid: Any) -> Record | None:
        "The record, if it lies in the staff member's scope"
        rec = self.store.get(rid) if isinstance(rid, str) else None
        return rec if rec is not None and rec.unit and staff.scope[0] <= rec.unit <= staff.scope[1] else None

    def value_text(self, staff: Staff, coll: str, name: str, value: Any, villages: dict[str, str]) -> str:
        """A field's value as a page names it: a village by its name, a record by its title and short id
        (a record outside the staff member's scope by its short id alone), a time as 2025-05-01 09:30"""
        f = SCHEMA.collections[coll].fields.get(name) if coll in SCHEMA.collections else None
        if f is None or not isinstance(value, str) or not value:
            return show(value)
        if f.type is UnitCode:
            return villages.get(value, value)
        if f.type is RecordRef:
            ref = self.visible(staff, value)
            return f"{self.title(ref)}（{short_id(value)}）" if ref else f"记录 {short_id(value)}"
        return time_text(value) if f.type is DateTime else show(value)

    def conflicts_view(self, staff: Staff) -> list[dict[str, Any]]:
        villages = self.pages.villages()
        names = self.pages.staff_names()
        out = []
        with self.store.lock:
            for c in self.store.conflicts(units=staff.scope):
                rec = self.store.get(c.record)
                if rec is None:
                    continue
                f = SCHEMA.collections[c.coll].fields.get(c.field) if c.coll in SCHEMA.collections else None
                cands = [{
                    "value": o.value, "choice": json.dumps(o.value, ensure_ascii=False), "user": o.user,
                    "user_name": names.get(o.user, ""),
                    "device": o.device, "tier": TIER_LABELS.get(o.tier, o.tier), "time": local_time(o.hlc, hlc=True),
                    "village": villages.get(o.unit, o.unit), "shown": i == 0,
                } for i, o in enumerate(c.candidates)]
                out.append({"record": c.record, "coll": c.coll, "field": c.field, "label": field_label(c.coll, c.field),
                            "seen": _seen(c),
                            "title": self.title(rec), "village": villages.get(c.unit or "", c.unit or ""),
                            "unit": c.unit, "shown": c.winner, "candidates": cands, "deleted": c.field == DELETED,
                            "kept": self.kept(staff, rec) if c.field == DELETED else None,
                            "typed": f is not None and f.merge == "register" and c.field != DELETED,
                            "free_text": f is not None and is_free_text(f)})
        return out

    # -- pages ------------------------------------------------------------------------------------

    async def home(self, request: Request, staff: Staff) -> Response:
        if staff.role in ("county", "city"):
            return RedirectResponse("/rollup", status_code=303)  # aggregates only: the roll-up
        await run_in_threadpool(self.pages.villages)  # the header names the township
        if staff.role != "township":
            return self.pages.render(request, staff, "staff.html", {})

        def summary() -> dict[str, Any]:
            with self.store.lock:
                conflicts = len(self.store.conflicts(units=staff.scope))
            matrix, overdue = self.need_counts(staff, today())
            now = time.time()
            devices = [d for d in self.node.devices() if staff.scope[0] <= d["unit"] <= staff.scope[1]]
            return {"conflicts": conflicts, "needs_open": sum(n for (_, s), n in matrix.items() if s not in CLOSED),
                    "overdue": overdue.total(),
                    "devices": len([d for d in devices if not d["revoked"]]),
                    "device_problems": sum(device_flags(d, now)["attention"] for d in devices), "silent_days": SILENT_DAYS}

        return self.pages.render(request, staff, "staff.html", await run_in_threadpool(summary))

    async def conflicts(self, request: Request, staff: Staff) -> Response:
        found = await run_in_threadpool(self.conflicts_view, staff)
        return self.pages.render(request, staff, "wb_conflicts.html", {"conflicts": found})

    async def resolve(self, request: Request, staff: Staff) -> Response:
        form = await self.pages.form(request)
        record, name = required(form, "record", "field")
        choice, typed = form.get("choice"), form.get("typed")

        def write() -> str:
            with self.store.transaction():
                rec = self.pages.in_scope(staff, record)
                if name not in rec.conflicts:
                    raise PageError(f"“{self.title(rec)}”的“{field_label(rec.coll, name)}”已经没有待处理的冲突"
                                    "（可能已被其他人处理）。", status=400)
                seen = form.get("seen")
                now = next((c for c in self.store.conflicts(record=record) if c.field == name), None)
                if isinstance(seen, str) and seen and now is not None and _seen(now) != seen:
                    raise PageError(f"“{self.title(rec)}”的“{field_label(rec.coll, name)}”在您打开页面后又有了新的值，"
                                    "请刷新页面，看过所有的值再处理。", status=409)
                if isinstance(choice, str) and choice:
                    value = decode_choice(choice)
                    if name == DELETED and not isinstance(value, bool):
                        raise PageError("请选择“确认删除”或“保留这条记录”。")
                elif isinstance(typed, str) and name != DELETED:
                    value = parse_typed(rec.coll, name, typed)
                else:
                    raise PageError("请选择要保留的值，或输入一个新值。")
                try:
                    self.node.editor(staff.username).resolve(record, name, value)
                except InvalidValue as e:
                    kept = self.kept(staff, rec)
                    if name == DELETED and kept is not None:  # the Editor restores no merged-away resident
                        raise PageError(f"{self.title(rec)}已合并到{kept['name']}，不能单独恢复。请点“确认删除”"
                                        f"（合并不变）；平板在合并后对这条旧记录的修改，如有需要，请在{kept['name']}"
                                        "的页面补录。") from None
                    raise _edit_error(rec.coll, {name: value}, e) from None
                shown = ("删除" if value else "恢复") if name == DELETED else show(value)
                return f"已处理：{self.title(rec)}的“{field_label(rec.coll, name)}”定为“{shown}”。平板下次同步时会收到。"

        return self.pages.done(request, "/staff/conflicts", await run_in_threadpool(write))

    async def record(self, request: Request, staff: Staff) -> Response:
        rid = request.path_params["record"]
        return self.pages.render(request, staff, "wb_record.html",
                                 await run_in_threadpool(self.record_view, staff, rid))

    def record_view(self, staff: Staff, rid: str) -> dict[str, Any]:
        "What a record's page shows"
        villages = self.pages.villages()
        with self.store.lock:
            rec = self.pages.in_scope(staff, rid)
            history = self.store.history(rid)
            linked = self.linked(rid, staff.scope, via=rec.coll) if rec.coll in ("person", "need") else {}

            def text(name: str, value: Any) -> str:
                return self.value_text(staff, rec.coll, name, value, villages)

            def change(h: Change) -> dict[str, Any]:
                return {"time": local_time(h.hlc, hlc=True), "user": h.user, "device": h.device,
                        "tier": TIER_LABELS.get(h.tier, h.tier), "field": field_label(rec.coll, h.field),
                        "kind": h.kind, "old": [text(h.field, v) for v in h.old], "new": text(h.field, h.new)}

            changes = [change(h) for h in reversed(history)]
            def held(h: Change) -> bool:
                "Whether this record holds the value already (an older tablet's restore writes back the old ones)"
                mine = rec.data.get(h.field)
                return h.new in (mine or []) if h.kind == "add" else h.kind == "set" and mine == h.new

            # what residents merged into this one received after their merge, to copy here (``dup.late_changes``)
            late = {r.id: [{**change(h), "held": held(h)} for h in dup.late_changes(self.store, r, EDITABLE["person"])]
                    for r in linked.get("merged", [])}
            person = need = None
            if rec.coll in ("need", "service") and isinstance(rec.data.get("person"), str):
                person = self.visible(staff, self.store.resolve_id(rec.data["person"]))
            if rec.coll == "service":
                need = self.visible(staff, rec.data.get("need"))
            removed = None  # a resident taken out of the township's records (迁出/注销): by whom, when, why
            if rec.coll == "person" and rec.deleted and rec.merged_into is None:
                gone = next((h for h in reversed(history) if h.field == DELETED and h.new is True), None)
                if gone is not None:
                    removed = {"time": local_time(gone.hlc, hlc=True), "user": gone.user,
                               "tier": TIER_LABELS.get(gone.tier, gone.tier), "notes": self.store.last_value(rid, "notes")}
            return {"rec": rec, "title": self.title(rec), "village": villages.get(rec.unit or "", rec.unit),
                    "values": {k: text(k, v) for k, v in rec.data.items()},
                    "changes": changes, "late": late, "linked": linked, "person": person, "need": need,
                    "need_title": self.title(need) if need else "", "person_title": self.title(person) if person else "",
                    "fields": [SCHEMA.collections[rec.coll].fields[n] for n in EDITABLE.get(rec.coll, ())],
                    "groups": GROUPS, "titles": {r.id: self.title(r) for rs in linked.values() for r in rs},
                    "choices": {n: choices(self.store, rec.coll, n, rec.data.get(n))
                                for n in EDITABLE.get(rec.coll, ())},
                    "free_text": {f.name for f in SCHEMA.collections[rec.coll].fields.values() if is_free_text(f)},
                    "staff_names": self.pages.staff_names(), "removed": removed, "remove_reasons": REMOVE_REASONS,
                    "escalations": list_escalations(self.store, need=rid) if rec.coll == "need" else [],
                    "not_escalatable": NOT_ESCALATABLE.format(status=rec.data.get("status"))
                    if rec.coll == "need" and not escalations.escalatable(rec) else ""}

    async def escalate(self, request: Request, staff: Staff) -> Response:
        "Township staff escalate a need to the county (吹哨报到), with a summary and nothing personal"
        rid = request.path_params["record"]
        form = await self.pages.form(request)
        summary = str(form.get("summary", ""))

        def write() -> str:
            try:
                escalations.escalate(self.node, staff, rid, summary)
            except escalations.AlreadyEscalated:
                raise PageError("这条需求已经上报，正在等县区办理。") from None
            except escalations.NeedClosed as e:
                raise PageError(NOT_ESCALATABLE.format(status=e.details["status"])) from None
            return "已上报县区。县区受理、办结后，答复会在下次同步时传回本镇街和录入这条需求的平板。"

        try:
            notice = await run_in_threadpool(write)
        except escalations.PersonalData as e:
            found = "、".join(field_label("person", f) for f in e.details["found"])
            error = f"情况说明里有居民的{found}。县区看不到居民的个人信息，请删去后再上报。"
        except InvalidValue as e:  # an empty summary, or one over the field's limit
            if not summary.strip():
                raise PageError("请写一段情况说明再上报（不要写姓名、电话、身份证号、住址）。") from None
            if not isinstance(e.details, dict) or e.details.get("field") != "summary":
                raise _edit_error("escalation", {}, e) from None
            hint = value_hint(SCHEMA.field("escalation", "summary"))
            error = f"情况说明太长了（{len(summary.strip())} 字），应为{hint}。请删减后再上报。"
        else:
            return self.pages.done(request, f"/staff/records/{rid}", notice)
        view = await run_in_threadpool(self.record_view, staff, rid)  # the need's page again, the summary kept
        return self.pages.render(request, staff, "wb_record.html",
                                 {**view, "escalate_summary": summary, "escalate_error": error}, status=400)

    def removable(self, staff: Staff, rid: str, reason: str, note: str) -> tuple[Record, list[Record]]:
        """A resident staff may take out of the township's records for ``reason``, and its open needs (to
        cancel); else a page saying why not. Call it under the store's lock."""
        rec = self.pages.in_scope(staff, rid, "person")
        if rec.deleted:
            raise PageError(f"{self.title(rec)}已经移出本镇街（或已合并到另一位居民），不用再办。")
        if reason not in REMOVE_REASONS:
            raise PageError("请选择移出的原因：" + "、".join(REMOVE_REASONS) + "。")
        if reason == "其他" and not note:
            raise PageError("原因选“其他”时，请在说明里写明原因。")
        try:
            SCHEMA.validate("person", "notes", SET, self.removal_notes(rec, reason, note))
        except InvalidValue:
            hint = value_hint(SCHEMA.field("person", "notes"))
            raise PageError(f"说明太长了（{len(note)} 字）：连同这位居民原有的备注，应为{hint}。请删减后再提交。") from None
        needs = [n for n in self.linked(rid)["need"] if n.data.get("status") not in CLOSED]
        lo, hi = staff.scope
        outside = sorted({n.unit or "" for n in needs if not (n.unit and lo <= n.unit <= hi)})
        if outside:
            villages = self.pages.villages()
            raise PageError(f"{self.title(rec)}有未完成的需求在您负责的范围之外（"
                            f"{'、'.join(villages.get(u, u) for u in outside)}），请由负责全镇的工作人员办理。")
        return rec, needs

    @staticmethod
    def removal_seen(rec: Record, needs: list[Record]) -> str:
        """What the confirm step showed, to tell at confirm time whether the resident or her open needs
        changed since (a tablet synced, another staff member saved): each record's last op here"""
        return " ".join([str(rec.seq), *sorted(f"{n.id}@{n.seq}" for n in needs)])

    @staticmethod
    def removal_notes(rec: Record, reason: str, note: str) -> str:
        "A resident's notes with the reason it left the township's records added on a line of its own"
        line = f"{today()} 移出本镇街（{reason}）" + (f"：{note}" if note else "")
        return "\n".join(t for t in (rec.data.get("notes"), line) if t)

    async def remove(self, request: Request, staff: Staff) -> Response:
        """Take a resident out of the township's records: moved to another township (迁出) or died (注销).
        The first post shows what will happen and asks to confirm (``confirm=1``, with ``seen``, what
        ``removal_seen`` said then); the confirmed one cancels the resident's open needs, withdraws the open
        escalations of all her needs (an answer from the reason alone: the county sees no note), adds the reason to its
        notes and deletes it, all ops by the Editor: a tablet's concurrent edit of the resident then shows
        as a conflict on the delete. If the resident or her open needs changed since the confirm page was
        shown, nothing is written and the page asks again with what is there now. A need a tablet records
        for her later is cancelled by the node when it arrives (``Node._follow_removals``)."""
        rid = request.path_params["record"]
        form = await self.pages.form(request)
        reason, note = str(form.get("reason", "")).strip(), str(form.get("note", "")).strip()

        def confirm() -> dict[str, Any]:
            with self.store.lock:
                rec, needs = self.removable(staff, rid, reason, note)
                seen = self.removal_seen(rec, needs)
                escalated = [n for n in self.linked(rid, staff.scope)["need"]
                             if any(e.get("status") in ESCALATION_OPEN for e in list_escalations(self.store, need=n.id))]
                open_ids = {n.id for n in needs}
                finished = [n for n in escalated if n.id not in open_ids]
            return {**self.record_view(staff, rid), "removing": {
                "reason": reason, "note": note, "needs": needs, "seen": seen, "escalated": {n.id for n in escalated},
                "finished": finished}}

        def write() -> str | None:
            with self.store.transaction():
                rec, needs = self.removable(staff, rid, reason, note)
                if form.get("seen") != self.removal_seen(rec, needs):
                    return None  # not what the confirm page listed: ask again
                name = self.title(rec)
                ed = self.node.editor(staff.username)
                for n in needs:
                    ed.update(n.id, {"status": "已取消"})
                open_ids = {n.id for n in needs}
                for n in self.linked(rid, staff.scope)["need"]:  # a resolved need's escalation may still be open
                    escalations.withdraw_open(ed, n.id, escalations.removed_answer(reason, n.id in open_ids))
                ed.update(rid, {"notes": self.removal_notes(rec, reason, note)})
                ed.delete(rid)
                cancelled = f"，{len(needs)} 条未完成的需求已改为“已取消”" if needs else ""
                return (f"已将{name}移出本镇街（{reason}）{cancelled}。平板下次同步后不再列出这位居民，汇总也不再计入；"
                        "本页仍保留记录和变更历史。")

        confirmed = form.get("confirm") == "1"
        if confirmed:
            done = await run_in_threadpool(write)
            if done is not None:
                return self.pages.done(request, f"/staff/records/{rid}", done)
        view = await run_in_threadpool(confirm)  # asked to confirm, or again: it changed since (a notice says so)
        view["removing"]["changed"] = confirmed
        return self.pages.render(request, staff, "wb_record.html", view, status=409 if confirmed else 200)

    async def edit(self, request: Request, staff: Staff) -> Response:
        rid = request.path_params["record"]
        form = await self.pages.form(request)

        def write() -> str:
            with self.store.transaction():
                rec = self.pages.in_scope(staff, rid)
                shown = _shown(form, rec.data)  # what the page showed: only what staff changed from it is written
                values: dict[str, Any] = {}
                for name in EDITABLE.get(rec.coll, ()):
                    f = SCHEMA.collections[rec.coll].fields[name]
                    if f.merge == "set":
                        if form.get("groups_shown"):
                            chosen = [str(v) for v in form.getlist(name)]
                            if sorted(chosen) != sorted(shown.get(name) or []):
                                values[name] = chosen
                        continue
                    if name not in form:
                        continue
                    value = parse_typed(rec.coll, name, str(form.get(name, "")), shown=shown.get(name))
                    if value != shown.get(name):
                        values[name] = value
                _refuse_stale(rec, shown, values)
                if rec.coll == "person":  # an ID number, birth date or gender changed must agree with the others
                    problem = next(iter(checks.disagreements({**rec.data, **values}, values).values()), None)
                    if problem is not None:
                        raise PageError(f"{problem.zh}。")
                if not values:
                    return "没有改动。"
                try:
                    self.node.editor(staff.username).update(rid, values)
                except InvalidValue as e:
                    raise _edit_error(rec.coll, values, e) from None
                return "已保存：" + "、".join(field_label(rec.coll, n) for n in values) + "。平板下次同步时会收到。"

        return self.pages.done(request, f"/staff/records/{rid}", await run_in_threadpool(write))

    async def duplicates(self, request: Request, staff: Staff) -> Response:
        show_dismissed = request.query_params.get("dismissed") == "1"

        def view() -> dict[str, Any]:
            villages = self.pages.villages()
            pairs, half_merged = self._pairs.get(staff.scope)
            with self.store.lock:
                said = dup.dismissed(self.store)
                half = [(h, self.kept(staff, h.rec)) for h in half_merged]
            shown, hidden = dup.split(pairs, said)
            with self.store.lock:  # the needs and services of the residents listed, not of every resident
                counts = self.store.count_naming("person", {r.id for p in shown + hidden for r in (p.a, p.b)},
                                                 ("need", "service"), units=staff.scope)
            return {"pairs": hidden if show_dismissed else shown, "villages": villages, "counts": counts,
                    "dismissed_view": show_dismissed, "dismissed": len(hidden), "open": len(shown),
                    "said": said, "half_merged": half}

        return self.pages.render(request, staff, "wb_duplicates.html", await run_in_threadpool(view))

    async def merge(self, request: Request, staff: Staff) -> Response:
        form = await self.pages.form(request)
        keep, drop = required(form, "keep", "drop")

        def write() -> str:
            with self.store.transaction():
                if keep == drop:
                    raise PageError("不能把一位居民合并到他自己。")
                k = self.pages.in_scope(staff, keep, "person")
                d = self.pages.in_scope(staff, drop, "person")
                self.refuse_half_merged(k, d)
                moved = self.linked(drop)
                try:
                    ops = self.node.editor(staff.username).merge(keep, drop, within=staff.scope)
                except InvalidValue as e:
                    raise _merge_error(e) from None
                except OutOfScope as e:
                    raise PageError(f"{self.title(d)}有需求或服务记录在您负责的范围之外（"
                                    f"{'、'.join(e.details['units'])}），请由负责全镇的工作人员合并。") from None
                filled = {o.field for o in ops if o.record == keep}
                labels = "、".join(f.label for n, f in SCHEMA.collections["person"].fields.items() if n in filled)
                return (f"已合并：{self.title(d)}（{short_id(drop)}）并入 {self.title(k)}（{short_id(keep)}），"
                        f"{len(moved['need'])} 条需求和 {len(moved['service'])} 条服务记录随之转移"
                        + (f"；保留的记录从另一条补上了：{labels}。" if labels else "。"))

        return self.pages.done(request, "/staff/duplicates", await run_in_threadpool(write))

    def pair(self, staff: Staff, a: str, b: str) -> dup.Pair:
        "Two residents of the staff member's township, as the duplicates page pairs them; else a 400 page"
        if a == b:
            raise PageError("请选择两位不同的居民。")
        ra, rb = self.pages.in_scope(staff, a, "person"), self.pages.in_scope(staff, b, "person")
        if ra.deleted or rb.deleted:
            raise PageError("其中一位居民已被删除或已合并，请刷新页面。")
        self.refuse_half_merged(ra, rb)
        found = find_pairs([ra, rb])
        if not found:
            raise PageError(f"{self.title(ra)} 和 {self.title(rb)} 现在不是疑似重复，不用标记。")
        return found[0]

    def refuse_half_merged(self, *people: Record) -> None:
        "A 400 page if one of these current residents is merged into another all the same (``dup.half_merged``)"
        for rec in people:
            if not rec.deleted and rec.merged_into is not None:
                raise PageError(dup.HALF_MERGED_REFUSED.format(name=f"{self.title(rec)}（{short_id(rec.id)}）"))

    async def dismiss(self, request: Request, staff: Staff) -> Response:
        form = await self.pages.form(request)
        a, b = required(form, "a", "b")

        def write() -> str:
            with self.store.transaction():
                p = self.pair(staff, a, b)
                dup.dismiss(self.store, p, staff.username, int(time.time()))
                return (f"已标记为不是同一人：{self.title(p.a)} 和 {self.title(p.b)}。"
                        "以后如果出现新的疑似理由（例如身份证号相同），这一组会重新列出。")

        return self.pages.done(request, "/staff/duplicates", await run_in_threadpool(write))

    async def undismiss(self, request: Request, staff: Staff) -> Response:
        form = await self.pages.form(request)
        a, b = required(form, "a", "b")

        def write() -> str:
            with self.store.transaction():
                ra, rb = self.pages.in_scope(staff, a, "person"), self.pages.in_scope(staff, b, "person")
                if not dup.undismiss(self.store, a, b):
                    raise PageError(f"{self.title(ra)} 和 {self.title(rb)} 没有被标记过，无需恢复。")
                return f"已恢复：{self.title(ra)} 和 {self.title(rb)} 重新列为疑似重复。"

        return self.pages.done(request, "/staff/duplicates", await run_in_threadpool(write))

    def half_merged_one(self, staff: Staff, rid: str) -> dup.HalfMerged:
        """The resident ``rid`` of the staff member's scope, left half-merged (``dup.half_merged``); else a 400
        page: she is not, or no longer (someone sorted her out since the page was shown)"""
        rec = self.pages.in_scope(staff, rid, "person")
        found = dup.half_merged(self.store, [rec]) if not rec.deleted else []
        if not found:
            raise PageError(f"{self.title(rec)}（{short_id(rec.id)}）现在不是未完成的旧合并（可能已有人处理），无需处理。"
                            "请刷新页面。")
        return found[0]

    async def finish_merge(self, request: Request, staff: Staff) -> Response:
        """Finish a merge an older version left half done: the resident, current yet merged into another that
        is current, is deleted (a delete by the Editor, as ``Node._follow_restores`` does for a restore pushed
        now); its values stay in its history and the kept resident's page lists it. One whose merge leads
        nowhere is refused: deleting it could leave none of her records current (``keep_separate`` is for her)."""
        form = await self.pages.form(request)
        (rid,) = required(form, "record")

        def write() -> str:
            with self.store.transaction():
                half = self.half_merged_one(staff, rid)
                rec, kept = half.rec, half.kept
                if kept is None or self.visible(staff, kept.id) is None:
                    raise PageError(f"{self.title(rec)}合并到的居民现在已不存在、已移出、不在您负责的范围内或同样未完成合并，"
                                    "不能在这里完成合并。请打开记录核对。")
                self.node.editor(staff.username).delete(rid)
                return (f"已完成合并：{self.title(rec)}的旧登记已删除，以{self.title(kept)}为准；"
                        "它的内容和变更历史仍可在记录页查看。")

        return self.pages.done(request, "/staff/duplicates", await run_in_threadpool(write))

    async def keep_separate(self, request: Request, staff: Staff) -> Response:
        """Keep a resident an older version left half-merged, whose merge leads nowhere (the resident she was
        merged into is removed, never synced here, or half-merged too), as a resident of her own (保留为独立居民):
        her ``merged_into`` is set to null by the Editor at the node's tier, in the staff member's name, so on
        every replica she is an ordinary current resident again: listed, merged or dismissed as any other, her
        needs and services still hers. One whose merge leads to a current resident is refused: 完成合并 is
        for her."""
        form = await self.pages.form(request)
        (rid,) = required(form, "record")

        def write() -> str:
            with self.store.transaction():
                half = self.half_merged_one(staff, rid)
                name = f"{self.title(half.rec)}（{short_id(rid)}）"
                if half.kept is not None:
                    raise PageError(f"{name}合并到的居民仍然在册，应当“完成合并”，不能保留为独立居民。"
                                    "合并到的居民不在您负责的范围内的，请由负责全镇的工作人员处理。")
                self.node.editor(staff.username).update(rid, {"merged_into": None})
                return (f"已保留为独立居民：{name}重新列入居民名单，可以正常合并或标记为不是同一人，"
                        "需求和服务记录仍归这位居民。平板下次同步时会收到。")

        return self.pages.done(request, "/staff/duplicates", await run_in_threadpool(write))

    async def search(self, request: Request, staff: Staff) -> Response:
        "A search of the residents: its query kept on the node, and to the results' page, which names its token"
        form = await self.pages.form(request)
        q, unit = str(form.get("q", "")).strip(), str(form.get("unit", "")).strip()
        if len(q) > SEARCH_LENGTH:
            raise PageError(f"搜索内容太长：最多 {SEARCH_LENGTH} 个字。请输入姓名、拼音、身份证号或电话。")
        params = {}
        if q:
            token = secrets.token_urlsafe(16)
            self._searches.put((session_id(request) or "", token), q)
            params["s"] = token
        if unit:
            params["unit"] = unit
        return RedirectResponse("/staff/people" + (f"?{urlencode(params)}" if params else ""), status_code=303)

    async def people(self, request: Request, staff: Staff) -> Response:
        "The residents, or those a search (``?s=``, see ``search``) found"
        token = request.query_params.get("s", "")
        unit = request.query_params.get("unit", "")
        kept = self._searches.peek((session_id(request) or "", token)) if token else ""
        q = kept or ""

        def view() -> dict[str, Any]:
            villages = self.villages(staff)
            if unit and unit not in villages:
                raise PageError("这个村/社区不在您所在镇街的范围内，或代码有误。")
            people = self._residents.get(staff.scope)
            if unit:
                people = [p for p in people if p.unit == unit]
            rows = find_people(people, q) if q else people
            with self.store.lock:  # the residents shown, as they are now
                shown = self.store.records_by_id([p.id for p in rows[:PEOPLE_SHOWN]])
            return {"rows": shown, "found": len(rows), "shown": PEOPLE_SHOWN, "q": q, "unit": unit,
                    "villages": villages, "search_length": SEARCH_LENGTH, **({"notice": SEARCH_GONE} if kept is None else {})}

        return self.pages.render(request, staff, "wb_people.html", await run_in_threadpool(view))

    async def needs(self, request: Request, staff: Staff) -> Response:
        status = request.query_params.get("status", "")
        unit = request.query_params.get("unit", "")
        if status not in ("", "open", "overdue", *STATUSES):
            raise PageError(f"没有“{status}”这个状态；可选：{'、'.join(STATUSES)}。")
        page = request.query_params.get("page", "1")
        if not page.isdigit() or int(page) < 1:
            raise PageError(f"页码“{page}”不对：请填 1 或更大的整数。")

        def view() -> dict[str, Any]:
            villages = self.villages(staff)
            if unit and unit not in villages:
                raise PageError("这个村/社区不在您所在镇街的范围内，或代码有误。")
            on = today()
            board = self._needs.get((staff.scope, on))
            # the list: the needs the filters pick, in the board's order, one page of them read as they are now
            def picked(n: tuple[str, str, Any, int, int]) -> bool:
                "Whether the filters pick need ``n`` (a row of ``NeedsBoard``): its village, then its status"
                if unit and n[1] != unit:
                    return False
                if status in ("", "open", "overdue"):
                    return status == "" or (status == "open" and not n[4]) or (status == "overdue" and bool(n[3]))
                return bool(n[2] == status)

            chosen = [n[0] for n in board.rows if picked(n)]
            found = len(chosen)
            pages = max(1, -(-found // NEEDS_SHOWN))
            at = min(int(page), pages)  # past the last page: the last one
            with self.store.lock:
                shown = self.store.records_by_id(chosen[(at - 1) * NEEDS_SHOWN:at * NEEDS_SHOWN])
                names = {n.id: self.person_name(n.data.get("person")) for n in shown}
            return {"rows": shown, "found": found, "page": at, "pages": pages,
                    "names": names, "villages": villages, "matrix": Counter(board.matrix),
                    "overdue": Counter(board.overdue),
                    "statuses": STATUSES, "status": status, "unit": unit, "today": on,
                    "overdue_ids": {n.id for n in shown if is_overdue(n, on)},
                    "back": str(request.url.path) + (f"?{request.url.query}" if request.url.query else "")}

        return self.pages.render(request, staff, "wb_needs.html", await run_in_threadpool(view))

    async def need_update(self, request: Request, staff: Staff) -> Response:
        rid = request.path_params["record"]
        form = await self.pages.form(request)
        back = str(form.get("back", "/staff/needs"))
        if not back.startswith("/staff/needs"):
            back = "/staff/needs"

        def write() -> str:
            with self.store.transaction():
                rec = self.pages.in_scope(staff, rid, "need")
                shown = _shown(form, rec.data)
                values: dict[str, Any] = {}
                for name in ("assignee", "due_date", "status"):
                    if name in form:
                        value = parse_typed("need", name, str(form.get(name, "")), shown=shown.get(name))
                        if name == "status" and value is None:
                            continue  # a status is changed, never cleared
                        if value != shown.get(name):
                            values[name] = value
                _refuse_stale(rec, shown, values)
                current = rec.data.get("status") or "待处理"
                if values.get("assignee") and "status" not in values and current == "待处理":
                    values["status"] = "已分派"  # assigning a waiting need assigns it
                if not values:
                    return "没有改动。"
                try:
                    self.node.editor(staff.username).update(rid, values)
                except InvalidValue as e:
                    raise _edit_error("need", values, e) from None
                parts = [f"{field_label('need', n)}“{show(v)}”" for n, v in values.items()]
                return f"已保存：{self.title(rec)}，" + "，".join(parts) + "。"

        return self.pages.done(request, back, await run_in_threadpool(write))


def workbench_routes(pages: Pages) -> list[BaseRoute]:
    wb = Workbench(pages)
    return [
        Route("/staff", pages.page(wb.home, township=False)),
        Route("/staff/people", pages.page(wb.people)),
        Route("/staff/people", pages.page(wb.search), methods=["POST"]),
        Route("/staff/conflicts", pages.page(wb.conflicts)),
        Route("/staff/conflicts/resolve", pages.page(wb.resolve), methods=["POST"]),
        Route("/staff/records/{record}", pages.page(wb.record)),
        Route("/staff/records/{record}", pages.page(wb.edit), methods=["POST"]),
        Route("/staff/records/{record}/escalate", pages.page(wb.escalate), methods=["POST"]),
        Route("/staff/records/{record}/remove", pages.page(wb.remove), methods=["POST"]),
        Route("/staff/duplicates", pages.page(wb.duplicates)),
        Route("/staff/duplicates/merge", pages.page(wb.merge), methods=["POST"]),
        Route("/staff/duplicates/dismiss", pages.page(wb.dismiss), methods=["POST"]),
        Route("/staff/duplicates/restore", pages.page(wb.undismiss), methods=["POST"]),
        Route("/staff/duplicates/finish", pages.page(wb.finish_merge), methods=["POST"]),
        Route("/staff/duplicates/separate", pages.page(wb.keep_separate), methods=["POST"]),
        Route("/staff/needs", pages.page(wb.needs)),
        Route("/staff/needs/{record}", pages.page(wb.need_update), methods=["POST"]),
    ]
