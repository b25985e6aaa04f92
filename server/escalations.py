"""Escalation up (吹哨报到): a need the township cannot meet goes to the county, and the answer comes back.

Township staff escalate an open need (not one resolved, closed or cancelled: ``escalatable``; one whose
earlier escalation was returned or withdrawn may go up again) with a summary they write; the node records
an ``escalation`` whose fields carry no personal data (need id, village, category, urgency, summary,
status): a summary holding an ID number, a mobile number, or the resident's name, phone or address is
refused (``personal_data``).
The county's node pulls it over its link (``server/relay.py``); county staff accept it, assign a
department and resolve it with an answer, or send it back. Those ops go down on the next link sync to the
township, and on to the tablet that recorded the need: an escalation's unit is the need's village, so it
is in that tablet's scope. The township may withdraw an open escalation, with a reason that goes through
the same personal-data check; removing a resident (``server.workbench``) withdraws those of all her needs
(``withdraw_open``), with an answer made from the reason code only (``removed_answer``). The withdrawal goes
up on the next link sync like the escalation itself did; a county step made before it arrived is
overridden again by the township node (``Node._follow_withdrawals``).

    已上报 (escalated) → 已受理 (accepted) → 已办结 (resolved)
    已上报 or 已受理 → 已退回 (returned by the county, with the reason as the answer)
    已上报 or 已受理 → 已撤回 (withdrawn by the township, with the reason as the answer)

Staff API (signed in, CSRF token in ``x-csrf-token``; JSON bodies):

    GET  /api/staff/escalations                      the escalations in the staff member's units
    POST /api/staff/escalations                      township: {"need", "summary"} → the new escalation
    POST /api/staff/escalations/{id}/accept          county
    POST /api/staff/escalations/{id}/assign          county: {"department"}
    POST /api/staff/escalations/{id}/resolve         county: {"answer"}
    POST /api/staff/escalations/{id}/return          county: {"answer"} (why it goes back)
    POST /api/staff/escalations/{id}/withdraw        township: {"answer"} (why it is no longer needed)
    GET  /staff/escalations                          the township's and county's page (zh-CN; other roles
                                                     get the workbench's 403 page), forms post to:
    POST /staff/escalations/{id}                     form fields ``action``, ``department``/``answer``, ``csrf``
"""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path
from collections.abc import Iterator
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from sync.edit import Editor
from sync.errors import BadRequest, InvalidValue, NotFound
from sync.reference import escalations as list_escalations, now_text
from sync.schema import ESCALATION_OPEN as OPEN, ID_NUMBER, NEED_CLOSED, SCHEMA
from sync.store import Record

from .auth import Staff
from .node import Node
from .orders import EscalationOrder, EscalationStep, json_body

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.globals["ESCALATION_OPEN"] = OPEN

#: What staff may do: the role that may, the statuses it starts from and the status it leads to.
ACTIONS: dict[str, tuple[str, tuple[str, ...], str]] = {
    "accept": ("county", ("已上报",), "已受理"),
    "assign": ("county", ("已受理",), "已受理"),
    "resolve": ("county", ("已受理",), "已办结"),
    "return": ("county", OPEN, "已退回"),
    "withdraw": ("township", OPEN, "已撤回"),
}
templates.env.globals["ESCALATION_ACTIONS"] = ACTIONS  # the page offers a step where the API takes it
#: The field each action needs, if any.
NEEDS = {"assign": "department", "resolve": "answer", "return": "answer", "withdraw": "answer"}
#: Why an escalation is withdrawn because its resident left the township's records, by the removal's reason
#: (``server.workbench.REMOVE_REASONS``; ``removed_answer``): never the note staff typed, which the county may
#: not see
REMOVED_ANSWERS = {"迁出到其他镇街": "居民已迁出", "去世": "居民已故"}
#: ... for any other reason
REMOVED = "居民已移出本镇街"
#: ... and when the node itself cancels a need recorded for her later
REMOVED_ANSWER = REMOVED + "，需求已取消"
#: Who sees escalations: township staff escalate, county staff answer (server/templates/rollup.html links
#: to the page for them alone)
ROLES = ("township", "county")
#: An ID number or a mainland mobile number (optionally +86) in a summary, once it is NFKC-normalised
#: (full-width digits and signs made ASCII) and ``_SEPARATORS`` are gone
_ID_NUMBER = re.compile(rf"(?<!\d){ID_NUMBER}(?!\d)")
_MOBILE = re.compile(r"(?<!\d)(?:\+?86)?1[3-9]\d{9}(?!\d)")
#: What people type between groups of digits: spaces, dashes, dots, middle dots and brackets
_SEPARATORS = re.compile(r"[\s\-.·()‐‑‒–—―]")
#: How ``personal_data``'s field names read in an error message
_PERSONAL = {"name": "name", "id_number": "ID number", "phone": "phone number", "address": "address"}
#: How many characters in a row of the resident's address, a house number among them, make her address
_ADDRESS_RUN = 6
#: A house number: a number and the character after it (号, 栋, 单元, 组)
_HOUSE_NUMBER = re.compile(r"\d\D")
#: Chinese numerals, as addresses often write house numbers (和平街十七号三单元, 幸福村二组十五号, 三〇二室)
_CN_DIGITS = {**{c: str(i) for i, c in enumerate("零一二三四五六七八九")}, "〇": "0", "两": "2"}
_CN_UNITS = {"十": 10, "百": 100, "千": 1000}
_CN_NUMBER = re.compile(f"[{''.join(_CN_DIGITS)}{''.join(_CN_UNITS)}]+")


