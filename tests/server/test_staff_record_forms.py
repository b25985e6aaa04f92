"""A record's page and the needs board, saved as a browser sends them back: a field staff did not touch
is never written, whatever the browser does to how it shows it (a catalogue code, line breaks, a date
that is not a real one), and the catalogue fields offer what the tablets offer."""

from __future__ import annotations

import itertools
import re
from typing import Any

from staff_world import browser_form
from sync import reference as ref
from sync.hlc import pack, wall_ms
from sync.ops import Op
from sync.schema import CATEGORIES
from sync.types import SET
from test_pullcache import V1
from test_staff_stale_forms import Desk


def save(desk: Desk, action: str, page: str = "", **changed: str) -> str:
    "Open the page (the record's own unless given), change only ``changed`` and save; the notice shown after"
    form = browser_form(desk.client.get(page or action).text, action)
    r = desk.client.post(action, data={**form, **changed})
    assert r.status_code == 303, r.text
    found = re.search(r'<p class="notice" role="status">(.*?)</p>', desk.client.get(r.headers["location"]).text, re.S)
    assert found is not None
    return found.group(1)


def data(desk: Desk, rid: str) -> dict[str, Any]:
    rec = desk.node.store.get(rid)
    assert rec is not None
    return rec.data


def options(page: str, name: str) -> list[str]:
    "The options of a record page's <select>, the selected one marked with a leading *"
    found = re.search(rf'<select id="f-{name}" name="{name}">(.*?)</select>', page, re.S)
    assert found is not None, name
    return [("*" if sel else "") + text
            for sel, text in re.findall(r"<option(?: value=\"\")?( selected)?\s*>([^<]*)</option>", found.group(1))]


def test_catalogue_codes_are_offered_kept_and_picked_on_a_records_page(desk: Desk) -> None:
    ed = desk.node.editor("liu")
    ref.set_catalogue(ed, "need_category", "防汛救灾", name="防汛救灾", order=11)
    ref.set_catalogue(ed, "service_type", "上门探访", name="上门探访", order=0)
    desk.sync()  # the tablet offers them
    pid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英"})
    need = desk.tab.editor.create("need", {"unit": V1, "person": pid, "category": "养老服务", "urgency": "一般"})
    visit = desk.tab.editor.create("service", {"unit": V1, "person": pid, "service_type": "上门探访",
                                               "served_at": "2025-05-01T09:30"})
    desk.sync()

    page = desk.client.get(f"/staff/records/{need}").text
    assert options(page, "category") == ["（未填）", "*养老服务", *CATEGORIES[1:], "防汛救灾"]  # as the tablets
    assert save(desk, f"/staff/records/{need}", category="防汛救灾").startswith("已保存：需求类别。")
    assert save(desk, f"/staff/records/{need}", urgency="紧急").startswith("已保存：紧急程度。")
    assert (data(desk, need)["category"], data(desk, need)["urgency"]) == ("防汛救灾", "紧急")
    assert options(desk.client.get(f"/staff/records/{visit}").text, "service_type")[:3] == [
        "（未填）", "*上门探访", "养老服务"]  # order 0: before the built-ins
    assert save(desk, f"/staff/records/{visit}", minutes="45").startswith("已保存：服务时长(分钟)。")
    assert (data(desk, visit)["service_type"], data(desk, visit)["minutes"]) == ("上门探访", 45)

    # a retired code is offered no more, but a record that has it keeps it and stays editable
    ref.set_catalogue(ed, "need_category", "防汛救灾", retired=True)
    assert options(desk.client.get(f"/staff/records/{need}").text, "category")[-1] == "*防汛救灾"
    assert save(desk, f"/staff/records/{need}", urgency="较急").startswith("已保存：紧急程度。")
    assert data(desk, need)["category"] == "防汛救灾"


def test_saving_another_field_keeps_multi_line_text_as_it_was(desk: Desk) -> None:
    note = "独居，儿子在外地打工\r\n每周三送药"
    pid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": "13800000000", "notes": note,
                                            "address": "\n育才路1号\n3单元"})
    nid = desk.tab.editor.create("need", {"unit": V1, "person": pid, "category": "养老服务",
                                          "description": "需要助餐\n午餐和晚餐"})
    desk.sync()
    assert save(desk, f"/staff/records/{pid}", phone="13811112222").startswith("已保存：电话。")
    assert save(desk, f"/staff/records/{nid}", urgency="紧急").startswith("已保存：紧急程度。")
    assert (data(desk, pid)["notes"], data(desk, pid)["address"]) == (note, "\n育才路1号\n3单元")
    assert data(desk, nid)["description"] == "需要助餐\n午餐和晚餐"
    # a note staff do change keeps its line breaks
    assert save(desk, f"/staff/records/{pid}", notes="独居\r\n每周三、周六送药").startswith("已保存：备注。")
    assert data(desk, pid)["notes"] == "独居\r\n每周三、周六送药"


_OLD_TABLET = itertools.count(1)


def stored_before_dates_were_checked(desk: Desk, rid: str, coll: str, name: str, value: str) -> None:
    "A date that is not a real one, as the schema took it before it checked dates (an op, as a sync brings it)"
    desk.node.store.apply([Op("tab-old", next(_OLD_TABLET), pack(wall_ms()), coll, rid, name, SET, value, (),
                              "wang", V1, 1)])


def test_saving_another_field_keeps_a_stored_date_that_is_not_a_real_one(desk: Desk) -> None:
    pid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": "13800000000"})
    nid = desk.tab.editor.create("need", {"unit": V1, "person": pid, "category": "养老服务", "status": "待处理"})
    desk.sync()
    stored_before_dates_were_checked(desk, pid, "person", "birth_date", "1942-02-30")
    stored_before_dates_were_checked(desk, nid, "need", "due_date", "2024-02-31")

    assert save(desk, f"/staff/records/{pid}", phone="13811112222").startswith("已保存：电话。")
    assert save(desk, f"/staff/needs/{nid}", "/staff/needs", assignee="刘主任") == (
        "已保存：张秀英的需求（养老服务），负责人“刘主任”，状态“已分派”。")
    assert (data(desk, pid)["birth_date"], data(desk, nid)["due_date"]) == ("1942-02-30", "2024-02-31")
    # staff may still correct such a date
    assert save(desk, f"/staff/records/{pid}", birth_date="1942-02-28").startswith("已保存：出生日期。")
    assert data(desk, pid)["birth_date"] == "1942-02-28"


def test_a_tablets_push_is_kept_as_sent_with_values_the_forms_refuse(desk: Desk) -> None:
    """What the README says: the node's forms, commands and staff API refuse a date not on the calendar, but a
    tablet's ops (``Tablet.create``, an older app's form) are kept as sent, never a refused batch that would
    strand the tablet's queue; staff correct the value on the record's page"""
    pid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "birth_date": "2024-02-30"})
    desk.sync()
    assert data(desk, pid)["birth_date"] == "2024-02-30"
    assert save(desk, f"/staff/records/{pid}", birth_date="2024-02-29").startswith("已保存：出生日期。")
