"""The township workbench's pages over a real node (hypercorn on 127.0.0.1, httpx as the browser):
conflicts kept with one click or typed, record history and corrections, duplicates merged with their
needs and services, the needs board, devices (gaps, clock skew, pending, enrol with a QR code, revoke),
and the refusals: no CSRF token, another role, a record outside the township, bad input in Chinese."""

from __future__ import annotations

import re
from contextlib import closing
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.tablet import SyncFailed, Tablet
from staff_world import Signed, World, browser_form, make_world
from e2e_harness import TOWNSHIP, V1, V2, V3, no_sleep
from server.devicepages import SILENT_DAYS, device_flags
from server.node import Node
from sync import reference as ref
from sync.edit import Editor
from sync.hlc import wall_ms
from sync.store import Store
from sync.types import DELETED, SET

pytestmark = pytest.mark.e2e
DAY_MS = 86_400_000


def concurrently(n: Node, device: str, user: str, unit: str, record: str, values: dict[str, Any]) -> None:
    """A village edit made without seeing the node's latest ops of the record: made on a copy of what the
    node held before, then applied to the node"""
    copy = Store(None)
    try:
        copy.apply([op for _, op in n.store.ops_since(0, limit=100_000)
                    if op.record != record or op.site == device])
        ops = Editor(copy, device=device, user=user, unit=unit, tier="village").update(record, values)
    finally:
        copy.close()
    n.store.apply(ops)