class AlreadyEscalated(BadRequest):
    "The need already has an open escalation"

    code = "already_escalated"


class NeedClosed(BadRequest):
    "The need is resolved, closed or cancelled: there is nothing left for the county to do"

    code = "need_closed"


class PersonalData(BadRequest):
    "An escalation's summary holds a resident's name, ID number, phone or address, which the county may not see"

    code = "personal_data"


class WrongStatus(BadRequest):
    "The escalation's status does not allow this step"

    code = "wrong_status"


def escalate(node: Node, staff: Staff, need: str, summary: str) -> str:
    """Township staff escalate one of their needs; returns the escalation's id. Only the need's id,
    village, category and urgency are copied: never its description or anything about the person."""
    summary = summary.strip()
    if not summary:
        raise InvalidValue("write a summary of what is needed (without names, phone or ID numbers)")
    with node.store.transaction():
        rec = node.store.get(need)
        lo, hi = staff.scope
        if rec is None or rec.coll != "need" or rec.deleted or rec.unit is None or not lo <= rec.unit <= hi:
            raise NotFound(f"no need {need} in your township", details={"need": need})
        if not escalatable(rec):
            status = rec.data["status"]
            raise NeedClosed(f"need {need} is {status}: only an open need is escalated; reopen it first (set its "
                             "status to 服务中 or 待处理)", details={"need": need, "status": status})
        for e in list_escalations(node.store, need=need):
            if e.get("status") in OPEN:
                raise AlreadyEscalated(f"need {need} is already escalated ({e['status']})",
                                       details={"escalation": e["id"]})
        _refuse_personal(node, rec, summary, "summary", "describe only the need")
        return node.editor(staff.username).create("escalation", {
            "unit": rec.unit, "need": need, "category": rec.data["category"],
            "urgency": rec.data.get("urgency") or "一般", "summary": summary, "status": "已上报",
            "escalated_at": now_text(),
        })


def escalatable(need: Record) -> bool:
    """Whether a need is still open (待处理, 已分派, 服务中), so may be escalated: one that is resolved, closed
    or cancelled may not. One whose earlier escalation was returned or withdrawn may go up again."""
    return need.data.get("status") not in NEED_CLOSED


def _refuse_personal(node: Node, need: Record | None, text: str, what: str, advice: str) -> None:
    "Refuse ``text`` (a summary, a reason) holding the personal data of the need's resident, or anyone's"
    pid = need.data.get("person") if need is not None else None
    found = personal_data(text, node.store.get(node.store.resolve_id(pid)) if isinstance(pid, str) else None)
    if found:
        raise PersonalData(f"the {what} holds a resident's {', '.join(_PERSONAL[f] for f in found)}; the county "
                           f"sees no personal data: take it out and {advice}", details={"found": found})


def personal_data(summary: str, person: Record | None) -> list[str]:
    """The personal data a summary holds, as field names (``name``, ``id_number``, ``phone``, ``address``):
    any ID number (the resident's among them) or mobile number, and the name, phone (a landline, say) or
    address of ``person``, the need's resident. Each is compared as ``_compact`` makes it: full-width
    characters made ASCII, separators gone and Chinese numerals made Arabic, so 张 秀英, 张·秀英, 张-秀英,
    138 0000 1111 and 和平街十七号 (for 和平街17号, or the other way round) are found.

    - name: all of it, when it has two characters or more (one character would match ordinary words);
    - address: any ``_ADDRESS_RUN`` characters in a row of it that hold a number and the character after
      it, i.e. the house number with its street or unit (和平街17号, 17号3单元 of 和平街17号3单元), a
      number matched whole (27号 is not 7号). Written in Chinese numerals, it is the same number
      (和平街十七号三单元 is 和平街17号3单元; 幸福村二组十五号 is 幸福村2组15号). A street, village or
      district alone (和平街, 育才社区12户) is many people's and passes, and so does an address without a
      number. Ordinary words with a numeral (三个月, 一老一小) pass: they are no run of her address."""
    compact = _compact(summary)
    data = person.data if person is not None and person.coll == "person" else {}
    name, phone, address = (_compact(str(data.get(f) or "")) for f in ("name", "phone", "address"))
    found = []
    if len(name) >= 2 and name in compact:
        found.append("name")
    if _ID_NUMBER.search(compact):
        found.append("id_number")
    if _MOBILE.search(compact) or (phone and phone in compact):
        found.append("phone")
    if any(_HOUSE_NUMBER.search(run) and re.search(rf"(?<!\d){re.escape(run)}(?!\d)", compact)
           for run in _address_runs(address)):
        found.append("address")
    return found


