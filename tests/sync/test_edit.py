"""Tests for sync.edit: a worker's edits become ops with the right ``pred``, checked and applied."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from sync import DELETED, Editor, InvalidValue, NotFound, Op, Store, UnknownField, uuid7
from sync.types import ADD, REMOVE, SET
from sync.errors import OutOfScope

MakeEditor = Callable[..., Editor]
Replica = Callable[[Store], Store]

VILLAGE = "510903001001"


def _person(editor: Editor, name: str = "张三", **more: Any) -> str:
    return editor.create("person", {"name": name, "unit": VILLAGE, **more})


def _need(editor: Editor, status: str = "待处理") -> str:
    person = _person(editor)
    return editor.create("need", {"person": person, "unit": VILLAGE, "category": "养老服务", "status": status})


def _ids(ops: list[Op]) -> list[tuple[str, int]]:
    return [o.id for o in ops]


def test_create_writes_one_op_per_value(store: Store, village: Editor) -> None:
    rid = _person(village, groups=["老年人", "独居"], notes=None)
    ops = store.record_ops(rid)
    assert [(o.field, o.kind, o.value) for o in ops] == [
        ("name", SET, "张三"), ("unit", SET, VILLAGE), ("groups", ADD, "老年人"), ("groups", ADD, "独居"),
    ]
    assert {(o.site, o.user, o.unit, o.tier, o.pred) for o in ops} == {
        ("tab-village-1", "wang.cun", VILLAGE, 1, ())
    }
    assert [o.counter for o in ops] == [1, 2, 3, 4]
    assert [o.hlc for o in ops] == sorted({o.hlc for o in ops})
    rec = store.get(rid)
    assert rec is not None and rec.data == {"name": "张三", "unit": VILLAGE, "groups": ["独居", "老年人"]}


def test_create_keeps_a_given_id(store: Store, village: Editor) -> None:
    rid = uuid7()
    assert village.create("person", {"name": "张三", "unit": VILLAGE}, record=rid) == rid
    assert store.get(rid) is not None


def test_create_requires_the_required_fields(store: Store, village: Editor) -> None:
    with pytest.raises(InvalidValue) as exc:
        village.create("need", {"category": "养老服务", "unit": ""})
    assert exc.value.details == {"missing": ["person", "unit"]}
    assert "person" in exc.value.message and "unit" in exc.value.message
    assert "居民" in exc.value.message  # the labels a worker reads
    assert store.count_ops() == 0


def test_create_refuses_a_bad_value_and_writes_nothing(store: Store, village: Editor) -> None:
    with pytest.raises(InvalidValue, match="person.id_number"):
        _person(village, id_number="123")
    with pytest.raises(UnknownField, match="nickname"):
        _person(village, nickname="小张")
    assert store.count_ops() == 0


def test_update_names_the_live_ops_in_pred(store: Store, village: Editor) -> None:
    rid = _person(village)
    (name_op,) = [o for o in store.record_ops(rid) if o.field == "name"]
    (first,) = village.update(rid, {"name": "张叁"})
    assert (first.field, first.value, first.pred) == ("name", "张叁", (name_op.id,))
    (second,) = village.update(rid, {"name": "张山"})
    assert second.pred == (first.id,)
    assert second.counter == first.counter + 1 and second.hlc > first.hlc
    (phone,) = village.update(rid, {"phone": "13800138000"})
    assert phone.pred == ()


def test_update_of_a_conflict_names_every_live_op_and_closes_it(
    store: Store, village: Editor, make_editor: MakeEditor, replica: Replica
) -> None:
    rid = _person(village)
    node = replica(store)
    (theirs,) = make_editor(node, "township").update(rid, {"name": "张山"})
    (mine,) = village.update(rid, {"name": "张叁"})
    store.apply([theirs])
    assert store.get(rid).conflicts == ["name"]  # type: ignore[union-attr]
    (fix,) = village.update(rid, {"name": "张叁"})
    assert set(fix.pred) == {theirs.id, mine.id}
    rec = store.get(rid)
    assert rec is not None and (rec.data["name"], rec.conflicts) == ("张叁", [])


def test_update_of_a_missing_record(village: Editor) -> None:
    with pytest.raises(NotFound):
        village.update(uuid7(), {"name": "张三"})


def test_need_status_moves_are_checked(store: Store, village: Editor) -> None:
    need = _need(village)
    count = store.count_ops()
    with pytest.raises(InvalidValue) as exc:
        village.update(need, {"status": "已解决"})
    assert exc.value.message == (
        "a need cannot go from 待处理 to 已解决; from 待处理 it may go to 已分派、服务中、已取消"
    )
    assert exc.value.details == {"from": "待处理", "to": "已解决"}
    assert store.count_ops() == count
    for status in ("已分派", "服务中", "已解决", "已关闭"):
        village.update(need, {"status": status})
    assert store.get(need).data["status"] == "已关闭"  # type: ignore[union-attr]
    village.update(need, {"status": "已关闭"})  # writing the same status again is not a move


def test_resolve_bypasses_the_status_check(store: Store, village: Editor) -> None:
    need = _need(village)
    (op,) = village.resolve(need, "status", "已解决")
    assert op.value == "已解决"
    assert store.get(need).data["status"] == "已解决"  # type: ignore[union-attr]


def test_set_field_updates_become_adds_and_removes(store: Store, village: Editor) -> None:
    rid = _person(village, groups=["老年人", "独居"])
    added = {o.value: o.id for o in store.record_ops(rid) if o.field == "groups"}
    ops = village.update(rid, {"groups": ["老年人", "儿童"]})
    assert sorted((o.kind, o.value, o.pred) for o in ops) == [
        (ADD, "儿童", ()), (REMOVE, "独居", (added["独居"],)),
    ]
    assert store.get(rid).data["groups"] == ["儿童", "老年人"]  # type: ignore[union-attr]
    assert village.update(rid, {"groups": ["儿童", "老年人"]}) == []
    (rm,) = village.remove(rid, "groups", "儿童")
    assert (rm.kind, rm.value) == (REMOVE, "儿童")
    assert village.remove(rid, "groups", "儿童") == []
    (add,) = village.add(rid, "groups", "残疾人")
    assert (add.kind, add.value) == (ADD, "残疾人")
    assert store.get(rid).data["groups"] == ["残疾人", "老年人"]  # type: ignore[union-attr]


def test_delete_names_every_live_op(store: Store, village: Editor, township: Editor) -> None:
    rid = _person(village, groups=["老年人", "独居"])
    village.update(rid, {"name": "张叁"})
    live = store.live_ids(rid)
    assert len(live) == 4
    unit_ops = store.live_ids(rid, "unit")
    op, unit_op = township.delete(rid)
    others = tuple(i for i in live if i not in unit_ops)
    assert (op.field, op.kind, op.value, op.pred) == (DELETED, SET, True, others)
    # the unit is re-asserted, so the deleted record stays in its village
    assert (unit_op.field, unit_op.value, unit_op.pred) == ("unit", "510903001001", tuple(unit_ops))
    rec = store.get(rid)
    assert rec is not None and rec.deleted and rec.conflicts == [] and rec.unit == "510903001001"
    assert store.records("person") == []
    assert store.live_ids(rid) == sorted([op.id, unit_op.id])


def test_restore_brings_back_the_values_the_delete_superseded(store: Store, village: Editor) -> None:
    rid = _person(village, groups=["老年人", "独居"], phone="13800138000")
    village.update(rid, {"name": "张叁"})
    before = store.get(rid)
    village.delete(rid)
    village.restore(rid)
    after = store.get(rid)
    assert before is not None and after is not None
    assert (after.deleted, after.data, after.conflicts) == (False, before.data, [])


def test_restore_brings_back_the_visible_value_of_a_conflicted_field(
    store: Store, village: Editor, township: Editor, make_editor: MakeEditor, replica: Replica
) -> None:
    # two tablets of one village edit the name concurrently: the later clock wins and the name is in
    # conflict; the township deletes the record by mistake and restores it. The name the record showed
    # before the delete must come back, not the one that was losing.
    rid = _person(village)
    other = replica(store)
    make_editor(other, "village", device="tab-village-2", start=1_700_000_100_000).update(rid, {"name": "张山"})
    village.update(rid, {"name": "张叁"})
    store.apply([op for _, op in other.ops_since(0)])
    before = store.get(rid)
    assert before is not None and before.data["name"] == "张山" and before.conflicts == ["name"]
    township.delete(rid)
    township.restore(rid)
    after = store.get(rid)
    assert after is not None and not after.deleted
    assert after.data["name"] == before.data["name"]


def test_resolve_of_deleted_deletes_or_restores(store: Store, village: Editor) -> None:
    rid = _person(village)
    village.resolve(rid, DELETED, True)
    assert store.get(rid).deleted  # type: ignore[union-attr]
    village.resolve(rid, DELETED, False)
    assert store.get(rid).data["name"] == "张三"  # type: ignore[union-attr]


def test_each_tier_stamps_its_rank(store: Store, village: Editor, township: Editor, county: Editor, city: Editor) -> None:
    rid = _person(village)
    tiers = [ed.update(rid, {"notes": ed.tier})[0].tier for ed in (village, township, county, city)]
    assert tiers == [1, 2, 3, 4]


def test_unknown_tier(store: Store) -> None:
    with pytest.raises(ValueError, match="village, township, county, city"):
        Editor(store, device="d", user="u", unit=VILLAGE, tier="province")


def test_merge_moves_needs_and_services_and_redirects_the_old_id(store: Store, village: Editor,
                                                                 township: Editor) -> None:
    keep = _person(village, name="张三", phone="13800138000")
    drop = _person(village, name="张 三", phone="13800138000")
    need = village.create("need", {"person": drop, "unit": "510903001001", "category": "养老服务"})
    service = village.create("service", {"person": drop, "need": need, "unit": "510903001001",
                                         "service_type": "养老服务", "served_at": "2026-11-01T09:00"})
    other = village.create("need", {"person": keep, "unit": "510903001001", "category": "医疗健康"})
    drop_history = len(store.history(drop))
    township.merge(keep, drop)
    for rid in (need, service, other):
        assert store.get(rid).data["person"] == keep  # type: ignore[union-attr]
    gone = store.get(drop)
    assert gone is not None and gone.deleted and store.resolve_id(drop) == keep
    assert gone.conflicts == []  # its redirect is no edit the delete stands against
    assert [r.id for r in store.records("person")] == [keep]
    assert len(store.history(drop)) == drop_history + 3  # merged_into, the delete, the unit re-asserted
    with pytest.raises(InvalidValue):
        township.merge(keep, keep)
    with pytest.raises(InvalidValue):
        township.merge(keep, need)
    before = store.count_ops()
    for a, b in ((drop, keep), (keep, drop)):  # merged already: neither way round again
        with pytest.raises(InvalidValue, match="deleted or already merged"):
            township.merge(a, b)
    gone_too = _person(village, name="王五")
    township.delete(gone_too)
    before = store.count_ops()
    with pytest.raises(InvalidValue, match="deleted or already merged"):
        township.merge(gone_too, keep)  # not into a deleted resident either
    assert store.count_ops() == before and not store.get(keep).deleted  # type: ignore[union-attr]


def test_a_merge_fills_what_the_kept_resident_lacks_and_joins_their_groups(store: Store, village: Editor,
                                                                             township: Editor) -> None:
    keep = _person(village, name="李桂兰", id_number="51090319450101002X", address="育才路1号", groups=["老年人"])
    drop = _person(village, name="李桂兰", birth_date="1945-01-01", phone="13900001111", address="广场社区3栋2单元",
                   groups=["残疾人", "独居", "老年人"], notes="轮椅出行")
    ops = township.merge(keep, drop)
    kept = store.get(keep)
    assert kept is not None and {**kept.data, "groups": sorted(kept.data["groups"])} == {
        "name": "李桂兰", "unit": VILLAGE, "id_number": "51090319450101002X", "address": "育才路1号",  # its own kept
        "birth_date": "1945-01-01", "phone": "13900001111",  # filled from the other (reviewed fields)
        "groups": sorted(["老年人", "残疾人", "独居"])}  # notes, not reviewed, stay on the merged-away record
    assert sorted({o.field for o in ops if o.record == keep}) == ["birth_date", "groups", "phone"]
    assert store.get(drop).data["merged_into"] == keep  # type: ignore[union-attr]
    assert [c.new for c in store.history(drop) if c.field == "notes"] == ["轮椅出行"]  # in its history


def test_a_merge_takes_no_birth_date_or_gender_that_contradicts_the_kept_id_number(
        store: Store, village: Editor, township: Editor) -> None:
    keep = _person(village, name="李桂兰", id_number="51090319450101002X")  # born 1945-01-01, a woman
    drop = _person(village, name="李桂兰", birth_date="1954-01-01", gender="男", phone="13900001111")
    township.merge(keep, drop)
    kept = store.get(keep)
    assert kept is not None and (kept.data.get("birth_date"), kept.data.get("gender"), kept.data["phone"]) == (
        None, None, "13900001111")


def test_a_merge_takes_no_id_number_that_contradicts_the_kept_birth_date_or_gender(
        store: Store, village: Editor, township: Editor) -> None:
    keep = _person(village, name="李桂兰", birth_date="1950-01-01", gender="女")
    drop = _person(village, name="李桂兰", id_number="510903194203081237", phone="13900001111")  # a man, 1942
    township.merge(keep, drop)
    kept = store.get(keep)
    assert kept is not None and (kept.data.get("id_number"), kept.data["phone"]) == (None, "13900001111")


def test_a_merge_buries_no_concurrent_edit_of_the_kept_resident(
        store: Store, village: Editor, township: Editor, replica: Replica) -> None:
    """A worker offline edits the kept resident while staff merge a duplicate into it: her note stays (the
    merge does not fill notes), her phone is in an open conflict with the filled one, and groups added on
    both sides all survive"""
    keep = _person(village, name="张秀英", birth_date="1942-03-08", groups=["老年人"])
    drop = _person(village, name="张秀英", birth_date="1942-03-08", notes="2019年登记", phone="13900001111",
                   groups=["独居"])
    node = replica(store)
    village.update(keep, {"notes": "独居，每周二送餐", "phone": "13800002222"})  # on the tablet, offline
    village.add(keep, "groups", "残疾人")
    Editor(node, device="node-510903001000", user="liu", unit="510903001000", tier="township").merge(keep, drop)
    for a, b in ((node, store), (store, node)):
        b.apply([op for _, op in a.ops_since(0)])
    for s in (store, node):
        kept = s.get(keep)
        assert kept is not None and kept.data["notes"] == "独居，每周二送餐"
        assert sorted(kept.data["groups"]) == sorted(["老年人", "独居", "残疾人"])
        assert kept.conflicts == ["phone"]


def test_a_merged_away_resident_edited_late_is_not_restored_on_its_own(
        store: Store, village: Editor, township: Editor, make_editor: MakeEditor, replica: Replica) -> None:
    """A tablet offline edits a resident that staff merged into another meanwhile: the delete is in conflict
    with the edit. Restoring it would leave it live yet still ``merged_into`` the kept one, on no list and
    refused by every merge: refused, nothing written; confirming the delete closes the conflict, merge kept"""
    keep = _person(village, name="张秀英", birth_date="1942-03-08")
    drop = _person(village, name="张秀英", birth_date="1942-03-08", phone="13900001111")
    tablet = replica(store)
    township.merge(keep, drop)
    store.apply(make_editor(tablet).update(drop, {"phone": "13900002222"}))  # offline: it has not heard of the merge
    assert store.get(drop).conflicts == [DELETED]  # type: ignore[union-attr]
    before = store.count_ops()
    with pytest.raises(InvalidValue, match="merged into") as e:
        township.resolve(drop, DELETED, False)
    assert e.value.details == {"record": drop, "merged_into": keep}
    assert store.count_ops() == before
    township.resolve(drop, DELETED, True)
    gone = store.get(drop)
    assert gone is not None and gone.deleted and gone.conflicts == [] and gone.data["merged_into"] == keep
    assert store.resolve_id(drop) == keep and [r.id for r in store.records("person")] == [keep]


def test_a_merge_moves_needs_to_the_kept_residents_village_within_the_merging_staffs_scope(
        store: Store, township: Editor) -> None:
    v1, v2, v3 = "510903001001", "510903001002", "510903001003"
    keep = township.create("person", {"unit": v2, "name": "李桂兰"})
    drop = township.create("person", {"unit": v2, "name": "李贵兰"})
    need = township.create("need", {"person": drop, "unit": v3, "category": "心理支持"})
    esc = township.create("escalation", {"unit": v3, "need": need, "category": "心理支持", "summary": "需要区里协调"})
    other_esc = township.create("escalation", {"unit": v1, "need": uuid7(), "category": "其他", "summary": "x"})
    before = store.count_ops()
    with pytest.raises(OutOfScope) as e:  # staff scoped to v2: the need in v3 is not theirs to move
        township.merge(keep, drop, within=(v2, v2))
    assert e.value.details == {"record": drop, "units": [v3]} and store.count_ops() == before
    township.merge(keep, drop, within=("510903001000", "510903001999"))
    assert (store.get(need).data["person"], store.get(need).unit) == (keep, v2)  # type: ignore[union-attr]
    assert store.get(esc).unit == v2 and store.get(other_esc).unit == v1  # type: ignore[union-attr]
