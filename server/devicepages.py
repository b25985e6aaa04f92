"""The devices page: every tablet of the township, when it was last seen, what it still holds unsent,
gaps in its op sequence, its clock and app version, those to look at first (``device_flags``: also
what the overview counts); enrolling a new tablet (a one-time code and its QR
code, drawn inline as SVG) and revoking one, with or without erasing its data, after a confirmation.

    GET  /staff/devices                     the list, and the enrolment form
    POST /staff/devices/enrol               a new one-time code; redirects to the page that shows it
    GET  /staff/devices/enrol/{key}         the code with its QR code, once: Back or Reload shows it no
                                            more and mints no other (a re-post would)
    GET  /staff/devices/{device}/revoke     "are you sure?", with both ways to revoke
    POST /staff/devices/{device}/revoke     revoke (``wipe=1``: the tablet erases its data at next contact)
"""

from __future__ import annotations

import secrets
import time
from typing import Any

import segno
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route

from sync import units as unitlib
from sync.errors import BadRequest, DeviceExists, NotFound
from sync.shortterm import ShortTerm

from .auth import Staff
from .pages import SKEW_LIMIT_MS, PageError, Pages, local_time, required
from .staff import session_id


#: A village tablet not heard from for this many days is flagged as silent: it may hold work the node has not got.
SILENT_DAYS = 3
#: Enrolment codes made and not shown yet, kept at most, and for at most so many seconds (each waits only
#: for the redirect that follows).
CODES_KEPT = 100
CODE_PAGE_SECONDS = 30 * 60


def device_flags(d: dict[str, Any], now: float) -> dict[str, bool]:
    """What staff should look at on a device (a row of ``Node.devices``): its clock far off, and, for a
    village tablet in use (not a revoked one, nor an upper node's link), no contact for ``SILENT_DAYS``
    days, or none in the ``SILENT_DAYS`` days since it was enrolled. ``attention``: any of these, or gaps
    in the ops it sent."""
    tablet = d["tier"] == "village" and not d["revoked"]
    seen = d["last_seen"]
    quiet = now - (seen or d["created_at"]) > SILENT_DAYS * 86400
    out = {"skewed": d["skew_ms"] is not None and abs(d["skew_ms"]) > SKEW_LIMIT_MS,
           "silent": tablet and bool(seen) and quiet,
           "never_synced": tablet and not seen and quiet}
    return {**out, "attention": not d["revoked"] and (bool(d["gaps"]) or any(out.values()))}


def gap_text(device: str, gaps: list[tuple[int, int]]) -> list[str]:
    "Each gap as staff read it: 设备 tab-3f2a 缺少第41–43条"
    return [f"设备 {device} 缺少第{a}条" if a == b else f"设备 {device} 缺少第{a}–{b}条" for a, b in gaps]