def _address_runs(address: str) -> Iterator[str]:
    """The runs of ``_ADDRESS_RUN`` characters of an address, as ``_compact`` makes it (its numerals Arabic),
    that cut no number in two (117号 gives no 17号)"""
    for i in range(len(address) - _ADDRESS_RUN + 1):
        j = i + _ADDRESS_RUN
        if (i > 0 and address[i - 1].isdigit() and address[i].isdigit()) or \
                (j < len(address) and address[j - 1].isdigit() and address[j].isdigit()):
            continue
        yield address[i:j]


def _compact(text: str) -> str:
    """Text as ``personal_data`` compares it: NFKC-normalised (full-width made ASCII), ``_SEPARATORS`` gone,
    Chinese numerals Arabic (``_arabic``), upper case"""
    return _arabic(_SEPARATORS.sub("", unicodedata.normalize("NFKC", text))).upper()


def _arabic(text: str) -> str:
    """Each run of Chinese numerals as the number it writes: 十七 → 17, 二十 → 20, 一百零五 → 105, and
    without 十, 百 or 千, digit by digit (三〇二 → 302)"""
    return _CN_NUMBER.sub(lambda m: _number(m.group()), text)


def _number(numeral: str) -> str:
    "A run of Chinese numerals in Arabic digits (``_arabic``)"
    if not any(c in _CN_UNITS for c in numeral):
        return "".join(_CN_DIGITS[c] for c in numeral)
    total = digit = 0
    for c in numeral:
        if c in _CN_UNITS:
            total += (digit or 1) * _CN_UNITS[c]
            digit = 0
        else:
            digit = int(_CN_DIGITS[c])
    return str(total + digit)