def setup(n: Node, ids: dict[str, Any]) -> None:
    ids["dev1"], ids["token1"] = n.add_device(V1, "wang")
    ids["dev2"], _ = n.add_device(V2, "li")
    ids["dev3"], _ = n.add_device(V3, "zhou")
    ids["dev4"], ids["token4"] = n.add_device(V3, "wu")
    v1 = Editor(n.store, device=ids["dev1"], user="wang", unit=V1, tier="village")
    v2 = Editor(n.store, device=ids["dev2"], user="li", unit=V2, tier="village")
    staff = n.editor("liu")
    # conflicts: the township corrects a phone while the village worker changes it too
    for key, name in (("click", "张秀英"), ("typed", "刘翠花"), ("bad", "何玉兰"), ("scope", "孙桂英")):
        pid = ids[key] = v1.create("person", {"unit": V1, "name": name, "phone": "13800000000"})
        staff.update(pid, {"phone": "13811112222"})
        concurrently(n, ids["dev1"], "wang", V1, pid, {"phone": "13899990000"})
    # a delete by the township while the village edits the same resident
    pid = ids["deleted"] = v1.create("person", {"unit": V1, "name": "吴老汉", "phone": "13500000000"})
    staff.delete(pid)
    concurrently(n, ids["dev1"], "wang", V1, pid, {"address": "育才路 1 号"})
    # duplicates: one ID number in two villages, each with a need and a service
    for key, ed, unit in (("dupA", v1, V1), ("dupB", v2, V2)):
        pid = ids[key] = ed.create("person", {"unit": unit, "name": "李桂兰", "id_number": "51090319450101002X",
                                              "birth_date": "1945-01-01"})
        need = ids[key + "_need"] = ed.create("need", {"unit": unit, "person": pid, "category": "养老服务"})
        ids[key + "_service"] = ed.create("service", {"unit": unit, "person": pid, "need": need,
                                                      "service_type": "养老服务", "served_at": "2025-05-01T09:30"})
    # near names in one village; two near names told apart by their birth dates
    ids["nearA"] = v1.create("person", {"unit": V1, "name": "张桂芳"})
    ids["nearB"] = v1.create("person", {"unit": V1, "name": "章桂芳"})
    ids["oneA"] = v1.create("person", {"unit": V1, "name": "王建国"})
    ids["oneB"] = v1.create("person", {"unit": V1, "name": "王建华"})
    v1.create("person", {"unit": V1, "name": "赵明", "birth_date": "1950-02-02"})
    v1.create("person", {"unit": V1, "name": "赵敏", "birth_date": "1960-03-03"})
    # needs: one overdue, one to assign, one finished long ago (never overdue)
    ids["late"] = v1.create("need", {"unit": V1, "person": ids["click"], "category": "医疗健康",
                                     "status": "待处理", "due_date": "2020-01-01", "urgency": "紧急"})
    ids["todo"] = v1.create("need", {"unit": V1, "person": ids["typed"], "category": "生活物资", "status": "待处理"})
    ids["sun"] = v2.create("person", {"unit": V2, "name": "孙大娘"})
    ids["done"] = v2.create("need", {"unit": V2, "person": ids["sun"], "category": "其他", "status": "已解决",
                                     "due_date": "2020-01-01"})
    # device 3 sent ops 1-3 and 7, not 4-6; its clock was two days fast and it still holds 7 ops
    copy = Store(None)
    v3 = Editor(copy, device=ids["dev3"], user="zhou", unit=V3, tier="village")
    pid = v3.create("person", {"unit": V3, "name": "周大伯", "phone": "13700000000"})  # counters 1-3
    for phone in ("13700000001", "13700000002", "13700000003", "13700000004"):
        v3.update(pid, {"phone": phone})  # counters 4-7
    n.store.apply([op for _, op in copy.ops_since(0) if op.counter not in (4, 5, 6)])
    copy.close()
    with n.store.transaction() as c:
        c.execute("UPDATE devices SET skew_ms = ?, pending = 7, last_seen = ?, app_version = '0.1.0'"
                  " WHERE device = ?", (2 * DAY_MS + 3 * 3_600_000, wall_ms() // 1000 - 7200, ids["dev3"]))


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    yield from make_world(tmp_path_factory.mktemp("workbench"), setup)


@pytest.fixture(scope="module")
def liu(world: World) -> Signed:
    return world.sign_in("liu")


def _record(world: World, rid: str) -> Any:
    n = world.open()
    try:
        return n.store.get(rid)
    finally:
        n.close()


def _error(r: httpx.Response, status: int) -> str:
    "The Chinese message of an error page"
    assert r.status_code == status, r.text
    assert r.headers["content-type"].startswith("text/html")
    m = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    assert m, r.text
    return m.group(1)


# -- conflicts --------------------------------------------------------------------------------------

def test_the_conflicts_page_shows_each_competing_value_with_its_author(world: World, liu: Signed) -> None:
    page = liu.get("/staff/conflicts").text
    card = page[page.index(f'data-record="{world.ids["click"]}"'):]
    card = card[:card.index('class="card conflict"') if 'class="card conflict"' in card else None]
    assert "张秀英 · 电话" in card and "育才社区" in card
    assert "13811112222" in card and "13899990000" in card
    assert "liu" in card and "wang" in card and world.ids["dev1"] in card
    assert "镇街" in card and "村/社区" in card
    assert re.search(r"20\d\d-\d\d-\d\d \d\d:\d\d", card)  # the clocks, in local time
    assert "当前显示" in card


def test_one_click_keeps_a_value_and_closes_the_conflict(world: World, liu: Signed) -> None:
    rid = world.ids["click"]
    r = liu.post("/staff/conflicts/resolve", {"record": rid, "field": "phone", "choice": '"13899990000"'})
    assert liu.notice(r) == "已处理：张秀英的“电话”定为“13899990000”。平板下次同步时会收到。"
    typed = liu.post("/staff/conflicts/resolve", {"record": world.ids["typed"], "field": "phone",
                                                  "typed": " 13855556666 "})
    assert "13855556666" in liu.notice(typed)
    rec = _record(world, rid)
    assert rec.data["phone"] == "13899990000" and rec.conflicts == []
    assert _record(world, world.ids["typed"]).data["phone"] == "13855556666"
    assert f'data-record="{rid}"' not in liu.get("/staff/conflicts").text
    # resolving again: the conflict is gone, said plainly
    again = liu.post("/staff/conflicts/resolve", {"record": rid, "field": "phone", "choice": '"1"'})
    assert "已经没有待处理的冲突" in _error(again, 400)


def test_a_bad_typed_value_is_refused_in_chinese_and_nothing_is_written(world: World, liu: Signed) -> None:
    rid = world.ids["bad"]
    r = liu.post("/staff/conflicts/resolve", {"record": rid, "field": "phone", "typed": "不是电话"})
    assert "电话" in _error(r, 400) and "5 到 20 位数字" in _error(r, 400)
    r = liu.post("/staff/conflicts/resolve", {"record": rid, "field": "phone"})
    assert "请选择要保留的值" in _error(r, 400)
    assert _record(world, rid).conflicts == ["phone"]


def test_form_refusals_csrf_role_and_scope(world: World, liu: Signed) -> None:
    rid = world.ids["scope"]
    body = {"record": rid, "field": "phone", "choice": '"13899990000"'}
    assert "页面已过期" in _error(liu.post("/staff/conflicts/resolve", body, csrf=False), 403)
    assert "页面已过期" in _error(liu.post("/staff/conflicts/resolve", {**body, "csrf": "forged"}, csrf=False), 403)
    zhao = world.sign_in("zhao")  # township role, scoped to V2: a V1 record is not there
    assert "没有找到" in _error(zhao.post("/staff/conflicts/resolve", body), 404)
    assert "没有找到" in _error(zhao.get(f"/staff/records/{rid}"), 404)
    assert f'data-record="{rid}"' not in zhao.get("/staff/conflicts").text
    for who in ("county", "city", "admin"):
        other = world.sign_in(who)
        assert "只能查看汇总数据" in _error(other.post("/staff/conflicts/resolve", body), 403)
        assert "只能查看汇总数据" in _error(other.get("/staff/conflicts"), 403)
        assert "孙桂英" not in other.get("/staff").text
    anon = httpx.Client(base_url=world.node.url, follow_redirects=False)
    with anon:
        for path in ("/staff/conflicts", "/staff/needs", "/staff/devices", f"/staff/records/{rid}"):
            r = anon.get(path)
            assert r.status_code == 303 and r.headers["location"] == "/login"
    assert _record(world, rid).conflicts == ["phone"]  # nothing was written by the refused posts


def test_a_free_text_conflict_is_typed_in_a_textarea_that_keeps_line_breaks(world: World, liu: Signed) -> None:
    with closing(world.open()) as n:  # a record of this test alone
        pid = Editor(n.store, device=world.ids["dev1"], user="wang", unit=V1, tier="village").create(
            "person", {"unit": V1, "name": "郑桂香", "address": "育才路 2 号"})
        n.editor("liu").update(pid, {"address": "育才路 3 号"})
        concurrently(n, world.ids["dev1"], "wang", V1, pid, {"address": "育才路 4 号"})
    page = liu.get("/staff/conflicts").text
    card = page[page.index(f'data-record="{pid}"'):]
    card = card[:card.find('<div class="card') % len(card)]  # to the next card, if any
    assert re.search(r'<textarea id="typed-\d+" name="typed"[^>]* required', card)
    assert '<input type="text" id="typed-' not in card
    phone = page[page.index(f'data-record="{world.ids["bad"]}"'):]  # a phone is still typed on one line
    assert re.search(r'<input type="text" id="typed-\d+" name="typed"', phone[:phone.find('<div class="card') % len(phone)])
    r = liu.post("/staff/conflicts/resolve", {"record": pid, "field": "address", "typed": "育才路 5 号\r\n3 单元 201"})
    assert "已处理" in liu.notice(r)
    assert _record(world, pid).data["address"] == "育才路 5 号\r\n3 单元 201"  # as the record's edit form keeps it


def test_a_delete_against_a_concurrent_edit_is_kept_or_undone_by_choice(world: World, liu: Signed) -> None:
    rid = world.ids["deleted"]
    page = liu.get("/staff/conflicts").text
    card = page[page.index(f'data-record="{rid}"'):]
    assert "吴老汉 · 删除还是保留" in card and "确认删除" in card and "保留这条记录" in card
    bad = liu.post("/staff/conflicts/resolve", {"record": rid, "field": "_deleted", "choice": '"abc"'})
    assert "请选择“确认删除”或“保留这条记录”" in _error(bad, 400)
    r = liu.post("/staff/conflicts/resolve", {"record": rid, "field": "_deleted", "choice": "false"})
    assert "定为“恢复”" in liu.notice(r)
    rec = _record(world, rid)
    assert not rec.deleted and rec.conflicts == []
    assert (rec.data["name"], rec.data["address"]) == ("吴老汉", "育才路 1 号")  # back, with the village's edit


def test_a_merged_away_resident_edited_late_by_a_tablet_is_confirmed_deleted_not_kept(
        world: World, liu: Signed) -> None:
    """A village tablet, offline, edits a resident staff merged into another meanwhile: the conflicts page
    names the kept resident and offers 确认删除 alone; keeping the old record (a stale page, a forged post)
    is refused in Chinese and writes nothing; confirming keeps the merge"""
    with closing(world.open()) as n:
        v1 = Editor(n.store, device=world.ids["dev1"], user="wang", unit=V1, tier="village")
        keep = v1.create("person", {"unit": V1, "name": "黄玉珍", "birth_date": "1938-06-01"})
        drop = v1.create("person", {"unit": V1, "name": "黄玉珍", "birth_date": "1938-06-01"})
        n.editor("liu").merge(keep, drop)
        concurrently(n, world.ids["dev1"], "wang", V1, drop, {"phone": "13900000000"})
    page = liu.get("/staff/conflicts").text
    card = page[page.index(f'data-record="{drop}"'):]
    card = card[:card.index('class="card conflict"') if 'class="card conflict"' in card else None]
    assert f'已合并到 <a href="/staff/records/{keep}">黄玉珍（{keep[-8:]}）</a>' in card
    assert "修改：13900000000" in card and "确认删除" in card and "保留这条记录" not in card
    kept = liu.post("/staff/conflicts/resolve", {"record": drop, "field": "_deleted", "choice": "false"})
    said = _error(kept, 400)
    assert f"已合并到黄玉珍（{keep[-8:]}），不能单独恢复" in said and "确认删除" in said
    rec = _record(world, drop)
    assert rec.deleted and rec.data["merged_into"] == keep and rec.conflicts == ["_deleted"]  # nothing written
    r = liu.post("/staff/conflicts/resolve", {"record": drop, "field": "_deleted", "choice": "true"})
    assert "定为“删除”" in liu.notice(r)
    rec = _record(world, drop)
    assert rec.deleted and rec.data["merged_into"] == keep and rec.conflicts == []
    assert f'data-record="{drop}"' not in liu.get("/staff/conflicts").text


def test_merging_a_resident_left_half_merged_says_so_in_chinese(world: World, liu: Signed) -> None:
    "A resident an earlier version restored after its merge (live, yet merged into another) is not merged again"
    with closing(world.open()) as n:
        v2 = Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village")
        keep = v2.create("person", {"unit": V2, "name": "冯桂香", "birth_date": "1941-09-09"})
        drop = v2.create("person", {"unit": V2, "name": "冯桂香", "birth_date": "1941-09-09"})
        staff = n.editor("liu")
        staff.merge(keep, drop)
        deletes = tuple(sorted((e.device, e.counter) for e in n.store.state(drop)[DELETED]))
        staff._commit(staff._build([("person", drop, DELETED, SET, False, deletes)]))  # as restore did before
        assert not n.store.get(drop).deleted  # type: ignore[union-attr]
        before = n.store.count_ops()
    r = liu.post("/staff/duplicates/merge", {"keep": keep, "drop": drop})
    assert f"（{drop[-8:]}）是旧版本留下的未完成合并" in _error(r, 400)  # its name went with the delete
    with closing(world.open()) as n:
        assert n.store.count_ops() == before


# -- records ----------------------------------------------------------------------------------------

def test_a_record_page_shows_every_change_and_takes_a_correction(world: World, liu: Signed) -> None:
    rid = world.ids["oneB"]
    r = liu.post(f"/staff/records/{rid}", {"phone": "13912345678", "address": "育才路 8 号", "name": "王建华",
                                            "groups_shown": "1", "groups": ["老年人", "独居"]})
    said = liu.notice(r)
    assert "已保存" in said and "电话" in said and "人群类别" in said
    rec = _record(world, rid)
    assert rec.data["phone"] == "13912345678" and sorted(rec.data["groups"]) == ["独居", "老年人"]
    page = liu.get(f"/staff/records/{rid}").text
    history = page[page.index('class="tight history"'):]
    assert "13912345678" in history and "liu" in history and "镇街" in history and "wang" in history
    assert '<span class="muted">（无）</span> → <b>王建华</b>' in history and "添加 老年人" in history
    assert '<span class="muted">13800000000</span> → <b>13912345678</b>' not in history  # not this one's phone
    bad = liu.post(f"/staff/records/{rid}", {"birth_date": "1950/1/1"})
    assert "出生日期" in _error(bad, 400) and "1942-03-08" in _error(bad, 400)
    assert "birth_date" not in _record(world, rid).data


def _merged_resident_with_a_service(world: World) -> dict[str, str]:
    "Records of one test alone: a V1 resident with a need and a service, and a V2 duplicate merged into it"
    with closing(world.open()) as n:
        v1 = Editor(n.store, device=world.ids["dev1"], user="wang", unit=V1, tier="village")
        ids = {"keep": v1.create("person", {"unit": V1, "name": "钱秀兰"}),
               "drop": Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village").create(
                   "person", {"unit": V2, "name": "钱小兰"})}
        ids["need"] = v1.create("need", {"unit": V1, "person": ids["keep"], "category": "养老服务"})
        ids["service"] = v1.create("service", {"unit": V1, "person": ids["keep"], "need": ids["need"],
                                               "service_type": "养老服务", "served_at": "2025-06-02T14:05"})
        n.editor("liu").merge(ids["keep"], ids["drop"])
    return ids


def test_record_pages_name_villages_and_records_not_codes_and_uuids(world: World, liu: Signed) -> None:
    ids = _merged_resident_with_a_service(world)
    keep, need = ids["keep"], ids["need"]
    page = liu.get(f"/staff/records/{ids['drop']}").text  # merged away: its values, not a form
    values = page[page.index('<table class="tight">'):page.index("</table>")]
    assert "<td>广场社区</td>" in values and f"<td>钱秀兰（{keep[-8:]}）</td>" in values
    assert V2 not in values and keep not in values
    assert f'已合并到 <a href="/staff/records/{keep}">钱秀兰（{keep[-8:]}）</a>' in page
    page = liu.get(f"/staff/records/{ids['service']}").text
    history = page[page.index('class="tight history"'):]
    for shown in (f"钱秀兰（{keep[-8:]}）", f"钱秀兰的需求（养老服务）（{need[-8:]}）", "育才社区", "2025-06-02 14:05"):
        assert f"→ <b>{shown}</b>" in history, shown
    assert keep not in history and need not in history and V1 not in history
    page = world.sign_in("zhao").get(f"/staff/records/{ids['drop']}").text  # scoped to V2: V1's resident unnamed
    assert f"记录 {keep[-8:]}" in page and "钱秀兰" not in page


def test_a_service_page_titles_its_time_and_links_its_need_which_lists_its_services(
        world: World, liu: Signed) -> None:
    ids = _merged_resident_with_a_service(world)
    service, need = ids["service"], ids["need"]
    page = liu.get(f"/staff/records/{service}").text
    assert "<h2>钱秀兰的服务记录（养老服务，2025-06-02 14:05）</h2>" in page and "T14:05）" not in page
    assert f'对应需求：<a href="/staff/records/{need}">钱秀兰的需求（养老服务）</a>' in page
    page = liu.get(f"/staff/records/{need}").text
    services = page[page.index('id="services"'):]
    assert f'<a href="/staff/records/{service}">钱秀兰的服务记录（养老服务，2025-06-02 14:05）</a>' in services


# -- duplicates -------------------------------------------------------------------------------------

def test_duplicates_are_found_by_id_name_and_sound(world: World, liu: Signed) -> None:
    ids = world.ids
    with closing(world.open()) as n:  # each resident of a pair shows her needs and services
        a = n.store.get(ids["dupA"])
        assert a is not None
        n.editor("liu").create("need", {"person": a.id, "unit": a.unit, "category": "生活物资"})
    page = liu.get("/staff/duplicates").text

    def pair(a: str, b: str) -> str:
        x, y = sorted((ids[a], ids[b]))
        start = page.find(f'data-a="{x}" data-b="{y}"')
        assert start >= 0, f"{a}/{b} not paired"
        return page[start:page.find('class="card pair"', start + 1)]

    assert "身份证号相同" in pair("dupA", "dupB") and "姓名和出生日期相同" in pair("dupA", "dupB")
    assert "<td>2 条 / 1 条</td>" in pair("dupA", "dupB") and "<td>1 条 / 1 条</td>" in pair("dupA", "dupB")
    assert "育才社区" in pair("dupA", "dupB") and "广场社区" in pair("dupA", "dupB")
    assert "5109**********002X" in pair("dupA", "dupB")  # masked on the page
    assert "读音相同" in pair("nearA", "nearB")
    assert "只差一个字" in pair("oneA", "oneB")
    assert "赵敏" not in page  # one character apart, but their birth dates tell them apart


def test_merging_from_the_duplicates_page_moves_needs_and_services(world: World, liu: Signed) -> None:
    keep, drop = world.ids["dupA"], world.ids["dupB"]
    n = world.open()
    try:  # the other record holds what the kept one lacks
        Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village").update(
            drop, {"phone": "13900001111", "groups": ["残疾人"]})
    finally:
        n.close()
    r = liu.post("/staff/duplicates/merge", {"keep": keep, "drop": drop})
    notice = liu.notice(r)
    assert "1 条需求和 1 条服务记录" in notice and "从另一条补上了：电话、人群类别。" in notice
    assert f"（{drop[-8:]}）并入" in notice and f"（{keep[-8:]}）" in notice  # ids told apart by their ends
    assert (_record(world, keep).data["phone"], _record(world, keep).data["groups"]) == ("13900001111", ["残疾人"])
    n = world.open()
    try:
        assert n.store.get(drop).deleted and n.store.get(drop).data["merged_into"] == keep  # type: ignore[union-attr]
        assert n.store.resolve_id(drop) == keep
        for key in ("dupB_need", "dupB_service", "dupA_need", "dupA_service"):
            rec = n.store.get(world.ids[key])
            assert rec is not None and rec.data["person"] == keep and rec.unit == V1  # to the kept one's village
        assert n.store.history(drop)  # the old record's history is kept
    finally:
        n.close()
    page = liu.get(f"/staff/records/{keep}").text
    assert "合并进来的记录" in page and drop[-8:] in page
    assert f'data-b="{drop}"' not in liu.get("/staff/duplicates").text and f'data-a="{drop}"' not in liu.get(
        "/staff/duplicates").text
    assert "自己" in _error(liu.post("/staff/duplicates/merge", {"keep": keep, "drop": keep}), 400)
    assert "已被删除或已合并" in _error(liu.post("/staff/duplicates/merge", {"keep": keep, "drop": drop}), 400)


