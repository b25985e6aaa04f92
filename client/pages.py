"""The tablet app's pages: set-up, unlock, residents (search first, then register), needs, services, sync and
conflicts; the notices and tasks that came down (read-only, but for the village's progress on each task) and
a need's escalation (吹哨报到). Each
handler reads or writes through ``TabletApp.run`` (the pages' tablet, under its lock) and renders a
template from ``client/templates``; every form POST carries the CSRF token.

What a worker saves is checked whole first (``client.forms``); on a mistake the form comes back with
the message beside its field and nothing is written. An edit writes only the fields the worker changed,
so saving a form never silently settles a conflict on a field the worker did not touch.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import re
import secrets
import uuid
from collections.abc import Awaitable, Callable, Collection
from typing import Any
from urllib.parse import urlencode

import httpx

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sync import checks
from sync.errors import InvalidValue, NotFound, ReadOnly, StorageFull, Unauthorized, Unavailable
from sync.ops import Op, uuid7
from sync.lookup import find_people, name_matches, normalize, sort_key
from sync.reference import TASK_CANCELLED, now_text
from sync.schema import CATALOGUE_KINDS, NOTE_MAX, REPORT_STATUSES, SCHEMA, TASK_STATUSES
from sync.store import Conflict, Record
from sync.types import CHINA_TIME, DELETED, china_time

from . import forms
from .syncjob import refusal_text
from .tablet import MIN_PIN_LENGTH, PinChanging, PinRequired, SyncFailed, Tablet, WrongPin
from .ui import (
    ERROR_TEXT, LIST_LIMIT, SEARCH_SECONDS, AlreadySetUp, NotSetUp, SyncRunning, TabletApp, TooManyPins,
    check_csrf, local_path, is_locked, locked, templates,
)

#: Messages a redirect may ask a page to show (never text from the request itself)
DONE = {
    "created": "居民已登记，已保存在本机。",
    "saved": "已保存。",
    "need": "需求已记录。",
    "service": "服务记录已保存。",
    "need_merged": "需求已记录。这位居民的登记已与另一条合并，需求记在合并后的居民名下。",
    "service_merged": "服务记录已保存。这位居民的登记已与另一条合并，记录记在合并后的居民名下。",
    "need_removed": "需求已记录在本机。该居民已迁出/注销：这条需求仍记在其名下，同步到镇街时会改为“已取消”，记录保留。",
    "service_removed": "服务记录已保存。该居民已迁出/注销：服务记录仍记在其名下，下次同步时报给镇街，照常计入服务当月的统计。",
    "resolved": "已选定，冲突已解决；下次同步时会告诉镇街。",
    "reported": "任务进度已保存在本机，下次同步时报给镇街。",
    "changed": "这个冲突已有变化，请重新查看后再选。",
    "enrolled": "本平板已登记，可以开始工作了。数据用您设置的 PIN 加密保存在本机。",
    "reattached": "本平板已重新接入镇街服务器，本机数据都在。请点“立即同步”，把本机的数据全部发给镇街。",
}
#: What a search's page (residents, needs, services) says when its token names no query any more (too old,
#: or the app locked)
SEARCH_GONE = f"搜索结果已过期（只保留 {SEARCH_SECONDS // 60} 分钟，锁定后清除），请重新搜索。"
#: Why the township refused an enrolment code, for the worker
ENROL_ERRORS = {
    "invalid_enrolment_code": "登记码不对。请核对后重新输入，或请镇街重新发一个。",
    "enrolment_used": "这个登记码已经用过了。请镇街重新发一个。",
    "enrolment_expired": "这个登记码已过期。请镇街重新发一个。",
    "too_many_attempts": "登记码输错次数太多，请过一段时间再试。",
    "device_exists": "镇街服务器上还有这台平板的登记，不能用新登记码重新接入。请联系镇街社会工作服务中心。",
    "enrolment_mismatch": "这个登记码不是发给本平板的（平板编号、村/社区或社工姓名不同）。请镇街按本平板的编号、村/社区和社工姓名重新发一个。",
    "reattach_unsupported": "镇街服务器的软件太旧，不能重新接入。本平板没有改动，数据都在。"
                            "请镇街先更新服务器软件（并停用它刚才新登记的那台平板），再发一个新的登记码。",
}
#: A refused set-up the tablet has no words for
ENROL_REFUSED = "镇街服务器没有接受登记。请核对登记码后再试；如果一直这样，请联系镇街社会工作服务中心。"
#: A refused re-attach the tablet has no words for
REATTACH_REFUSED = "镇街服务器没有接受重新接入。本机数据都还在，请稍后再试；如果一直这样，请联系镇街社会工作服务中心。"
OPEN_STATUSES = ("待处理", "已分派", "服务中")
#: A need in one of ``OPEN_STATUSES``, as SQL over its ``data`` (a need without a status is not among them)
OPEN_SQL = f"json_extract(data, '$.status') IN ({', '.join(repr(s) for s in OPEN_STATUSES)})"
#: On a need or service form sent back for a resident merged since it was shown
MERGED_NOTE = "这位居民的登记已与另一条合并，保存时记在合并后的居民名下。"
#: On a need or service form sent back for a resident removed (迁出/注销) since it was shown: what saving does
REMOVED_NOTE = {
    "need": "该居民已迁出/注销。这条需求仍可保存，记在其名下，但同步到镇街时会改为“已取消”。",
    "service": "该居民已迁出/注销。这条服务记录仍可保存，记在其名下，照常计入服务当月的统计。",
}
#: A task in one of these statuses is still to be done: past its due date, it is marked overdue
OPEN_TASKS = TASK_STATUSES[:2]
#: How many of the newest notices and tasks the home page lists; the 通知任务 page lists them all
HOME_LIST = 3
#: The tablet's note (meta) of the notices and tasks the worker has seen on the 通知任务 page, as a JSON
#: list of their ids: the others count as new
SEEN_KEY = "reference_seen"


def _redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def _name_key(rec: Record) -> str:
    return sort_key(str(rec.data.get("name", "")))


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, list) or isinstance(new, list):
        return set(old or []) != set(new or [])
    return (old if old != "" else None) != (new if new != "" else None)


def _shown(form: FormData, current: dict[str, Any]) -> dict[str, Any]:
    return checks.shown_values(form.get("shown", ""), current)


def _changes(current: dict[str, Any], form: FormData,
             values: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """The fields the worker changed: those whose value differs from what the form showed (its hidden
    ``shown``), not from the record as it is now, so that a change a sync brought in meanwhile is not
    written back over; and the refusals, by field, of those the worker changed that also changed
    meanwhile, each saying the value now (the form comes back with it as ``shown``: ``_refused``)."""
    shown = _shown(form, current)
    as_shown = forms.as_form(shown)  # as the inputs held it: a service time without its seconds, say
    changes = {k: v for k, v in values.items() if _differs(as_shown.get(k), v)}
    told: dict[str, str] = {}
    for k in changes:
        if _differs(current.get(k), shown.get(k)):
            now = current.get(k)
            now_text = "、".join(map(str, now)) if isinstance(now, list) else ("（空）" if now in (None, "") else now)
            told[k] = f"打开表单后，这一项已同步更新为“{now_text}”。请核对后再保存。"
    return changes, told


def _refused(coll: str, form: FormData, current: dict[str, Any], touched: Collection[str],
             told: Collection[str]) -> dict[str, Any]:
    """A refused edit form as it comes back: its inputs (``values``) hold the fields the worker changed
    (``touched``) as she typed them and every other field as the record is now, and its hidden ``shown``
    is the record now, so that saving it again writes no value over one a sync brought meanwhile. A field
    she changed keeps the value the form first showed as ``shown`` unless she was ``told`` (``_changes``)
    it changed meanwhile: saving it again is still checked against a sync's change."""
    shown = _shown(form, current)
    now = forms.as_form(current)
    values = {**_raw(form), **{k: now.get(k, "") for k in forms.FIELDS[coll] if k not in touched}}
    return {"values": values, "shown": {**current, **{k: shown.get(k) for k in touched if k not in told}}}


