"""A resident township staff took out of the township's records (迁出/注销) in the tablet app: a need or service
form open when a sync brings the removal still saves, for her, and says what happens to it (a need the node
then cancels; a service that stays and counts); her needs and services, still listed, open read-only, with
the escalation's withdrawal and why a need was cancelled, and a save of one is refused with nothing written;
her own edit form too.

A township node runs in process (its app over Starlette's TestClient, which the tablet's sync uses too):
staff remove her on the workbench as they do, and the node's follow-ups run as they do.
"""

from __future__ import annotations

import html
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from client.tablet import Tablet
from client.ui import TabletApp, create_app
from e2e_harness import TOWNSHIP, V1
from server import escalations
from server.app import create_app as node_app
from server.auth import Staff
from server.cli import ensure_units
from server.node import Node
from test_ui import ORIGIN, PIN, PORT, TestClient, form_rid, post

PASSWORD = "correct horse 1"
NODE = "http://node"


@dataclass
class World:
    "A township node in process, its staff signed in, and the tablet app of a village-1 tablet syncing with it"

    node: Node
    staff: TestClient  # the node's app: the workbench, and the tablet's sync
    tapp: TabletApp
    app: TestClient  # the tablet app

    def sync(self) -> None:
        "The tablet app's 立即同步, to its end"
        assert post(self.app, self.tapp, "/sync", {}).status_code == 303
        assert self.tapp.job is not None
        self.tapp.job.wait(30)
        assert self.tapp.job.snapshot()["state"] == "done", self.tapp.job.snapshot()

    def remove(self, pid: str, reason: str) -> None:
        "迁出或注销 on the resident's workbench page, then 确认移出"
        page = self.staff.get(f"/staff/records/{pid}").text
        action = f"/staff/records/{pid}/remove"
        ask = self.staff.post(action, data={"csrf": hidden(page, "csrf"), "reason": reason})
        assert ask.status_code == 200, ask.text
        r = self.staff.post(action, data={"csrf": hidden(ask.text, "csrf"), "reason": reason, "confirm": "1",
                                          "seen": hidden(ask.text, "seen")})
        assert r.status_code == 303, r.text
        rec = self.node.store.get(pid)
        assert rec is not None and rec.deleted


def hidden(page: str, name: str) -> str:
    found = re.search(rf"""name="{name}" value=(["'])(.*?)\1""", page)
    assert found is not None, name
    return html.unescape(found.group(2))


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    node = Node(tmp_path / "township.db", TOWNSHIP)
    ensure_units(node)
    node.accounts.add("liu", PASSWORD, role="township", unit=TOWNSHIP, display_name="刘")
    _, token = node.add_device(V1, "王芳")
    try:
        with TestClient(node_app(node), base_url=NODE, follow_redirects=False) as staff:
            r = staff.post("/login", data={"username": "liu", "password": PASSWORD,
                                           "csrf": hidden(staff.get("/login").text, "csrf")})
            assert r.status_code == 303, r.text
            Tablet.init(tmp_path / "tablet.db", NODE, token, client=staff, pin=PIN).close()
            tapp = TabletApp(tmp_path / "tablet.db", port=PORT, pin=PIN, client=staff, backoff=0.01)
            try:
                with TestClient(create_app(tapp), base_url=ORIGIN, follow_redirects=False) as app:
                    yield World(node, staff, tapp, app)
            finally:
                tapp.close()
    finally:
        node.close()


def resident(w: World) -> str:
    "张秀英, registered on the tablet and synced"
    pid: str = w.tapp.read(lambda t: t.create("person", {"name": "张秀英", "gender": "女", "birth_date": "1942-03-08"}))
    return pid


def count_ops(w: World) -> int:
    n: int = w.tapp.read(lambda t: t.store.count_ops())
    return n


