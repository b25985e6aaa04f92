"""The township workbench in headless Chromium against a real node, with real tablets syncing over HTTP:
a concurrent edit resolved with one click, duplicates merged with their needs and services, the needs
board, and the devices page. Each test's last page is saved under test-output/ for a person to look at."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path

from playwright.sync_api import Page, expect

from client.tablet import Tablet
from e2e_harness import TOWNSHIP, V1, V2, Enrol, MakeTablet, NodeProcess
from server.node import Node
from sync.hlc import pack, wall_ms
from sync.ops import Op
from sync.store import Store
from sync.types import SET

PASSWORD = "correct horse 1"
DAY_MS = 86_400_000


def staff_account(db: Path) -> None:
    n = Node(db, TOWNSHIP)
    try:
        n.accounts.add("liu", PASSWORD, role="township", display_name="刘主任")
    finally:
        n.close()


def sign_in(page: Page, node: NodeProcess) -> None:
    page.goto(node.url + "/login")
    page.fill("input[name=username]", "liu")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator("nav.wb")).to_contain_text("需求看板")


def test_a_concurrent_edit_is_resolved_with_one_click_and_reaches_the_tablet(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    staff_account(node_db)
    _, token = enrol(V1, "王芳")
    node.start()
    tab = make_tablet(token)
    pid = tab.create("person", {"name": "冯玉杰", "gender": "女", "phone": "13800000000"})
    tab.sync()
    tab.update(pid, {"phone": "13811112222"})  # the village worker, offline for now

    sign_in(page, node)  # meanwhile township staff correct the same phone
    page.goto(f"{node.url}/staff/records/{pid}")
    page.fill("input[name=phone]", "13899990000")
    page.click("text=保存修改")
    expect(page.locator(".notice")).to_contain_text("已保存：电话")

    tab.sync()  # both edits meet: a conflict, the township's value shown meanwhile
    assert tab.get(pid).data["phone"] == "13899990000"  # type: ignore[union-attr]
    assert [c.field for c in tab.conflicts()] == ["phone"]

    page.goto(node.url + "/staff/conflicts")
    card = page.locator(f".conflict[data-record='{pid}']")
    expect(card).to_contain_text("冯玉杰 · 电话")
    expect(card).to_contain_text("育才社区")
    village = card.locator(".cand", has_text="13811112222")
    expect(village).to_contain_text("王芳")
    expect(village).to_contain_text("村/社区")
    expect(card.locator(".cand.shown")).to_contain_text("13899990000")
    village.get_by_role("button", name="保留此值").click()  # the one click
    expect(page.locator(".notice")).to_contain_text("定为“13811112222”")
    expect(page.locator(".conflict")).to_have_count(0)

    tab.sync()
    assert tab.get(pid).data["phone"] == "13811112222"  # type: ignore[union-attr]
    assert tab.conflicts() == []
    with Store(node_db) as s:
        assert s.get(pid).data["phone"] == "13811112222" and s.conflicts() == []  # type: ignore[union-attr]

    page.goto(f"{node.url}/staff/records/{pid}")  # the last page: the record's history
    rows = page.locator("table.history tr")
    expect(rows.filter(has_text="13811112222")).to_have_count(2)  # the worker's edit, then the resolution
    expect(rows.filter(has_text="liu")).to_have_count(2)  # the correction and the resolution


def _register(tab: Tablet, name: str) -> tuple[str, str, str]:
    "A resident with a need and a service: (person, need, service)"
    p = tab.create("person", {"name": name, "gender": "女", "birth_date": "1942-03-08",
                              "id_number": "51090319420308002X", "groups": ["老年人"]})
    n = tab.create("need", {"person": p, "category": "养老服务", "status": "待处理", "description": "需要助餐"})
    s = tab.create("service", {"person": p, "need": n, "service_type": "养老服务", "served_at": "2025-05-01T09:30",
                               "minutes": 40})
    return p, n, s


def test_duplicates_found_on_the_page_are_merged_and_their_needs_follow(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    staff_account(node_db)
    t1, t2 = enrol(V1, "王芳")[1], enrol(V2, "李娜")[1]
    node.start()
    tab1, tab2 = make_tablet(t1), make_tablet(t2)
    keep, keep_need, keep_service = _register(tab1, "张秀英")
    drop, drop_need, drop_service = _register(tab2, "张秀英")  # the same woman, registered again in V2
    near = sorted((tab1.create("person", {"name": "王建国"}), tab1.create("person", {"name": "王建华"})))
    tab1.sync()
    tab2.sync()

    sign_in(page, node)
    page.goto(node.url + "/staff/duplicates")
    # two brothers whose names are one character apart: marked as two people, they leave the list
    brothers = page.locator(f".pair[data-a='{near[0]}'][data-b='{near[1]}']")
    expect(brothers).to_contain_text("只差一个字")
    brothers.get_by_role("button", name="不是同一人").click()
    expect(page.locator(".notice")).to_contain_text("已标记为不是同一人")
    expect(brothers).to_have_count(0)
    page.get_by_text("已标记为不是同一人的 1 组").click()
    expect(brothers).to_contain_text("由 liu 于")
    page.goto(node.url + "/staff/duplicates")
    a, b = sorted((keep, drop))
    pair = page.locator(f".pair[data-a='{a}'][data-b='{b}']")
    expect(pair).to_contain_text("身份证号相同")
    expect(pair).to_contain_text("姓名和出生日期相同")
    expect(pair).to_contain_text("育才社区")
    expect(pair).to_contain_text("广场社区")
    page.once("dialog", lambda d: d.accept())  # "keep this one and merge the other?"
    pair.locator(f"button[data-keep='{keep}']").click()
    expect(page.locator(".notice")).to_contain_text("1 条需求和 1 条服务记录随之转移")
    expect(page.locator(".pair")).to_have_count(0)

    with Store(node_db) as s:
        for rid in (keep_need, keep_service, drop_need, drop_service):
            assert (s.get(rid).data["person"], s.get(rid).unit) == (keep, V1)  # type: ignore[union-attr]
        gone = s.get(drop)
        assert gone is not None and gone.deleted and gone.data["merged_into"] == keep
        assert s.resolve_id(drop) == keep
        assert {h.user for h in s.history(drop)} >= {"李娜", "liu"}  # the old record's history is kept
    tab2.sync()  # the duplicate's need and service went with the resident, to V1's tablets
    assert tab2.get(drop_need) is None and tab2.get(drop_service) is None
    assert tab2.store.resolve_id(drop) == keep and tab2.get(drop).deleted  # type: ignore[union-attr]
    tab1.sync()
    for rid in (keep_need, drop_need, drop_service):
        assert tab1.get(rid).data["person"] == keep  # type: ignore[union-attr]

    page.goto(f"{node.url}/staff/records/{keep}")  # the last page: the kept resident, with what was merged
    expect(page.get_by_text("合并进来的记录")).to_be_visible()
    expect(page.locator("a", has_text=drop[-8:])).to_be_visible()
    expect(page.locator("a", has_text="张秀英的需求（养老服务）")).to_have_count(2)


def test_the_needs_board_assigns_a_need_and_highlights_an_overdue_one(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    staff_account(node_db)
    _, token = enrol(V1, "王芳")
    node.start()
    tab = make_tablet(token)
    p = tab.create("person", {"name": "何玉兰", "groups": ["老年人"]})
    late = tab.create("need", {"person": p, "category": "医疗健康", "status": "待处理", "urgency": "紧急",
                               "due_date": "2020-01-01", "description": "陪同就医"})
    fresh = tab.create("need", {"person": p, "category": "生活物资", "status": "待处理", "description": "米面油"})
    tab.sync()

    sign_in(page, node)
    page.goto(node.url + "/staff/needs")
    overdue = page.locator(f"tr.need[data-id='{late}']")
    expect(overdue).to_have_class(re.compile(r"\boverdue\b"))
    expect(overdue).to_contain_text("已逾期")
    assert overdue.locator("td").first.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(253, 236, 234)"
    assert page.locator("tr.need").first.get_attribute("data-id") == late  # overdue first
    expect(page.locator(f"tr.need[data-id='{fresh}']")).not_to_have_class(re.compile(r"\boverdue\b"))

    row = page.locator(f"tr.need[data-id='{fresh}']")
    row.locator("input[name=assignee]").fill("陈社工")
    row.locator("input[name=due_date]").fill("2099-06-30")
    row.get_by_role("button", name="保存").click()
    expect(page.locator(".notice")).to_contain_text("负责人“陈社工”")
    row = page.locator(f"tr.need[data-id='{fresh}']")
    expect(row.locator("input[name=assignee]")).to_have_value("陈社工")
    expect(row.locator("select[name=status]")).to_have_value("已分派")

    tab.sync()
    got = tab.get(fresh)
    assert got is not None and (got.data["assignee"], got.data["due_date"], got.data["status"]) == (
        "陈社工", "2099-06-30", "已分派")
    page.goto(node.url + "/staff/needs?status=overdue")
    expect(page.locator("tr.need")).to_have_count(1)
    page.goto(node.url + "/staff/needs")  # the last page: the whole board


def test_saving_one_field_leaves_multi_line_notes_and_an_unreal_date_as_they_were(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    "What Chromium sends back from a record's page: a textarea's CRLF, an empty date input for 1942-02-30"
    staff_account(node_db)
    _, token = enrol(V1, "王芳")
    node.start()
    tab = make_tablet(token)
    pid = tab.create("person", {"name": "冯玉杰", "phone": "13800000000", "notes": "独居\n每周三送药"})
    tab.sync()
    with Store(node_db) as s:  # as the schema took it before it checked dates
        s.apply([Op("tab-old", 1, pack(wall_ms()), "person", pid, "birth_date", SET, "1942-02-30", (), "王芳", V1, 1)])

    sign_in(page, node)
    page.goto(f"{node.url}/staff/records/{pid}")
    page.fill("input[name=phone]", "13811112222")
    page.click("text=保存修改")
    expect(page.locator(".notice")).to_contain_text("已保存：电话。")
    with Store(node_db) as s:
        rec = s.get(pid)
        assert rec is not None and (rec.data["phone"], rec.data["notes"], rec.data["birth_date"]) == (
            "13811112222", "独居\n每周三送药", "1942-02-30")
    expect(page.locator("textarea[name=notes]")).to_have_value("独居\n每周三送药")  # the last page


def test_an_address_conflict_is_typed_on_several_lines(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    "Enter in the typed-value box of a free-text field starts a new line instead of sending the form"
    staff_account(node_db)
    _, token = enrol(V1, "王芳")
    node.start()
    tab = make_tablet(token)
    pid = tab.create("person", {"name": "冯玉杰", "address": "育才路 2 号"})
    tab.sync()
    tab.update(pid, {"address": "育才路 4 号"})  # the village worker, offline for now
    sign_in(page, node)
    page.goto(f"{node.url}/staff/records/{pid}")
    page.fill("textarea[name=address]", "育才路 3 号")
    page.click("text=保存修改")
    expect(page.locator(".notice")).to_contain_text("已保存：住址")
    tab.sync()

    page.goto(node.url + "/staff/conflicts")
    box = page.locator(f".conflict[data-record='{pid}'] [name=typed]")
    box.press_sequentially("育才路 5 号")
    box.press("Enter")
    box.press_sequentially("3 单元 201")
    expect(page.locator(".notice")).to_have_count(0)  # Enter sent nothing
    page.click("text=用这个值")
    expect(page.locator(".notice")).to_contain_text("已处理")
    with Store(node_db) as s:
        rec = s.get(pid)
        assert rec is not None and rec.data["address"] == "育才路 5 号\r\n3 单元 201" and s.conflicts() == []


def test_a_resident_who_died_is_removed_after_confirming_and_leaves_the_tablet(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    "迁出或注销: the reason and a two-line note, the confirm step, then the tablet's next sync drops her"
    staff_account(node_db)
    _, token = enrol(V1, "王芳")
    node.start()
    tab = make_tablet(token)
    pid, need, _ = _register(tab, "冯玉杰")
    tab.sync()

    sign_in(page, node)
    page.goto(f"{node.url}/staff/records/{pid}")
    page.select_option("select[name=reason]", "去世")
    page.fill("textarea[name=note]", "2026年11月20日去世\n家属已告知村委")
    page.click("text=迁出/注销…")
    confirm = page.locator("#remove-confirm")
    expect(confirm).to_contain_text("确认把冯玉杰移出本镇街的记录？")
    expect(confirm).to_contain_text("以下 1 条未完成的需求将改为“已取消”")
    page.click("text=确认移出")
    expect(page.locator(".notice")).to_contain_text("已将冯玉杰移出本镇街（去世），1 条未完成的需求已改为“已取消”")
    expect(page.locator(".chip.red", has_text="已移出")).to_have_count(1)
    with Store(node_db) as s:
        rec = s.get(pid)
        assert rec is not None and rec.deleted and s.get(need).data["status"] == "已取消"  # type: ignore[union-attr]
        (notes,) = [op.value for op in s.record_ops(pid) if op.field == "notes"]
        assert notes.endswith("移出本镇街（去世）：2026年11月20日去世\r\n家属已告知村委")  # as the textarea sent it

    tab.sync()
    assert tab.list("person") == [] and tab.get(need).data["status"] == "已取消"  # type: ignore[union-attr]


def test_the_devices_page_shows_a_gap_and_a_skewed_clock(
        page: Page, node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet) -> None:
    staff_account(node_db)
    gap_dev, gap_token = enrol(V1, "王芳")
    fast_dev, fast_token = enrol(V2, "李娜")
    node.start()
    gappy = make_tablet(gap_token, "gappy")
    pid = gappy.create("person", {"name": "周大伯", "phone": "13700000000"})  # ops 1-3
    for phone in ("13700000001", "13700000002", "13700000003", "13700000004"):
        gappy.update(pid, {"phone": phone})  # ops 4-7
    # ops 4-6 are lost on the tablet (a damaged card, a restored backup): the node must see the hole
    gappy.store.conn.execute("DELETE FROM ops WHERE counter BETWEEN 4 AND 6 AND site = "
                             "(SELECT id FROM sites WHERE device = ?)", (gap_dev,))
    gappy.sync()
    fast = make_tablet(fast_token, "fast", clock=lambda: wall_ms() + 3 * DAY_MS)
    fast.create("person", {"name": "钱奶奶"})
    fast.sync()
    assert fast.pending() == 0  # its ops were re-stamped to the node's clock and accepted

    sign_in(page, node)
    page.goto(node.url + "/staff/devices")
    gap_row = page.locator(f"tr.device[data-device='{gap_dev}']")
    expect(gap_row.locator("td.gaps")).to_contain_text(f"设备 {gap_dev} 缺少第4–6条")
    expect(gap_row.locator("td.skew")).to_have_text("准确")
    fast_row = page.locator(f"tr.device[data-device='{fast_dev}']")
    skew = fast_row.locator("td.skew .red")
    expect(skew).to_have_text("快 3 天")
    assert skew.evaluate("e => getComputedStyle(e).color") == "rgb(183, 28, 28)"
    expect(fast_row).to_contain_text("广场社区")
    expect(fast_row).to_contain_text("0.1.0")
    expect(fast_row.locator("td.gaps")).to_contain_text("无")

    # enrol a new tablet: the one-time code with its QR code
    page.select_option("select[name=unit]", V2)
    page.fill("input[name=user]", "新社工")
    page.click("text=生成登记码")
    expect(page.locator(".qr svg")).to_be_visible()
    code = page.locator(".enrol-code").inner_text()
    assert re.fullmatch(r"[0-9A-Z]{5}-[0-9A-Z]{5}", code)
    # shown once: Reload makes no second code (as a re-posted form did) and shows this one no more
    page.reload()
    expect(page.locator(".notice")).to_contain_text("登记码只显示一次")
    expect(page.locator(".enrol-code")).to_have_count(0)
    with closing(sqlite3.connect(node_db)) as db:
        assert db.execute("SELECT count(*) FROM enrolments").fetchone() == (1,)

    # revoke the gappy tablet, after the confirmation page
    page.goto(node.url + "/staff/devices")
    page.locator(f"tr.device[data-device='{gap_dev}']").get_by_role("link", name="停用…").click()
    expect(page.get_by_role("heading", name=f"停用设备 {gap_dev}？")).to_be_visible()
    page.click("#revoke")
    expect(page.locator(".notice")).to_contain_text(f"设备 {gap_dev} 已停用")
    expect(page.locator(f"tr.device[data-device='{gap_dev}']")).to_contain_text("已停用")
    n = Node(node_db, TOWNSHIP)
    try:
        d = n.device(gap_dev)
        assert d is not None and d.revoked and not d.wipe
    finally:
        n.close()