def test_a_pair_marked_as_two_people_leaves_the_list_until_a_new_reason_appears(world: World, liu: Signed) -> None:
    n = world.open()
    try:
        v2 = Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village")
        a = v2.create("person", {"unit": V2, "name": "钱玉珍"})
        b = v2.create("person", {"unit": V2, "name": "钱玉真"})
    finally:
        n.close()
    x, y = sorted((a, b))
    card = f'data-a="{x}" data-b="{y}"'
    page = liu.get("/staff/duplicates").text
    assert card in page and "只差一个字" in page[page.index(card):]

    said = liu.notice(liu.post("/staff/duplicates/dismiss", {"a": a, "b": b}))
    assert "不是同一人" in said and "钱玉珍" in said and "钱玉真" in said
    page = liu.get("/staff/duplicates").text
    assert card not in page and "已标记为不是同一人的 1 组" in page
    n = world.open()
    try:
        assert n.store.conn.execute("SELECT a, b, reasons, by FROM duplicate_dismissals").fetchall() == [
            (x, y, "one_apart,same_pinyin", "liu")]  # 珍 and 真 both read zhen
    finally:
        n.close()
    marked = liu.get("/staff/duplicates?dismissed=1").text
    assert card in marked and "由 liu 于" in marked and "恢复为疑似重复" in marked

    # restored, it is back; marked again, it stays away
    assert "重新列为疑似重复" in liu.notice(liu.post("/staff/duplicates/restore", {"a": b, "b": a}))
    assert card in liu.get("/staff/duplicates").text
    assert "没有被标记过" in _error(liu.post("/staff/duplicates/restore", {"a": a, "b": b}), 400)
    liu.post("/staff/duplicates/dismiss", {"a": b, "b": a})
    assert card not in liu.get("/staff/duplicates").text

    # a reason it was not marked for brings it back: the same name now
    liu.post(f"/staff/records/{b}", {"name": "钱玉珍"})
    page = liu.get("/staff/duplicates").text
    assert card in page and "同村同名" in page[page.index(card):]

    # refused, and nothing written: a pair that is no pair, one resident twice, a record elsewhere
    assert "不是疑似重复" in _error(liu.post("/staff/duplicates/dismiss", {"a": a, "b": world.ids["oneA"]}), 400)
    assert "两位不同" in _error(liu.post("/staff/duplicates/dismiss", {"a": a, "b": a}), 400)
    liu.post("/staff/duplicates/dismiss", {"a": a, "b": "0190c0de-0000-7000-8000-000000000000"})
    one = {"a": world.ids["oneA"], "b": world.ids["oneB"]}
    assert "没有找到" in _error(world.sign_in("zhao").post("/staff/duplicates/dismiss", one), 404)  # V1, not V2
    assert "只能查看汇总数据" in _error(world.sign_in("county").post("/staff/duplicates/dismiss", one), 403)
    liu.post("/staff/duplicates/restore", {"a": a, "b": b})  # back on the list, with the same name now
    n = world.open()
    try:
        rows = n.store.conn.execute("SELECT a, b FROM duplicate_dismissals").fetchall()
    finally:
        n.close()
    assert rows == []


