"""Staff sign-in and the staff API: sessions kept on the node (``server.sessions``), a CSRF token on every
form and every state-changing request, and access decided by the signed-in account's role and unit. The
workbench pages built on them live in ``server.workbench``, ``server.devicepages`` and ``server.export``."""

from __future__ import annotations

import secrets
import sqlite3
from pathlib import Path
from typing import TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from sync.errors import BadRequest, Forbidden, NotFound, SyncError, TooLarge, Unauthorized
from sync.schema import SCHEMA
from sync.store import Conflict, Record
from sync.units import UnitCodeError

from . import sessions
from .auth import Accounts, Staff
from .storage import storage_error
from .node import Node
from .orders import (
    STAFF_MAX_BODY, ConflictResolution, EnrolmentOrder, MergeOrder, NewStaffAccount, form_body, json_body)

T = TypeVar("T")
templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
ROLE_NAMES = {"township": "镇街工作人员", "county": "县区工作人员", "city": "市级工作人员", "admin": "管理员"}


#: Shown on the sign-in page when a session ended because its account changed.
SESSION_ENDED = "您的账户已有变动（密码重置、角色或单位调整，或账户已停用），请重新登录。"
#: What a page says of a form over the staff body limit (``server.orders``).
TOO_LARGE = f"提交的内容太大：不能超过 {STAFF_MAX_BODY // (1024 * 1024)} MB，请删减后再提交。"
#: Signing in writes (the attempts, the session): said when the node's disk is read-only or full
CANNOT_WRITE = "节点的磁盘现在不能写入（只读或已满），暂时无法登录。请联系管理员检查磁盘；已登录的工作人员仍可查看和导出。"


def sign_in_session(request: Request, accounts: Accounts, staff: Staff) -> None:
    "Start a new session for a staff member who just signed in: recorded on the node, its id in the cookie"
    request.session.clear()
    request.session["sid"] = sessions.start(accounts.store, staff.username, staff.stamp)
    csrf_token(request)


def end_session(request: Request, accounts: Accounts) -> None:
    "Sign out: the node forgets the session, so no copy of its cookie works any more"
    sid = session_id(request)
    if sid is not None:
        sessions.end(accounts.store, sid)
    request.session.clear()


def session_id(request: Request) -> str | None:
    "The id of the session this request's cookie names (it may have ended: see ``session_staff``)"
    sid = request.session.get("sid")
    return sid if isinstance(sid, str) else None


def session_staff(request: Request, accounts: Accounts) -> Staff | None:
    """The staff member signed in on this session, or None: signed out, expired, or never signed in. A
    session whose account has since been reset, moved to another role or unit, or disabled ends here
    (``SESSION_ENDED``)."""
    sid = session_id(request)
    if sid is None:
        return None
    found = sessions.find(accounts.store, sid)
    if found is None:  # signed out (this is a copy of the cookie), or expired
        request.session.pop("sid", None)
        return None
    staff = accounts.get(found.username)
    if staff is None or found.stamp != staff.stamp:
        sessions.end(accounts.store, sid)
        request.session.clear()
        request.session["ended"] = True
        return None
    return staff


def current_staff(request: Request, accounts: Accounts) -> Staff:
    staff = session_staff(request, accounts)
    if staff is None:
        if request.session.get("ended"):
            raise Unauthorized("your account changed since you signed in (password reset, new role or unit, "
                               "or disabled); sign in again", code="session_ended")
        raise Unauthorized("sign in first", code="not_signed_in")
    return staff


def csrf_token(request: Request) -> str:
    token = request.session.get("csrf")
    if not isinstance(token, str):
        token = request.session["csrf"] = secrets.token_urlsafe(24)
    return token


def check_csrf(request: Request, sent: str | None) -> None:
    expected = request.session.get("csrf")
    if not isinstance(expected, str) or not sent or not secrets.compare_digest(expected.encode(), sent.encode()):
        raise Forbidden("missing or wrong CSRF token; reload the page and try again", code="csrf")


