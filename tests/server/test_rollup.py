"""Roll-ups across nodes, in one process: upper nodes pull their children over Starlette's TestClient (or,
for a child that misbehaves, over ``httpx.MockTransport``, the narrowest seam, since a real node never
sends such a snapshot). Staff read only within their unit; a malformed part is refused and the last good
figures kept, and one an older version stored is left out, shown and asked for again; a stale node
anywhere below shows on the roll-up; times are China time on any server zone."""

from __future__ import annotations

import csv
import html
import io
import re
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import httpx
import msgspec
import openpyxl
import pytest
from click.testing import CliRunner

from server import links
from server.app import create_app
from server.cli import ensure_units
from server.cli_links import link_group, snapshot_group
from server.reference_cli import task_group
from server.node import Node
from server.pages import ago
from server.rollup import Freshness, _when, build, tables, to_xlsx
from server.rollup_web import node_rollup, templates
from server.snapshots import (
    Cell, Part, PartHash, Snapshot, Snapshotter, Source, close_month, content_hash, snapshot_hash, task_cells,
)
from sync import reference as ref
from sync import units as unitlib
from sync.edit import Editor
from sync.hlc import HLC
from sync.wire import MSGPACK, encode

with warnings.catch_warnings():
    # starlette's TestClient warns that it prefers httpx2; the project's httpx is what it runs on
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient` is deprecated")
    from starlette.testclient import TestClient

CITY, COUNTY, COUNTY2 = "510900000000", "510903000000", "510904000000"
T_A, T_B = "510903001000", "510904001000"
V_A1, V_A2, V_B = "510903001001", "510903001002", "510904001001"
PASSWORD = "correct horse 1"
#: 2026-11-01 04:30 in China (UTC+8), 2026-10-31 20:30 UTC
NOV_1_0430 = 1793478600


def sign_in(client: TestClient, username: str) -> None:
    csrf = re.search(r'name="csrf" value="([^"]+)"', client.get("/login").text)
    assert csrf is not None
    r = client.post("/login", data={"username": username, "password": PASSWORD, "csrf": csrf.group(1)},
                    follow_redirects=False)
    assert r.status_code == 303, r.text


# -- staff read within their unit ----------------------------------------------------------------

@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Node]]:
    """A city over two counties, each over one township with residents (A: 3 in one village and 4 in
    another, B: 7), every link pulled"""
    tmp = tmp_path_factory.mktemp("tree")
    nodes = {u: Node(tmp / f"{u}.db", u) for u in (CITY, COUNTY, COUNTY2, T_A, T_B)}
    for n in nodes.values():
        ensure_units(n)
    for unit, village, count in ((T_A, V_A1, 3), (T_A, V_A2, 4), (T_B, V_B, 7)):
        ed = nodes[unit].editor("w")
        for i in range(count):
            ed.create("person", {"name": f"居民{i}", "unit": village, "groups": ["老年人"]})
    for child, parent in ((T_A, COUNTY), (T_B, COUNTY2), (COUNTY, CITY), (COUNTY2, CITY)):
        _, token = nodes[child].add_device(parent, "link", tier="city" if parent == CITY else "county")
        links.add_link(nodes[parent].store, parent, child, f"http://{child}", token)
    for parent in (COUNTY, COUNTY2, CITY):
        for ln in links.links(nodes[parent].store):
            with TestClient(create_app(nodes[ln.unit]), base_url=ln.url) as child:
                assert links.pull(nodes[parent].store, ln, client=child).ok
    yield nodes
    for n in nodes.values():
        n.close()


def read_all(node: Node, username: str) -> tuple[str, str, list[str], dict[str, object]]:
    "As ``username``: the roll-up page, the CSV, the units in the XLSX's first column (but 说明's), the snapshot"
    with TestClient(create_app(node), base_url="http://node") as c:
        sign_in(c, username)
        page, text = c.get("/rollup"), c.get("/rollup.csv")
        xlsx, snap = c.get("/rollup.xlsx"), c.get("/api/snapshot", headers={"accept": "application/json"})
    assert page.status_code == text.status_code == xlsx.status_code == snap.status_code == 200
    wb = openpyxl.load_workbook(io.BytesIO(xlsx.content))
    units = [str(row[0]) for ws in wb.worksheets if ws.title != "说明"
             for row in ws.iter_rows(min_row=2, values_only=True)]
    return page.text, text.text, units, snap.json()


def snapshot_units(snap: dict[str, object]) -> set[str]:
    parts = snap["parts"]
    sources = snap["sources"]
    assert isinstance(parts, list) and isinstance(sources, list)
    return {c[0][0] for p in parts for c in p["cells"]} | {s["unit"] for s in sources}


def test_a_countys_staff_on_the_city_node_read_that_county_only(tree: dict[str, Node]) -> None:
    city = tree[CITY]
    city.accounts.add("chuanshan", PASSWORD, role="county", unit=COUNTY)
    city.accounts.add("shi", PASSWORD, role="city")
    page, text, units, snap = read_all(city, "chuanshan")
    assert f'data-unit="{COUNTY}"' in page and f'data-unit="{COUNTY2}"' not in page
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert [COUNTY, "船山区", "7", "0", "0", "0", "7"] in rows  # 居民: 7 老年人, 7 in all
    assert not any(COUNTY2 in row for row in rows)
    assert COUNTY in units and COUNTY2 not in units
    assert snapshot_units(snap) == {V_A1, V_A2, COUNTY, T_A}
    assert snap["watermark"] == links.get_link(city.store, COUNTY).watermark  # type: ignore[union-attr]

    _, text, units, snap = read_all(city, "shi")  # the city's staff read every county
    assert COUNTY2 in text and COUNTY2 in units
    assert snapshot_units(snap) == {V_A1, V_A2, V_B, COUNTY, COUNTY2, T_A, T_B}


def test_a_township_account_scoped_to_a_village_reads_that_village_only(tree: dict[str, Node]) -> None:
    town = tree[T_A]
    town.accounts.add("zhao", PASSWORD, role="township", unit=V_A2)
    page, text, units, snap = read_all(town, "zhao")
    assert '<h2 data-testid="rollup-title">育才路街道（镇街）汇总数据</h2>' in page  # the workbench's tier names
    assert f'data-unit="{V_A2}"' in page and f'data-unit="{V_A1}"' not in page
    assert V_A1 not in text and set(units) == {V_A2}
    assert snapshot_units(snap) == {V_A2}
    # the county's link device reads the township whole, scoped by its own identity
    with TestClient(create_app(town), base_url="http://node") as c:
        r = c.get("/api/snapshot", headers={"accept": "application/json",
                                            "authorization": f"Bearer {link_token(town, COUNTY)}"})
    assert r.status_code == 200
    assert snapshot_units(r.json()) == {V_A1, V_A2}


def link_token(node: Node, upper: str) -> str:
    _, token = node.add_device(upper, "link-2", tier="county")
    return token


# -- a child's malformed part is refused ---------------------------------------------------------

def part(name: str, *cells: Cell) -> Part:
    return Part(name=name, hash=content_hash(list(cells)), cells=list(cells))


GOOD = [part("needs/2026-10", Cell([V_A1, "养老服务", "待处理"], [4])),
        part("services/0000-00", Cell([V_A1, "养老服务"], [1, 30, 1])),  # a service with no time
        part("resolved/2026-10", Cell([V_A1, "3"], [2])),
        part("residents", Cell([V_A1, "老年人"], [5]), Cell([V_A1, "合计"], [None])),
        part("devices", Cell([V_A1], [1, 1, 0]))]


def fake_township(parts: list[Part], sources: list[Source] | None = None, *,
                  asked: list[str] | None = None, suppress_below: int = 3) -> httpx.Client:
    """A township that answers every pull with ``parts`` whole (a later part replaces one of the same name),
    published with ``suppress_below``; ``asked`` collects the ``have`` of each pull"""
    parts = list({p.name: p for p in parts}.values())
    manifest = [PartHash(p.name, p.hash) for p in parts]
    snap = Snapshot(unit=T_A, tier="township", watermark=9, taken_at=int(time.time()), hash=snapshot_hash(manifest),
                    suppress_below=suppress_below, manifest=manifest, parts=parts, sources=sources or [])

    def answer(request: httpx.Request) -> httpx.Response:
        if asked is not None:
            asked.append(request.url.params.get("have", ""))
        return httpx.Response(200, content=encode(snap), headers={"content-type": MSGPACK})

    return httpx.Client(transport=httpx.MockTransport(answer))


@pytest.fixture
def county(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "county.db", COUNTY)
    links.add_link(n.store, COUNTY, T_A, "http://township", "token")
    yield n
    n.close()


def test_a_link_token_the_township_does_not_know_gets_a_links_advice(county: Node, tmp_path: Path) -> None:
    """The county's token ("token") was never issued by this township (mistyped in `link add`, or the township
    restored from an older backup): `link list`, `snapshot pull` and /rollup show a link's advice, not a tablet's"""
    township = Node(tmp_path / "township.db", T_A)
    try:
        with TestClient(create_app(township), base_url="http://township") as c:
            r = links.pull(county.store, links.get_link(county.store, T_A), client=c)
    finally:
        township.close()
    assert not r.ok and r.error.startswith(
        f"pull_refused: http://township refused the pull: 401 unauthorized: the node {T_A} does not know this "
        "link token"), r.error
    assert "`cunsync device add --unit <upper unit> --tier <upper tier>` there" in r.error
    assert f"`cunsync link add --unit {T_A} --token NEW`" in r.error
    assert "tablet" not in r.error
    assert node_rollup(county, Snapshotter(county.store, COUNTY)).stale()[0].error == r.error


@pytest.mark.parametrize("bad", [
    pytest.param(part("resolved/2026-10", Cell([V_A1, "三"], [2])), id="days-not-a-number"),
    pytest.param(part("resolved/2026-10", Cell([V_A1, "³"], [2])), id="days-a-digit-int-cannot-read"),
    pytest.param(part("needs/2026-10", Cell([V_A1], [2])), id="needs-without-category-and-status"),
    pytest.param(part("needs/2026-10", Cell([V_A1, "养老服务", "待处理"], [2, 1])), id="needs-two-values"),
    pytest.param(part("services/0000-00", Cell([V_A1, "养老服务"], [2])), id="services-one-value"),
    pytest.param(part("residents", Cell([V_A1, "外星人"], [2])), id="unknown-group"),
    pytest.param(part("devices", Cell([V_A1], [1, -5, 0])), id="negative-count"),
    pytest.param(part("needs/2026-10", Cell([V_A1 + " ", "养老服务", "待处理"], [2])), id="not-a-unit-code"),
    pytest.param(part("births/2026-10", Cell([V_A1, "x"], [2])), id="unknown-section"),
    pytest.param(part("needs", Cell([V_A1, "养老服务", "待处理"], [2])), id="monthly-without-month"),
    pytest.param(part("tasks", Cell([V_A1, "高龄老人走访"], [0, 1])), id="task-not-a-record-id"),
])
def test_a_malformed_part_is_refused_and_the_last_good_figures_kept(county: Node, bad: Part) -> None:
    snapper = Snapshotter(county.store, COUNTY)
    assert links.pull(county.store, links.get_link(county.store, T_A), client=fake_township(GOOD)).ok
    before = node_rollup(county, snapper)
    assert (before.need_total(), before.resident_total("老年人"), before.median_days()) == (4, 5, 3)

    r = links.pull(county.store, links.get_link(county.store, T_A), client=fake_township([*GOOD, bad]))
    assert not r.ok and r.error.startswith("bad_part: ") and bad.name[:20] in r.error, r.error
    after = node_rollup(county, snapper)  # builds; the figures are the last good ones
    assert (after.need_total(), after.resident_total("老年人"), after.median_days(), after.service_total()) == (
        4, 5, 3, (1, 30, 1))
    assert after.stale()[0].error == r.error  # and the page says why they are old


def test_the_roll_up_says_how_many_cells_were_withheld_under_the_townships_threshold(county: Node) -> None:
    "GOOD withholds one residents cell; the township publishes with 5, not the county's own setting"
    assert links.pull(county.store, links.get_link(county.store, T_A), client=fake_township(GOOD, suppress_below=5)).ok
    ro = node_rollup(county, Snapshotter(county.store, COUNTY))
    assert (ro.suppressed, ro.thresholds) == ({"residents": 1}, {T_A: 5})
    county.accounts.add("chuanshan", PASSWORD, role="county")
    page, text, _, snap = read_all(county, "chuanshan")
    assert '<span data-testid="withheld">小于 5 的格子不上报，共 1 个格子未计入合计。</span>' in page
    note = ["未计入合计的格子", "小于 5 的格子不上报，共 1 个格子未计入以上合计，合计因此偏少"]
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert rows[rows.index(["# 说明"]) + 1:][:3] == [["项目", "说明"], note, ["居民：未计入的格子", "1"]]
    wb = openpyxl.load_workbook(io.BytesIO(to_xlsx(ro)))
    assert list(wb["说明"].iter_rows(values_only=True)) == [("项目", "说明"), tuple(note), ("居民：未计入的格子", 1)]
    sources = snap["sources"]  # and on up: the city learns the township's threshold from the county
    assert isinstance(sources, list) and [(s["unit"], s["suppress_below"]) for s in sources] == [(T_A, 5)]
    r = CliRunner().invoke(snapshot_group, ["pull", "--db", str(county.store.path), "--offline"])
    assert r.exit_code == 0, r.output
    assert "withheld: 1 cells counting under 5 (residents 1)" in r.output, r.output


def test_a_link_stored_before_thresholds_were_kept_gets_one_at_its_next_pull(county: Node) -> None:
    with county.store.transaction() as c:  # the links table as an older version made it
        c.execute("ALTER TABLE links DROP COLUMN suppress_below")
    assert [s.suppress_below for s in links.sources(county.store)] == [None]
    assert links.pull(county.store, links.get_link(county.store, T_A), client=fake_township(GOOD)).ok
    assert [s.suppress_below for s in links.sources(county.store)] == [3]


def test_nothing_withheld_says_so_and_a_township_names_its_own_threshold(tmp_path: Path) -> None:
    node = Node(tmp_path / "township.db", T_A)
    try:
        ro = node_rollup(node, Snapshotter(node.store, T_A, suppress_below=4))
    finally:
        node.close()
    assert ro.thresholds == {T_A: 4} and ro.threshold_text() == "小于 4 的格子不上报"
    assert tables(ro)["说明"] == [["项目", "说明"], ["未计入合计的格子", "无"]]
    assert build(COUNTY, {}).threshold_text() == "各镇街数量过小的格子不上报"  # pulled by an older version
    three, five = (Source(unit=u, tier="township", suppress_below=t) for u, t in ((T_A, 3), ("510903002000", 5)))
    assert build(COUNTY, {}, [three, five]).threshold_text() == "各镇街小于其所设阈值（3、5）的格子不上报"
    # a township that withholds nothing (0) is named plainly, not listed as a threshold of 0
    exact, names = Source(unit="510903003000", tier="township", suppress_below=0), {"510903003000": "新桥街道"}
    one = build(COUNTY, {}, [three, exact], names=names)
    assert (one.threshold_values(), one.threshold_text()) == ([3], "小于 3 的格子不上报（新桥街道不设阈值，全部上报）")
    several = build(COUNTY, {}, [three, five, exact], names=names)
    assert several.threshold_text() == "各镇街小于其所设阈值（3、5）的格子不上报（新桥街道不设阈值，全部上报）"


# -- a closed month's revisions ------------------------------------------------------------------

def test_a_closed_months_revisions_are_one_row_naming_each_part_its_village_and_withheld_values(
        tmp_path: Path) -> None:
    """育才路街道 (threshold 3) closes November after two services; a third service and a need arrive late.
    The county shows the month in one row that names each part revised (需求, 服务), the village by name,
    and a value withheld as <3（未上报）, never None; the CSV and XLSX carry the same as a table of their own"""
    nov_10 = HLC(clock=lambda: (NOV_1_0430 + 9 * 86400) * 1000)  # the need is written in November
    town, county = Node(tmp_path / "town.db", T_A, clock=nov_10), Node(tmp_path / "county.db", COUNTY)
    try:
        for n in (town, county):
            ensure_units(n)
        ed = town.editor("w")
        person = ed.create("person", {"name": "居民", "unit": V_A1})

        def service(day: int) -> None:
            ed.create("service", {"person": person, "unit": V_A1, "service_type": "养老服务", "minutes": 30,
                                  "served_at": f"2026-11-{day:02d}T10:00"})

        service(3)
        service(4)
        close_month(town.store, T_A, "2026-11", by="刘主任", now=NOV_1_0430 + 20 * 86400)
        service(5)  # late: a tablet that was offline
        ed.create("need", {"person": person, "unit": V_A1, "category": "养老服务", "status": "待处理"})
        _, token = town.add_device(COUNTY, "link", tier="county")
        links.add_link(county.store, COUNTY, T_A, "http://township", token)
        with TestClient(create_app(town), base_url="http://township") as child:
            assert links.pull(county.store, links.get_link(county.store, T_A), client=child).ok
        county.accounts.add("xian", PASSWORD, role="county")
        page, text, _, _ = read_all(county, "xian")
        xlsx = openpyxl.load_workbook(io.BytesIO(to_xlsx(node_rollup(county, Snapshotter(county.store, COUNTY)))))
    finally:
        town.close()
        county.close()
    needs = "育才社区 · 养老服务 · 待处理：无 → <3（未上报）"
    services = "育才社区 · 养老服务：<3（未上报） → 3 次，90 分钟，3 人次"
    table = re.search(r'<table data-testid="closures">(.*?)</table>', page, re.S)
    assert table, page
    rows = [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", r)).split())
            for r in re.findall(r"<tr data-unit.*?</tr>", table.group(1), re.S)]
    assert rows == [f"2026-11 育才路街道 2026-11-21 04:30，刘主任 需求：第 1 次修订 {needs} 服务：第 1 次修订 {services}"]
    closed = [T_A, "育才路街道", "2026-11", "2026-11-21 04:30", "刘主任"]
    header = ["单位代码", "单位", "月份", "关账时间", "关账人", "关账后修订的部分", "修订次数", "修订内容"]
    csv_rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    at = csv_rows.index(["# 已关账月份"])
    assert csv_rows[at + 1:at + 5] == [header, [*closed, "需求", "1", needs], [*closed, "服务", "1", services], []]
    assert list(xlsx["已关账月份"].iter_rows(values_only=True)) == [
        tuple(header), (*closed, "需求", 1, needs), (*closed, "服务", 1, services)]


def test_villages_progress_on_a_countys_task_reaches_the_county_as_counts_per_township(tmp_path: Path) -> None:
    """The county sets a task; in 育才路街道 (three villages in its tree) a tablet marks 育才社区 已完成 and
    the township marks 广场社区 进行中. The township sends the counts only to a node above that asks for
    them (an older county would refuse a part it does not know); the county's page and `task list` show
    them per township and in total, the city's the progress on its own task per county, and a township
    that sends none (an older version) counts nothing. The township's own roll-up counts its own task too.
    Each task's status shows beside it, as in `task list`: the city's was withdrawn (已取消)"""
    town, county, city = (Node(tmp_path / f"{u}.db", u) for u in (T_A, COUNTY, CITY))
    try:
        for n in (town, county, city):
            ensure_units(n)
        city_task = ref.add_task(city.editor("市民政局"), "全市防汛排查")
        ref.set_task_status(city.editor("市民政局"), city_task, "已取消")
        county.store.apply([op for _, op in city.store.ops_since(0)])  # as the links bring them down
        task = ref.add_task(county.editor("区民政局"), "高龄老人走访", due_date="2026-12-31")
        own = ref.add_task(town.editor("liu"), "镇里自己的任务")  # the township's own: not the county's to follow
        town.store.apply([op for _, op in county.store.ops_since(0)])
        tablet, _ = town.add_device(V_A1, "wang")
        ref.report_task(Editor(town.store, device=tablet, user="wang", unit=V_A1, tier="village"), task, V_A1, "已完成")
        ref.report_task(town.editor("liu"), own, V_A2, "已完成")
        town.accounts.add("zhen", PASSWORD, role="township", unit=T_A)
        with TestClient(create_app(town), base_url="http://township") as c:
            sign_in(c, "zhen")
            town_page = c.get("/rollup").text
        ref.report_task(town.editor("liu"), task, V_A2, "进行中", "还差 3 户")
        _, token = town.add_device(COUNTY, "link", tier="county")
        with TestClient(create_app(town), base_url="http://township") as child:
            auth = {"authorization": f"Bearer {token}", "accept": "application/json"}
            older = child.get("/api/snapshot", headers=auth).json()  # what an older county asks for
            assert "tasks" not in {p[0] for p in older["manifest"]}
            newer = child.get("/api/snapshot", params={"with": "tasks"}, headers=auth).json()
            cells = {tuple(c[0]): c[1] for p in newer["parts"] if p["name"] == "tasks" for c in p["cells"]}
            assert {k: v for k, v in cells.items() if k[1] == task} == {
                (V_A1, task): [0, 1], (V_A2, task): [1, 0], ("510903001003", task): [0, 0]}
            links.add_link(county.store, COUNTY, T_A, "http://township", token)
            assert links.pull(county.store, links.get_link(county.store, T_A), client=child).ok
        _, token = county.add_device(CITY, "link", tier="city")
        links.add_link(city.store, CITY, COUNTY, "http://county", token)
        with TestClient(create_app(county), base_url="http://county") as child:
            assert links.pull(city.store, links.get_link(city.store, COUNTY), client=child).ok
        county.accounts.add("xian", PASSWORD, role="county")
        city.accounts.add("shi", PASSWORD, role="city")
        page, _, _, _ = read_all(county, "xian")
        exported = tables(node_rollup(county, Snapshotter(county.store, COUNTY)))["任务进度"]  # CSV and XLSX
        city_page, _, _, _ = read_all(city, "shi")
        listed = CliRunner().invoke(task_group, ["list", "--db", str(tmp_path / f"{COUNTY}.db")])
        # the township goes back to a version without the part: its snapshot is taken, and counts nothing
        assert links.pull(county.store, links.get_link(county.store, T_A), client=fake_township(GOOD)).ok
        assert node_rollup(county, Snapshotter(county.store, COUNTY)).task_progress(task) == (0, 0, 0)
    finally:
        for n in (town, county, city):
            n.close()
    assert task_rows(page) == ["高龄老人走访 截止 2026-12-31 待办 育才路街道 1 1 1", "合计 1 1 1",  # the soonest due first
                               "全市防汛排查 已取消 育才路街道 0 0 3", "合计 0 0 3"]
    assert task_rows(city_page) == ["全市防汛排查 已取消 船山区 0 0 3", "合计 0 0 3"]  # the county's is not the city's
    assert exported == [["任务", "截止日期", "状态", "下级单位代码", "下级单位", "已完成", "进行中", "未开始或未报"],
                        ["高龄老人走访", "2026-12-31", "待办", T_A, "育才路街道", 1, 1, 1],
                        ["高龄老人走访", "2026-12-31", "待办", "", "合计", 1, 1, 1],
                        ["全市防汛排查", "", "已取消", T_A, "育才路街道", 0, 0, 3],
                        ["全市防汛排查", "", "已取消", "", "合计", 0, 0, 3]]
    assert task_rows(town_page)[-4:] == ["镇里自己的任务 待办 育才社区 0 0 1", "广场社区 1 0 0", "和平社区 0 0 1", "合计 1 0 2"]
    assert listed.exit_code == 0, listed.output
    assert [line.split("  ", 2)[2].split("  ", 1)[0] for line in listed.output.splitlines()] == ["待办", "已取消"]
    assert [line.split("  ", 3)[3] for line in listed.output.splitlines()] == [
        "2026-12-31  高龄老人走访  已完成 1 · 进行中 1 · 未开始/未报 1", "-  全市防汛排查  已完成 0 · 进行中 0 · 未开始/未报 3"]


def test_a_village_with_a_tablet_but_missing_from_the_unit_tree_counts_for_a_task_as_on_the_tasks_page(
        tmp_path: Path) -> None:
    """Its tablet may report any day: the county counts it 未开始 meanwhile, as the township's 任务 page does.
    The township's snapshot follows enrolments, revocations and `units import` at once, though none of
    them writes an op"""
    town = Node(tmp_path / "town.db", T_A)
    snapshotter = Snapshotter(town.store, T_A)

    def villages() -> set[str]:
        parts, _, _ = snapshotter.parts()
        return {c.k[0] for c in parts["tasks"].cells}

    try:
        ensure_units(town)
        task = ref.add_task(town.editor("liu"), "走访")
        tree = villages()
        outside = "510903001009"  # under the township, not in its sample tree
        town.add_device(outside, "li")
        revoked, _ = town.add_device("510903001008", "zhou")
        enrolled = villages()
        town.revoke(revoked)
        cells = {tuple(c.k): c.v for c in task_cells(town.store, T_A)}
        after_revoking = villages()
        unitlib.load_units(town.store.db, [unitlib.Unit("510903001004", "新建社区", "village", T_A)])
        after_import = villages()
        name = node_rollup(town, snapshotter).name(outside)  # as /rollup and its exports name it
    finally:
        town.close()
    assert cells[(outside, task)] == [0, 0] and ("510903001008", task) not in cells  # a revoked tablet's is not
    assert (V_A1, task) in cells  # the tree's villages as before
    assert enrolled == tree | {outside, "510903001008"}
    assert after_revoking == tree | {outside}
    assert after_import == tree | {outside, "510903001004"}
    assert name == f"未命名村/社区（{outside}）"  # as the workbench's 任务 page names it


def test_the_xlsx_export_leaves_out_control_characters_a_title_may_carry() -> None:
    "A task's title came through the staff API with a control character: the export leaves it out, not a 500"
    ro = build(COUNTY, {}, [], names={T_A: "育才路街道"})
    ro.children = [T_A]
    ro.tasks = [{"id": "0190f0c2-0000-7000-8000-000000000001", "title": "走访\x01独居老人", "due_date": None}]
    rows = list(openpyxl.load_workbook(io.BytesIO(to_xlsx(ro)))["任务进度"].iter_rows(values_only=True))
    assert rows[1][:5] == ("走访独居老人", None, None, T_A, "育才路街道")


def task_rows(page: str) -> list[str]:
    "The rows of a roll-up page's 任务进度 table, as text"
    table = re.search(r'<table data-testid="tasks">(.*?)</table>', page, re.S)
    assert table, page
    return [" ".join(html.unescape(re.sub(r"<[^>]+>", " ", r)).split())
            for r in re.findall(r"<tr data-task.*?</tr>", table.group(1), re.S)]


def stored(name: str, *cells: object) -> bytes:
    "A part as a version that did not check its shape stored it: whatever the child sent"
    return msgspec.msgpack.encode({"name": name, "hash": "0123456789abcdef", "cells": list(cells), "closures": []})


NEEDS_KEY = [V_A1, "养老服务", "待处理"]


@pytest.mark.parametrize("name,blob", [
    pytest.param("needs/2026-10", stored("needs/2026-10", [NEEDS_KEY, ["40"]]), id="count-a-string"),
    pytest.param("needs/2026-10", stored("needs/2026-10", [NEEDS_KEY, [[40]]]), id="count-a-list"),
    pytest.param("needs/2026-10", stored("needs/2026-10", [NEEDS_KEY, [{"n": 40}]]), id="count-a-dict"),
    pytest.param("needs/2026-10", stored("needs/2026-10", [[V_A1], [40]]), id="needs-without-category-and-status"),
    pytest.param("services/0000-00", stored("services/0000-00", [[V_A1, "养老服务"], [40]]), id="services-one-value"),
    pytest.param("2026-10", stored("2026-10", [NEEDS_KEY, [40]]), id="no-section"),
    pytest.param("needs/2026-10", b"\xc1 not msgpack", id="not-msgpack"),
])
def test_a_malformed_part_stored_by_an_older_version_is_left_out_and_asked_for_again(
        county: Node, name: str, blob: bytes) -> None:
    assert links.pull(county.store, links.get_link(county.store, T_A), client=fake_township(GOOD)).ok
    with county.store.transaction() as c:  # as a version before the shape check stored it
        c.execute("INSERT OR REPLACE INTO child_parts (unit, name, hash, body, pulled_at) VALUES (?,?,?,?,?)",
                  (T_A, name, "0123456789abcdef", blob, int(time.time())))
    county.accounts.add("chuanshan", PASSWORD, role="county")
    page, text, units, snap = read_all(county, "chuanshan")  # each answers 200

    needs = 0 if name == "needs/2026-10" else 4
    assert f'data-testid="needs-total">{needs}<' in page
    row = re.search(rf'<tr class="stale" data-unit="{T_A}">.*?</tr>', page, re.S)
    assert row is not None and "以下数据格式有误" in row.group() and name in row.group(), page
    rows = list(csv.reader(io.StringIO(text.lstrip("\ufeff"))))
    assert [r for r in rows if r and r[0] == T_A and len(r) == 7][-1][6] == name  # 数据来源, 格式有误、未计入的数据
    assert sum(int(r[-1]) for r in rows if len(r) > 2 and r[0] == T_A and r[2] == "养老服务") == needs  # 需求
    assert T_A in units
    manifest, parts, sources = snap["manifest"], snap["parts"], snap["sources"]
    assert isinstance(manifest, list) and isinstance(parts, list) and isinstance(sources, list)
    assert name not in {p[0] for p in manifest}
    assert not any(40 in c[1] for p in parts for c in p["cells"])
    assert [(s["unit"], s["bad_parts"]) for s in sources] == [(T_A, [name])]

    # the next pull does not claim the part, so the township sends it again, and the figures are whole
    asked: list[str] = []
    assert links.pull(county.store, links.get_link(county.store, T_A), client=fake_township(GOOD, asked=asked)).ok
    claimed = {item.partition(":")[0] for item in asked[0].split(",")}
    assert name not in claimed and "residents" in claimed
    assert links.stored_parts(county.store)[1] == {}
    after = node_rollup(county, Snapshotter(county.store, COUNTY))
    assert (after.need_total(), after.service_total(), after.stale()) == (4, (1, 30, 1), [])


def test_a_malformed_part_under_a_child_marks_the_child() -> None:
    "A city sees which township's part its county left out"
    sources = [Source(unit=COUNTY, tier="county"), Source(unit=T_A, tier="township", bad_parts=["needs/2026-10"])]
    ro = build(CITY, {}, sources, names={T_A: "育才路街道"})
    assert [(f.unit, f.error, f.bad_parts) for f in ro.stale()] == [
        (COUNTY, "", [f"育才路街道 ({T_A}): needs/2026-10"])]


def test_a_source_that_is_no_unit_code_is_refused(county: Node) -> None:
    r = links.pull(county.store, links.get_link(county.store, T_A),
                   client=fake_township(GOOD, [Source(unit=V_A1 + "x", tier="village")]))
    assert not r.ok and r.error.startswith("bad_source: "), r.error


# -- freshness counts the nodes below the children -----------------------------------------------

def test_a_child_is_as_stale_as_the_oldest_node_under_it() -> None:
    now = 2_000_000_000
    sources = [Source(unit=COUNTY, tier="county", taken_at=now - 60, pulled_at=now - 30),
               Source(unit=COUNTY2, tier="county", taken_at=now - 60, pulled_at=now - 30),
               # as the counties reported them: 船山区's township unreachable for three days
               Source(unit=T_A, tier="township", taken_at=now - 3 * 86400, last_error="ConnectError: down"),
               Source(unit="510903002000", tier="township", taken_at=now - 120),
               Source(unit=T_B, tier="township", taken_at=now - 90)]
    ro = build(CITY, {}, sources, names={COUNTY: "船山区", COUNTY2: "安居区", T_A: "育才路街道"}, now=now)
    assert ro.freshness == [
        Freshness(COUNTY, "船山区", now - 3 * 86400, now - 30, 3 * 86400,
                  f"育才路街道 ({T_A}): ConnectError: down"),
        Freshness(COUNTY2, "安居区", now - 90, now - 30, 90, "")]
    assert [f.unit for f in ro.stale()] == [COUNTY] and ro.freshness[0].age_text == "3 天前"


@pytest.mark.parametrize("age,zh,en", [(30, "刚刚", "just now"), (119, "2 分钟前", "2 min ago"),
                                        (9000, "2 小时 30 分前", "2 h 30 min ago"),
                                        (3 * 86400 + 5 * 3600 + 1700, "3 天 5 小时前", "3 d 5 h ago")])
def test_an_age_reads_alike_on_the_roll_up_the_devices_page_and_link_list(
        tmp_path: Path, age: int, zh: str, en: str) -> None:
    "One wording on a node's pages, rounded (not cut down); `link list` rounds the same way in English"
    now = int(time.time())
    assert Freshness(T_A, "育才路街道", now - age, now, age, "").age_text == zh
    assert ago(now - age, now) == zh  # the devices page's 最近联系
    node = Node(tmp_path / "county.db", COUNTY)
    try:
        links.add_link(node.store, COUNTY, T_A, "http://township", "token")
        with node.store.transaction() as c:
            c.execute("UPDATE links SET taken_at = ?", (now - age,))
    finally:
        node.close()
    r = CliRunner().invoke(link_group, ["list", "--db", str(tmp_path / "county.db")])
    assert r.exit_code == 0, r.output
    assert f"({en})" in r.output, r.output


def test_a_county_whose_township_is_unreachable_is_stale_on_the_city(tree: dict[str, Node]) -> None:
    county, city = tree[COUNTY2], tree[CITY]
    down = httpx.Client(transport=httpx.MockTransport(lambda r: (_ for _ in ()).throw(httpx.ConnectError("down"))))
    assert not links.pull(county.store, links.get_link(county.store, T_B), client=down).ok
    with TestClient(create_app(county), base_url="http://county") as c:
        assert links.pull(city.store, links.get_link(city.store, COUNTY2), client=c).ok
    stale = node_rollup(city, Snapshotter(city.store, CITY)).stale()
    assert [(f.unit, f.error) for f in stale] == [(COUNTY2, f"凤凰街道 ({T_B}): ConnectError: down")]


# -- times are China time ------------------------------------------------------------------------

@pytest.fixture
def utc(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    "The server's zone is UTC, a common default"
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def test_roll_up_times_are_china_time_on_a_utc_server(utc: None, tmp_path: Path) -> None:
    assert _when(NOV_1_0430) == "2026-11-01 04:30"  # the exports' 数据时间 and 拉取时间
    assert templates.env.filters["datetime"](NOV_1_0430) == "2026-11-01 04:30"  # the page's
    node = Node(tmp_path / "county.db", COUNTY)
    try:
        links.add_link(node.store, COUNTY, T_A, "http://township", "token")
        with node.store.transaction() as c:
            c.execute("UPDATE links SET taken_at = ?", (NOV_1_0430,))
    finally:
        node.close()
    r = CliRunner().invoke(link_group, ["list", "--db", str(tmp_path / "county.db")])
    assert r.exit_code == 0, r.output
    assert "snapshot 2026-11-01 04:30" in r.output