# -- needs ------------------------------------------------------------------------------------------

def test_the_needs_board_highlights_overdue_and_assigns(world: World, liu: Signed) -> None:
    page = liu.get("/staff/needs").text
    rows = re.findall(r'<tr class="need ([a-z]*)" data-id="([^"]+)"', page)
    assert rows[0] == ("overdue", world.ids["late"])  # overdue first, highlighted
    assert ("", world.ids["done"]) in rows  # finished: past its due date but not overdue
    r = liu.post(f"/staff/needs/{world.ids['todo']}", {"assignee": "陈社工", "due_date": "2099-12-31",
                                                       "status": "待处理", "back": "/staff/needs?unit=" + V1})
    assert r.headers["location"] == "/staff/needs?unit=" + V1
    assert "陈社工" in liu.notice(r)
    rec = _record(world, world.ids["todo"])
    assert rec.data["assignee"] == "陈社工" and rec.data["due_date"] == "2099-12-31"
    assert rec.data["status"] == "已分派"  # assigning a waiting need assigns it
    n = world.open()
    try:
        op = n.store.record_ops(world.ids["todo"])[-1]
        assert (op.user, op.site, op.tier) == ("liu", f"node-{TOWNSHIP}", 2)  # staff, on the node, township
    finally:
        n.close()
    bad = liu.post(f"/staff/needs/{world.ids['todo']}", {"status": "已关闭"})
    assert "不能从“已分派”直接改为“已关闭”" in _error(bad, 400)
    assert "截止日期" in _error(liu.post(f"/staff/needs/{world.ids['todo']}", {"due_date": "明天"}), 400)
    only_v2 = liu.get(f"/staff/needs?unit={V2}").text
    assert world.ids["done"] in only_v2 and world.ids["late"] not in only_v2
    assert world.ids["late"] in liu.get("/staff/needs?status=overdue").text
    assert "没有“x”这个状态" in _error(liu.get("/staff/needs?status=x"), 400)