def changing_staff(request: Request, accounts: Accounts, *roles: str) -> Staff:
    "Who makes a state-changing staff API request: signed in, with the session's CSRF token and one of ``roles``"
    staff = current_staff(request, accounts)
    check_csrf(request, request.headers.get("x-csrf-token"))
    staff.require(*roles)
    return staff


def staff_routes(node: Node, accounts: Accounts) -> list[BaseRoute]:
    async def order(request: Request, role: str, type_: type[T]) -> tuple[Staff, T]:
        "A state-changing staff request (``changing_staff``) and its JSON body, decoded into ``type_``"
        return changing_staff(request, accounts, role), await json_body(request, type_)

    def in_scope(staff: Staff, record: str) -> Record:
        rec = node.store.get(record)
        lo, hi = staff.scope
        if rec is None or rec.unit is None or not lo <= rec.unit <= hi:
            raise NotFound(f"no record {record} in your township", details={"record": record})
        return rec

    async def login_page(request: Request) -> Response:
        notice = SESSION_ENDED if request.session.pop("ended", None) else None
        return templates.TemplateResponse(request, "login.html", {"csrf": csrf_token(request), "error": None,
                                                                   "notice": notice, "node": node})

    def login_refused(request: Request, e: SyncError) -> Response:
        "The sign-in page again, saying in Chinese why"
        message = {"bad_credentials": "用户名或密码错误", "too_many_attempts": "密码错误次数过多，账户已暂时锁定，请稍后再试",
                   "csrf": "页面已过期，请重新登录", "too_large": TOO_LARGE, "storage_read_only": CANNOT_WRITE,
                   "storage_full": CANNOT_WRITE}.get(e.code, e.message)
        resp = templates.TemplateResponse(request, "login.html", {
            "csrf": csrf_token(request), "error": message, "node": node}, status_code=e.status)
        if e.code == "too_large":  # the form is unread: close the connection rather than leave it half-read
            resp.headers["connection"] = "close"
        return resp

    async def login(request: Request) -> Response:
        try:
            form = await form_body(request)
            check_csrf(request, str(form.get("csrf", "")))
            staff = await run_in_threadpool(accounts.sign_in, str(form.get("username", "")),
                                            str(form.get("password", "")))
            await run_in_threadpool(sign_in_session, request, accounts, staff)
        except SyncError as e:
            return login_refused(request, e)
        except (sqlite3.Error, OSError) as e:  # signing in writes (attempts, the session): a full or read-only disk
            err = storage_error(e, node.store.path)
            if err is None:
                raise
            return login_refused(request, err)
        return RedirectResponse("/staff", status_code=303)

    async def logout(request: Request) -> Response:
        try:
            form = await form_body(request)
        except TooLarge as e:
            return login_refused(request, e)
        check_csrf(request, str(form.get("csrf", "")))
        await run_in_threadpool(end_session, request, accounts)
        return RedirectResponse("/login", status_code=303)

    async def api_conflicts(request: Request) -> Response:
        staff = current_staff(request, accounts)
        staff.require("township")
        def read() -> list[Conflict]:
            with node.store.lock:  # the connection is shared: never read inside a sync's open transaction
                return node.store.conflicts(units=staff.scope)

        found = await run_in_threadpool(read)
        return JSONResponse([{
            "record": c.record, "collection": c.coll, "unit": c.unit, "field": c.field, "shown": c.winner,
            "candidates": [{"value": o.value, "user": o.user, "device": o.device, "tier": o.tier,
                            "unit": o.unit, "hlc": o.hlc} for o in c.candidates],
        } for c in found])

    async def api_resolve(request: Request) -> Response:
        staff, body = await order(request, "township", ConflictResolution)
        record, field, value = body.record, body.field, body.value

        def resolve() -> int:
            with node.store.lock:  # the checks and the write see the same record
                rec = in_scope(staff, record)
                if field not in rec.conflicts:
                    raise BadRequest(f"field {field!r} of record {record} has no open conflict; edit the record "
                                     "on its page instead", details={"record": record, "field": field})
                lo, hi = staff.scope
                if field == SCHEMA.collections[rec.coll].unit_field and not (
                        isinstance(value, str) and lo <= value <= hi):
                    raise Forbidden(f"unit {value} is outside your scope", code="out_of_scope",
                                    details={"unit": value})
                return len(node.editor(staff.username).resolve(record, field, value))

        written = await run_in_threadpool(resolve)
        return JSONResponse({"record": record, "field": field, "ops": written})

    async def api_merge(request: Request) -> Response:
        "Township staff merge a duplicate resident into another; needs and services follow"
        staff, body = await order(request, "township", MergeOrder)
        keep, drop = body.keep, body.drop

        def merge() -> int:
            in_scope(staff, keep)
            in_scope(staff, drop)
            return len(node.editor(staff.username).merge(keep, drop, within=staff.scope))

        written = await run_in_threadpool(merge)
        return JSONResponse({"keep": keep, "drop": drop, "ops": written})

    async def api_enrol(request: Request) -> Response:
        "Township staff create a one-time enrolment code for a village and a worker"
        staff, body = await order(request, "township", EnrolmentOrder)
        unit = body.unit
        lo, hi = staff.scope
        if not lo <= unit <= hi:
            raise Forbidden(f"unit {unit} is outside your scope", code="out_of_scope", details={"unit": unit})
        enr = await run_in_threadpool(lambda: node.create_enrolment(unit, body.user))
        return JSONResponse({"code": enr.display, "unit": enr.unit, "user": enr.user,
                             "expires_at": enr.expires_at})

    async def api_revoke(request: Request) -> Response:
        staff = changing_staff(request, accounts, "township")
        device = request.path_params["device"]
        wipe = request.query_params.get("wipe") in ("1", "true")
        lo, hi = staff.scope
        found = await run_in_threadpool(node.device, device)
        if found is None or not lo <= found.unit <= hi:
            raise NotFound(f"no device {device} in your scope", details={"device": device})
        await run_in_threadpool(lambda: node.revoke(device, wipe=wipe))
        return JSONResponse({"device": device, "revoked": True, "wipe": wipe})

    async def api_users(request: Request) -> Response:
        "Admins add staff accounts"
        _, body = await order(request, "admin", NewStaffAccount)
        try:
            added = await run_in_threadpool(lambda: accounts.add(
                body.username, body.password, role=body.role, unit=body.unit or None))
        except UnitCodeError as e:
            raise BadRequest(str(e)) from None
        return JSONResponse({"username": added.username, "role": added.role, "unit": added.unit})

    async def api_user_list(request: Request) -> Response:
        "Admins list the node's staff accounts, as `cunsync user list` does: never a password hash or stamp"
        current_staff(request, accounts).require("admin")
        found = await run_in_threadpool(accounts.listing)
        return JSONResponse([{"username": s.username, "display_name": s.display_name, "role": s.role,
                              "unit": s.unit, "disabled": disabled} for s, disabled in found])

    async def api_disable(request: Request) -> Response:
        "Admins disable the account of someone who left"
        changing_staff(request, accounts, "admin")
        username = request.path_params["username"]
        await run_in_threadpool(accounts.disable, username)
        return JSONResponse({"username": username, "disabled": True})

    return [
        Route("/api/staff/enrolments", api_enrol, methods=["POST"]),
        Route("/api/staff/merge", api_merge, methods=["POST"]),
        Route("/api/staff/devices/{device}/revoke", api_revoke, methods=["POST"]),
        Route("/api/admin/users", api_user_list, methods=["GET"]),
        Route("/api/admin/users", api_users, methods=["POST"]),
        Route("/api/admin/users/{username}/disable", api_disable, methods=["POST"]),
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        Route("/api/staff/conflicts", api_conflicts),
        Route("/api/staff/resolve", api_resolve, methods=["POST"]),
        *workbench_pages(node, accounts),
    ]


def workbench_pages(node: Node, accounts: Accounts) -> list[BaseRoute]:
    """The township workbench's pages (``server.workbench``, ``server.taskpages``, ``server.devicepages``,
    ``server.export``)"""
    from .devicepages import device_routes
    from .export import export_routes
    from .pages import Pages
    from .taskpages import task_routes
    from .workbench import workbench_routes

    pages = Pages(node, accounts)
    return [*workbench_routes(pages), *task_routes(pages), *device_routes(pages), *export_routes(pages)]