def _raw(form: FormData) -> dict[str, Any]:
    "What the worker typed, to show the form again"
    out: dict[str, Any] = {k: v for k, v in form.items() if isinstance(v, str)}
    out["groups"] = [str(g) for g in form.getlist("groups")]
    return out


def _new_id(form: FormData) -> str:
    """The id a new-record form was given when it was shown (``rid``, a UUIDv7), so that the form sent
    twice, as a browser does after a lost answer or the worker does after Back (``app.js`` has the browser
    refill the id), makes one record. A form without one gets a new id."""
    try:
        sent = uuid.UUID(str(form.get("rid", "")))
    except ValueError:
        return uuid7()
    return str(sent) if sent.version == 7 else uuid7()


def _form_record(tab: Tablet, rid: str, coll: str, values: dict[str, Any]) -> tuple[str, bool]:
    """The id to save a new-record form under, and whether it was saved already: its record exists with
    the values sent. The same form sent again with other values (the worker went back and typed the next
    resident) is a new record, under a new id."""
    rec = tab.get(rid)
    if rec is None:
        return rid, False
    if rec.coll == coll and not any(_differs(rec.data.get(k), v) for k, v in values.items()):
        return rid, True
    return uuid7(), False


def _nav(tab: Tablet) -> dict[str, Any]:
    (conflicts,) = tab.store.conn.execute("SELECT count(*) FROM conflicts").fetchone()
    return {"pending": tab.pending(), "conflict_count": int(conflicts), "new_count": _new_count(tab), "me": {
        "device": tab.device, "user": tab.store.meta("user") or "", "unit": tab.unit}}


def _seen(tab: Tablet) -> set[str]:
    "The ids of the notices and tasks the worker has seen on the 通知任务 page"
    return set(json.loads(tab.store.meta(SEEN_KEY) or "[]"))


def _new_count(tab: Tablet) -> int:
    "How many notices and tasks came down that the worker has not seen on the 通知任务 page"
    seen = _seen(tab)
    return sum(r.id not in seen for coll in ("notice", "task") for r in tab.list(coll))


def _china_minute(value: Any) -> str:
    """A reference record's time (written in China time, ``now_text``) to the minute, without its T; one
    written with a zone is turned into China time"""
    try:
        t = dt.datetime.fromisoformat(str(value))
    except ValueError:
        return str(value or "")
    if t.tzinfo is not None:
        t = t.astimezone(CHINA_TIME).replace(tzinfo=None)
    return t.strftime("%Y-%m-%d %H:%M")


def from_above(tab: Tablet) -> dict[str, Any]:
    """The notices and tasks that came down, newest first, as the pages show them: ``by``, the unit that
    published each (its name once the unit tree has synced), times in China time, ``new`` for those the
    worker has not seen on the 通知任务 page, and ``overdue`` for a task past its due date (China's day)
    and not done"""
    units = {str(u.data.get("code")): str(u.data.get("name") or "") for u in tab.list("unit")}
    seen, today = _seen(tab), china_time().date().isoformat()

    def shown(r: dict[str, Any]) -> dict[str, Any]:
        return {**r, "by": units.get(str(r.get("unit"))) or r.get("unit", ""), "new": r["id"] not in seen}

    reports = tab.task_reports()

    def task(t: dict[str, Any]) -> dict[str, Any]:
        status, due = t.get("status") or TASK_STATUSES[0], str(t.get("due_date") or "")
        report = reports.get(t["id"], {})
        return {**shown(t), "status": status, "overdue": bool(due) and due < today and status in OPEN_TASKS
                and report.get("status") != "已完成",
                "progress": report.get("status") or REPORT_STATUSES[0], "note": report.get("note") or ""}

    notices = [{**shown(n), "at": _china_minute(n.get("published_at"))} for n in tab.notices()]
    newest_set_first = sorted(tab.tasks(), key=lambda t: str(t["id"]), reverse=True)  # ids are UUIDv7s
    tasks = [task(t) for t in newest_set_first]
    return {"notices": notices, "tasks": tasks}


def _escalations(tab: Tablet) -> dict[str, dict[str, Any]]:
    "The latest escalation (吹哨报到) of each need ever escalated, by the need's id, its times in China time"
    return {need: {**e, **{k: _china_minute(e[k]) for k in ("escalated_at", "answered_at") if e.get(k)}}
            for need, e in tab.escalations().items()}


def _person(tab: Tablet, rid: str) -> Record:
    rec = tab.get(rid)
    if rec is None or rec.coll != "person":
        raise NotFound(f"no resident {rid}", details={"record": rid})
    return rec


def _record(tab: Tablet, rid: str, coll: str) -> Record:
    rec = tab.get(rid)
    if rec is None or rec.coll != coll or rec.deleted:
        raise NotFound(f"no {coll} {rid}", details={"record": rid})
    return rec


