"""The snapshot endpoint and the roll-up pages of a node.

    GET /api/snapshot   this node's snapshot (``server.snapshots.Snapshot``), only the parts the caller
                        lacks (``have=name:hash,...``), the optional sections it names (``with=tasks``); MessagePack, or JSON on request; gzip. For the node
                        above, with a link token; or for this node's signed-in staff
    GET /rollup         the roll-up page (zh-CN): needs by category and status per child, services per
                        month, resolution times, each child's freshness; inline SVG charts
    GET /rollup.csv     the same tables as CSV (UTF-8 with BOM) and XLSX, for Excel
    GET /rollup.xlsx

Who may read: a link token is a device on this node whose tier is above the node's and whose unit is an
ancestor of the node's unit, checked from the token alone, and reads the whole snapshot; staff may read
their own node's roll-up (county and city staff land on it, township staff see their villages), each only
within their account's unit (``Staff.scope``): a county's staff on the city node see that county alone, a
township account scoped to one village that village alone.
"""

from __future__ import annotations

import datetime as dt
import time
from pathlib import Path
from typing import Any

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.templating import Jinja2Templates

from sync import reference as ref
from sync import units as unitlib
from sync.errors import DeviceRevoked, Forbidden, OutOfScope, Unauthorized
from sync.schema import STATUSES
from sync.types import TIER_RANK
from sync.wire import compress, encode, format_for, media_type

from . import charts
from .auth import Staff
from .node import Device, Node
from .pages import CST, local_time
from .relay import unknown_link_token
from .rollup import Rollup, build, to_csv, to_xlsx
from .snapshots import GROUPS, Snapshotter, parse_have, parse_with
from .staff import csrf_token, current_staff, session_staff

templates = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
templates.env.filters["datetime"] = local_time
XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def check_upper(node: Node, dev: Device) -> None:
    "A link token must belong to a device above this node whose unit contains this node's unit"
    if dev.revoked:
        raise DeviceRevoked("this link's device was revoked on the node below; ask its admin for a new one")
    if dev.rank <= TIER_RANK[node.tier]:
        raise Forbidden(f"this token is a {dev.tier} device's; snapshots go to the county or city above this "
                        f"{node.tier}. On this node, issue a link device with "
                        f"`cunsync device add --unit <upper unit> --tier <upper tier>`",
                        code="not_an_upper_node", details={"tier": dev.tier, "node_tier": node.tier})
    if not unitlib.is_under(node.unit, dev.unit):
        raise OutOfScope(f"the token's unit {dev.unit} is not above this node's unit {node.unit}",
                         details={"unit": dev.unit, "node": node.unit})


def unit_names(node: Node) -> dict[str, str]:
    with node.store.lock:
        return unitlib.names(node.store.db)


def node_rollup(node: Node, snapshotter: Snapshotter, staff: Staff | None = None) -> Rollup:
    "The node's roll-up; for ``staff``, only within their scope"
    parts, watermark, sources = snapshotter.parts(scope=staff.scope if staff is not None else None)
    ro = build(node.unit, parts, sources, names=unit_names(node), taken_at=int(time.time()),
               watermark=watermark, suppress_below=snapshotter.suppress_below)
    ro.tasks = set_here_or_above(node)
    return ro


def set_here_or_above(node: Node) -> list[dict[str, Any]]:
    "The tasks set by the node's unit or a unit above it, the soonest due first: those whose progress it follows"
    mine = {node.unit, *unitlib.ancestors(node.unit)}
    with node.store.lock:
        return [t for t in ref.tasks(node.store) if t.get("unit") in mine]


def _staff(request: Request, node: Node) -> Staff | None:
    return session_staff(request, node.accounts)


def _token(request: Request) -> str | None:
    auth = request.headers.get("authorization", "")
    return auth[7:].strip() if auth.lower().startswith("bearer ") else None


def rollup_routes(node: Node, snapshotter: Snapshotter | None = None) -> list[BaseRoute]:
    snap = snapshotter or Snapshotter(node.store, node.unit)

    async def api_snapshot(request: Request) -> Response:
        token = _token(request)
        scope: tuple[str, str] | None = None  # a link device reads it all: check_upper found it above this node
        if token is not None:
            try:
                dev = await run_in_threadpool(node.authenticate, token)
            except Unauthorized:  # its message speaks to a tablet; whoever sends a token here is a link
                raise Unauthorized(unknown_link_token(f"the node {node.unit}", node.unit)) from None
            check_upper(node, dev)
        elif (staff := _staff(request, node)) is not None:
            scope = staff.scope
        else:
            raise Unauthorized("send the link token the node below issued ('Authorization: Bearer <token>'), "
                               "or sign in as this node's staff")
        have = parse_have(request.query_params.get("have"))
        sections = parse_with(request.query_params.get("with"))
        body = await run_in_threadpool(lambda: snap.snapshot(have, scope=scope, sections=sections))
        fmt = format_for(request.headers.get("accept"))
        payload = encode(body, fmt)
        headers = {}
        if "gzip" in request.headers.get("accept-encoding", "") and len(payload) > 512:
            payload = await run_in_threadpool(compress, payload)
            headers["content-encoding"] = "gzip"
        return Response(payload, media_type=media_type(fmt), headers=headers)

    async def page(request: Request) -> Response:
        staff = _staff(request, node)
        if staff is None:
            return RedirectResponse("/login", status_code=303)
        ro = await run_in_threadpool(node_rollup, node, snap, staff)
        return templates.TemplateResponse(request, "rollup.html", {
            "node": node, "staff": staff, "csrf": csrf_token(request), "ro": ro, "statuses": STATUSES,
            "groups": GROUPS, "tier_names": unitlib.TIER_NAMES, "charts": _charts(ro),
            "now": int(time.time())})

    async def export(request: Request) -> Response:
        "The page's download links: signed out, or the account changed, they lead to /login as the page does"
        staff = _staff(request, node)
        if staff is None:
            return RedirectResponse("/login", status_code=303)
        ro = await run_in_threadpool(node_rollup, node, snap, staff)
        stamp = dt.datetime.now(CST).strftime("%Y%m%d")
        if request.url.path.endswith(".csv"):
            body = to_csv(ro).encode("utf-8")
            kind, ext = "text/csv; charset=utf-8", "csv"
        else:
            body = await run_in_threadpool(to_xlsx, ro)
            kind, ext = XLSX, "xlsx"
        return Response(body, media_type=kind, headers={
            "content-disposition": f'attachment; filename="rollup-{node.unit}-{stamp}.{ext}"'})

    return [
        Route("/api/snapshot", api_snapshot, methods=["GET"]),
        Route("/rollup", page, methods=["GET"]),
        Route("/rollup.csv", export, methods=["GET"]),
        Route("/rollup.xlsx", export, methods=["GET"]),
    ]


def _charts(ro: Rollup) -> dict[str, Any]:
    needs = charts.hbars([(ro.name(c), [ro.need_total(c, status=s) for s in STATUSES]) for c in ro.children],
                         STATUSES, title="各下级单位需求（按状态）")
    months = ro.months()[-12:]
    services = charts.columns([(m[2:], ro.service_total_month(m)) for m in months], title="每月服务次数")
    medians = charts.columns([(ro.name(c), ro.median_days(c) or 0) for c in ro.children],
                             title="办结天数中位数", unit="天")
    return {"needs": needs, "services": services, "medians": medians}
