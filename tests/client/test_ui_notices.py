"""What came down to the tablet, shown in the tablet app (read-only): the notices and tasks of the
township, county and city, newest first, on the home page (the newest few, with how many are new) and on
a 通知任务 page of their own, where the worker marks the village's progress on a task (one report per task and
village, whichever tablet writes it); and a need's escalation (吹哨报到) with the county's answer, on every page
that shows the need, and nothing for a need never escalated.

The first tests apply a node's ops straight to the tablet's store, as a sync would (no node runs, see
``test_ui``); the last has a real sync bring them: a township node on loopback, its county's node
answering through a link.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import re
import time
from collections.abc import Iterator
from contextlib import closing
from pathlib import Path

import pytest
from click.testing import CliRunner

from client.cli import cli
from client.tablet import Tablet
from client.ui import TabletApp, create_app
from e2e_harness import TOWNSHIP, V1, Enrol, NodeProcess, no_sleep
from server import escalations
from server.auth import Staff
from server.node import Node
from server.reference import publish_units
from server.relay import sync_link
from sync import reference as ref
from sync import units as unitlib
from sync.edit import Editor
from sync.errors import InvalidValue
from sync.store import Store
from sync.types import china_time
from test_ui import ORIGIN, PIN, PORT, VILLAGE, TestClient, client, db, people, post, tapp, unlocked  # noqa: F401

COUNTY = "510903000000"  # 船山区


@pytest.fixture
def township() -> Iterator[Store]:
    "The township node's replica, whose ops reach the tablet as its sync would bring them"
    with Store() as s:
        yield s


def editor(node: Store, unit: str = TOWNSHIP, tier: str = "township") -> Editor:
    return Editor(node, device=f"node-{unit}", user="liu", unit=unit, tier=tier)


def deliver(tapp: TabletApp, node: Store) -> None:
    "Everything the node's replica holds, applied to the tablet (again: applying an op twice changes nothing)"
    tapp.read(lambda t: t.store.apply([op for _, op in node.ops_since(0)]))


def day(offset: int) -> str:
    "China's date ``offset`` days from today"
    return (china_time().date() + dt.timedelta(days=offset)).isoformat()


def items(html: str, section: str) -> list[str]:
    "The text of each item of a list (``id``) on a page, tags stripped, whitespace collapsed"
    found = re.search(rf'<ul class="list" id="{section}">(.*?)</ul>', html, re.S)
    assert found, html
    return [" ".join(re.sub(r"<[^>]+>", " ", li).split()) for li in found.group(1).split("<li>")[1:]]


def test_notices_and_tasks_from_above_are_shown_newest_first_and_new_ones_counted(
        tapp: TabletApp, unlocked: TestClient, township: Store) -> None:
    home = unlocked.get("/").text
    assert "还没有收到镇街、县区和市里的通知和任务" in home and "条新" not in home
    ed = editor(township)
    ed.create("unit", {"code": TOWNSHIP, "name": "育才路街道", "tier": "township"}, record=ref.unit_id(TOWNSHIP))
    ref.add_notice(ed, "五月例会通知", "周五下午三点开会\n请带好走访记录", published_at="2024-05-01T08:00")
    ref.add_notice(ed, "汛期巡查通知", "各村做好汛期巡查", published_at="2024-06-03T09:30")
    for title, description, due, status in (("高龄老人走访", "逐户走访\n填写走访表", day(-1), "待办"),
                                            ("台账整理", "", day(-1), "已完成"), ("防汛物资清点", "", day(7), "待办")):
        ref.add_task(ed, title, description, due_date=due, status=status)
        time.sleep(0.002)  # set in this order: ids (UUIDv7) of different milliseconds
    deliver(tapp, township)

    home = unlocked.get("/").text
    assert "5 条新" in home and "全部通知任务（5）" in home
    assert re.search(r'href="/notices" class="">通知任务\s*<span class="badge"[^>]*>5</span>', home)
    assert home.index("汛期巡查通知") < home.index("五月例会通知")  # newest first
    assert "高龄老人走访" in home and "周五下午三点开会" not in home  # the home page lists titles only

    page = unlocked.get("/notices")
    assert page.status_code == 200
    assert items(page.text, "notices") == [
        "汛期巡查通知 新 育才路街道 发布 · 2024-06-03 09:30 各村做好汛期巡查",
        "五月例会通知 新 育才路街道 发布 · 2024-05-01 08:00 周五下午三点开会 请带好走访记录"]
    assert '<div class="lines">周五下午三点开会\n请带好走访记录</div>' in page.text  # its line breaks kept
    assert items(page.text, "tasks") == [  # the newest set first
        f"防汛物资清点 新 待办 育才路街道 布置 · 截止 {day(7)} 本村进度： 未开始 标记进行中 标记已完成",
        f"台账整理 新 已完成 育才路街道 布置 · 截止 {day(-1)} 本村进度： 未开始 标记进行中 标记已完成",
        f"高龄老人走访 新 待办 育才路街道 布置 · 截止 {day(-1)}（已逾期） 逐户走访 填写走访表 本村进度： 未开始 "
        "标记进行中 标记已完成"]
    assert page.text.count("已逾期") == 1  # a task done is not overdue

    # seen now: no longer new; a notice that comes later is
    home = unlocked.get("/").text
    assert "条新" not in home and 'title="新的通知和任务"' not in home
    ref.add_notice(ed, "冬季防火通知", published_at="2024-12-01T10:00")
    deliver(tapp, township)
    assert "1 条新" in unlocked.get("/").text
    notices = items(unlocked.get("/notices").text, "notices")
    assert [n.split(" 育才路街道")[0] for n in notices] == ["冬季防火通知 新", "汛期巡查通知", "五月例会通知"]


def test_the_worker_marks_the_villages_progress_on_a_task_and_two_tablets_keep_one_report(
        tapp: TabletApp, unlocked: TestClient, township: Store) -> None:
    task = ref.add_task(editor(township, COUNTY, "county"), "高龄老人走访", due_date=day(-1))
    deliver(tapp, township)
    assert "（已逾期）" in unlocked.get("/notices").text

    r = post(unlocked, tapp, f"/tasks/{task}/report", {"status": "进行中", "note": "已走访 12 户"})
    assert r.status_code == 303 and r.headers["location"] == f"/notices?done=reported#task-{task}"
    page = unlocked.get("/notices?done=reported").text
    assert "任务进度已保存在本机" in page and 'maxlength="200"' in page
    assert items(page, "tasks") == [f"高龄老人走访 待办 {COUNTY} 布置 · 截止 {day(-1)}（已逾期） 本村进度： 进行中 已走访 12 户 "
                                    "标记已完成"]
    post(unlocked, tapp, f"/tasks/{task}/report", {"status": "已完成", "note": "全部走访完"})
    page = unlocked.get("/notices").text
    assert "本村进度： 已完成 全部走访完" in items(page, "tasks")[0] and "已逾期" not in page  # done here: not overdue

    # bad input: a clear page, nothing written
    before = tapp.read(lambda t: t.pending())
    for path, form, says in ((f"/tasks/{task}/report", {"status": "办完了"}, "进度只能是未开始、进行中、已完成之一"),
                             (f"/tasks/{task}/report", {"status": "已完成", "note": "字" * 201}, "最多 200 个字"),
                             (f"/tasks/{VILLAGE}/report", {"status": "已完成"}, "没有找到这项任务")):
        r = post(unlocked, tapp, path, form)
        assert r.status_code == 400 and says in r.text
    assert tapp.read(lambda t: t.pending()) == before

    # the report is one record per task and village, whichever tablet writes it: a second tablet of the
    # village marking it offline writes the same record, and the two converge on the later write
    reports = tapp.read(lambda t: t.task_reports())
    assert list(reports) == [task] and reports[task]["id"] == ref.task_report_id(task, VILLAGE)
    time.sleep(0.002)  # written later: its clock wins
    with Store() as other:
        other.apply([op for _, op in township.ops_since(0)])
        ref.report_task(Editor(other, device="tab-2", user="李", unit=VILLAGE, tier="village"), task, VILLAGE,
                        "进行中", "还差 3 户")
        tapp.read(lambda t: t.store.apply([op for _, op in other.ops_since(0)]))
        other.apply([op for _, op in tapp.read(lambda t: t.store.ops_since(0))])
        assert tapp.read(lambda t: t.store.digest()) == other.digest()
    assert tapp.read(lambda t: list(t.task_reports().values())) == [
        {"id": ref.task_report_id(task, VILLAGE), "unit": VILLAGE, "task": task, "status": "进行中", "note": "还差 3 户"}]

    # the county cancels the task: a page shown before refuses the report in Chinese, the API with its code
    ref.set_task_status(editor(township, COUNTY, "county"), task, "已取消")
    deliver(tapp, township)
    before = tapp.read(lambda t: t.pending())
    r = post(unlocked, tapp, f"/tasks/{task}/report", {"status": "已完成"})
    assert r.status_code == 400 and ref.TASK_CANCELLED in r.text, r.text
    with pytest.raises(InvalidValue) as refused:
        tapp.read(lambda t: t.report_task(task, "已完成"))
    assert refused.value.code == "task_cancelled"
    assert tapp.read(lambda t: t.pending()) == before


def test_a_notice_from_a_unit_the_tablet_has_no_name_for_names_its_code(
        tapp: TabletApp, unlocked: TestClient, township: Store) -> None:
    ref.add_notice(editor(township, COUNTY, "county"), "全区通知", published_at="2024-06-03T09:30")
    deliver(tapp, township)
    assert items(unlocked.get("/notices").text, "notices") == [f"全区通知 新 {COUNTY} 发布 · 2024-06-03 09:30"]


def test_a_needs_escalation_and_the_countys_answer_show_wherever_the_need_does(
        tapp: TabletApp, unlocked: TestClient, township: Store) -> None:
    pid = people(tapp)["张三"]
    assert post(unlocked, tapp, "/needs/new", {"person": pid, "category": "养老服务", "urgency": "一般"}).status_code == 303
    (need,) = tapp.read(lambda t: [n.id for n in t.list("need")])
    pages = (f"/needs/{need}/edit", f"/people/{pid}", "/needs")
    for path in pages:  # never escalated: nothing about it
        assert "吹哨报到" not in unlocked.get(path).text, path

    esc = editor(township).create("escalation", {
        "unit": VILLAGE, "need": need, "category": "养老服务", "summary": "独居老人需每日送餐",
        "status": "已上报", "escalated_at": "2024-06-03T09:30"})
    deliver(tapp, township)
    edit = unlocked.get(pages[0]).text
    assert 'id="escalation"' in edit and "吹哨报到（上报县区）" in edit and "等待县区受理" in edit
    assert "独居老人需每日送餐" in edit and "2024-06-03 09:30" in edit and "县区答复" not in edit
    for path in pages[1:]:
        assert "吹哨报到·已上报" in unlocked.get(path).text, path

    county = editor(township, COUNTY, "county")
    county.update(esc, {"status": "已办结", "department": "区民政局", "answer": "已协调社区食堂\n每日送餐上门",
                        "answered_at": "2024-06-05T16:00"})
    deliver(tapp, township)
    edit = unlocked.get(pages[0]).text
    assert "县区已办结" in edit and "区民政局" in edit
    assert '<b class="lines">已协调社区食堂\n每日送餐上门</b>' in edit and "2024-06-05 16:00" in edit
    for path in pages[1:]:
        listed = unlocked.get(path).text
        assert "吹哨报到·已办结" in listed and "县区答复：已协调社区食堂\n每日送餐上门" in listed, path

    county.update(esc, {"status": "已退回", "answer": "请镇街先协调辖区资源"})
    deliver(tapp, township)
    edit = unlocked.get(pages[0]).text
    assert "县区没有受理，已退回镇街" in edit and "退回原因" in edit and "请镇街先协调辖区资源" in edit
    for path in pages[1:]:
        listed = unlocked.get(path).text
        assert "吹哨报到·已退回" in listed and "退回原因：请镇街先协调辖区资源" in listed, path

    editor(township).update(esc, {"status": "已撤回", "answer": "居民已迁出，需求已取消"})  # the township's step
    deliver(tapp, township)
    edit = unlocked.get(pages[0]).text
    assert "镇街已撤回上报" in edit and "撤回原因" in edit and "居民已迁出，需求已取消" in edit
    assert "吹哨报到·已撤回" in unlocked.get("/needs").text


def test_the_tablet_commands_list_them_as_the_app_does(db: Path, township: Store) -> None:
    ed = editor(township)
    ed.create("unit", {"code": TOWNSHIP, "name": "育才路街道", "tier": "township"}, record=ref.unit_id(TOWNSHIP))
    ref.add_notice(ed, "汛期巡查通知", "各村做好汛期巡查\n发现险情及时上报", published_at="2024-06-03T09:30")
    ref.add_task(ed, "高龄老人走访", "逐户走访", due_date=day(-1))
    ref.add_task(ed, "防汛物资清点", due_date=day(7), status="已完成")
    with closing(Tablet(db, pin=PIN)) as tab:
        tab.store.apply([op for _, op in township.ops_since(0)])
    run = functools.partial(CliRunner().invoke, cli, env={"CUNSYNC_PIN": PIN})
    r = run(["tablet", "notices", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert r.output == "2024-06-03 09:30  育才路街道  汛期巡查通知\n    各村做好汛期巡查\n    发现险情及时上报\n"
    r = run(["tablet", "tasks", "--db", str(db)])
    assert r.exit_code == 0, r.output
    assert sorted(r.output.splitlines()) == sorted([
        f"due {day(-1)} OVERDUE  待办  高龄老人走访  (育才路街道)", "    逐户走访",
        f"due {day(7)}  已完成  防汛物资清点  (育才路街道)"])
    r = run(["tablet", "tasks", "--db", str(db), "--json"])
    assert sorted((t["title"], t["overdue"]) for t in map(json.loads, r.output.splitlines())) == [
        ("防汛物资清点", False), ("高龄老人走访", True)]


# -- a real sync brings them ------------------------------------------------------------------------

def test_a_sync_brings_the_notices_tasks_and_answer_to_the_tablet_app(
        tmp_path: Path, node: NodeProcess, node_db: Path, enrol: Enrol) -> None:
    county_db = tmp_path / "county.db"
    _, link = enrol(COUNTY, "船山区-link", tier="county")  # the county's link credential on the township
    node.start()
    with Tablet.init(tmp_path / "tablet.db", node.url, enrol(V1, "王芳")[1], sleep=no_sleep) as tab:
        need = tab.create("need", {"person": tab.create("person", {"name": "张秀英"}), "category": "养老服务"})
        tab.sync()

    with closing(Node(node_db, TOWNSHIP)) as t:
        eid = escalations.escalate(t, Staff("liu", "township", TOWNSHIP), need, "独居老人需每日送餐")
    with closing(Node(county_db, COUNTY)) as c:
        unitlib.load_units(c.store.db, unitlib.SAMPLE_TREE)
        publish_units(c)
        ref.add_notice(c.editor("区民政局"), "汛期走访独居老人通知", "各村做好汛期巡查")
        ref.add_task(c.editor("区民政局"), "高龄老人入户走访", due_date=day(30))
        sync_link(c, node.url, link)  # pulls the escalation
        chen = Staff("chen", "county", COUNTY)
        escalations.act(c, chen, eid, "accept")
        escalations.act(c, chen, eid, "resolve", "已协调社区食堂每日送餐上门")
        sync_link(c, node.url, link)  # pushes the notice, the task and the answer

    app = TabletApp(tmp_path / "tablet.db", port=PORT)
    try:
        with TestClient(create_app(app), base_url=ORIGIN, follow_redirects=False) as c:
            assert "汛期走访独居老人通知" not in c.get("/").text
            assert c.post("/sync", data={"csrf": app.csrf}, headers={"origin": ORIGIN}).status_code == 303
            assert app.job is not None
            app.job.wait(30)
            assert app.job.snapshot()["state"] == "done"
            home = c.get("/").text
            assert "汛期走访独居老人通知" in home and "高龄老人入户走访" in home and "2 条新" in home
            listed = c.get("/notices").text
            assert "船山区 发布" in listed and "各村做好汛期巡查" in listed
            edit = c.get(f"/needs/{need}/edit").text
            assert "县区已办结" in edit and "已协调社区食堂每日送餐上门" in edit
            # the village's progress on the county's task goes up to the township at the next sync
            task = re.search(r'action="/tasks/([0-9a-f-]+)/report"', listed)
            assert task is not None
            r = c.post(f"/tasks/{task[1]}/report", data={"csrf": app.csrf, "status": "已完成", "note": "已走访"},
                       headers={"origin": ORIGIN})
            assert r.status_code == 303
            assert c.post("/sync", data={"csrf": app.csrf}, headers={"origin": ORIGIN}).status_code == 303
            assert app.job is not None
            app.job.wait(30)
            assert app.job.snapshot()["state"] == "done"
    finally:
        app.close()
    with closing(Node(node_db, TOWNSHIP)) as t:
        assert [(k, r["status"], r["note"]) for k, r in ref.task_reports(t.store).items()] == [
            ((task[1], V1), "已完成", "已走访")]
