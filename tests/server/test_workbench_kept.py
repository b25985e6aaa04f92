"""The duplicates page's pairs and the residents list's order are kept in memory between requests
(``server.kept``) and worked out again as soon as a resident changes: pushed by a tablet, renamed
by staff, merged, or written by another connection. Each page is compared with the same rule computed
afresh from the store; a pair's dismissal and a need or service written leave what is kept alone, yet
show at once. The needs board's order and counts are kept likewise until a need changes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from server import workbench
from server.duplicates import dismissed, find_pairs, split
from sync.edit import Editor
from sync.lookup import find_people, sort_key
from sync.store import Store
from sync.units import descendant_range
from test_pullcache import TOWNSHIP, V1
from test_staff_stale_forms import Desk

SCOPE = descendant_range(TOWNSHIP)


@pytest.fixture
def pairings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    "How many residents each ``find_pairs`` of the duplicates page paired"
    calls: list[int] = []

    def counted(people: Any) -> Any:
        calls.append(len(people))
        return find_pairs(people)

    monkeypatch.setattr(workbench, "find_pairs", counted)
    return calls


def on_page(desk: Desk, query: str = "") -> list[tuple[str, str, str]]:
    "The pairs the duplicates page lists: (a, b, reasons as shown)"
    page = desk.client.get("/staff/duplicates" + query).text
    cards = re.findall(r'class="card pair" data-a="([^"]+)" data-b="([^"]+)">(.*?)</form>', page, re.S)
    return [(a, b, "、".join(re.findall(r'<span class="chip[^"]*">([^<]+)</span>', card))) for a, b, card in cards]


def afresh(desk: Desk, *, hidden: bool = False) -> list[tuple[str, str, str]]:
    "The pairs the page would list, paired now from the store"
    store = desk.node.store
    shown, dismissed_pairs = split(find_pairs(store.records("person", units=SCOPE)), dismissed(store))
    return [(p.a.id, p.b.id, "、".join(p.labels)) for p in (dismissed_pairs if hidden else shown)]


def listed(desk: Desk, path: str = "/staff/people") -> tuple[list[str], int]:
    "The ids of the residents a list page shows, and how many it says it found"
    page = desk.client.get(path).text
    found = re.search(r"(?:共|找到) (\d+) 位居民", page)
    assert found is not None, page
    return re.findall(r'<tr class="person" data-id="([^"]+)"', page), int(found.group(1))


def listed_afresh(desk: Desk, query: str = "") -> tuple[list[str], int]:
    people = [p for p in desk.node.store.records("person", units=SCOPE) if p.merged_into is None]
    rows = find_people(people, query) if query else sorted(people, key=lambda p: sort_key(str(p.data.get("name", ""))))
    return [p.id for p in rows[:workbench.PEOPLE_SHOWN]], len(rows)


def post(desk: Desk, path: str, form: dict[str, str], page: str = "/staff/duplicates") -> None:
    csrf = desk.hidden(desk.client.get(page).text, "csrf")
    r = desk.client.post(path, data={"csrf": csrf, **form})
    assert r.status_code == 303, r.text


def test_the_duplicates_page_changes_as_soon_as_a_resident_does(desk: Desk, pairings: list[int]) -> None:
    tab = desk.tab.editor
    a = tab.create("person", {"unit": V1, "name": "王建国"})
    c = tab.create("person", {"unit": V1, "name": "李秀兰", "birth_date": "1950-01-01"})
    desk.sync()
    assert on_page(desk) == afresh(desk) == []
    assert on_page(desk) == [] and len(pairings) == 1  # the second view pairs nothing again

    b = tab.create("person", {"unit": V1, "name": "王建华"})  # a tablet pushes a near name
    desk.sync()
    assert on_page(desk) == afresh(desk) == [(*sorted((a, b)), "同村、姓名只差一个字")]
    assert len(pairings) == 2

    need = tab.create("need", {"unit": V1, "person": a, "category": "养老服务"})  # a need: no resident changed
    desk.sync()
    page = desk.client.get("/staff/duplicates").text
    assert "<td>1 条 / 0 条</td>" in page and len(pairings) == 2  # its count shows all the same
    assert desk.node.store.get(need) is not None

    post(desk, f"/staff/records/{b}", {"shown": desk.hidden(desk.client.get(f"/staff/records/{b}").text, "shown"),
                                       "name": "赵六"}, page=f"/staff/records/{b}")  # staff rename one
    assert on_page(desk) == afresh(desk) == []

    d = tab.create("person", {"unit": V1, "name": "李秀兰", "birth_date": "1950-01-01"})  # registered twice
    e = tab.create("person", {"unit": V1, "name": "王建民"})
    desk.sync()
    assert on_page(desk) == afresh(desk) == [(*sorted((c, d)), "姓名和出生日期相同"),
                                             (*sorted((a, e)), "同村、姓名只差一个字")]
    post(desk, "/staff/duplicates/merge", {"keep": c, "drop": d})  # merged: the pair goes
    assert on_page(desk) == afresh(desk) == [(*sorted((a, e)), "同村、姓名只差一个字")]

    post(desk, "/staff/duplicates/dismiss", {"a": a, "b": e})  # two people: off the list, no resident changed
    calls = len(pairings)  # (the dismissal paired its two residents to check them)
    assert on_page(desk) == afresh(desk) == []
    assert on_page(desk, "?dismissed=1") == afresh(desk, hidden=True) == [(*sorted((a, e)), "同村、姓名只差一个字")]
    post(desk, "/staff/duplicates/restore", {"a": a, "b": e})
    assert on_page(desk) == afresh(desk) == [(*sorted((a, e)), "同村、姓名只差一个字")]
    assert len(pairings) == calls


def test_a_resident_written_by_another_connection_shows_at_once(desk: Desk, tmp_path: Path) -> None:
    a = desk.node.editor("liu").create("person", {"unit": V1, "name": "张桂芳"})
    assert on_page(desk) == [] and listed(desk) == ([a], 1)
    with Store(tmp_path / "township.db") as other:  # the command line, say, on the node's database
        b = Editor(other, device="cli", user="liu", unit=TOWNSHIP, tier="township").create(
            "person", {"unit": V1, "name": "章桂芳"})
    assert on_page(desk) == afresh(desk) == [(*sorted((a, b)), "同村、姓名读音相同、同村、姓名只差一个字")]
    assert listed(desk) == listed_afresh(desk)


def test_the_residents_list_and_its_searches_change_as_soon_as_a_resident_does(
        desk: Desk, monkeypatch: pytest.MonkeyPatch) -> None:
    sorted_by: list[str] = []  # the names the list sorted

    def counted(name: str) -> str:
        sorted_by.append(name)
        return sort_key(name)

    monkeypatch.setattr(workbench, "sort_key", counted)
    tab = desk.tab.editor
    ids = {name: tab.create("person", {"unit": V1, "name": name, "phone": f"1380000000{i}"})
           for i, name in enumerate(["张三", "阿明", "李四", "王五", "章三"])}
    desk.sync()
    assert listed(desk) == listed_afresh(desk)
    assert listed(desk) == listed_afresh(desk) and len(sorted_by) == 5  # sorted once for both views
    assert [desk.node.store.get(i).data["name"] for i in listed(desk)[0]] == ["阿明", "李四", "王五", "张三", "章三"]  # type: ignore[union-attr]

    ids["赵六"] = tab.create("person", {"unit": V1, "name": "赵六"})  # a tablet pushes one
    desk.sync()
    assert listed(desk) == listed_afresh(desk) and listed(desk)[1] == 6
    post(desk, f"/staff/records/{ids['阿明']}", {  # renamed: its place in pinyin order moves
        "shown": desk.hidden(desk.client.get(f"/staff/records/{ids['阿明']}").text, "shown"), "name": "周明"},
        page=f"/staff/records/{ids['阿明']}")
    assert listed(desk) == listed_afresh(desk) and listed(desk)[0][-1] == ids["阿明"]
    post(desk, "/staff/duplicates/merge", {"keep": ids["张三"], "drop": ids["章三"]})  # merged away: not listed
    assert listed(desk) == listed_afresh(desk) and ids["章三"] not in listed(desk)[0]

    for q in ("zs", "zhang", "138000000", "13800000002"):  # by pinyin, by phone: as a search finds them afresh
        r = desk.client.post("/staff/people", data={"csrf": desk.hidden(desk.client.get("/staff/people").text, "csrf"),
                                                    "q": q})
        assert r.status_code == 303, r.text
        assert listed(desk, r.headers["location"]) == listed_afresh(desk, q), q
    assert listed(desk, f"/staff/people?unit={V1}") == listed_afresh(desk)


def on_board(desk: Desk, query: str = "") -> list[str]:
    "The ids of the needs the needs board lists, in its order"
    return re.findall(r'<tr class="need[^"]*" data-id="([^"]+)"', desk.client.get("/staff/needs" + query).text)


def test_the_needs_board_changes_as_soon_as_a_need_does(desk: Desk, tmp_path: Path) -> None:
    """The board's order and counts are kept until a need changes (``Workbench.needs_of``): a need pushed by a
    tablet, a status set by staff, one written by another connection each show at once; a resident's edit
    and a second view order nothing again"""
    tab = desk.tab.editor
    p = tab.create("person", {"unit": V1, "name": "王建国"})
    later = tab.create("need", {"person": p, "unit": V1, "category": "生活物资", "due_date": "2099-01-01"})
    desk.sync()
    ordered: list[str] = []
    desk.node.store.conn.set_trace_callback(lambda sql: ordered.append(sql) if "ORDER BY NOT" in sql else None)
    assert on_board(desk) == [later]
    assert on_board(desk) == [later] and on_board(desk, "?status=open") == [later] and len(ordered) == 1

    late = tab.create("need", {"person": p, "unit": V1, "category": "医疗健康", "due_date": "2020-01-01"})
    desk.sync()  # a tablet's push: overdue, so first
    assert on_board(desk) == [late, later] and on_board(desk, "?status=overdue") == [late] and len(ordered) == 2
    tab.update(p, {"phone": "13800000000"})
    desk.sync()  # a resident's edit: the needs are as they were
    assert on_board(desk) == [late, later] and len(ordered) == 2

    page = desk.client.get("/staff/needs").text
    r = desk.client.post(f"/staff/needs/{late}", data={"csrf": desk.hidden(page, "csrf"), "status": "已解决",
                                                       "shown_status": "待处理", "back": "/staff/needs"})
    assert r.status_code == 303, r.text
    assert on_board(desk) == [later, late] and on_board(desk, "?status=overdue") == []  # resolved: last

    with Store(tmp_path / "township.db") as other:  # the command line, say, on the node's database
        Editor(other, device="cli", user="liu", unit=TOWNSHIP, tier="township").update(later, {"status": "已关闭"})
    assert on_board(desk, "?status=open") == [] and on_board(desk, "?status=已关闭") == [later]
    desk.node.store.conn.set_trace_callback(None)
