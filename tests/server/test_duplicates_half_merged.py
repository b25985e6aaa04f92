"""Residents an older version left half-merged (current, yet merged into another: it restored them after
their merge) on the workbench's 疑似重复 page: listed apart with the reason, never suggested, and a merge or
a dismissal naming one is refused in Chinese with nothing written. The states are written with ops."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from sync.ops import Op, uuid7
from sync.store import Store
from sync.types import SET, TIER_RANK
from test_pullcache import V1
from test_staff_stale_forms import Desk

NAME = {"unit": V1, "name": "王秀兰", "birth_date": "1940-01-01"}


def merged_into(store: Store, record: str, kept: str, *, deleted: bool = False) -> None:
    "An older node's merge pointer on ``record``, with or without its delete: an op the node applies as synced"
    hlc = store.last_hlc() + (1 << 16)
    ops = [Op("node-old", store.count_ops() + 1, hlc, "person", record, "merged_into", SET, kept, (), "liu", V1,
              TIER_RANK["township"])]
    if deleted:
        ops.append(Op("node-old", store.count_ops() + 2, hlc + 1, "person", record, "_deleted", SET, True,
                      tuple(store.live_ids(record, "name")), "liu", V1, TIER_RANK["township"]))
    store.apply(ops)


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    d = Desk(tmp_path / "township.db")
    yield d
    d.close()


@pytest.fixture
def half(desk: Desk) -> dict[str, str]:
    """Two current residents with one name and birth date (a pair to suggest), and, with them too, residents
    left half-merged: into a current one; into one that never reached this node; two into each other; and one
    merged away as it should be (deleted)"""
    ed = desk.node.editor("liu")
    ids = {k: ed.create("person", NAME) for k in ("p", "k", "restored", "missing", "loop1", "loop2", "gone")}
    store = desk.node.store
    merged_into(store, ids["restored"], ids["k"])
    merged_into(store, ids["missing"], str(uuid7()))
    merged_into(store, ids["loop1"], ids["loop2"])
    merged_into(store, ids["loop2"], ids["loop1"])
    merged_into(store, ids["gone"], ids["k"], deleted=True)
    return ids


def test_residents_left_half_merged_are_listed_apart_with_the_reason(desk: Desk, half: dict[str, str]) -> None:
    page = desk.client.get("/staff/duplicates").text
    assert re.findall(r'class="card pair" data-a="([^"]+)" data-b="([^"]+)"', page) == [
        tuple(sorted((half["p"], half["k"])))]
    section = page[page.index('class="card half-merged"'):]
    assert "未完成的旧合并（4 位居民，不列入疑似重复）" in section
    rows = dict(re.findall(r'<tr data-record="([^"]+)">(.*?)</tr>', section, re.S))
    assert set(rows) == {half[k] for k in ("restored", "missing", "loop1", "loop2")}
    assert "之后又被恢复" in rows[half["restored"]] and "已不存在" not in rows[half["restored"]]
    assert f'合并到 <a href="/staff/records/{half["k"]}">王秀兰（{half["k"][-8:]}）</a>' in rows[half["restored"]]
    for k in ("missing", "loop1", "loop2"):
        assert "它合并到的居民现在已不存在、已移出或同样未完成合并" in rows[half[k]] and "合并到 <a" not in rows[half[k]]


@pytest.mark.parametrize("path, form", [
    ("/staff/duplicates/merge", lambda ids: {"keep": ids["p"], "drop": ids["restored"]}),
    ("/staff/duplicates/merge", lambda ids: {"keep": ids["missing"], "drop": ids["p"]}),
    ("/staff/duplicates/dismiss", lambda ids: {"a": ids["p"], "b": ids["loop1"]}),
])
def test_a_merge_or_dismissal_naming_one_is_refused_in_chinese(desk: Desk, half: dict[str, str], path: str,
                                                                form: Callable[[dict[str, str]], dict[str, str]]
                                                                ) -> None:
    csrf = desk.hidden(desk.client.get("/staff/duplicates").text, "csrf")
    data = form(half)
    before = desk.node.store.count_ops()
    r = desk.client.post(path, data={"csrf": csrf, **data})
    assert r.status_code == 400, r.text
    said = re.search(r'<p class="error" role="alert">(.*?)</p>', r.text, re.S)
    half_one = next(v for v in data.values() if v != half["p"])
    assert said is not None and said.group(1).startswith(f"王秀兰（{half_one[-8:]}）是旧版本留下的未完成合并")
    assert desk.node.store.count_ops() == before


def test_a_half_merge_into_a_current_resident_is_finished_from_the_page(desk: Desk, half: dict[str, str]) -> None:
    "完成合并 deletes the old registration (its history kept); one whose merge leads nowhere is refused, nothing written"
    page = desk.client.get("/staff/duplicates").text
    csrf = desk.hidden(page, "csrf")
    section = page[page.index('class="card half-merged"'):]
    offered = re.findall(r'name="record" value="([^"]+)"><button class="btn plain" type="submit">完成合并', section)
    assert offered == [half["restored"]]  # only the one whose merge leads to a current resident
    before = desk.node.store.count_ops()
    for k in ("missing", "loop1", "p"):
        r = desk.client.post("/staff/duplicates/finish", data={"csrf": csrf, "record": half[k]})
        assert r.status_code == 400 and ("不能在这里完成合并" in r.text or "不是未完成的旧合并" in r.text), r.text
    assert desk.node.store.count_ops() == before
    r = desk.client.post("/staff/duplicates/finish", data={"csrf": csrf, "record": half["restored"]})
    assert r.status_code == 303
    assert "已完成合并" in desk.client.get(r.headers["location"]).text
    rec = desk.node.store.get(half["restored"])
    assert rec is not None and rec.deleted and rec.merged_into == half["k"]
    assert not desk.node.store.conflicts(record=half["restored"])
    page = desk.client.get("/staff/duplicates").text
    assert half["restored"] not in page[page.index('class="card half-merged"'):]
