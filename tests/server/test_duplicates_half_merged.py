"""Residents an older version left half-merged (current, yet merged into another: it restored them after
their merge) on the workbench's 疑似重复 page: listed apart with the reason, never suggested, and a merge or
a dismissal naming one is refused in Chinese with nothing written; finished (完成合并) or, when the merge leads
nowhere, kept as a resident of her own (保留为独立居民), which the village's tablets receive. The states are
written with ops. And what an older tablet wrote on a merged-away resident after her merge, on the kept
resident's page."""

from __future__ import annotations

import re
from collections.abc import Callable

import pytest

from sync.ops import Op, uuid7
from sync.store import Store
from sync.types import SET, TIER_RANK
from test_node_merged_restore import merged_and_edited_late, restore_as_an_older_version_did
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


def test_one_whose_merge_leads_nowhere_is_kept_as_a_resident_of_her_own(desk: Desk, half: dict[str, str]) -> None:
    """保留为独立居民 clears her merge pointer (a township op in the staff member's name): she is listed and
    suggested as any resident again, and the village's tablet holds her alike. One whose merge leads to a
    current resident, one not half-merged, and one sorted out since the page was shown are refused, nothing
    written"""
    desk.sync()  # the tablet holds them, half-merged as here
    page = desk.client.get("/staff/duplicates").text
    csrf = desk.hidden(page, "csrf")
    section = page[page.index('class="card half-merged"'):]
    offered = re.findall(r'name="record" value="([^"]+)"><button class="btn plain" type="submit">保留为独立居民', section)
    assert sorted(offered) == sorted(half[k] for k in ("missing", "loop1", "loop2"))  # not "restored": 完成合并
    assert "confirm('保留为独立居民？这条登记将不再算作合并" in section
    before = desk.node.store.count_ops()
    for k, said in (("restored", "应当“完成合并”"), ("p", "现在不是未完成的旧合并"), ("gone", "现在不是未完成的旧合并")):
        r = desk.client.post("/staff/duplicates/separate", data={"csrf": csrf, "record": half[k]})
        assert r.status_code == 400 and said in r.text, r.text
    assert desk.node.store.count_ops() == before

    r = desk.client.post("/staff/duplicates/separate", data={"csrf": csrf, "record": half["missing"]})
    assert r.status_code == 303
    assert "已保留为独立居民" in desk.client.get(r.headers["location"]).text
    rec = desk.node.store.get(half["missing"])
    assert rec is not None and not rec.deleted and rec.merged_into is None and rec.conflicts == []
    last = desk.node.store.history(half["missing"])[-1]
    assert (last.field, last.new, last.user, last.tier) == ("merged_into", None, "liu", "township")
    assert desk.node.store.resolve_id(half["missing"]) == half["missing"]
    page = desk.client.get("/staff/duplicates").text
    assert half["missing"] not in page[page.index('class="card half-merged"'):]
    pairs = re.findall(r'class="card pair" data-a="([^"]+)" data-b="([^"]+)"', page)
    assert {i for p in pairs for i in p} == {half[k] for k in ("p", "k", "missing")}  # suggested again
    assert half["missing"] in desk.client.get("/staff/people").text

    before = desk.node.store.count_ops()  # the page shown before: she is no longer half-merged
    r = desk.client.post("/staff/duplicates/separate", data={"csrf": csrf, "record": half["missing"]})
    assert r.status_code == 400 and "现在不是未完成的旧合并（可能已有人处理）" in r.text
    assert desk.node.store.count_ops() == before

    desk.sync()  # the tablet receives the cleared pointer: her card is hers again, not a merged-away one's
    mine = desk.tab.store.get(half["missing"])
    assert mine is not None and not mine.deleted and mine.merged_into is None
    assert desk.tab.store.resolve_id(half["missing"]) == half["missing"]
    assert desk.tab.store.digest() == desk.node.store.digest()

    r = desk.client.post("/staff/duplicates/merge", data={"csrf": csrf, "keep": half["p"], "drop": half["missing"]})
    assert r.status_code == 303 and "已合并" in desk.client.get(r.headers["location"]).text


def test_the_kept_residents_page_shows_what_a_tablet_wrote_on_the_merged_one_after_the_merge(desk: Desk) -> None:
    """An older tablet restored a resident merged away and edited her; the node deleted her again. What it
    wrote after the merge is listed on the kept resident's page, by whom and when, to copy there"""
    keep, drop = merged_and_edited_late(desk.node, desk.tab)
    restore_as_an_older_version_did(desk.tab, drop)
    desk.sync()

    page = desk.client.get(f"/staff/records/{keep}").text
    late = re.search(rf'<div class="late" data-record="{drop}">(.*?)</div>', page, re.S)
    assert late is not None, page
    assert "请核对，把正确的内容抄到本记录" in late.group(1)
    rows = [re.sub(r"<[^>]+>", " ", r).split() for r in re.findall(r"<tr><td>(.*?)</tr>", late.group(1), re.S)]
    dev = desk.tab.dev.device
    # the phone edited offline, then the restore's values and the address edited after it, in the order the
    # node took them; not her values from before the merge, nor the deletes, nor the unit they re-assert
    # (the restore's values are the kept resident's already, and say so)
    held = "（本记录已是这个值）"
    assert [r[2:] for r in rows] == [["张丽", dev, "电话", "13900000000"], ["张丽", dev, "姓名", "黄玉珍", held],
                                     ["张丽", dev, "出生日期", "1938-06-01", held],
                                     ["张丽", dev, "住址", "育才路", "3", "号"]]


def test_a_need_recorded_for_one_whose_merge_leads_to_no_current_resident_stays_hers(
        desk: Desk, half: dict[str, str]) -> None:
    """A need a tablet records for a resident left half-merged follows her merge only while it leads to a current
    resident: once the resident she was merged into is gone, she is a resident of her own on the tablets, and a
    need recorded for her stays hers (not moved to the one gone, where it would be cancelled)"""
    desk.sync()
    to_kept = desk.tab.editor.create("need", {"person": half["restored"], "unit": V1, "category": "养老服务"})
    desk.sync()
    rec = desk.node.store.get(to_kept)
    assert rec is not None and rec.data["person"] == half["k"]  # her merge leads to k, who is current
    desk.node.editor("liu").delete(half["k"])  # k is gone
    desk.sync()
    hers = desk.tab.editor.create("need", {"person": half["restored"], "unit": V1, "category": "养老服务"})
    desk.sync()
    rec = desk.node.store.get(hers)
    assert rec is not None and rec.data["person"] == half["restored"] and rec.data.get("status") != "已取消"
    assert [r.id for r in desk.node.store.records("need", naming=("person", half["restored"]))] == [hers]