def _removed(rec: Record | None) -> bool:
    """Whether ``rec`` is a resident township staff took out of the township's records (迁出/注销): deleted,
    not merged into another. Her needs and services stay, read-only (``_resident``)."""
    return rec is not None and rec.coll == "person" and rec.deleted and rec.merged_into is None


def _as_removed(tab: Tablet, rec: Record) -> Record:
    """A removed resident (``_removed``) as her pages show her: her name and notes (the reason she was removed
    on a line of its own) as they were when she was removed, from the op log, as the workbench shows them (her
    delete superseded every value); any other record as it is"""
    if not _removed(rec):
        return rec
    return dataclasses.replace(rec, data={**rec.data, **{k: tab.store.last_value(rec.id, k) for k in ("name", "notes")}})


def _resident_shown(tab: Tablet, pid: str) -> Record:
    """Resident ``pid`` as her pages show her: a removed one too (``_removed``, ``_as_removed``), whose pages
    are read-only; NotFound for one deleted otherwise"""
    named = tab.get(pid)
    return _as_removed(tab, named) if named is not None and _removed(named) else _record(tab, pid, "person")


def _resident(tab: Tablet, rec: Record) -> Record:
    "The resident a need or service (``rec``) is for, as its page shows it (``_resident_shown``)"
    return _resident_shown(tab, str(rec.data.get("person", "")))


def _editable(rec: Record, p: Record) -> None:
    """Refuse to save a removed resident (``p``), or a need or service (``rec``) of hers: they are shown
    read-only"""
    if _removed(p):
        what = (f"resident {p.id} was removed" if rec.id == p.id
                else f"{rec.coll} {rec.id} is of resident {p.id}, who was removed")
        raise ReadOnly(f"{what}: it can no longer be changed", details={"record": rec.id, "person": p.id},
                       code="resident_removed")


def _cancelled_by_removal(tab: Tablet, n: Record, p: Record) -> Op | None:
    """The op that cancelled need ``n`` as its resident ``p`` was removed (by the staff member who removed her:
    the removal itself, or the node when the need arrived open afterwards, ``Node._follow_removals``), if so"""
    if not _removed(p) or n.data.get("status") != "已取消":
        return None
    gone = next((op for op in reversed(tab.store.record_ops(p.id)) if op.field == DELETED and op.value is True), None)
    cancel = next((op for op in reversed(tab.store.record_ops(n.id)) if op.field == "status"), None)
    if gone is None or cancel is None or cancel.value != "已取消" or (cancel.user, cancel.tier) != (gone.user, gone.tier):
        return None
    return cancel


def _kept(tab: Tablet, pid: str) -> Record | None:
    """The current resident that resident ``pid`` was merged into (following merges), when this tablet holds
    her; None when ``pid`` was not merged, or when its merge leads nowhere: to a resident removed since
    (迁出/注销), or one of another village"""
    kept = tab.get(tab.store.resolve_id(pid))
    if kept is None or kept.id == pid or kept.coll != "person" or kept.deleted or kept.merged_into is not None:
        return None
    return kept


def _person_for(tab: Tablet, pid: str) -> Record:
    """The resident a new need or service is saved for: the one the form names, or, when a sync merged
    that resident into another since the form was shown, the kept one (what the tablet records for a
    merged-away resident follows the merge). A kept resident this tablet does not hold (one of another
    village) leaves the merged-away one: the node moves what is saved for it to the kept one."""
    kept = _kept(tab, pid)
    if kept is not None:
        return kept
    named = tab.get(pid)
    if named is not None and (named.merged_into is not None or _removed(named)):
        return _as_removed(tab, named)  # a removed resident's too: what the worker typed is kept
    return _record(tab, pid, "person")


def _merged(ctx: dict[str, Any]) -> bool:
    "Whether a need or service form's resident was merged into another since the form was shown"
    return bool(ctx["p"].id != ctx["pid"] or ctx["p"].merged_into)


def _form_note(ctx: dict[str, Any], kind: str) -> dict[str, Any]:
    """A need or service (``kind``) form's context, saying so when its resident was merged into another or
    removed meanwhile"""
    if _removed(ctx["p"]):
        return {**ctx, "done": REMOVED_NOTE[kind]}
    return {**ctx, "done": MERGED_NOTE} if _merged(ctx) else ctx


def _created(ctx: dict[str, Any], kind: str) -> RedirectResponse:
    """After a need or service is saved: its resident's page, saying so when it went to the kept resident or
    she was removed meanwhile; the list of needs or services when the kept resident is another village's,
    which this tablet cannot show"""
    if _removed(ctx["p"]):
        return _redirect(f"/people/{ctx['p'].id}?done={kind}_removed")
    if not _merged(ctx):
        return _redirect(f"/people/{ctx['p'].id}?done={kind}")
    if ctx["p"].merged_into:
        return _redirect(f"/{kind}s?done={kind}_merged")
    return _redirect(f"/people/{ctx['p'].id}?done={kind}_merged")


def _names(tab: Tablet) -> dict[str, str]:
    "Every resident's name by id; a removed one's as it was (``_as_removed``), for her needs and services listed"
    return {p.id: str(_as_removed(tab, p).data.get("name") or "") for p in tab.list("person", include_deleted=True)}


def _search(q: str, names: dict[str, str], texts: tuple[str, ...]) -> dict[str, Any]:
    """What ``Tablet.listed`` needs to keep the needs or services a search ``q`` finds: those whose ``texts``
    contain it, or whose resident's name (``names``, by id) matches it; nothing to add without a search"""
    if not q:
        return {}
    wanted = normalize(q)

    def keep(row: dict[str, Any]) -> bool:
        return (wanted in normalize(" ".join(str(row[k] or "") for k in texts))
                or name_matches(q, names.get(row["person"] or "", "")))

    return {"fields": (*texts, "person"), "keep": keep}