def test_a_village_the_unit_tree_lacks_is_counted_named_and_filtered(world: World, liu: Signed) -> None:
    "A tablet enrolled for a village before the unit tree listed it: its needs and residents are not hidden"
    unlisted = "510903001009"
    with closing(world.open()) as n:
        dev, _ = n.add_device(unlisted, "新村社工")
        ed = Editor(n.store, device=dev, user="新村社工", unit=unlisted, tier="village")
        pid = ed.create("person", {"unit": unlisted, "name": "新村居民"})
        need = ed.create("need", {"unit": unlisted, "person": pid, "category": "养老服务", "status": "待处理"})
    name = f"未命名村/社区（{unlisted}）"
    board = liu.get("/staff/needs").text
    matrix = board[board.index('<table class="tight matrix">'):board.index("</table>")]
    assert f'<a href="?unit={unlisted}">{name}</a>' in matrix
    assert f'<a href="?unit={unlisted}&status=待处理">1</a>' in matrix
    only = liu.get("/staff/needs", params={"unit": unlisted})
    assert only.status_code == 200 and re.findall(r'<tr class="need [a-z]*" data-id="([^"]+)"', only.text) == [need]
    assert f"<td>{name}</td>" in only.text  # named, not a bare code
    people = liu.get("/staff/people", params={"unit": unlisted})
    assert people.status_code == 200 and f'data-id="{pid}"' in people.text and f"<td>{name}</td>" in people.text


# -- devices ----------------------------------------------------------------------------------------

def test_the_devices_page_shows_gaps_skew_and_pending(world: World, liu: Signed) -> None:
    page = liu.get("/staff/devices").text
    row = page[page.index(f'data-device="{world.ids["dev3"]}"'):]
    row = row[:row.index("</tr>")]
    assert f"设备 {world.ids['dev3']} 缺少第4–6条" in row
    assert '<span class="red">快 2 天 3 小时</span>' in row
    assert "7 条" in row and "0.1.0" in row and "2 小时前" in row and "和平社区" in row


def test_silent_and_never_synced_tablets_are_counted_marked_and_listed_first(world: World, liu: Signed) -> None:
    def attention_count() -> int:
        m = re.search(r'需要留意的设备</h3><div class="stat[^"]*">(\d+)</div>', liu.get("/staff").text)
        assert m
        return int(m.group(1))

    before = attention_count()
    now = wall_ms() // 1000
    with closing(world.open()) as n:
        quiet, _ = n.add_device(V1, "wang")  # 12 days without contact, holding 340 ops
        never, _ = n.add_device(V1, "wang")  # enrolled 5 days ago, never synced
        new, _ = n.add_device(V1, "wang")  # enrolled just now: its worker has not synced yet
        fresh, _ = n.add_device(V1, "wang")  # seen an hour ago
        gone, _ = n.add_device(V1, "wang")  # silent, but revoked: not a tablet in use
        n.revoke(gone)
        with n.store.transaction() as c:
            for dev, seen in ((quiet, now - 12 * 86400), (fresh, now - 3600), (gone, now - 12 * 86400)):
                c.execute("UPDATE devices SET last_seen = ?, last_sync = ?, pending = 340, skew_ms = 0"
                          " WHERE device = ?", (seen, seen, dev))
            c.execute("UPDATE devices SET created_at = ? WHERE device = ?", (now - 5 * 86400, never))
    assert attention_count() == before + 2
    page = liu.get("/staff/devices").text
    assert f"超过 {SILENT_DAYS} 天没有联系" in page
    order = re.findall(r'<tr class="device( attention)?" data-device="([^"]+)">', page)
    marked = {dev: bool(flag) for flag, dev in order}
    assert list(marked.values()) == sorted(marked.values(), reverse=True)  # those to look at first
    assert (marked[quiet], marked[never], marked[new], marked[fresh], marked[gone]) == (True, True, False, False, False)

    def seen_cell(dev: str) -> str:
        row = page[page.index(f'data-device="{dev}"'):]
        return row[row.index('<td class="seen">'):row.index("</td>", row.index('<td class="seen">'))]

    assert '<span class="red">12 天前</span>' in seen_cell(quiet)
    assert '<span class="red">从未同步</span>' in seen_cell(never)
    assert "red" not in seen_cell(fresh) and "red" not in seen_cell(gone) and "red" not in seen_cell(new)


