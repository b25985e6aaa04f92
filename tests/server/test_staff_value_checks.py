"""The workbench's record form and needs board check what staff type as the tablet's forms do
(``sync.checks``): nothing a tablet would refuse is saved, digits typed full-width are taken as ASCII, and
only the fields staff changed are checked."""

from __future__ import annotations

import html
import re

from sync.ops import Op
from sync.types import SET, TIER_RANK
from test_pullcache import V1
from staff_world import browser_form
from test_staff_stale_forms import Desk

FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


def record_form(desk: Desk, rid: str) -> dict[str, str]:
    page = desk.client.get(f"/staff/records/{rid}").text
    return {"csrf": desk.hidden(page, "csrf"), "shown": desk.hidden(page, "shown")}


def test_staff_save_nothing_a_tablet_would_refuse(desk: Desk) -> None:
    rid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "gender": "女", "birth_date": "1942-03-08"})
    nid = desk.tab.editor.create("need", {"person": rid, "unit": V1, "category": "养老服务", "status": "待处理"})
    desk.sync()
    form = record_form(desk, rid)
    before = desk.node.store.count_ops()
    for name, value, said in (
            ("birth_date", "2099-01-01", "出生日期不能晚于今天"),
            ("birth_date", "2024-02-30", "出生日期不是一个存在的日期"),
            ("id_number", "510903199913451234", "身份证号中的出生日期（第7到14位）不是一个存在的日期"),
            ("id_number", "510903194203081271", "身份证号最后一位校验码不对"),
            ("id_number", "510903194203081231", "性别与身份证号不一致（身份证号第17位表示男性）"),
            ("phone", "-----", "电话号码只能填数字")):
        r = desk.client.post(f"/staff/records/{rid}", data={**form, name: value})
        assert r.status_code == 400 and said in html.unescape(r.text), (name, value)
    page = desk.client.get("/staff/needs").text
    shown = re.search(rf"""action="/staff/needs/{nid}".*?name="shown" value='([^']*)'""", page, re.S)
    assert shown is not None
    r = desk.client.post(f"/staff/needs/{nid}", data={"csrf": desk.hidden(page, "csrf"),
                                                       "shown": html.unescape(shown.group(1)),
                                                       "due_date": "2024-02-30"})
    assert r.status_code == 400 and "截止日期不是一个存在的日期" in r.text
    assert desk.node.store.count_ops() == before, "nothing was written"

    r = desk.client.post(f"/staff/records/{rid}", data={**form, "id_number": "510903194203081223".translate(FULL_WIDTH)})
    assert r.status_code == 303, r.text
    rec = desk.node.store.get(rid)
    assert rec is not None and rec.data["id_number"] == "510903194203081223"


def test_a_value_saved_before_the_checks_does_not_block_an_edit_of_another_field(desk: Desk) -> None:
    rid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": "13800000000"})
    desk.sync()
    hlc = desk.node.store.last_hlc() + (1 << 16)  # an older tablet's unchecked value, as a sync brought it
    desk.node.store.apply([Op("tab-old-1", 1, hlc, "person", rid, "birth_date", SET, "2099-01-01", (), "老王", V1,
                              TIER_RANK["village"])])
    form = record_form(desk, rid)
    r = desk.client.post(f"/staff/records/{rid}", data={**form, "birth_date": "2099-01-01", "phone": "13911112222"})
    assert r.status_code == 303, r.text
    rec = desk.node.store.get(rid)
    assert rec is not None and (rec.data["phone"], rec.data["birth_date"]) == ("13911112222", "2099-01-01")


def test_an_id_number_an_older_app_stored_full_width_is_sent_back_untouched(desk: Desk) -> None:
    """An older tablet stored an ID number in full-width digits with a wrong check digit. Saving only the
    phone, as a browser sends the page's form (every field as shown), neither checks nor rewrites it."""
    rid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": "13800000000"})
    desk.sync()
    stored = "510903194203081271".translate(FULL_WIDTH)
    hlc = desk.node.store.last_hlc() + (1 << 16)
    desk.node.store.apply([Op("tab-old-1", 1, hlc, "person", rid, "id_number", SET, stored, (), "老王", V1,
                              TIER_RANK["village"])])
    form = browser_form(desk.client.get(f"/staff/records/{rid}").text, f"/staff/records/{rid}")
    assert form["id_number"] == stored
    before = desk.node.store.count_ops()
    r = desk.client.post(f"/staff/records/{rid}", data={**form, "phone": "13911112222"})
    assert r.status_code == 303, html.unescape(r.text)
    rec = desk.node.store.get(rid)
    assert rec is not None and (rec.data["phone"], rec.data["id_number"]) == ("13911112222", stored)
    assert desk.node.store.count_ops() == before + 1, "the phone alone was written"