def act(node: Node, staff: Staff, escalation: str, action: str, text: str = "") -> dict[str, Any]:
    """Staff move an escalation on: county staff accept, assign a department, resolve or return it;
    township staff withdraw it, with a reason holding no personal data"""
    if action not in ACTIONS:
        raise BadRequest(f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    staff.require(ACTIONS[action][0])
    field = NEEDS.get(action)
    text = text.strip()
    if field and not text:
        raise InvalidValue(f"{action} needs a {field}", details={"field": field})
    with node.store.transaction():
        rec = _in_scope(node, staff, escalation)
        if action == "withdraw":
            _refuse_personal(node, node.store.get(rec.data.get("need", "")), text, "reason",
                             "say only why the escalation is withdrawn")
        _step(node.editor(staff.username), rec, action, text)
        got = node.store.get(escalation)
        assert got is not None
        return {"id": escalation, **got.data}


def removed_answer(reason: str, cancelled: bool) -> str:
    """The answer of an escalation withdrawn as its resident is removed for ``reason``: 居民已故，需求已取消 when
    the removal cancels its need, 居民已故 alone when the need was already resolved or closed"""
    return REMOVED_ANSWERS.get(reason, REMOVED) + ("，需求已取消" if cancelled else "")


def withdraw_open(editor: Editor, need: str, answer: str) -> None:
    """Withdraw the need's open escalations with ``answer`` (which holds no personal data), inside the
    caller's transaction: its resident left the township's records, so the county has nothing left to do"""
    for e in list_escalations(editor.store, need=need):
        rec = editor.store.get(e["id"])
        if rec is not None and rec.data.get("status") in OPEN:
            _step(editor, rec, "withdraw", answer)


def withdraw_again(editor: Editor, rec: Record) -> None:
    """Write again a withdrawal that a county's concurrent step overrode (``Node._follow_withdrawals``), with
    the reason it was withdrawn with: the escalation's answer, which the county's open steps never write"""
    _step(editor, rec, "withdraw", str(rec.data.get("answer") or ""))


def _step(editor: Editor, rec: Record, action: str, text: str) -> None:
    "Write one of ``ACTIONS`` on an escalation, if its status allows it (``text``: the field it needs)"
    _, allowed, to = ACTIONS[action]
    status = rec.data.get("status")
    if status not in allowed:
        raise WrongStatus(f"an escalation that is {status} cannot be {action}ed; from {'/'.join(allowed)} only",
                          details={"status": status, "action": action})
    values: dict[str, Any] = {}
    if not any(e.tier >= editor.rank for e in editor.store.state(rec.id).get("unit", [])):
        # the county's first step re-asserts the village at its own tier, so its ops name their unit:
        # a township restored from a backup older than the escalation then still takes them (the
        # record comes back with the county's fields) instead of refusing every later link sync
        values["unit"] = rec.unit
    if to != status:
        values["status"] = to
    if action == "assign":
        values["department"] = text
    elif NEEDS.get(action) == "answer":
        values.update(answer=text, answered_at=now_text())
    editor.update(rec.id, values)


def _in_scope(node: Node, staff: Staff, escalation: str) -> Record:
    rec = node.store.get(escalation)
    lo, hi = staff.scope
    if rec is None or rec.coll != "escalation" or rec.unit is None or not lo <= rec.unit <= hi:
        raise NotFound(f"no escalation {escalation} in your units", details={"escalation": escalation})
    return rec


def _listed(node: Node, units: tuple[str, str]) -> list[dict[str, Any]]:
    "The escalations staff see, read under the store's lock: the connection is shared with the syncs"
    with node.store.lock:
        return list_escalations(node.store, units=units)


#: Why the page refuses a step of the other role (``ACTIONS``), by the role of the staff member who posted it
_OTHER_ROLES_STEP = {
    "township": "受理、分派、办结和退回由县区工作人员办理；镇街可以撤回本镇街上报的事项。",
    "county": "撤回由上报的镇街工作人员办理；县区不再办理的事项，请填写原因后退回。",
}


def escalation_routes(node: Node) -> list[BaseRoute]:
    from .pages import PageError, Pages, value_hint
    from .staff import ROLE_NAMES, changing_staff, csrf_token, current_staff

    accounts = node.accounts
    pages = Pages(node, accounts)

    async def api_list(request: Request) -> Response:
        staff = current_staff(request, accounts)
        staff.require(*ROLES)
        rows = await run_in_threadpool(_listed, node, staff.scope)
        return JSONResponse(rows)

    async def api_escalate(request: Request) -> Response:
        staff = changing_staff(request, accounts, "township")
        body = await json_body(request, EscalationOrder)
        rid = await run_in_threadpool(lambda: escalate(node, staff, body.need, body.summary))
        return JSONResponse({"id": rid, "status": "已上报"}, status_code=201)

    async def api_act(request: Request) -> Response:
        staff = changing_staff(request, accounts, *ROLES)  # act() refuses the other role's steps
        action = request.path_params["action"]
        field = NEEDS.get(action)
        step = await json_body(request, EscalationStep)
        text: str = (getattr(step, field) or "") if field else ""  # act() refuses a step missing its field
        got = await run_in_threadpool(lambda: act(node, staff, request.path_params["id"], action, text))
        return JSONResponse(got)

    async def page(request: Request, staff: Staff) -> Response:
        staff.require(*ROLES)  # refused: the workbench's Chinese 403 page
        rows = await run_in_threadpool(_listed, node, staff.scope)
        return templates.TemplateResponse(request, "escalations.html", {
            "staff": staff, "role_name": ROLE_NAMES[staff.role], "csrf": csrf_token(request), "node": node,
            "rows": rows, "error": request.query_params.get("error", ""),
            "text_limit": value_hint(SCHEMA.field("escalation", "answer"))})

    async def page_act(request: Request, staff: Staff) -> Response:
        "The page's forms; signed out, a stale form or another role's step: the workbench's Chinese pages"
        form = await pages.form(request)
        staff.require(*ROLES)
        action = str(form.get("action", ""))
        if action in ACTIONS and ACTIONS[action][0] != staff.role:
            raise PageError(_OTHER_ROLES_STEP[staff.role], status=403)
        text = str(form.get(NEEDS.get(action, "answer"), "")).strip()
        try:
            await run_in_threadpool(lambda: act(node, staff, request.path_params["id"], action, text))
        except BadRequest as e:  # a missing answer, a wrong status, a reason with personal data: say so on the page
            code = "too_long" if isinstance(e, InvalidValue) and text else e.code  # only the length fails a text
            return RedirectResponse(f"/staff/escalations?error={code}", status_code=303)
        return RedirectResponse("/staff/escalations", status_code=303)

    return [
        Route("/api/staff/escalations", api_list, methods=["GET"]),
        Route("/api/staff/escalations", api_escalate, methods=["POST"]),
        Route("/api/staff/escalations/{id}/{action}", api_act, methods=["POST"]),
        Route("/staff/escalations", pages.page(page, township=False), methods=["GET"]),
        Route("/staff/escalations/{id}", pages.page(page_act, township=False), methods=["POST"]),
    ]
