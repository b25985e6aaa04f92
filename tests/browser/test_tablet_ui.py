"""The tablet app in headless Chromium: ``cunsync tablet ui`` runs as a subprocess on 127.0.0.1, as a
village worker starts it, against a real township node (``node``) when the test needs one.

    register a resident with the node down (search first), bring the node up, sync from the page:
        the resident is in the node's database
    pinyin: 张三 is found by "zhangsan" and by "zs"
    a concurrent staff edit shows as a conflict with both values; resolved on the node and synced,
        it is gone and the tablet shows the resolved value
    an unreachable node is said plainly, and nothing is lost
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import Page, Route, expect

from client.tablet import Tablet
from e2e_harness import ROOT, TOWNSHIP, V1, Enrol, NodeProcess, free_port
from server.node import Node
from sync import reference as ref
from sync.store import Store

PIN = "246810"
UNREACHABLE = "无法连接镇街服务器。数据已安全保存在本机，联网后再点同步。"
#: A sync the page waits for: a few round trips, or a node that does not answer after two retries
SYNC_WAIT_MS = 30_000


class TabletAppProcess:
    "``cunsync tablet ui`` in a subprocess on a free port; its output goes to ``<db>.ui.log``"

    def __init__(self, db: Path, pin: str | None = None) -> None:
        self.db = db
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = db.with_suffix(".ui.log")
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("CUNSYNC_PIN", None)
        if pin is not None:
            env["CUNSYNC_PIN"] = pin
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from client.cli import cli; cli()", "tablet", "ui", "--db", str(db),
                 "--port", str(self.port)],
                cwd=ROOT, stdout=log, stderr=log, stdin=subprocess.DEVNULL, env=env)
        deadline = time.monotonic() + 20
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the tablet app exited: {self.log.read_text(errors='replace')}")
            try:
                if httpx.get(self.url + "/unlock", timeout=1.0).status_code in (200, 303):
                    return
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the tablet app did not answer: {self.log.read_text(errors='replace')}")
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


StartApp = Callable[..., TabletAppProcess]


@pytest.fixture
def tablet_app() -> Iterator[StartApp]:
    started: list[TabletAppProcess] = []

    def start(db: Path, pin: str | None = None) -> TabletAppProcess:
        app = TabletAppProcess(db, pin)
        started.append(app)
        return app

    yield start
    for app in started:
        app.stop()


def enrolled(tmp_path: Path, node: NodeProcess, enrol: Enrol, user: str = "王芳") -> Path:
    "A tablet enrolled to village V1 while the node runs, encrypted with the PIN"
    _, token = enrol(V1, user)
    path = tmp_path / "tablet.db"
    Tablet.init(path, node.url, token, pin=PIN).close()
    return path


def offline_tablet(tmp_path: Path, names: list[str]) -> Path:
    "A tablet set up without a node (its identity written directly), with residents registered"
    path = tmp_path / "tablet.db"
    tab = Tablet(path, pin=PIN)
    try:
        for k, v in (("device", "tab-pinyin"), ("user", "王芳"), ("unit", V1), ("tier", "village"),
                     ("server", f"http://127.0.0.1:{free_port()}")):
            tab.store.set_meta(k, v)
        for name in names:
            tab.create("person", {"name": name, "groups": ["老年人"]})
    finally:
        tab.close()
    return path


def node_people(db: Path) -> dict[str, dict[str, object]]:
    with Store(db) as s:
        return {str(r.data["name"]): {**r.data, "unit": r.unit} for r in s.records("person")}


def snapshot(page: Page, request: pytest.FixtureRequest, name: str) -> None:
    "A screenshot of a page on the way, beside the last page the ``page`` fixture saves"
    folder = ROOT / "test-output" / re.sub(r"[^\w.-]+", "_", request.node.name)
    folder.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(folder / f"{name}.png"), full_page=True)


def sync_from_page(page: Page) -> None:
    "Press 立即同步 on the sync page and wait for the page to show the result (it reloads itself)"
    with page.expect_navigation(timeout=SYNC_WAIT_MS):
        page.click("#sync-now")
    expect(page.locator("#sync-result")).to_be_visible()


def register_form(page: Page, app_url: str, name: str) -> None:
    "The new-resident form for ``name``, reached as a worker reaches it: 查重 first, then 登记新居民"
    page.goto(app_url + "/people/new")
    page.fill("input[name=q]", name)
    page.click("button:has-text('查重')")
    page.click("#register-new")


def test_register_with_the_node_down_then_sync_reaches_the_workbench(
        page: Page, tmp_path: Path, node: NodeProcess, node_db: Path, enrol: Enrol,
        tablet_app: StartApp, request: pytest.FixtureRequest) -> None:
    node.start()
    db = enrolled(tmp_path, node, enrol)
    node.stop()
    app = tablet_app(db)

    page.goto(app.url + "/")
    expect(page).to_have_url(app.url + "/unlock")
    page.fill("#pin", "135790")
    page.click("button[type=submit]")
    expect(page.locator(".error")).to_have_text("PIN 不正确，请重新输入。")
    page.fill("#pin", PIN)
    page.click("button[type=submit]")
    expect(page).to_have_url(app.url + "/")

    page.click("text=登记居民")
    expect(page.locator("#register-new")).to_have_count(0)  # no form before a search
    page.fill("input[name=q]", "王秀英")
    page.click("button:has-text('查重')")
    expect(page.locator("#no-matches")).to_be_visible()
    page.click("#register-new")
    expect(page.locator("#name")).to_have_value("王秀英")
    page.fill("#id_number", "510903194203081223")
    page.fill("#phone", "13800138000")
    page.fill("#address", "育才社区3栋2单元")
    page.click("label.choice:has-text('老年人')")
    page.click("label.choice:has-text('独居')")
    page.fill("#notes", "独居，女儿在外地\n每周二送药")
    snapshot(page, request, "register-form")
    page.click("button:has-text('保存')")
    expect(page.locator(".notice")).to_have_text("居民已登记，已保存在本机。")
    expect(page.locator("#person-fields")).to_contain_text("1942-03-08")  # from the ID number

    page.click("nav.tabs >> text=同步")
    pending = int(page.locator("#pending").inner_text())
    assert pending > 0
    sync_from_page(page)
    expect(page.locator("#sync-result")).to_have_text(UNREACHABLE)
    assert int(page.locator("#pending").inner_text()) == pending
    assert node_people(node_db) == {}
    n = Node(node_db, TOWNSHIP)  # meanwhile the township sets a task
    try:
        task = ref.add_task(n.editor("刘主任"), "高龄老人走访", "逐户走访", due_date="2099-12-31")
    finally:
        n.close()

    node.start()
    sync_from_page(page)
    expect(page.locator("#sync-result")).to_contain_text("同步完成")
    expect(page.locator("#pending")).to_have_text("0")

    # the worker marks the village's progress on it, with a note, and it goes up at the next sync
    page.click("nav.tabs >> text=通知任务")
    item = page.locator(f"#task-{task}")
    expect(item.locator(".progress")).to_have_text("本村进度：未开始")
    item.locator("input[name=note]").fill("已走访 12 户")
    item.locator("button:has-text('标记已完成')").click()
    expect(page.locator(".notice")).to_have_text("任务进度已保存在本机，下次同步时报给镇街。")
    expect(page.locator(f"#task-{task} .progress")).to_have_text("本村进度：已完成 已走访 12 户")
    snapshot(page, request, "task-marked-done")
    page.click("nav.tabs >> text=同步")
    sync_from_page(page)
    expect(page.locator("#pending")).to_have_text("0")
    on_node = node_people(node_db)
    assert list(on_node) == ["王秀英"]
    assert on_node["王秀英"] == {**on_node["王秀英"], "unit": V1, "id_number": "510903194203081223",
                                 "birth_date": "1942-03-08", "gender": "女", "phone": "13800138000"}
    assert sorted(on_node["王秀英"]["groups"]) == ["独居", "老年人"]  # type: ignore[call-overload]

    # township staff see her in the workbench, found by pinyin initials, with the tablet's own history
    n = Node(node_db, TOWNSHIP)
    try:
        n.accounts.add("liu", "correct horse 1", role="township", display_name="刘主任")
    finally:
        n.close()
    page.goto(node.url + "/login")
    page.fill("input[name=username]", "liu")
    page.fill("input[name=password]", "correct horse 1")
    page.click("button[type=submit]")
    page.click("nav.wb >> text=居民")
    page.fill("input[name=q]", "wxy")
    page.click("button:has-text('搜索')")
    row = page.locator("tr.person")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("王秀英")
    expect(row).to_contain_text("育才社区")
    expect(row).to_contain_text("5109**********1223")
    # by ID number: the form posts it, so no address holds it; Back from her page shows the results again
    by_pinyin = page.url
    page.fill("input[name=q]", "510903194203081223")
    page.click("button:has-text('搜索')")
    page.wait_for_url(lambda url: url != by_pinyin)
    assert "/staff/people?s=" in page.url and "510903194203081223" not in page.url
    results = page.url
    row.locator("a").click()
    expect(page.locator("body")).to_contain_text("育才社区3栋2单元")
    page.go_back()  # a GET: no "confirm form resubmission" page
    expect(page).to_have_url(results)
    expect(page.locator("input[name=q]")).to_have_value("510903194203081223")
    expect(row).to_have_count(1)
    row.locator("a").click()
    expect(page.locator("body")).to_contain_text("育才社区3栋2单元")
    expect(page.locator("body")).to_contain_text("村/社区")  # each change shows its author's tier
    # the history shows the notes on the lines they were typed on
    # (inner_text: to_have_text would take a line break for a space)
    assert page.locator("table.history tr:has-text('备注') td").last.inner_text() == "（无） → 独居，女儿在外地\n每周二送药"
    # and the village's progress on the task on the workbench's 任务 page
    page.click("nav.wb >> text=任务")
    row = page.locator(f"#task-{task} tr.village[data-unit='{V1}']")
    expect(row).to_contain_text("育才社区")
    expect(row).to_contain_text("已完成")
    expect(row).to_contain_text("已走访 12 户")
    snapshot(page, request, "workbench-tasks")


def test_pinyin_finds_zhang_san_by_full_pinyin_and_initials(page: Page, tmp_path: Path, tablet_app: StartApp,
                                                             request: pytest.FixtureRequest) -> None:
    app = tablet_app(offline_tablet(tmp_path, ["张三", "李四", "赵六"]), pin=PIN)
    for query in ("zhangsan", "zs"):
        page.goto(app.url + "/people")
        page.fill("input[name=q]", query)
        page.click("button:has-text('搜索')")
        names = page.locator("#people .name").all_inner_texts()
        assert names == ["张三"], (query, names)
        snapshot(page, request, f"people-{query}")
    page.goto(app.url + "/people/new")
    page.fill("input[name=q]", "zs")
    page.click("button:has-text('查重')")
    expect(page.locator("#matches .name")).to_have_text(["张三"])
    expect(page.locator("#register-new")).to_have_text("以上都不是，登记新居民")
    # a phone number typed is posted: no address holds it; Back and Reload show the results, no resubmit page
    page.fill("input[name=q]", "13900001111")
    page.click("button:has-text('查重')")
    expect(page.locator("#no-matches")).to_be_visible()
    results = page.url
    assert "/people/new?s=" in results and "13900001111" not in results
    page.click("#register-new")
    expect(page.locator("#phone")).to_have_value("13900001111")
    assert "13900001111" not in page.url
    page.go_back()
    expect(page).to_have_url(results)
    expect(page.locator("input[name=q]")).to_have_value("13900001111")
    page.reload()
    expect(page.locator("#no-matches")).to_be_visible()


def test_a_concurrent_staff_edit_shows_as_a_conflict_until_resolved_and_synced(
        page: Page, tmp_path: Path, node: NodeProcess, node_db: Path, enrol: Enrol,
        tablet_app: StartApp, request: pytest.FixtureRequest) -> None:
    node.start()
    db = enrolled(tmp_path, node, enrol)
    with Tablet(db, pin=PIN) as tab:
        rid = tab.create("person", {"name": "冯玉杰", "phone": "13800138000", "groups": ["残疾人"]})
        tab.sync()
    app = tablet_app(db, pin=PIN)

    # the village worker corrects the phone on the tablet (not synced yet) ...
    page.goto(f"{app.url}/people/{rid}")
    page.click("text=修改信息")
    page.fill("#phone", "13811112222")
    page.click("button:has-text('保存')")
    expect(page.locator("#phone")).to_have_text("13811112222")
    # ... while township staff correct it on the node, having seen the old value only
    staff = Node(node_db, TOWNSHIP)
    try:
        staff.editor("镇街中心-刘主任").update(rid, {"phone": "13899990000"})
    finally:
        staff.close()

    page.goto(app.url + "/sync")
    sync_from_page(page)
    expect(page.locator("#sync-result")).to_contain_text("同步完成")
    conflict = page.locator(f"[data-conflict='{rid}:phone']")
    expect(conflict).to_be_visible()
    expect(conflict).to_contain_text("冯玉杰")
    expect(conflict.locator(".cand .val")).to_have_text(["13899990000", "13811112222"])
    expect(conflict).to_contain_text("镇街中心-刘主任")
    expect(conflict).to_contain_text("王芳")
    expect(page.locator("nav.tabs")).to_contain_text("冲突 1")
    snapshot(page, request, "conflict-on-sync-page")
    page.goto(f"{app.url}/people/{rid}")
    expect(page.locator("#conflicts")).to_contain_text("13811112222")
    snapshot(page, request, "conflict-on-resident-page")

    # the township resolves it on the node: the number the resident gave the village worker
    staff = Node(node_db, TOWNSHIP)
    try:
        staff.editor("镇街中心-刘主任").resolve(rid, "phone", "13811112222")
        assert staff.store.conflicts(record=rid) == []
    finally:
        staff.close()

    page.goto(app.url + "/sync")
    sync_from_page(page)
    expect(page.locator("#sync-result")).to_contain_text("同步完成")
    expect(page.locator("#no-conflicts")).to_be_visible()
    expect(page.locator("[data-conflict]")).to_have_count(0)
    page.goto(f"{app.url}/people/{rid}")
    expect(page.locator("#phone")).to_have_text("13811112222")
    expect(page.locator("#conflicts")).to_have_count(0)


def test_an_unreachable_node_is_said_plainly_and_nothing_is_lost(
        page: Page, tmp_path: Path, node: NodeProcess, enrol: Enrol, tablet_app: StartApp) -> None:
    node.start()
    db = enrolled(tmp_path, node, enrol)
    node.kill()
    app = tablet_app(db, pin=PIN)
    register_form(page, app.url, "李桂兰")
    page.click("button:has-text('保存')")
    expect(page.locator(".notice")).to_have_text("居民已登记，已保存在本机。")

    page.goto(app.url + "/sync")
    pending = page.locator("#pending").inner_text()
    sync_from_page(page)
    expect(page.locator("#sync-result")).to_have_text(UNREACHABLE)
    expect(page.locator("#pending")).to_have_text(pending)
    page.goto(app.url + "/people")
    expect(page.locator("#people .name")).to_have_text(["李桂兰"])
    page.goto(app.url + "/sync")  # the page a person looks at: the message, the changes still waiting


def test_the_sync_page_shows_progress_while_a_sync_runs(page: Page, tmp_path: Path, tablet_app: StartApp,
                                                        request: pytest.FixtureRequest) -> None:
    """The progress bar follows /api/status. The only stand-in: the first status answers say a sync of
    10 changes is 3 along, for as long as the test looks; then the real answers come through."""
    app = tablet_app(offline_tablet(tmp_path, ["张三"]), pin=PIN)
    hold = [True]

    def status(route: Route) -> None:
        if hold[0]:
            route.fulfill(json={"pending": 10, "conflicts": 0, "last_sync": None, "job": {
                "state": "running", "total": 10, "sent": 3, "received": 2, "rounds": 1, "conflicts": 0,
                "code": "", "message": "", "started": 0, "finished": 0}})
        else:
            route.continue_()

    page.route("**/api/status", status)
    page.goto(app.url + "/sync")
    expect(page.locator("#progress-box")).to_be_hidden()
    page.click("#sync-now")
    expect(page.locator("#sync-progress-text")).to_have_text("正在同步… 已发出 3 / 10 条，已收到 2 条")
    expect(page.locator("#progress-box")).to_be_visible()
    expect(page.locator("#sync-now")).to_be_disabled()
    assert page.locator("#sync-progress").evaluate("p => [p.value, p.max]") == [3, 10]
    snapshot(page, request, "sync-in-progress")
    with page.expect_navigation(timeout=SYNC_WAIT_MS):
        hold[0] = False
    expect(page.locator("#sync-result")).to_have_text(UNREACHABLE)  # this tablet's node is nowhere


def test_back_then_save_again_makes_no_second_record(page: Page, tmp_path: Path, tablet_app: StartApp) -> None:
    """After saving a new resident, need or service the worker presses Back: Chromium fetches the form again
    and refills what she typed, and its record id too, so that pressing 保存 again makes no second record"""
    app = tablet_app(offline_tablet(tmp_path, ["张秀英"]), pin=PIN)
    page.goto(app.url + "/people")
    page.click("#people a:has-text('张秀英')")
    person = page.url

    def save_back_save(done: str) -> None:
        page.click("button:has-text('保存')")
        page.wait_for_url(f"**done={done}")
        page.go_back()
        page.wait_for_load_state()
        page.click("button:has-text('保存')")
        page.wait_for_url("**/people/**")

    page.click("a:has-text('＋ 记录服务')")
    page.click("label.choice:has-text('家政服务')")
    page.fill("#minutes", "45")
    page.fill("#notes", "打扫卫生")
    save_back_save("service")
    register_form(page, app.url, "李桂兰")  # a resident without ID number or birth date
    page.fill("#phone", "13800138000")
    page.click("label.choice:has-text('独居')")
    save_back_save("created")
    page.goto(person)
    page.click("a:has-text('＋ 记录需求')")
    page.click("label.choice:has-text('养老服务')")
    page.fill("#description", "需要助餐")
    save_back_save("need")

    page.goto(person)
    expect(page.locator("#services li")).to_have_count(1)
    expect(page.locator("#needs li")).to_have_count(1)
    page.goto(app.url + "/people")
    expect(page.locator("#people .name")).to_have_text(["李桂兰", "张秀英"])


def test_notes_and_descriptions_are_shown_on_the_lines_they_were_typed_on(
        page: Page, tmp_path: Path, tablet_app: StartApp) -> None:
    app = tablet_app(offline_tablet(tmp_path, []), pin=PIN)
    register_form(page, app.url, "张秀英")
    page.fill("#notes", "1. 每周二送药\n2. 女儿电话 13800138000")
    page.click("button:has-text('保存')")
    page.wait_for_url("**done=created")
    # inner_text, as a person sees it (to_have_text would take a line break for a space)
    assert page.locator("#person-fields tr:has-text('备注') td").inner_text() == "1. 每周二送药\n2. 女儿电话 13800138000"
    page.click("a:has-text('＋ 记录需求')")
    page.click("label.choice:has-text('养老服务')")
    page.fill("#description", "需要助餐\n每天中午一次")
    page.fill("#due_date", "2030-06-30")
    page.click("button:has-text('保存')")
    page.wait_for_url("**done=need")
    assert page.locator("#needs .meta").inner_text() == "需要助餐\n每天中午一次 · 截止 2030-06-30"
    page.goto(app.url + "/needs")
    assert page.locator("#needs .meta").inner_text() == "需要助餐\n每天中午一次 · 截止 2030-06-30"