def conflict_view(tab: Tablet, c: Conflict, names: dict[str, str]) -> dict[str, Any]:
    """A conflict as the pages show it: what, whose record, the value shown and every competing value. A
    delete's competing values are the delete and edits of other fields, each naming its field. A resident
    merged away (``merged``) is not restored (``Editor.restore``): where it went, to write the edits there."""
    col = SCHEMA.collections.get(c.coll)
    rec = tab.get(c.record)
    person = c.record if c.coll == "person" else (rec.data.get("person") if rec else None)
    fields = col.fields if col else {}

    def label(name: str) -> str:
        return "删除" if name == DELETED else (fields[name].label if name in fields else name)

    deleted = c.field == DELETED
    merged = _merged_away(tab, rec) if deleted else None
    edited = {o.id: o.field for o in tab.store.ops_by_seq([o.seq for o in c.candidates])} if deleted else {}
    return {
        "record": c.record, "field": c.field, "coll": c.coll, "coll_label": col.label if col else c.coll,
        "field_label": label(c.field),
        "person": person,
        "person_name": (names.get(str(person), "") if person else "") or (merged or {}).get("name", ""),
        "winner": c.winner, "deleted": deleted, "merged": merged,
        "candidates": [{
            "op": f"{o.device}:{o.counter}", "value": o.value, "user": o.user, "device": o.device,
            "tier": o.tier, "hlc": o.hlc, "mine": o.device == tab.device,
            "field_label": label(edited.get((o.device, o.counter), c.field)),
            "edit": edited.get((o.device, o.counter), DELETED) != DELETED,
        } for o in c.candidates],
        "mine": any(o.device == tab.device for o in c.candidates),
    }


def _merged_away(tab: Tablet, rec: Record | None) -> dict[str, str] | None:
    """Where a resident merged into another lives on (following merges), as its conflict card says it: its
    name before the merge, and the kept resident's id and name (no id when this tablet does not hold the kept
    resident, one of another village); None if ``rec`` was not merged away"""
    if rec is None or rec.merged_into is None:
        return None
    kept = _kept(tab, rec.id)
    return {"name": str(rec.data.get("name") or tab.store.last_value(rec.id, "name") or ""),
            "kept": kept.id if kept else "",
            "kept_name": str(kept.data.get("name", "")) if kept else "另一位居民（本机没有这位居民的登记）"}


