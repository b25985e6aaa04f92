"""Staff pages opened before a tablet synced: saving writes only what staff changed from what the page
showed, and refuses a change to a value, or a choice in a conflict, that moved on since."""

from __future__ import annotations

import html
import re
import warnings
from pathlib import Path

from server.app import create_app
from server.cli import ensure_units
from server.node import Node
from test_pullcache import TOWNSHIP, V1, Tab

with warnings.catch_warnings():
    # starlette's TestClient warns that it prefers httpx2; the project's httpx is what it runs on
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

PASSWORD = "correct horse 1"


class Desk:
    "A township node in process, a tablet of village 1, and the township's staff signed in"

    def __init__(self, path: Path) -> None:
        self.node = Node(path, TOWNSHIP)
        ensure_units(self.node)
        self.node.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP, display_name="刘")
        self.tab = Tab(self.node, V1, "张丽")
        self.client = TestClient(create_app(self.node), base_url="http://node", follow_redirects=False)
        self.client.__enter__()
        csrf = self.hidden(self.client.get("/login").text, "csrf")
        r = self.client.post("/login", data={"username": "liu", "password": PASSWORD, "csrf": csrf})
        assert r.status_code == 303, r.text

    def close(self) -> None:
        self.client.__exit__(None, None, None)
        self.tab.store.close()
        self.node.close()

    def sync(self) -> None:
        self.tab.take(self.node.sync(self.tab.dev, self.tab.request(5000)))

    @staticmethod
    def hidden(page: str, name: str) -> str:
        found = re.search(rf"""name="{name}" value=(["'])(.*?)\1""", page)
        assert found is not None, name
        return html.unescape(found.group(2))


def test_a_record_saved_from_a_page_opened_before_a_sync_keeps_the_tablets_change(desk: Desk) -> None:
    rid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": "13800000000"})
    desk.sync()
    page = desk.client.get(f"/staff/records/{rid}").text
    form = {"csrf": desk.hidden(page, "csrf"), "shown": desk.hidden(page, "shown")}
    desk.tab.editor.update(rid, {"phone": "13911112222"})  # the worker corrects it; the tablet syncs
    desk.sync()

    r = desk.client.post(f"/staff/records/{rid}", data={**form, "address": "育才路9号"})
    assert r.status_code == 303, r.text
    rec = desk.node.store.get(rid)
    assert rec is not None and (rec.data["phone"], rec.data["address"]) == ("13911112222", "育才路9号")

    before = desk.node.store.count_ops()
    r = desk.client.post(f"/staff/records/{rid}", data={**form, "phone": "13700000000"})
    assert r.status_code == 409 and "请刷新页面" in r.text
    assert desk.node.store.count_ops() == before, "a value staff never saw is not overridden"


def test_the_needs_board_saved_after_a_sync_keeps_the_tablets_change(desk: Desk) -> None:
    pid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英"})
    nid = desk.tab.editor.create("need", {"person": pid, "unit": V1, "category": "养老服务", "status": "已分派",
                                          "assignee": "王芳"})
    desk.sync()
    page = desk.client.get("/staff/needs").text
    shown = re.search(rf"""action="/staff/needs/{nid}".*?name="shown" value='([^']*)'""", page, re.S)
    assert shown is not None
    form = {"csrf": desk.hidden(page, "csrf"), "shown": html.unescape(shown.group(1)), "status": "已分派",
            "assignee": "王芳"}
    desk.tab.editor.update(nid, {"status": "服务中"})
    desk.sync()

    r = desk.client.post(f"/staff/needs/{nid}", data={**form, "due_date": "2030-01-01"})
    assert r.status_code == 303, r.text
    rec = desk.node.store.get(nid)
    assert rec is not None and (rec.data["status"], rec.data["due_date"]) == ("服务中", "2030-01-01")


def test_a_conflict_with_a_value_staff_have_not_seen_is_not_settled(desk: Desk) -> None:
    rid = desk.tab.editor.create("person", {"unit": V1, "name": "张秀英", "phone": "13800000000"})
    desk.sync()
    third = Tab(desk.node, V1, "王芳")  # another worker's tablet, which holds the record as first made
    third.take(desk.node.sync(third.dev, third.request(5000)))
    desk.node.editor("陈主任").update(rid, {"phone": "13811112222"})
    late = desk.tab.editor.update(rid, {"phone": "13822223333"})  # concurrent: a conflict on phone
    desk.node.store.apply(late)
    page = desk.client.get("/staff/conflicts").text
    form = {"csrf": desk.hidden(page, "csrf"), "record": rid, "field": "phone", "seen": desk.hidden(page, "seen"),
            "choice": '"13811112222"'}
    desk.node.store.apply(third.editor.update(rid, {"phone": "13733334444"}))  # arrives after the page was shown

    r = desk.client.post("/staff/conflicts/resolve", data=form)
    assert r.status_code == 409 and "新的值" in r.text
    rec = desk.node.store.get(rid)
    assert rec is not None and rec.conflicts == ["phone"]
    page = desk.client.get("/staff/conflicts").text
    r = desk.client.post("/staff/conflicts/resolve", data={**form, "seen": desk.hidden(page, "seen")})
    assert r.status_code == 303, r.text  # once seen, it can be settled
    rec = desk.node.store.get(rid)
    assert rec is not None and (rec.data["phone"], rec.conflicts) == ("13811112222", [])
    third.store.close()


def test_staff_of_one_village_see_no_other_villages_records_on_a_residents_page(desk: Desk) -> None:
    "A resident of village 2 into whom a duplicate from village 1 was merged: its needs stay in village 1"
    v2 = V1[:-1] + "2"
    desk.node.accounts.add("zhao", PASSWORD, role="township", unit=v2, display_name="赵")
    keep = desk.node.editor("陈主任").create("person", {"unit": v2, "name": "李桂兰"})
    drop = desk.tab.editor.create("person", {"unit": V1, "name": "李贵兰"})
    desk.tab.editor.create("need", {"person": drop, "unit": V1, "category": "心理支持", "description": "丧偶后情绪低落"})
    desk.sync()
    desk.node.editor("陈主任").merge(keep, drop)

    zhao = TestClient(create_app(desk.node), base_url="http://node", follow_redirects=False)
    with zhao:
        csrf = desk.hidden(zhao.get("/login").text, "csrf")
        assert zhao.post("/login", data={"username": "zhao", "password": PASSWORD, "csrf": csrf}).status_code == 303
        page = zhao.get(f"/staff/records/{keep}").text
    assert "李桂兰" in page
    assert "丧偶后情绪低落" not in page and "李贵兰" not in page, "nothing of village 1 on village 2's page"
    liu_page = desk.client.get(f"/staff/records/{keep}").text
    assert "心理支持" in liu_page, "the township's staff see the need that followed the merge"
