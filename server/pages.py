"""What every workbench page shares: the sign-in and role guard, the CSRF check on forms, Chinese error
pages, one-shot notices after a form (kept on the node by session, never in the cookie), and the Jinja
filters that show tiers, clocks and skews.

A page handler is ``async def handler(request, staff) -> Response`` wrapped by ``Pages.page``: a visitor
who is not signed in is sent to ``/login``; county, city and admin accounts get a 403 page (they see
aggregates only, never a resident); an error raised inside becomes a page saying in Chinese what went
wrong, with the usual status (400 bad input, 403, 404 for a record outside the township).
"""

from __future__ import annotations

import datetime as dt
import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from sync import checks, units as unitlib
from sync.errors import BadRequest, NotFound, SyncError, Unauthorized
from sync.hlc import physical_ms
from sync.schema import ESCALATION_OPEN, SCHEMA, Field, mask_id_number, mask_phone
from sync.shortterm import ShortTerm
from sync.types import CHINA_TIME

from .auth import Accounts, Staff
from .node import Node
from .orders import form_body
from .staff import ROLE_NAMES, TOO_LARGE, check_csrf, csrf_token, current_staff, session_id, templates

#: Pages show times in China Standard Time (no daylight saving), the time the staff live in.
CST = CHINA_TIME
TIER_LABELS = unitlib.TIER_NAMES  # the name the templates and server/workbench.py know it by
#: A clock further off than this is flagged on the devices page.
SKEW_LIMIT_MS = 5 * 60 * 1000
#: The nav bar: path, label.
NAV = (("/staff", "概览"), ("/staff/people", "居民"), ("/staff/conflicts", "冲突"), ("/staff/duplicates", "疑似重复"),
       ("/staff/needs", "需求看板"), ("/staff/escalations", "吹哨报到"), ("/staff/tasks", "任务"),
       ("/staff/devices", "设备"),
       ("/staff/export", "导出"))

#: Notices waiting for the page after a form, kept at most, and for at most so many seconds (each waits
#: only for the redirect that follows).
NOTICES_KEPT = 1000
NOTICE_SECONDS = 30 * 60

#: What an error's code means, for staff reading a page.
_MESSAGES = {
    "not_found": "没有找到这条记录，或它不在您所在镇街的范围内。",
    "csrf": "页面已过期（安全校验未通过），请刷新页面后重试。",
    "forbidden": "您的账户没有这项权限：县区、市级工作人员只能查看汇总数据，管理员只管理账户。",
    "out_of_scope": "这个村/社区不在您所在镇街的范围内。",
    "invalid_unit": "村/社区代码不正确：应为 12 位统计用区划代码，例如 510903001001。",
    "too_large": TOO_LARGE,
}

Handler = Callable[[Request, Staff], Awaitable[Response]]


class PageError(SyncError):
    "A refusal already worded in Chinese for a page"

    status = 400
    code = "bad_request"

    def __init__(self, message: str, *, status: int = 400) -> None:
        super().__init__(message)
        self.status = status


def local_time(value: int | None, *, hlc: bool = False) -> str:
    "Seconds since the epoch (or an HLC reading) as 北京时间, to the minute"
    if not value:
        return "—"
    seconds = physical_ms(value) / 1000 if hlc else float(value)
    return dt.datetime.fromtimestamp(seconds, CST).strftime("%Y-%m-%d %H:%M")


def span_parts(seconds: float) -> list[tuple[int, str]]:
    """A duration rounded to what it shows, as (number, unit) with unit ``s``, ``min``, ``h`` or ``d``; the
    next unit down only under 10 of the first: [(40, s)], [(12, min)], [(3, h), (5, min)], [(2, d)]"""
    s = round(abs(seconds))
    if s < 60:
        return [(s, "s")]
    if s < 3570:
        return [(round(s / 60), "min")]
    if s < 86400 - 1800:
        h, m = divmod(round(s / 60), 60)
        return [(h, "h")] + ([(m, "min")] if h < 10 and m else [])
    d, h = divmod(round(s / 3600), 24)
    return [(d, "d")] + ([(h, "h")] if d < 10 and h else [])


_UNITS = {"s": "秒", "min": "分钟", "h": "小时", "d": "天"}
_NEXT_UNITS = {"min": "分", "h": "小时"}


def span(ms: int) -> str:
    "A duration in words, rounded to what it shows: 40 秒, 12 分钟, 3 小时 5 分, 2 天"
    (n, unit), *rest = span_parts(ms / 1000)
    return f"{n} {_UNITS[unit]}" + "".join(f" {m} {_NEXT_UNITS[u]}" for m, u in rest)