def test_only_village_tablets_in_use_count_as_silent() -> None:
    now = 1_800_000_000
    row = {"tier": "village", "revoked": 0, "last_seen": now - 12 * 86400, "created_at": now - 30 * 86400,
           "skew_ms": 0, "gaps": []}
    assert device_flags(row, now)["silent"] and device_flags(row, now)["attention"]
    assert not device_flags({**row, "last_seen": now - 86400}, now)["attention"]
    for other in ({"tier": "county"}, {"revoked": 1}):  # an upper node's link; a revoked tablet
        for seen in (row["last_seen"], None):
            assert not device_flags({**row, **other, "last_seen": seen}, now)["attention"], (other, seen)


def _enrol(liu: Signed, form: dict[str, str]) -> httpx.Response:
    "Make a code from the devices page's form: the page its redirect shows it on"
    r = liu.post("/staff/devices/enrol", form)
    assert r.status_code == 303 and r.headers["location"].startswith("/staff/devices/enrol/"), r.text
    return liu.get(r.headers["location"])


def _live_codes(world: World) -> int:
    with closing(sqlite3.connect(world.db)) as db:
        return int(db.execute("SELECT count(*) FROM enrolments WHERE used_at IS NULL").fetchone()[0])


def test_enrol_shows_a_code_and_qr_that_a_tablet_can_use(world: World, liu: Signed, tmp_path: Path) -> None:
    r = _enrol(liu, {"unit": V2, "user": "新社工"})
    assert r.status_code == 200, r.text
    code = re.search(r'class="enrol-code"[^>]*>([0-9A-Z]{5}-[0-9A-Z]{5})<', r.text)
    assert code and "<svg" in r.text and "广场社区 · 新社工" in r.text
    tab = Tablet.enrol(tmp_path / "new.db", world.node.url, code.group(1), sleep=no_sleep)
    try:
        assert tab.unit == V2 and tab._get("user") == "新社工"
    finally:
        tab.close()
    outside = world.sign_in("zhao").post("/staff/devices/enrol", {"unit": V1, "user": "x"})  # zhao: V2 only
    assert "请选择您所在镇街下的一个村/社区" in _error(outside, 400)


def test_a_code_to_re_attach_a_tablet_is_for_that_tablet_alone(world: World, liu: Signed, tmp_path: Path) -> None:
    "After a restore: staff type the tablet's id from its sync page; the code enrols no other tablet"
    assert "平板编号“pad-1”不正确" in _error(liu.post("/staff/devices/enrol", {"unit": V2, "user": "新社工",
                                                                        "reattach": "pad-1"}), 400)
    r = _enrol(liu, {"unit": V2, "user": "新社工", "reattach": "tab-0123456789ab"})
    assert r.status_code == 200 and "重新接入平板 <strong>tab-0123456789ab</strong>" in r.text, r.text
    code = re.search(r'class="enrol-code"[^>]*>([0-9A-Z]{5}-[0-9A-Z]{5})<', r.text)
    assert code
    with pytest.raises(SyncFailed) as e:
        Tablet.enrol(tmp_path / "new.db", world.node.url, code.group(1), sleep=no_sleep).close()
    assert e.value.code == "enrolment_mismatch"
    before = _live_codes(world)  # a tablet the node knows: no code, which it would refuse (device_exists)
    known = _error(liu.post("/staff/devices/enrol", {"unit": V1, "user": "王芳", "reattach": world.ids["dev2"]}), 400)
    assert f"本镇街服务器认识平板“{world.ids['dev2']}”" in known and _live_codes(world) == before


def test_a_code_is_shown_once_and_neither_back_nor_reload_makes_another(world: World, liu: Signed) -> None:
    """The code's page is a GET after the form's redirect: Reload or Back asks for it again, and finds it
    shown already (no second code made, as a re-posted form would); no other session opens it"""
    before = _live_codes(world)
    r = liu.post("/staff/devices/enrol", {"unit": V1, "user": "王芳"})
    page = r.headers["location"]
    assert _live_codes(world) == before + 1
    assert world.sign_in("liu").get(page).headers.get("location") == "/staff/devices"  # another session
    shown = liu.get(page)
    assert shown.status_code == 200 and re.search(r'class="enrol-code"[^>]*>[0-9A-Z]{5}-[0-9A-Z]{5}<', shown.text)
    again = liu.get(page)  # Reload, or Back to it
    assert "登记码只显示一次" in liu.notice(again) and "enrol-code" not in again.text
    assert _live_codes(world) == before + 1


def test_revoke_asks_first_then_revokes_with_or_without_wipe(world: World, liu: Signed) -> None:
    dev = world.ids["dev2"]
    confirm = liu.get(f"/staff/devices/{dev}/revoke").text
    assert "只停用" in confirm and "停用并清除数据" in confirm
    assert "没有找到" in _error(world.sign_in("zhao").get(f"/staff/devices/{world.ids['dev3']}/revoke"), 404)
    assert "页面已过期" in _error(liu.post(f"/staff/devices/{dev}/revoke", {"wipe": "1"}, csrf=False), 403)
    assert "清除" in liu.notice(liu.post(f"/staff/devices/{dev}/revoke", {"wipe": "1"}))
    n = world.open()
    try:
        d = n.device(dev)
        assert d is not None and d.revoked and d.wipe
    finally:
        n.close()
    assert "已停用并清除" in liu.get("/staff/devices").text


