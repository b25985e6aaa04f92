"""Exports over a real node: CSV (UTF-8 with a BOM) and XLSX hold the township's residents, needs and
services as the records do — ID numbers and phones whole — for township staff only, within their scope;
formula-like text stays text; every other role gets 403 in the one error shape."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import httpx
import openpyxl
import pytest

from staff_world import Signed, World, make_world
from e2e_harness import V1, V2
from server.node import Node
from sync.edit import Editor

pytestmark = pytest.mark.e2e


def setup(n: Node, ids: dict[str, Any]) -> None:
    dev, _ = n.add_device(V1, "wang")
    ed = Editor(n.store, device=dev, user="wang", unit=V1, tier="village")
    p = ids["p1"] = ed.create("person", {"unit": V1, "name": "张秀英", "id_number": "51090319420308002X",
                                         "phone": "13800138000", "groups": ["老年人", "独居"], "notes": "=1+1"})
    ids["need"] = ed.create("need", {"unit": V1, "person": p, "category": "养老服务", "description": "-需要助餐"})
    ids["service"] = ed.create("service", {"unit": V1, "person": p, "service_type": "养老服务",
                                           "served_at": "2025-05-01T09:30", "minutes": 45})
    gone = ed.create("person", {"unit": V1, "name": "已删除的人"})
    ed.delete(gone)
    dev2, _ = n.add_device(V2, "li")
    ids["p2"] = Editor(n.store, device=dev2, user="li", unit=V2, tier="village").create(
        "person", {"unit": V2, "name": "李桂兰", "id_number": "510903194501010021"})


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("export"), setup)


def _csv(r: httpx.Response) -> list[dict[str, str]]:
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.content.startswith(b"\xef\xbb\xbf")  # the BOM Excel needs to read UTF-8
    assert "attachment" in r.headers["content-disposition"]
    return list(csv.DictReader(io.StringIO(r.content.decode("utf-8-sig"))))


def test_csv_holds_the_township_records_as_they_are(world: World) -> None:
    liu = world.sign_in("liu")
    people = _csv(liu.get("/staff/export.csv?collection=person"))
    by_name = {p["姓名"]: p for p in people}
    assert set(by_name) == {"张秀英", "李桂兰"}  # the deleted one is not exported
    row = by_name["张秀英"]
    assert row["身份证号"] == "51090319420308002X" and row["电话"] == "13800138000"  # whole: the township's own
    assert row["所属村/社区"] == "育才社区" and row["所属村/社区代码"] == V1 and row["记录编号"] == world.ids["p1"]
    assert row["人群类别"] == "独居、老年人" and row["备注"] == "'=1+1"  # a formula stays text
    needs = _csv(liu.get("/staff/export.csv?collection=need"))
    assert [(n["居民姓名"], n["需求描述"], n["居民"]) for n in needs] == [("张秀英", "'-需要助餐", world.ids["p1"])]
    services = _csv(liu.get("/staff/export.csv?collection=service"))
    assert services[0]["服务时长(分钟)"] == "45"


def test_xlsx_has_three_sheets_with_text_cells(world: World) -> None:
    r = world.sign_in("liu").get("/staff/export.xlsx")
    assert r.status_code == 200 and r.headers["content-type"].startswith("application/vnd.openxmlformats")
    book = openpyxl.load_workbook(io.BytesIO(r.content))
    assert book.sheetnames == ["居民", "需求", "服务记录"]
    rows = list(book["居民"].iter_rows(values_only=True))
    header, body = rows[0], rows[1:]
    people = {row[header.index("姓名")]: row for row in body}
    assert people["张秀英"][header.index("身份证号")] == "51090319420308002X"
    assert people["李桂兰"][header.index("身份证号")] == "510903194501010021"  # text: all 18 digits
    notes = book["居民"].cell(row=1 + 1 + list(people).index("张秀英"), column=1 + header.index("备注"))
    assert notes.value == "=1+1" and notes.data_type == "s"  # text, not a formula
    assert len(list(book["需求"].iter_rows())) == 2 and len(list(book["服务记录"].iter_rows())) == 2


def test_a_control_character_in_a_value_is_left_out_of_the_xlsx_not_a_failed_export(world: World) -> None:
    "XLSX cannot hold most control characters (a note pasted from elsewhere may carry one): left out, the rest kept"
    node = world.open()
    try:
        node.editor("liu").update(world.ids["p1"], {"notes": "送餐\x07到家\x1b"})
    finally:
        node.close()
    r = world.sign_in("liu").get("/staff/export.xlsx")
    assert r.status_code == 200, r.text
    rows = list(openpyxl.load_workbook(io.BytesIO(r.content))["居民"].iter_rows(values_only=True))
    assert [row[rows[0].index("备注")] for row in rows[1:] if row[rows[0].index("姓名")] == "张秀英"] == ["送餐到家"]


def test_exports_keep_to_the_staff_scope(world: World) -> None:
    zhao = world.sign_in("zhao")  # township role, one village: V2
    assert [p["姓名"] for p in _csv(zhao.get("/staff/export.csv?collection=person"))] == ["李桂兰"]
    assert _csv(zhao.get("/staff/export.csv?collection=need")) == []
    book = openpyxl.load_workbook(io.BytesIO(zhao.get("/staff/export.xlsx").content))
    assert [r[3] for r in book["居民"].iter_rows(min_row=2, values_only=True)] == ["李桂兰"]


def _error(r: httpx.Response, status: int, code: str) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message", "details"}
    assert body["error"]["code"] == code


@pytest.mark.parametrize("who", ["county", "city", "admin"])
def test_other_roles_get_403(world: World, who: str) -> None:
    s: Signed = world.sign_in(who)
    for path in ("/staff/export.csv?collection=person", "/staff/export.xlsx"):
        _error(s.get(path), 403, "forbidden")
    assert s.get("/staff/export").status_code == 403  # the page too


def test_no_session_or_a_bad_collection(world: World) -> None:
    with httpx.Client(base_url=world.node.url) as anon:
        _error(anon.get("/staff/export.csv?collection=person"), 401, "not_signed_in")
        _error(anon.get("/staff/export.xlsx"), 401, "not_signed_in")
    liu = world.sign_in("liu")
    _error(liu.get("/staff/export.csv?collection=unit"), 400, "bad_request")
    _error(liu.get("/staff/export.csv"), 400, "bad_request")
    page = liu.get("/staff/export").text
    assert "个人信息" in page and "/staff/export.xlsx" in page