def page_routes(tapp: TabletApp) -> list[BaseRoute]:
    async def render(request: Request, name: str, ctx: dict[str, Any], status: int = 200) -> Response:
        nav: dict[str, Any] = {}
        if tapp.unlocked:
            try:
                # one trip to the tablet's thread: the header's counts, and a form's catalogues synced from above
                nav, cat = await tapp.run(lambda t: (_nav(t), forms.catalogues(t) if "cat" in ctx else None))
                if cat is not None:
                    ctx = {**ctx, "cat": cat}
            except Unauthorized as e:
                if not is_locked(e):
                    raise
        done = DONE.get(request.query_params.get("done", ""))
        return templates.TemplateResponse(request, name, {
            "tapp": tapp, "csrf": tapp.csrf, "done": done, "path": request.url.path, **nav, **ctx},
            status_code=status)

    async def synced_codes() -> Callable[[str], set[str]]:
        "The codes of the catalogues synced from above, for the forms' checks"
        known = await tapp.run(lambda t: {k: t.store.catalogue_codes(k) for k in CATALOGUE_KINDS})
        return lambda kind: known.get(kind, set())

    async def form_of(request: Request) -> FormData:
        form = await request.form()
        check_csrf(tapp, form.get("csrf"))
        return form

    # -- unlock -------------------------------------------------------------------------------------

    async def unlock_page(request: Request) -> Response:
        if tapp.unlocked:
            return _redirect("/")
        if not tapp.set_up:
            return _redirect("/setup")
        return await render(request, "unlock.html", {"error": tapp.notice or None, "encrypted": tapp.encrypted})

    async def setup_page(request: Request) -> Response:
        if tapp.set_up:
            return _redirect("/unlock")
        return await render(request, "setup.html", {"values": {"server": tapp.server_hint}, "errors": {},
                                                     "notice": tapp.notice})

    async def setup(request: Request) -> Response:
        form = await form_of(request)
        if tapp.set_up:
            return _redirect("/unlock")
        values = {k: str(form.get(k, "")).strip() for k in ("server", "code")}
        pin, again = str(form.get("pin", "")).strip(), str(form.get("pin2", "")).strip()
        errors: dict[str, str] = {}
        if not re.fullmatch(r"https?://[^\s/]+(:\d+)?/?", values["server"]):
            errors["server"] = "请填写镇街服务器地址，例如 http://192.168.1.10:8000"
        if not values["code"]:
            errors["code"] = "请填写镇街发给本平板的登记码"
        if len(pin) < MIN_PIN_LENGTH:
            errors["pin"] = f"PIN 至少 {MIN_PIN_LENGTH} 位"
        elif pin != again:
            errors["pin2"] = "两次输入的 PIN 不一样"
        if not errors:
            try:
                await run_in_threadpool(tapp.enrol, values["server"], values["code"], pin)
            except httpx.TransportError:
                errors["server"] = "无法连接镇街服务器。请检查地址和网络后再试。"
            except SyncFailed as e:
                if e.code in ("bad_answer", "http_error"):  # something else answered at that address
                    errors["server"] = "这个地址上的不是镇街服务器，或它没有正确回应。请核对地址后再试。"
                else:
                    errors["code"] = refusal_text(e, ENROL_ERRORS, ENROL_REFUSED)
            except AlreadySetUp:
                return _redirect("/unlock")
        if errors:
            return await render(request, "setup.html", {"values": values, "errors": errors}, 400)
        return _redirect("/?done=enrolled")

    async def unlock(request: Request) -> Response:
        form = await form_of(request)
        encrypted = tapp.encrypted
        pin = str(form.get("pin", "")).strip() if encrypted else ""  # a tablet without a PIN opens without
        error, status = None, 200
        try:
            if not pin and encrypted:
                raise PinRequired("no PIN")
            await run_in_threadpool(tapp.unlock, pin or None)
        except TooManyPins as e:
            error, status = f"PIN 错误次数过多，请 {e.seconds} 秒后再试。", 429
        except NotSetUp:
            error, status = "本平板尚未登记。请先用“cunsync tablet init”和镇街发的登记码完成登记。", 409
        except PinChanging:
            error, status = "正在更改本平板的 PIN，请等更改完成后再解锁。", 409
        except PinRequired:
            error, status = "请输入 PIN。", 401
        except WrongPin:
            error, status = "PIN 不正确，请重新输入。", 401
        except (StorageFull, Unavailable) as e:  # the tablet's own storage (``_storage_refused``)
            error, status = ERROR_TEXT[e.code], e.status
        if error:
            return await render(request, "unlock.html", {"error": error, "encrypted": encrypted}, status)
        return _redirect("/")

    async def lock(request: Request) -> Response:
        await form_of(request)
        try:
            await run_in_threadpool(tapp.lock)
        except SyncRunning:
            return await render(request, "error.html", {"message": "正在同步，同步结束后再锁定。"}, 409)
        return _redirect("/unlock")

    # -- home ---------------------------------------------------------------------------------------

    async def home(request: Request) -> Response:
        def load(tab: Tablet) -> dict[str, Any]:
            counts = dict(tab.store.conn.execute(
                "SELECT coll, count(*) FROM records WHERE deleted = 0 GROUP BY coll").fetchall())
            open_needs = tab.listed("need", where=OPEN_SQL, limit=0)[1]
            ref = from_above(tab)
            return {"counts": counts, "open_needs": open_needs,
                    "last_sync": tab.store.meta("last_sync"), "server": tab.store.meta("server"),
                    "notices": ref["notices"][:HOME_LIST], "tasks": ref["tasks"][:HOME_LIST],
                    "notice_total": len(ref["notices"]), "task_total": len(ref["tasks"])}

        return await render(request, "home.html", await tapp.run(load))

    # -- notices and tasks from above (read-only) ----------------------------------------------------

    async def notices(request: Request) -> Response:
        def load(tab: Tablet) -> dict[str, Any]:
            ref = from_above(tab)  # marked new as they were before this visit: now they are seen
            tab.store.set_meta(SEEN_KEY, json.dumps(sorted(r["id"] for r in ref["notices"] + ref["tasks"])))
            return {**ref, "note_max": NOTE_MAX}

        return await render(request, "notices.html", await tapp.run(load))

    async def task_report(request: Request) -> Response:
        "This village's progress on a task: 标记进行中 / 标记已完成, with an optional note"
        tid = request.path_params["id"]
        form = await form_of(request)
        status, note = str(form.get("status", "")), str(form.get("note", "")).strip()

        def save(tab: Tablet) -> str:
            task = tab.get(tid)
            if task is None or task.coll != "task" or task.deleted:
                return "没有找到这项任务，它可能已被撤回。请刷新页面。"
            problem = checks.task_report(status, note)
            if problem is not None:
                return problem.zh + "。"
            try:
                tab.report_task(tid, status, note)
            except InvalidValue as e:
                if e.code != "task_cancelled":
                    raise
                return TASK_CANCELLED  # since the page was shown
            return ""

        refused = await tapp.run(save)
        if refused:
            return await render(request, "error.html", {"message": refused}, 400)
        return _redirect(f"/notices?done=reported#task-{tid}")

    # -- residents ----------------------------------------------------------------------------------

    def search_to(page: str, *keep: str) -> Callable[[Request], Awaitable[Response]]:
        """A search (of residents, needs or services) posted for ``page``: its query kept in memory, and to
        ``page?s=<token>``, with the form's ``keep`` fields (filters that name no one: the page checks them)"""
        async def search(request: Request) -> Response:
            form = await form_of(request)
            if not tapp.unlocked:
                raise locked()
            q = str(form.get("q", "")).strip()
            params = {k: v for k in keep if (v := str(form.get(k, "")))}
            if q:
                params["s"] = secrets.token_urlsafe(16)
                tapp.searches.put(params["s"], q)
            return _redirect(page + (f"?{urlencode(params)}" if params else ""))

        return search

    def search_of(request: Request) -> dict[str, Any]:
        """The query behind the page's search token (``s``, from ``search_to``), and the token, for the page's
        links and forms;
        a token whose query is gone (too old, or the app locked since) is said on the page"""
        token = request.query_params.get("s", "")
        q = tapp.searches.peek(token) if token else ""
        return {"q": q or "", "s": token if q else "", **({"done": SEARCH_GONE} if q is None else {})}

    async def people(request: Request) -> Response:
        search = search_of(request)
        q = search["q"]
        pick = request.query_params.get("for", "")
        pick = pick if pick in ("need", "service") else ""

        def load(tab: Tablet) -> dict[str, Any]:
            everyone = tab.list("person")
            found = find_people(everyone, q) if q else sorted(everyone, key=_name_key)
            return {"people": found[:LIST_LIMIT], "total": len(found), "all": len(everyone)}

        return await render(request, "people.html", {**search, "pick": pick, **await tapp.run(load)})

    async def person_find(request: Request) -> Response:
        search = search_of(request)
        q = search["q"]
        found = await tapp.run(lambda tab: find_people(tab.list("person"), q)[:LIST_LIMIT]) if q else []
        return await render(request, "person_find.html", {**search, "people": found})

    def _prefill(q: str) -> dict[str, Any]:
        compact = q.replace(" ", "")
        if len(compact) == 18 and compact[:17].isdigit():
            return {"id_number": compact.upper()}
        if compact.isdigit() and len(compact) >= 7:
            return {"phone": compact}
        if any("\u4e00" <= ch <= "\u9fff" for ch in q):
            return {"name": q}
        return {}

    async def person_new(request: Request) -> Response:
        search = search_of(request)
        if not search["q"]:  # search the village first (or again: the search is gone)
            return await person_find(request) if "done" in search else _redirect("/people/new")
        return await render(request, "person_form.html", {
            "mode": "new", "values": _prefill(search["q"]), "errors": {}, "searched": search["q"],
            "s": search["s"], "dupes": [], "cat": forms.catalogues(), "rid": uuid7()})

    def _duplicates(tab: Tablet, values: dict[str, Any], exclude: str | None) -> tuple[Record | None, list[Record]]:
        "A resident with the same ID number, and residents with the same name and birth date"
        same_id, same_person = None, []
        for p in tab.list("person"):
            if p.id == exclude:
                continue
            if values.get("id_number") and checks.typed_key("id_number", p.data.get("id_number")) == values["id_number"]:
                same_id = p
            elif (values.get("birth_date") and p.data.get("birth_date") == values["birth_date"]
                  and normalize(str(p.data.get("name", ""))) == normalize(str(values.get("name", "")))):
                same_person.append(p)
        return same_id, same_person

    async def person_create(request: Request) -> Response:
        form = await form_of(request)
        searched = str(form.get("searched", "")).strip()
        if not searched:
            return _redirect("/people/new")  # search the village first
        values, errors = forms.parse("person", form)
        confirmed = form.get("confirm_new") == "1"
        new_id = _new_id(form)
        vals = {k: v for k, v in values.items() if v not in (None, [])}

        def save(tab: Tablet) -> tuple[str | None, list[Record]]:
            if errors:
                return None, []
            record, saved = _form_record(tab, new_id, "person", vals)
            if saved:
                return record, []
            same_id, same = _duplicates(tab, values, None)
            if same_id is not None:
                errors["id_number"] = f"这个身份证号已登记给“{same_id.data.get('name', '')}”，不能重复登记"
                return None, [same_id]
            if same and not confirmed:
                errors["confirm_new"] = "本村已有同名、同出生日期的居民。请先查看是否为同一人；确认不是，再勾选下面的确认框保存。"
                return None, same
            return tab.create("person", vals, record=record), []

        rid, dupes = await tapp.run(save)
        if rid is None:
            return await render(request, "person_form.html", {
                "mode": "new", "values": _raw(form), "errors": errors, "searched": searched,
                "s": str(form.get("s", "")), "dupes": dupes, "cat": forms.catalogues(), "rid": new_id}, 400)
        return _redirect(f"/people/{rid}?done=created")

    async def person_page(request: Request) -> Response:
        rid = request.path_params["id"]

        def load(tab: Tablet) -> dict[str, Any] | str:
            kept = _kept(tab, rid)  # a merge that leads nowhere leaves her own page (a half-merged resident's)
            if kept is not None:
                return kept.id
            rec = _as_removed(tab, _person(tab, rid))
            needs = tab.store.records("need", naming=("person", rid))
            services = tab.store.records("service", naming=("person", rid))
            services.sort(key=lambda s: str(s.data.get("served_at", "")), reverse=True)
            names = _names(tab)
            related = {rid, *(n.id for n in needs), *(s.id for s in services)}
            # and those of residents merged into this one: their late edits are to be written here
            conflicts = [conflict_view(tab, c, names) for c in tab.store.conflicts()
                         if c.record in related or (c.field == DELETED and tab.store.resolve_id(c.record) == rid)]
            return {"p": rec, "removed": _removed(rec), "needs": needs, "services": services, "conflicts": conflicts,
                    "need_labels": {n.id: n.data.get("category", "") for n in needs},
                    "escalations": _escalations(tab)}

        got = await tapp.run(load)
        if isinstance(got, str):
            return _redirect(f"/people/{got}")
        return await render(request, "person.html", got)

    async def person_edit(request: Request) -> Response:
        rid = request.path_params["id"]
        rec = await tapp.run(lambda tab: _resident_shown(tab, rid))
        return await render(request, "person_form.html", {
            "mode": "edit", "p": rec, "removed": _removed(rec), "values": forms.as_form(rec.data), "shown": rec.data,
            "errors": {}, "dupes": [], "cat": forms.catalogues()})

    async def person_update(request: Request) -> Response:
        rid = request.path_params["id"]
        form = await form_of(request)

        def save(tab: Tablet) -> tuple[Record, dict[str, str], list[Record], dict[str, Any]]:
            rec = _resident_shown(tab, rid)
            _editable(rec, rec)
            values, errors = forms.parse("person", form, editing=True, before=_shown(form, rec.data))
            told: dict[str, str] = {}
            # only a changed ID number: one a synced duplicate shares already must not freeze the record
            same_id = _duplicates(tab, values, rid)[0] if "id_number" in values and not errors else None
            if same_id is not None:
                errors["id_number"] = f"这个身份证号已登记给“{same_id.data.get('name', '')}”"
            elif not errors:
                changes, told = _changes(rec.data, form, values)
                if changes and not told:
                    tab.update(rid, changes)
            errors.update(told)
            again = _refused("person", form, rec.data, {*values, *errors}, told) if errors else {}
            return rec, errors, [same_id] if same_id else [], again

        rec, errors, dupes, again = await tapp.run(save)
        if errors:
            return await render(request, "person_form.html", {
                "mode": "edit", "p": rec, "errors": errors, "dupes": dupes, "cat": forms.catalogues(), **again},
                400)
        return _redirect(f"/people/{rid}?done=saved")

    # -- needs --------------------------------------------------------------------------------------

    async def needs(request: Request) -> Response:
        search = search_of(request)
        q = search["q"]
        status = request.query_params.get("status", "open")

        def load(tab: Tablet) -> dict[str, Any]:
            names = _names(tab)
            where = {"open": OPEN_SQL, "all": ""}.get(status, "json_extract(data, '$.status') = :status")
            out, total = tab.listed(
                "need", where=where, params={"status": status}, limit=LIST_LIMIT,
                order="coalesce(nullif(json_extract(data, '$.due_date'), ''), '9999'), id",
                **_search(q, names, ("category", "description", "assignee")))
            return {"needs": out, "total": total, "names": names, "escalations": _escalations(tab)}

        return await render(request, "needs.html", {
            **search, "status": status, "today": china_time().date().isoformat(), "cat": forms.catalogues(),
            **await tapp.run(load)})

    def _need_ctx(tab: Tablet, p: Record, n: Record | None = None) -> dict[str, Any]:
        """A need form's resident and catalogues, and an edited need's (``n``) escalation, if it was ever
        escalated; ``removed`` when the resident was removed (the need is shown read-only), with the op that
        cancelled the need as she was (``_cancelled_by_removal``)"""
        return {"p": p, "cat": forms.catalogues(), "esc": _escalations(tab).get(n.id) if n else None,
                "removed": _removed(p), "cancelled": _cancelled_by_removal(tab, n, p) if n else None}

    async def need_new(request: Request) -> Response:
        pid = request.query_params.get("person", "")
        if not pid:
            return _redirect("/people?for=need")
        ctx = await tapp.run(lambda tab: _need_ctx(tab, _record(tab, pid, "person")))
        return await render(request, "need_form.html", {"mode": "new", "values": {"urgency": "一般"},
                                                        "errors": {}, "rid": uuid7(), **ctx})

    async def need_create(request: Request) -> Response:
        form = await form_of(request)
        pid = str(form.get("person", ""))
        values, errors = forms.parse("need", form, codes=await synced_codes())
        new_id = _new_id(form)

        def save(tab: Tablet) -> tuple[str | None, dict[str, Any]]:
            ctx = {"pid": pid, **_need_ctx(tab, _person_for(tab, pid))}
            if errors:
                return None, ctx
            vals = {"person": ctx["p"].id, **{k: v for k, v in values.items() if v is not None},
                    "status": "待处理"}
            record, saved = _form_record(tab, new_id, "need", vals)
            return (record if saved else tab.create("need", vals, record=record)), ctx

        nid, ctx = await tapp.run(save)
        if nid is None:
            return await render(request, "need_form.html", {"mode": "new", "values": _raw(form), "errors": errors,
                                                            "rid": new_id, **_form_note(ctx, "need")}, 400)
        return _created(ctx, "need")

    async def need_edit(request: Request) -> Response:
        nid = request.path_params["id"]

        def load(tab: Tablet) -> dict[str, Any]:
            n = _record(tab, nid, "need")
            return {"n": n, "values": forms.as_form(n.data), "shown": n.data, **_need_ctx(tab, _resident(tab, n), n)}

        ctx = await tapp.run(load)
        return await render(request, "need_form.html", {
            "mode": "edit", "errors": {}, "statuses": forms.allowed_statuses(ctx["n"].data.get("status")), **ctx})

    async def need_update(request: Request) -> Response:
        nid = request.path_params["id"]
        form = await form_of(request)
        codes = await synced_codes()
        errors: dict[str, str] = {}

        def save(tab: Tablet) -> dict[str, Any]:
            n = _record(tab, nid, "need")
            ctx = {"n": n, **_need_ctx(tab, _resident(tab, n), n)}
            _editable(n, ctx["p"])
            values, found = forms.parse("need", form, editing=True, before=_shown(form, n.data), codes=codes)
            errors.update(found)
            told: dict[str, str] = {}
            if not errors:
                changes, told = _changes(n.data, form, values)
                errors.update(told)
                try:
                    if changes and not errors:
                        tab.update(nid, changes)
                except InvalidValue as e:
                    frm, to = (e.details or {}).get("from"), (e.details or {}).get("to")
                    errors["status"] = (f"需求不能从“{frm}”直接改为“{to}”" if frm else "状态填写有误")
            return {**ctx, **_refused("need", form, n.data, {*values, *errors}, told)} if errors else ctx

        ctx = await tapp.run(save)
        if errors:
            return await render(request, "need_form.html", {
                "mode": "edit", "errors": errors,
                "statuses": forms.allowed_statuses(ctx["n"].data.get("status")), **ctx}, 400)
        return _redirect(f"/people/{ctx['p'].id}?done=saved")

    # -- services -----------------------------------------------------------------------------------

    async def services(request: Request) -> Response:
        search = search_of(request)
        q = search["q"]

        def load(tab: Tablet) -> dict[str, Any]:
            names = _names(tab)
            out, total = tab.listed("service", order="json_extract(data, '$.served_at') DESC, id", limit=LIST_LIMIT,
                                    **_search(q, names, ("service_type", "provider_name", "notes")))
            return {"services": out, "total": total, "names": names}

        return await render(request, "services.html", {**search, **await tapp.run(load)})

    def _service_ctx(tab: Tablet, p: Record, linked: Any = None) -> dict[str, Any]:
        """The person, their needs to pick from, and ``gone``: the need a service names (``linked``) when
        it is not one of them any more (deleted, or gone with its village), so that the form keeps it. A
        resident merged into another village's keeps the needs the merge moved, while the tablet has them.
        ``removed`` when the resident was removed: a service's page is then read-only."""
        mine = {p.id, tab.store.resolve_id(p.id)}
        needs = sorted((n for pid in mine for n in tab.store.records("need", naming=("person", pid))),
                       key=lambda n: n.id)
        gone = None
        if isinstance(linked, str) and linked and linked not in {n.id for n in needs}:
            gone = {"id": linked, "label": "已删除的需求" if tab.get(linked) else "原对应的需求（已不在本村）"}
        return {"p": p, "needs": needs, "gone": gone, "cat": forms.catalogues(), "removed": _removed(p)}

    async def service_new(request: Request) -> Response:
        pid = request.query_params.get("person", "")
        if not pid:
            return _redirect("/people?for=service")
        ctx = await tapp.run(lambda tab: _service_ctx(tab, _record(tab, pid, "person")))
        need = request.query_params.get("need", "")
        preset = next((n for n in ctx["needs"] if n.id == need), None)
        values = {"need": need if preset else "", "provider_kind": "社工", "people_served": "1",
                  "served_at": now_text(),
                  "service_type": preset.data.get("category", "") if preset else ""}
        return await render(request, "service_form.html", {"mode": "new", "values": values, "errors": {},
                                                           "rid": uuid7(), **ctx})

    def _check_need(ctx: dict[str, Any], values: dict[str, Any], errors: dict[str, str]) -> None:
        kept = ctx["gone"]["id"] if ctx.get("gone") else None  # a service edited keeps the need it names
        if values.get("need") and values["need"] not in {n.id for n in ctx["needs"]} | {kept}:
            errors["need"] = "请从这位居民的需求中选择"

    async def service_create(request: Request) -> Response:
        form = await form_of(request)
        pid = str(form.get("person", ""))
        values, errors = forms.parse("service", form, codes=await synced_codes())
        new_id = _new_id(form)

        def save(tab: Tablet) -> tuple[str | None, dict[str, Any]]:
            ctx = {"pid": pid, **_service_ctx(tab, _person_for(tab, pid))}
            _check_need(ctx, values, errors)
            if errors:
                return None, ctx
            vals = {"person": ctx["p"].id, **{k: v for k, v in values.items() if v is not None}}
            record, saved = _form_record(tab, new_id, "service", vals)
            return (record if saved else tab.create("service", vals, record=record)), ctx

        sid, ctx = await tapp.run(save)
        if sid is None:
            return await render(request, "service_form.html", {"mode": "new", "values": _raw(form), "errors": errors,
                                                               "rid": new_id, **_form_note(ctx, "service")}, 400)
        return _created(ctx, "service")

    async def service_edit(request: Request) -> Response:
        sid = request.path_params["id"]

        def load(tab: Tablet) -> dict[str, Any]:
            s = _record(tab, sid, "service")
            return {"s": s, "values": forms.as_form(s.data), "shown": s.data,
                    **_service_ctx(tab, _resident(tab, s), s.data.get("need"))}

        return await render(request, "service_form.html", {"mode": "edit", "errors": {}, **await tapp.run(load)})

    async def service_update(request: Request) -> Response:
        sid = request.path_params["id"]
        form = await form_of(request)
        codes = await synced_codes()
        errors: dict[str, str] = {}

        def save(tab: Tablet) -> dict[str, Any]:
            s = _record(tab, sid, "service")
            ctx = {"s": s, **_service_ctx(tab, _resident(tab, s), s.data.get("need"))}
            _editable(s, ctx["p"])
            values, found = forms.parse("service", form, editing=True, before=_shown(form, s.data), codes=codes)
            errors.update(found)
            _check_need(ctx, values, errors)
            told: dict[str, str] = {}
            if not errors:
                changes, told = _changes(s.data, form, values)
                errors.update(told)
                if changes and not errors:
                    tab.update(sid, changes)
            return {**ctx, **_refused("service", form, s.data, {*values, *errors}, told)} if errors else ctx

        ctx = await tapp.run(save)
        if errors:
            return await render(request, "service_form.html", {"mode": "edit", "errors": errors, **ctx}, 400)
        return _redirect(f"/people/{ctx['p'].id}?done=saved")

    # -- sync and conflicts -------------------------------------------------------------------------

    async def sync_page(request: Request, reattach_error: str = "", status: int = 200, code: str = "") -> Response:
        def load(tab: Tablet) -> dict[str, Any]:
            names = _names(tab)
            return {"conflicts": [conflict_view(tab, c, names) for c in tab.store.conflicts()],
                    "last_sync": tab.store.meta("last_sync"), "server": tab.store.meta("server"),
                    "device": tab.device}

        ctx = await tapp.run(load)
        job = tapp.job.snapshot() if tapp.job else {}
        # the node refused the tablet's token: the form for the township's new code
        reattach = (job.get("state") == "failed" and job.get("code") == Unauthorized.code) or bool(reattach_error)
        return await render(request, "sync.html", {"job": job, "reattach": reattach, "code": code,
                                                   "errors": {"code": reattach_error} if reattach_error else {},
                                                   **ctx}, status)

    async def reattach(request: Request) -> Response:
        form = await form_of(request)
        code = str(form.get("code", "")).strip()
        error = "" if code else "请填写镇街新发的登记码"
        if code:
            try:
                await run_in_threadpool(tapp.reattach, code)
            except httpx.TransportError:
                error = "无法连接镇街服务器。请检查网络后再试。"
            except SyncRunning:
                error = "正在同步，同步结束后再重新接入。"
            except SyncFailed as e:
                error = refusal_text(e, ENROL_ERRORS, REATTACH_REFUSED)
        if error:
            return await sync_page(request, error, 400, code)  # the form keeps the code typed
        return _redirect("/sync?done=reattached")

    def _start() -> bool:
        if tapp.job is None:
            raise locked()
        return tapp.job.start()

    async def sync_start(request: Request) -> Response:
        await form_of(request)
        _start()
        return _redirect("/sync")

    async def api_sync(request: Request) -> Response:
        check_csrf(tapp, request.headers.get("x-csrf-token"))
        started = _start()
        assert tapp.job is not None
        return JSONResponse({"started": started, "job": tapp.job.snapshot()}, status_code=202)

    async def api_status(request: Request) -> Response:
        def load(tab: Tablet) -> dict[str, Any]:
            nav = _nav(tab)
            return {"pending": nav["pending"], "conflicts": nav["conflict_count"],
                    "last_sync": int(tab.store.meta("last_sync") or 0) or None}

        st = await tapp.run(load)
        job = tapp.job.snapshot() if tapp.job else None
        return JSONResponse({**st, "job": job})

    async def resolve(request: Request) -> Response:
        form = await form_of(request)
        record, field = str(form.get("record", "")), str(form.get("field", ""))
        back = local_path(form.get("next"), "/sync")

        def do(tab: Tablet) -> bool | dict[str, str]:
            found = [c for c in tab.store.conflicts(record=record) if c.field == field]
            if not found:
                return False
            if field == DELETED:
                try:
                    tab.resolve(record, DELETED, form.get("value") == "delete")
                except InvalidValue:
                    merged = _merged_away(tab, tab.get(record))  # the editor restores no merged-away resident
                    if merged is None:
                        raise
                    return merged
                return True
            pick = next((o for o in found[0].candidates if f"{o.device}:{o.counter}" == form.get("op")), None)
            if pick is None:
                return False
            tab.resolve(record, field, pick.value)
            return True

        ok = await tapp.run(do)
        if isinstance(ok, dict):  # a stale page's 恢复 of a resident merged away since: nothing written
            return await render(request, "error.html", {"code": "merged_away", "message": (
                f"镇街已把这位居民{'（' + ok['name'] + '）' if ok['name'] else ''}合并到{ok['kept_name']}，"
                "旧登记不能单独恢复。请回到冲突页面，把需要的修改填到合并后的登记里，再点“确认删除旧登记”。")}, 400)
        sep = "&" if "?" in back else "?"
        return _redirect(f"{back}{sep}done={'resolved' if ok else 'changed'}")

    return [
        Route("/", home),
        Route("/unlock", unlock_page, methods=["GET"]),
        Route("/unlock", unlock, methods=["POST"]),
        Route("/lock", lock, methods=["POST"]),
        Route("/setup", setup_page, methods=["GET"]),
        Route("/setup", setup, methods=["POST"]),
        Route("/people", people, methods=["GET"]),
        Route("/people", search_to("/people", "for"), methods=["POST"]),
        Route("/people/new", person_find, methods=["GET"]),
        Route("/people/new/find", search_to("/people/new"), methods=["POST"]),
        Route("/people/new", person_create, methods=["POST"]),
        Route("/people/new/form", person_new),
        Route("/people/{id}", person_page),
        Route("/people/{id}/edit", person_edit, methods=["GET"]),
        Route("/people/{id}/edit", person_update, methods=["POST"]),
        Route("/needs", needs, methods=["GET"]),
        Route("/needs", search_to("/needs", "status"), methods=["POST"]),
        Route("/needs/new", need_new, methods=["GET"]),
        Route("/needs/new", need_create, methods=["POST"]),
        Route("/needs/{id}/edit", need_edit, methods=["GET"]),
        Route("/needs/{id}/edit", need_update, methods=["POST"]),
        Route("/services", services, methods=["GET"]),
        Route("/services", search_to("/services"), methods=["POST"]),
        Route("/services/new", service_new, methods=["GET"]),
        Route("/services/new", service_create, methods=["POST"]),
        Route("/services/{id}/edit", service_edit, methods=["GET"]),
        Route("/services/{id}/edit", service_update, methods=["POST"]),
        Route("/notices", notices),
        Route("/tasks/{id}/report", task_report, methods=["POST"]),
        Route("/sync", sync_page, methods=["GET"]),
        Route("/sync", sync_start, methods=["POST"]),
        Route("/sync/reattach", reattach, methods=["POST"]),
        Route("/conflicts/resolve", resolve, methods=["POST"]),
        Route("/api/status", api_status),
        Route("/api/sync", api_sync, methods=["POST"]),
    ]