def test_a_tablet_reports_its_pending_ops_and_its_clock(world: World, liu: Signed, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    "Through real syncs: a tablet two days fast, pushing two ops a request, says what it still holds"
    monkeypatch.setattr("client.tablet.PUSH_BATCH", 2)
    dev = world.ids["dev4"]
    seen: list[int] = []

    def pending_on_node(*_: object) -> None:
        conn = sqlite3.connect(world.db)
        try:
            seen.append(conn.execute("SELECT pending FROM devices WHERE device = ?", (dev,)).fetchone()[0])
        finally:
            conn.close()

    tab = Tablet.init(tmp_path / "fast.db", world.node.url, world.ids["token4"], sleep=no_sleep,
                      clock=lambda: wall_ms() + 2 * DAY_MS)
    try:
        tab.create("person", {"name": "新居民", "phone": "13600000000"})  # 3 ops
        tab.create("person", {"name": "新居民二", "phone": "13600000001"})  # 3 more
        tab.sync(progress=pending_on_node)
        assert tab.pending() == 0
    finally:
        tab.close()
    assert seen[0] == 4 and seen[-1] == 0  # 6 held, 2 sent in the first request
    page = liu.get("/staff/devices").text
    row = page[page.index(f'data-device="{dev}"'):]
    row = row[:row.index("</tr>")]
    assert '<span class="red">快 2 天</span>' in row and "0.1.0" in row, row


def search(staff: Signed, q: str, unit: str | None = None) -> httpx.Response:
    "Search as the residents' page does: a form posted, the node keeping the query; the results' page"
    r = staff.post("/staff/people", {"q": q, **({"unit": unit} if unit else {})})
    assert r.status_code == 303 and r.headers["location"].startswith("/staff/people?s="), r.text
    return staff.get(r.headers["location"])


def test_the_residents_page_lists_and_finds_by_pinyin_phone_and_village(world: World, liu: Signed) -> None:
    def names(page: str) -> list[str]:
        return re.findall(r'<tr class="person" data-id="[^"]+">\s*<td><a href="/staff/records/[^"]+">([^<]+)</a>', page)

    with closing(world.open()) as n:  # residents of this test alone: the world's others change in other tests
        ed = Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village")
        ed.create("person", {"unit": V2, "name": "钱淑芬", "id_number": "510903195105050047", "phone": "13677770000"})
        ed.create("person", {"unit": V2, "name": "钱淑华", "phone": "13677771111"})
    everyone = names(liu.get("/staff/people").text)
    assert {"张秀英", "刘翠花", "钱淑芬", "钱淑华"} <= set(everyone)
    assert names(search(liu, "qsf").text) == ["钱淑芬"]
    assert names(search(liu, "qianshufen").text) == ["钱淑芬"]
    assert sorted(names(search(liu, "1367777").text)) == ["钱淑华", "钱淑芬"]
    assert names(search(liu, "１３６７７７７００００").text) == ["钱淑芬"]  # full-width IME
    in_v2 = search(liu, "qs", V2).text
    assert sorted(names(in_v2)) == ["钱淑华", "钱淑芬"]
    assert "5109**********0047" in in_v2 and "510903195105050047" not in in_v2  # masked on the list
    assert names(search(liu, "qs", V1).text) == []
    bad = liu.get("/staff/people", params={"unit": "510903001999"})
    assert bad.status_code == 400 and "不在您所在镇街的范围内" in bad.text
    zhao = set(names(world.sign_in("zhao").get("/staff/people").text))  # township staff scoped to V2
    assert {"钱淑芬", "钱淑华"} <= zhao and "张秀英" not in zhao and "刘翠花" not in zhao


def test_a_search_by_id_number_keeps_the_number_out_of_every_address(world: World, liu: Signed) -> None:
    """The number is posted, kept on the node for this session under a token, and the results' address names
    the token only: the number reaches no history, proxy or log; Back and Reload show the results again"""
    with closing(world.open()) as n:
        ed = Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village")
        ed.create("person", {"unit": V2, "name": "孔繁英", "id_number": "510903194805050028"})
    r = liu.post("/staff/people", {"q": "510903194805050028", "unit": V2})
    results = r.headers["location"]
    assert r.status_code == 303 and "510903194805050028" not in results and "unit=" + V2 in results, r.text
    for page in (liu.get(results), liu.get(results)):  # and again: Reload, or Back from a resident's page
        assert page.status_code == 200 and "孔繁英" in page.text, page.text
        assert 'name="q" value="510903194805050028"' in page.text  # the query in the search box
        assert 'class="notice"' not in page.text
    for other in (world.sign_in("liu"), liu):  # another session has no such search; nor has anyone a made-up one
        gone = other.get(results if other is not liu else "/staff/people?s=made-up")
        assert gone.status_code == 200 and '<p class="notice" role="status">搜索结果已过期（只保留 30 分钟），请重新搜索。</p>' \
            in gone.text and "510903194805050028" not in gone.text and 'name="q" value=""' in gone.text
    assert liu.get("/staff/people", params={"q": "kfy"}).text.count('class="person"') > 1  # no search by address
    assert liu.post("/staff/people", {"q": ""}).headers["location"] == "/staff/people"
    assert "最多 100 个字" in _error(liu.post("/staff/people", {"q": "张" * 101}), 400)
    assert "页面已过期" in _error(liu.post("/staff/people", {"q": "kfy"}, csrf=False), 403)


def test_a_need_is_escalated_to_the_county_from_its_page(world: World, liu: Signed) -> None:
    need = world.ids["todo"]
    page = liu.get(f"/staff/records/{need}").text
    assert "上报县区" in page and 'action="/staff/records/' + need + '/escalate"' in page
    assert "请写一段情况说明" in _error(liu.post(f"/staff/records/{need}/escalate", {"summary": "  "}), 400)
    zhao = world.sign_in("zhao")  # scoped to V2: a V1 need is not there
    assert "没有找到" in _error(zhao.post(f"/staff/records/{need}/escalate", {"summary": "x"}), 404)
    notice = liu.notice(liu.post(f"/staff/records/{need}/escalate", {"summary": "生活物资缺口大，需区里协调"}))
    assert notice.startswith("已上报县区")
    page = liu.get(f"/staff/records/{need}").text
    assert "已上报" in page and "生活物资缺口大，需区里协调" in page and "/escalate" not in page  # no second form
    assert "已经上报" in _error(liu.post(f"/staff/records/{need}/escalate", {"summary": "再报一次"}), 400)
    with closing(world.open()) as n:
        (esc,) = [r for r in n.store.records("escalation")]
    assert esc.data == {**esc.data, "need": need, "category": "生活物资", "status": "已上报",
                        "summary": "生活物资缺口大，需区里协调"}
    assert not {"person", "name", "phone", "description"} & set(esc.data)  # nothing personal goes up


def test_removing_a_resident_stays_within_the_staff_members_scope(world: World, liu: Signed) -> None:
    "迁出/注销 (tests/server/test_workbench_remove.py): a record outside one's villages, or one's role, refuses"
    with closing(world.open()) as n:  # records of this test alone: a V2 resident with an open need left in V1
        pid = Editor(n.store, device=world.ids["dev2"], user="li", unit=V2, tier="village").create(
            "person", {"unit": V2, "name": "蒋淑芬"})
        Editor(n.store, device=world.ids["dev1"], user="wang", unit=V1, tier="village").create(
            "need", {"unit": V1, "person": pid, "category": "养老服务"})
        before = n.store.count_ops()
    body = {"reason": "去世", "confirm": "1"}
    zhao = world.sign_in("zhao")  # scoped to V2
    assert "没有找到" in _error(zhao.post(f"/staff/records/{world.ids['click']}/remove", body), 404)  # a V1 resident
    said = _error(zhao.post(f"/staff/records/{pid}/remove", body), 400)
    assert said == "蒋淑芬有未完成的需求在您负责的范围之外（育才社区），请由负责全镇的工作人员办理。"
    assert "在您负责的范围之外" in _error(zhao.post(f"/staff/records/{pid}/remove", {"reason": "去世"}), 400)
    for who in ("county", "city", "admin"):
        assert "只能查看汇总数据" in _error(world.sign_in(who).post(f"/staff/records/{pid}/remove", body), 403)
    with closing(world.open()) as n:
        assert n.store.count_ops() == before
    confirm = browser_form(liu.post(f"/staff/records/{pid}/remove", {"reason": "去世"}).text,
                           f"/staff/records/{pid}/remove")  # the confirm page's form, what it listed in ``seen``
    assert "已将蒋淑芬移出本镇街（去世），1 条未完成的需求" in liu.notice(liu.client.post(f"/staff/records/{pid}/remove",
                                                                              data=confirm))


# -- tasks --------------------------------------------------------------------------------------------

def _progress(page: str, task: str) -> dict[str, str]:
    "Each village's progress on a task as the tasks page shows it: name → status and note"
    card = page[page.index(f'id="task-{task}"'):]
    card = card[:card.index("</table>")]
    rows = re.findall(r'<tr class="village" data-unit="\d+">(.*?)</tr>', card, re.S)
    return {" ".join(re.sub(r"<[^>]+>", " ", r).split()).split(" ")[0]:
            " ".join(re.sub(r"<(select|form)\b.*?</\1>|<[^>]+>", " ", r, flags=re.S).split()).partition(" ")[2]
            for r in rows}


def test_the_tasks_page_shows_each_villages_progress_and_the_township_sets_it(world: World, liu: Signed) -> None:
    """The tree's villages, and those it lacks (tablets enrolled before `cunsync units import` listed them):
    one with a tablet enrolled, one that reported (which the county counts); all shown, counted, settable"""
    enrolled, reported = "510903001009", "510903001008"
    unnamed = f"未命名村/社区（{enrolled}）"
    with closing(world.open()) as n:
        n.add_device(enrolled, "新村社工")  # as test_a_village_the_unit_tree_lacks_is_counted_named_and_filtered
        county = Editor(n.store, device="node-510903000000", user="chen", unit="510903000000", tier="county")
        task = ref.add_task(county, "高龄老人走访", due_date="2026-12-31")
        tablet = Editor(n.store, device=world.ids["dev1"], user="wang", unit=V1, tier="village")
        ref.report_task(tablet, task, V1, "进行中", "已走访 12 户")
    page = liu.get("/staff/tasks").text
    assert "高龄老人走访" in page and "船山区 布置 · 截止 2026-12-31" in page  # named from the tree, never published
    assert "未开始 3，进行中 1，已完成 0" in page
    assert _progress(page, task) == {"育才社区": "进行中 已走访 12 户", "广场社区": "未报", "和平社区": "未报", unnamed: "未报"}

    r = liu.post(f"/staff/tasks/{task}/report", {"village": V2, "status": "已完成", "note": "全部走访完"})
    assert liu.notice(r) == "已保存：广场社区的任务进度为“已完成”。"
    # the township's correction of V1 beats the tablet's concurrent write
    r = liu.post(f"/staff/tasks/{task}/report", {"village": V1, "status": "已完成", "note": ""})
    assert r.status_code == 303
    with closing(world.open()) as n:
        concurrently(n, world.ids["dev1"], "wang", V1, ref.task_report_id(task, V1), {"status": "进行中", "note": "还差 3 户"})
    page = liu.get("/staff/tasks").text
    assert _progress(page, task) == {"育才社区": "已完成", "广场社区": "已完成 全部走访完", "和平社区": "未报", unnamed: "未报"}
    assert "未开始 2，进行中 0，已完成 2" in page

    # refusals: bad input, another village, another role; nothing written
    for form, says in (({"village": V3, "status": "办完了"}, "进度只能是未开始、进行中、已完成之一"),
                       ({"village": V3, "status": "已完成", "note": "字" * 201}, "最多 200 个字"),
                       ({"village": "510903002001", "status": "已完成"}, "不在您负责的范围内"),
                       ({"status": "已完成"}, "表单缺少内容：村/社区。"),
                       ({"village": V3}, "表单缺少内容：进度。")):
        assert says in _error(liu.post(f"/staff/tasks/{task}/report", form), 400)
    assert "没有找到这项任务" in _error(liu.post(f"/staff/tasks/{V1}/report", {"village": V3, "status": "已完成"}), 404)
    zhao = world.sign_in("zhao")  # scoped to V2
    assert _progress(zhao.get("/staff/tasks").text, task) == {"广场社区": "已完成 全部走访完"}
    assert "不在您负责的范围内" in _error(zhao.post(f"/staff/tasks/{task}/report", {"village": V3, "status": "进行中"}), 400)
    assert "只能查看汇总数据" in _error(world.sign_in("county").get("/staff/tasks"), 403)
    assert _progress(liu.get("/staff/tasks").text, task)["和平社区"] == "未报"

    with closing(world.open()) as n:  # a tablet of a village the tree lacks reports
        ref.report_task(Editor(n.store, device="tab-8", user="tian", unit=reported, tier="village"), task, reported,
                        "已完成")
    page = liu.get("/staff/tasks").text
    assert _progress(page, task) == {"育才社区": "已完成", "广场社区": "已完成 全部走访完", "和平社区": "未报",
                                     unnamed: "未报", f"未命名村/社区（{reported}）": "已完成"}
    assert "未开始 2，进行中 0，已完成 3" in page
    assert liu.notice(liu.post(f"/staff/tasks/{task}/report", {"village": enrolled, "status": "进行中"})) == \
        f"已保存：{unnamed}的任务进度为“进行中”。"

    with closing(world.open()) as n:  # the county cancels it: a form shown before is refused
        ref.set_task_status(Editor(n.store, device="node-510903000000", user="chen", unit="510903000000",
                                   tier="county"), task, "已取消")
        before = n.store.count_ops()
    assert _error(liu.post(f"/staff/tasks/{task}/report", {"village": V3, "status": "已完成"}), 400) == ref.TASK_CANCELLED
    with closing(world.open()) as n:
        assert n.store.count_ops() == before