def skew_text(ms: int | None) -> str:
    "A tablet's clock against the node's: 快 2 天 / 慢 7 分钟 / 准确"
    if ms is None:
        return "—"
    if abs(ms) < 1000:
        return "准确"
    return ("快 " if ms > 0 else "慢 ") + span(ms)


def ago(seconds: int | None, now: float | None = None) -> str:
    "How long ago the time ``seconds`` (since the epoch) was, in words; 从未同步 for never"
    if not seconds:
        return "从未同步"
    return age_text((now if now is not None else dt.datetime.now().timestamp()) - seconds)


def age_text(seconds: float | None) -> str:
    "An age in words, rounded as ``span``: 刚刚, 5 分钟前, 3 小时 5 分前, 2 天前; 从未 for never"
    if seconds is None:
        return "从未"
    if seconds < 60:
        return "刚刚"
    return span(int(seconds * 1000)) + "前"


def show(value: Any) -> str:
    "A field value as a page shows it"
    if value is None or value == "" or value == []:
        return "（空）"
    if isinstance(value, bool):
        return "是" if value else "否"
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return str(value)


def short_id(rid: str) -> str:
    "A record id as a page names it for short: its last characters (a UUIDv7's first ones are its time)"
    return rid[-8:]


templates.env.filters.update(local_time=local_time, skew_text=skew_text, ago=ago, show=show, span=span,
                             short_id=short_id)
templates.env.globals.update(TIER_LABELS=TIER_LABELS, SKEW_LIMIT_MS=SKEW_LIMIT_MS, NAV=NAV, SCHEMA=SCHEMA,
                             ESCALATION_OPEN=ESCALATION_OPEN, mask_id=mask_id_number, mask_phone=mask_phone)


def field_label(coll: str, name: str) -> str:
    c = SCHEMA.collections.get(coll)
    f = c.fields.get(name) if c else None
    return f.label if f else name


def value_hint(f: Field) -> str:
    "What a valid value of a field looks like, in Chinese"
    from typing import get_args

    args = [a for a in get_args(f.type) if isinstance(a, str)]
    hints = {"birth_date": "日期，格式为 年-月-日，例如 1942-03-08", "due_date": "日期，格式为 年-月-日，例如 2025-06-30",
             "id_number": "18 位身份证号，最后一位可以是 X", "phone": "5 到 20 位数字（可带 + - 和空格）",
             "served_at": "时间，例如 2025-05-01 09:30", "minutes": "0 到 100000 的整数",
             "people_served": "0 到 100000 的整数", "name": "1 到 60 个字", "unit": "12 位统计用区划代码"}
    if f.name in hints:
        return hints[f.name]
    if args:
        return "以下之一：" + "、".join(args)
    return "不超过 2000 字的文字"


def parse_typed(coll: str, name: str, text: str, *, shown: Any = None) -> Any:
    """A value staff typed into a form, as the field's type wants it (the Editor validates its type after).
    Full-width digits are taken as ASCII. Text sent back as the page showed it (``checks.sent_back``) is
    ``shown``, unchanged and unchecked; any other value gets the checks the tablet's forms make
    (``sync.checks``), so staff save nothing a tablet would refuse."""
    f = SCHEMA.field(coll, name)
    if shown is not None and checks.sent_back(coll, name, text, shown):
        return shown
    text = checks.normalize(name, text.strip())
    if not text:
        if f.required:
            raise PageError(f"“{f.label}”不能为空。")
        return None
    if f.merge == "set":
        return [t for t in (p.strip() for p in text.replace("，", "、").replace(",", "、").split("、")) if t]
    value: Any = text
    if name in ("minutes", "people_served"):
        try:
            value = int(text)
        except ValueError:
            raise PageError(f"“{f.label}”应为{value_hint(f)}，收到的是“{text}”。") from None
    if name == "id_number":
        value = text.upper()
    problem = checks.check(coll, name, value) if value != shown else None
    if problem is not None:
        raise PageError(f"“{f.label}”的值“{text}”不能保存：{problem.zh}。")
    return value


def invalid(coll: str, name: str, value: Any) -> PageError:
    f = SCHEMA.field(coll, name)
    return PageError(f"“{f.label}”的值“{show(value)}”不符合要求：应为{value_hint(f)}。")