class DevicePages:
    def __init__(self, pages: Pages) -> None:
        self.pages = pages
        self.node = pages.node
        #: what the page of each code made and not shown yet shows, by its session and a one-time key
        self._codes: ShortTerm[tuple[str, str], dict[str, Any]] = ShortTerm(CODES_KEPT, CODE_PAGE_SECONDS)

    def in_scope(self, staff: Staff) -> list[dict[str, Any]]:
        lo, hi = staff.scope
        return [d for d in self.node.devices() if lo <= d["unit"] <= hi]

    def device(self, staff: Staff, device: str) -> dict[str, Any]:
        for d in self.in_scope(staff):
            if d["device"] == device:
                return d
        raise NotFound(f"no device {device} in your scope", details={"device": device})

    async def list(self, request: Request, staff: Staff) -> Response:
        def view() -> dict[str, Any]:
            villages = self.pages.villages()
            now = time.time()
            rows = [{**d, **device_flags(d, now), "village": villages.get(d["unit"], d["unit"]),
                     "gap_text": gap_text(d["device"], d["gaps"])} for d in self.in_scope(staff)]
            rows.sort(key=lambda r: not r["attention"])  # those to look at first, each part by village
            choices = {c: n for c, n in villages.items() if unitlib.tier_of(c) == "village"}
            return {"devices": rows, "villages": choices, "silent_days": SILENT_DAYS}

        return self.pages.render(request, staff, "wb_devices.html", await run_in_threadpool(view))

    async def enrol(self, request: Request, staff: Staff) -> Response:
        form = await self.pages.form(request)
        unit, user = required(form, "unit", "user")
        lo, hi = staff.scope
        try:
            unit = unitlib.normalize_code(unit)
        except unitlib.UnitCodeError:
            raise PageError(f"村/社区代码“{unit}”不正确：应为 12 位统计用区划代码。") from None
        if not lo <= unit <= hi or unit == self.node.unit:
            raise PageError("请选择您所在镇街下的一个村/社区。")
        reattach = str(form.get("reattach", "")).strip() or None  # a tablet the node no longer knows
        try:
            enr = await run_in_threadpool(lambda: self.node.create_enrolment(unit, user, reattach=reattach))
        except DeviceExists:
            raise PageError(f"本镇街服务器认识平板“{reattach}”，不能为它发重新接入的登记码（用了也会被拒绝）。"
                            "它用自己的凭证同步即可；如果平板已重置，请不填平板编号，发一个新平板的登记码。") from None
        except BadRequest as e:
            if e.code != "invalid_device":
                raise
            raise PageError(f"平板编号“{reattach}”不正确：应以 tab- 开头，见该平板的“同步”页。") from None
        server = str(request.base_url).rstrip("/")
        payload = f"cunsync:enrol?code={enr.code}&server={server}"
        qr = segno.make(payload, error="m").svg_inline(scale=6, border=2, dark="#1f2933")
        villages = await run_in_threadpool(self.pages.villages)
        # shown by a GET that follows, once: a reload of the answer to this POST would make another code
        key = secrets.token_urlsafe(16)
        self._codes.put((session_id(request) or "", key), {
            "enr": enr, "qr": qr, "server": server, "village": villages.get(enr.unit, enr.unit), "reattach": reattach,
            "expires": local_time(enr.expires_at)})
        return RedirectResponse(f"/staff/devices/enrol/{key}", status_code=303)

    async def enrolled(self, request: Request, staff: Staff) -> Response:
        "The page of a code just made, shown once, to the session that made it"
        shown = self._codes.take((session_id(request) or "", request.path_params["key"]))
        if shown is None:
            return self.pages.done(request, "/staff/devices", "登记码只显示一次，那个页面已经打开过，不能再次查看。"
                                   "如果没有记下登记码，请重新生成一个；没有用过的登记码到期后自动失效。")
        return self.pages.render(request, staff, "wb_enrol.html", shown)

    async def confirm(self, request: Request, staff: Staff) -> Response:
        d = await run_in_threadpool(self.device, staff, request.path_params["device"])
        villages = await run_in_threadpool(self.pages.villages)
        return self.pages.render(request, staff, "wb_revoke.html", {"d": d, "village": villages.get(d["unit"], d["unit"])})

    async def revoke(self, request: Request, staff: Staff) -> Response:
        device = request.path_params["device"]
        form = await self.pages.form(request)
        wipe = str(form.get("wipe", "")) in ("1", "true", "on")
        await run_in_threadpool(self.device, staff, device)
        await run_in_threadpool(lambda: self.node.revoke(device, wipe=wipe))
        what = "已停用，下次联网时会清除平板上的全部数据" if wipe else "已停用：它还能上传手头的数据，但不再收到任何数据"
        return self.pages.done(request, "/staff/devices", f"设备 {device} {what}。")


def device_routes(pages: Pages) -> list[BaseRoute]:
    dp = DevicePages(pages)
    return [
        Route("/staff/devices", pages.page(dp.list)),
        Route("/staff/devices/enrol", pages.page(dp.enrol), methods=["POST"]),
        Route("/staff/devices/enrol/{key}", pages.page(dp.enrolled)),
        Route("/staff/devices/{device}/revoke", pages.page(dp.confirm)),
        Route("/staff/devices/{device}/revoke", pages.page(dp.revoke), methods=["POST"]),
    ]