def text(page: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", page).split())


def test_a_need_or_service_form_open_when_a_sync_brings_her_removal_still_saves(world: World) -> None:
    w = world
    pid = resident(w)
    w.sync()
    service = {"person": pid, "service_type": "养老服务", "served_at": "2026-12-02 09:30", "minutes": "45",
               "rid": form_rid(w.app.get("/services/new", params={"person": pid}).text)}
    need = {"person": pid, "category": "医疗健康", "description": "需要陪同就医",
            "rid": form_rid(w.app.get("/needs/new", params={"person": pid}).text)}
    w.remove(pid, "迁出到其他镇街")  # meanwhile, on the workbench
    w.sync()  # the background sync brings it while the forms are open

    before = count_ops(w)
    bad = post(w.app, w.tapp, "/services/new", {**service, "service_type": ""})  # a mistake: shown again
    assert bad.status_code == 400 and "该居民已迁出/注销。这条服务记录仍可保存，记在其名下" in bad.text
    assert form_rid(bad.text) == service["rid"] and count_ops(w) == before
    r = post(w.app, w.tapp, "/services/new", service)
    assert r.status_code == 303 and r.headers["location"] == f"/people/{pid}?done=service_removed"
    page = w.app.get(r.headers["location"]).text
    assert "服务记录已保存。该居民已迁出/注销：服务记录仍记在其名下，下次同步时报给镇街" in page
    assert f'href="/services/{service["rid"]}/edit"' in page  # listed on her page, to open read-only
    assert "＋ 记录服务" not in page and "＋ 记录需求" not in page  # nothing new for a resident who left
    r = post(w.app, w.tapp, "/needs/new", need)
    assert r.status_code == 303 and r.headers["location"] == f"/people/{pid}?done=need_removed"
    assert "同步到镇街时会改为“已取消”" in w.app.get(r.headers["location"]).text
    saved = w.tapp.read(lambda t: [t.get(service["rid"]), t.get(need["rid"])])
    assert [(s.coll, s.data["person"], s.deleted) for s in saved] == [("service", pid, False), ("need", pid, False)]
    assert saved[0].data["minutes"] == 45 and saved[1].data["status"] == "待处理"

    w.sync()
    kept = w.node.store.get(service["rid"])
    assert kept is not None and not kept.deleted and kept.data["person"] == pid  # it stays, and counts
    late = w.node.store.get(need["rid"])
    assert late is not None and late.data["status"] == "已取消"  # the node cancelled it as it arrived
    assert w.node.store.record_ops(need["rid"])[-1].user == "liu"  # for the staff member who removed her
    page = w.app.get(f"/needs/{need['rid']}/edit").text
    assert "因该居民迁出/注销，liu（镇街，" in page and "已取消" in page


def test_her_needs_and_services_open_read_only_and_saving_one_is_refused(world: World) -> None:
    w = world
    pid = resident(w)
    n1 = w.tapp.read(lambda t: t.create("need", {"person": pid, "category": "养老服务", "status": "待处理",
                                                  "urgency": "一般", "description": "助餐"}))
    s1 = w.tapp.read(lambda t: t.create("service", {"person": pid, "need": n1, "service_type": "养老服务",
                                                     "served_at": "2026-11-01T09:30", "minutes": 30}))
    w.sync()
    escalations.escalate(w.node, Staff("liu", "township", TOWNSHIP), n1, "独居老人需要每日送餐")
    w.remove(pid, "去世")
    n2 = w.tapp.read(lambda t: t.create("need", {"person": pid, "category": "养老服务", "status": "待处理",
                                                  "description": "离线记录"}))  # before the tablet hears of it
    w.sync()

    listed = w.app.get("/needs", params={"status": "all"}).text + w.app.get("/services").text
    assert text(listed).count("张秀英") == 3  # by her name as it was: her delete superseded it
    for url in (f"/needs/{n1}/edit", f"/needs/{n2}/edit", f"/services/{s1}/edit"):
        assert url in listed
        page = w.app.get(url)
        assert page.status_code == 200, (url, text(page.text))
        assert "该居民已迁出/注销" in page.text and "只能查看，不能修改" in page.text, url
        assert f'action="{url}"' not in page.text and ">保存</button>" not in page.text, url  # no form to save
    first = text(w.app.get(f"/needs/{n1}/edit").text)
    assert "查看需求 · 张秀英 该居民已迁出/注销：镇街已将其移出本镇街的记录（原因见 张秀英 的备注）" in first
    assert "镇街已撤回上报" in first and "撤回原因 居民已故，需求已取消" in first and "助餐" in first
    assert "因该居民迁出/注销，liu（镇街，" in first  # cancelled by the removal
    offline = text(w.app.get(f"/needs/{n2}/edit").text)
    assert "离线记录" in offline and "已取消 因该居民迁出/注销，liu（镇街，" in offline  # by the node, on arrival
    service = text(w.app.get(f"/services/{s1}/edit").text)
    assert "对应的需求 养老服务（已取消）" in service and "2026-11-01 09:30" in service and "仍计入服务当月的统计" in service
    person = w.app.get(f"/people/{pid}").text
    assert "该居民已迁出/注销" in person and f'href="/needs/{n1}/edit">查看</a>' in person
    assert f'href="/services/{s1}/edit"' in person and "修改信息" not in person
    assert '<h2 class="grow">张秀英' in person and "移出本镇街（去世）" in person  # her notes say why
    edit = w.app.get(f"/people/{pid}/edit")  # a link to her edit form: read-only too, not a 404
    assert edit.status_code == 200 and "移出本镇街（去世）" in edit.text and ">保存</button>" not in edit.text
    assert ("查看居民信息 · 张秀英 该居民已迁出/注销：镇街已将其移出本镇街的记录（原因见备注）。"
            "这位居民的信息只能查看，不能修改。") in text(edit.text)

    before = count_ops(w)
    for url, data in ((f"/needs/{n1}/edit", {"status": "服务中"}), (f"/services/{s1}/edit", {"minutes": "60"}),
                      (f"/people/{pid}/edit", {"name": "张秀英", "phone": "13911112222"})):
        r = post(w.app, w.tapp, url, {"shown": "{}", **data})
        assert r.status_code == 403 and "该居民已迁出/注销，这条记录只能查看，不能修改。没有保存任何内容" in r.text
    assert count_ops(w) == before
    assert w.tapp.read(lambda t: (t.get(n1).data["status"], t.get(s1).data["minutes"])) == ("已取消", 30)