class Pages:
    "Rendering and guarding the workbench pages of one node"

    def __init__(self, node: Node, accounts: Accounts) -> None:
        self.node = node
        self.accounts = accounts
        self._names: dict[str, str] = {}
        self._names_at = 0.0
        #: the one-shot notice of each session's next page, by session id: kept here, never in the cookie
        #: (it names residents, their phone numbers...), and only until that page shows it
        self._notices: ShortTerm[str, str] = ShortTerm(NOTICES_KEPT, NOTICE_SECONDS)

    def villages(self) -> dict[str, str]:
        """The names of the villages (and the township itself) under this node, by code; read again
        after a minute (``cunsync units import`` may run beside a live node). Call it from a thread:
        it may wait for the store's lock while a sync batch commits."""
        if time.monotonic() - self._names_at > 60:
            with self.node.store.lock:
                found = unitlib.villages_under(self.node.store.db, self.node.unit)
                me = unitlib.get_unit(self.node.store.db, self.node.unit)
            names = {u.code: u.name for u in found}
            if me is not None:
                names[me.code] = me.name
            self._names, self._names_at = names, time.monotonic()
        return self._names

    def staff_names(self) -> dict[str, str]:
        "Staff accounts' names by username: ops staff write carry the username"
        with self.node.store.lock:
            rows = self.node.store.conn.execute("SELECT username, display_name FROM staff").fetchall()
        return {u: d for u, d in rows if d}

    def render(self, request: Request, staff: Staff | None, template: str, context: Mapping[str, Any],
               status: int = 200) -> Response:
        sid = session_id(request)
        notice = self._notices.take(sid) if staff is not None and sid is not None else None
        ctx = {"staff": staff, "role_name": ROLE_NAMES[staff.role] if staff else "", "csrf": csrf_token(request),
               "node": self.node, "path": request.url.path,
               "unit_name": self._names.get(self.node.unit, ""),  # as last read: no waiting for the lock
               "notice": notice, **context}
        return templates.TemplateResponse(request, template, ctx, status_code=status)

    def error_page(self, request: Request, staff: Staff | None, err: SyncError) -> Response:
        message = err.message if isinstance(err, PageError) else _MESSAGES.get(err.code)
        if message is None:
            message = {400: "输入有误：", 403: "没有权限：", 404: "没有找到："}.get(err.status, "出错了：") + err.message
        resp = self.render(request, staff, "wb_error.html", {"message": message, "status": err.status},
                           status=err.status)
        if request.method == "POST":
            # the form may be unread: close the connection rather than leave it half-read (as server.app does)
            resp.headers["connection"] = "close"
        return resp

    def page(self, handler: Handler, *, township: bool = True) -> Callable[[Request], Awaitable[Response]]:
        "Guard a page: signed in (else to /login), township staff only, errors as Chinese pages"

        async def guarded(request: Request) -> Response:
            try:
                staff = await run_in_threadpool(current_staff, request, self.accounts)
            except Unauthorized:
                return RedirectResponse("/login", status_code=303)
            try:
                if township:
                    staff.require("township")
                return await handler(request, staff)
            except SyncError as e:
                return self.error_page(request, staff, e)

        return guarded

    async def form(self, request: Request) -> FormData:
        "A posted form, refused unless it carries the session's CSRF token (field ``csrf``, or the header)"
        form = await form_body(request)
        check_csrf(request, str(form.get("csrf", "")) or request.headers.get("x-csrf-token"))
        return form

    def done(self, request: Request, to: str, notice: str) -> Response:
        "After a form: say what happened on the next page, and go there"
        sid = session_id(request)
        if sid is not None:
            self._notices.put(sid, notice)
        return RedirectResponse(to, status_code=303)

    def in_scope(self, staff: Staff, record: str, coll: str | None = None) -> Any:
        "The record, if it lies in the staff member's township (and collection); else 404"
        rec = self.node.store.get(record)
        lo, hi = staff.scope
        if rec is None or rec.unit is None or not lo <= rec.unit <= hi or (coll and rec.coll != coll):
            raise NotFound(f"no record {record} in your township", details={"record": record})
        return rec


#: What the workbench's forms call the fields ``required`` asks for, as their labels show them
FORM_LABELS = {"unit": "村/社区", "village": "村/社区", "user": "使用人", "status": "进度", "record": "记录",
               "field": "字段", "keep": "保留的居民", "drop": "并入的居民", "a": "第一位居民", "b": "第二位居民"}


def required(form: FormData, *names: str) -> list[str]:
    "The named form fields, each present and non-empty, or a 400 page naming the missing by their labels"
    values = [str(form.get(n, "")).strip() for n in names]
    missing = [FORM_LABELS.get(n, n) for n, v in zip(names, values) if not v]
    if missing:
        raise PageError("表单缺少内容：" + "、".join(missing) + "。请返回页面重新提交。")
    return values


def decode_choice(text: str) -> Any:
    "A value a page put into a button as JSON"
    try:
        return json.loads(text)
    except ValueError:
        raise BadRequest("the chosen value is not valid JSON") from None

