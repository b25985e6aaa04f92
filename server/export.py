"""Exports of a township's records — residents, needs, services — for staff who work in Excel.

    GET /staff/export                              the page with the download links
    GET /staff/export.csv?collection=person        one collection as CSV: UTF-8 with a BOM, so Excel
                                                   opens the Chinese correctly
    GET /staff/export.xlsx                         all three as sheets of one workbook (openpyxl)

PERSONAL DATA: these files hold residents' names, ID numbers, phones and addresses exactly as the
records do — the township's own data, for its own work. So the routes serve township staff only, and
only the villages of their township (``Staff.scope``); county, city and admin accounts get 403 in the
usual error shape, since they see aggregates and never a resident.

Cells that a spreadsheet would run as a formula (text starting with = + - @) are written as text: in
CSV with a leading apostrophe, in XLSX as string cells (``server.spreadsheet``).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.styles import Font
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from sync.errors import BadRequest
from sync.schema import RECORD_COLLECTIONS, SCHEMA
from sync.types import DELETED

from .auth import Staff
from .pages import CST, Pages
from .spreadsheet import formula_safe, xlsx_text
from .staff import current_staff

XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"


def columns(coll: str) -> list[tuple[str, str]]:
    "(key, header) of each exported column: the record id, its village, then every current field"
    c = SCHEMA.collections[coll]
    cols = [("id", "记录编号"), ("unit", c.fields["unit"].label + "代码"), ("village", c.fields["unit"].label)]
    for name, f in c.fields.items():
        if name in (DELETED, "unit", "merged_into") or f.retired is not None:
            continue
        cols.append((name, f.label))
        if name == "person":
            cols.append(("person_name", "居民姓名"))
    return cols


def cell_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        return "、".join(str(v) for v in value)
    return str(value)


def rows(pages: Pages, staff: Staff, coll: str) -> list[list[str]]:
    "The collection's live records in the staff member's scope, one list of cell texts each"
    villages = pages.villages()
    store = pages.node.store
    with store.lock:
        recs = store.records(coll, units=staff.scope)
        names: dict[str, str] = {}
        if coll != "person":
            for p in store.records("person", units=staff.scope, include_deleted=True):
                names[p.id] = str(p.data.get("name", ""))
    cols = columns(coll)
    out = []
    for r in recs:
        extra = {"id": r.id, "unit": r.unit, "village": villages.get(r.unit or "", ""),
                 "person_name": names.get(str(r.data.get("person", "")), "")}
        out.append([cell_text(extra[k] if k in extra else r.data.get(k)) for k, _ in cols])
    return out


def to_csv(header: list[str], body: list[list[str]]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\r\n")
    w.writerow(header)
    w.writerows([formula_safe(c) for c in row] for row in body)
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def to_xlsx(sheets: list[tuple[str, list[str], list[list[str]]]]) -> bytes:
    wb = Workbook(write_only=True)
    for title, header, body in sheets:
        ws = wb.create_sheet(title)
        bold = Font(bold=True)

        def cells(values: list[str], font: Font | None = None) -> Iterator[WriteOnlyCell]:
            for v in values:
                c = WriteOnlyCell(ws, value=xlsx_text(v))
                c.data_type = "s"  # text, always: an ID number keeps its 18 digits, "=..." stays text
                if font is not None:
                    c.font = font
                yield c

        ws.append(list(cells(header, bold)))
        for row in body:
            ws.append(list(cells(row)))
    buf = io.BytesIO()
    wb.save(buf)
    return buf.getvalue()


def _download(body: bytes, media_type: str, filename: str) -> Response:
    return Response(body, media_type=media_type, headers={
        "content-disposition": f"attachment; filename=\"{filename.encode('ascii', 'replace').decode()}\"; "
                               f"filename*=UTF-8''{quote(filename)}",
        "cache-control": "no-store"})


def export_routes(pages: Pages) -> list[BaseRoute]:
    def township(request: Request) -> Staff:
        # township staff only: this is personal data (see the module docstring)
        staff = current_staff(request, pages.accounts)
        staff.require("township")
        return staff

    def stamp() -> str:
        return dt.datetime.now(CST).strftime("%Y%m%d-%H%M")

    async def page(request: Request, staff: Staff) -> Response:
        def counts() -> dict[str, int]:
            with pages.node.store.lock:
                return {c: len(pages.node.store.records(c, units=staff.scope)) for c in RECORD_COLLECTIONS}

        return pages.render(request, staff, "wb_export.html", {
            "counts": await run_in_threadpool(counts),
            "labels": {c: SCHEMA.collections[c].label for c in RECORD_COLLECTIONS}})

    async def export_csv(request: Request) -> Response:
        staff = await run_in_threadpool(township, request)
        coll = request.query_params.get("collection", "")
        if coll not in RECORD_COLLECTIONS:
            raise BadRequest(f"collection must be one of {', '.join(RECORD_COLLECTIONS)}; got {coll!r}",
                             details={"collection": coll})
        body = await run_in_threadpool(rows, pages, staff, coll)
        data = to_csv([h for _, h in columns(coll)], body)
        name = f"{SCHEMA.collections[coll].label}-{staff.unit}-{stamp()}.csv"
        return _download(data, "text/csv; charset=utf-8", name)

    async def export_xlsx(request: Request) -> Response:
        staff = await run_in_threadpool(township, request)

        def build() -> bytes:
            return to_xlsx([(SCHEMA.collections[c].label, [h for _, h in columns(c)], rows(pages, staff, c))
                            for c in RECORD_COLLECTIONS])

        return _download(await run_in_threadpool(build), XLSX, f"居民需求服务-{staff.unit}-{stamp()}.xlsx")

    return [
        Route("/staff/export", pages.page(page)),
        Route("/staff/export.csv", export_csv),
        Route("/staff/export.xlsx", export_xlsx),
    ]
