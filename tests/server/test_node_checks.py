"""The node's checks of a pushed batch, in process: a batch with one bad op somewhere in the middle is
refused whole, with the error's code and the index of the op that failed, and nothing is written."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from server.node import Device, Node
from sync import Op, uuid7
from sync.errors import SyncError
from sync.hlc import MAX_AHEAD_MS, pack, wall_ms
from sync.edit import Editor
from sync.store import Store
from sync.types import ADD, REMOVE, SET
from sync.wire import PROTOCOL_VERSION, SyncRequest, pack_ops

TOWNSHIP = "510903001000"
VILLAGE = "510903001001"
BAD = 13  # the index of the op each case spoils: mid-batch, in the second record's ops


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node.db", TOWNSHIP)
    yield n
    n.close()


def _batch(dev: Device) -> list[Op]:
    "Three new persons of the device's village, as the tablet makes them: 7 ops each"
    ops: list[Op] = []
    hlc = pack(wall_ms() - 60_000, 0)
    for i in range(3):
        rid = uuid7()
        for field, value in (("unit", VILLAGE), ("name", f"王秀{i}"), ("gender", "女"),
                             ("birth_date", "1948-03-02"), ("phone", "13800000000"), ("address", "育才路1号"),
                             ("notes", "独居")):
            ops.append(Op(dev.device, len(ops) + 1, hlc + len(ops), "person", rid, field, SET, value,
                          (), dev.user, dev.unit, dev.rank))
    return ops


Spoil = Callable[[Op], Op]
CASES: list[tuple[str, Spoil, str]] = [
    ("another device", lambda op: msgspec.structs.replace(op, site="tab-other"), "forged_op"),
    ("a higher tier", lambda op: msgspec.structs.replace(op, tier=op.tier + 1), "forged_op"),
    ("another user", lambda op: msgspec.structs.replace(op, user="李四"), "forged_op"),
    ("counter 0", lambda op: msgspec.structs.replace(op, counter=0), "forged_op"),
    ("a clock a day ahead",
     lambda op: msgspec.structs.replace(op, hlc=pack(wall_ms() + MAX_AHEAD_MS + 86_400_000, 0)), "clock_ahead"),
    ("a unit of another village",
     lambda op: msgspec.structs.replace(op, field="unit", value="510903001002"), "out_of_scope"),
    ("a unit cleared", lambda op: msgspec.structs.replace(op, field="unit", value=None), "invalid_value"),
    ("a merge (staff only)", lambda op: msgspec.structs.replace(op, field="merged_into", value=uuid7()), "read_only"),
    ("a record of two collections",
     lambda op: msgspec.structs.replace(op, coll="need", field="description", value="需要助餐"), "forged_op"),
]


@pytest.mark.parametrize(("what", "spoil", "code"), CASES, ids=[c[0] for c in CASES])
def test_a_batch_with_one_bad_op_is_refused_naming_that_op(node: Node, what: str, spoil: Spoil,
                                                            code: str) -> None:
    _, token = node.add_device(VILLAGE, "张晓燕")
    dev = node.authenticate(token)
    ops = _batch(dev)
    ops[BAD] = spoil(ops[BAD])
    before = node.store.count_ops()

    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))

    assert e.value.code == code, e.value.message
    assert e.value.details["op"] == BAD
    assert f"ops[{BAD}]" in e.value.message
    assert node.store.count_ops() == before


def test_the_same_batch_unspoilt_is_taken_whole(node: Node) -> None:
    _, token = node.add_device(VILLAGE, "张晓燕")
    dev = node.authenticate(token)
    ops = _batch(dev)
    resp = node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))
    assert resp.acked == len(ops)
    assert node.store.count_ops() == len(ops)


def test_a_link_from_the_county_may_not_clear_a_records_unit(node: Node) -> None:
    county = "510903000000"
    _, token = node.add_device(county, "区民政局", tier="county")
    dev = node.authenticate(token)
    assert node.is_link(dev)
    rid, hlc = uuid7(), pack(wall_ms() - 60_000, 0)
    ops = [Op(f"node-{county}", 1, hlc, "notice", rid, "unit", SET, county, (), dev.user, county, dev.rank),
           Op(f"node-{county}", 2, hlc + 1, "notice", rid, "unit", SET, None, ((f"node-{county}", 1),),
              dev.user, county, dev.rank)]
    before = node.store.count_ops()
    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))
    assert (e.value.code, e.value.details["op"]) == ("invalid_value", 1), e.value.message
    assert node.store.count_ops() == before
    node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops[:1])))
    assert node.store.count_ops() == before + 1, "the notice itself is taken"


#: Ops no tablet makes, with no value: the kind and a required field are checked all the same
NOT_A_TABLETS: list[tuple[str, str, int]] = [
    ("groups set (a set field takes add and remove)", "groups", SET),
    ("an unknown kind", "gender", 7),
    ("an add on a register", "gender", ADD),
    ("the required name cleared", "name", SET),
]


@pytest.mark.parametrize(("what", "field", "kind"), NOT_A_TABLETS, ids=[c[0] for c in NOT_A_TABLETS])
def test_an_op_of_the_wrong_kind_or_clearing_a_required_field_is_refused_even_without_a_value(
        node: Node, what: str, field: str, kind: int) -> None:
    _, token = node.add_device(VILLAGE, "张晓燕")
    dev = node.authenticate(token)
    ops = _batch(dev)
    ops.append(Op(dev.device, len(ops) + 1, ops[-1].hlc + 1, "person", ops[BAD].record, field, kind, None, (),
                  dev.user, dev.unit, dev.rank))

    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))

    assert (e.value.code, e.value.details["field"]) == ("invalid_value", field), e.value.message
    assert node.store.count_ops() == 0


def test_what_a_tablet_clears_is_taken(node: Node) -> None:
    "A worker clears a phone and takes a resident out of every group: the tablet's ops are taken"
    _, token = node.add_device(VILLAGE, "张晓燕")
    dev = node.authenticate(token)
    with Store(None) as tablet:
        editor = Editor(tablet, device=dev.device, user=dev.user, unit=dev.unit, tier=dev.tier)
        rid = editor.create("person", {"unit": VILLAGE, "name": "王秀英", "phone": "13800000000",
                                       "groups": ["老年人", "独居"]})
        editor.update(rid, {"phone": None, "groups": []})
        ops = [op for _, op in tablet.ops_since(0)]
    assert {(op.field, op.kind, op.value) for op in ops} >= {("phone", SET, None), ("groups", REMOVE, "老年人")}

    resp = node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))

    assert resp.acked == len(ops)
    assert node.store.get(rid).data == {"unit": VILLAGE, "name": "王秀英", "phone": None}  # type: ignore[union-attr]


def test_a_link_may_not_send_an_op_of_the_wrong_kind_without_a_value(node: Node) -> None:
    county = "510903000000"
    _, token = node.add_device(county, "区民政局", tier="county")
    dev = node.authenticate(token)
    rid, hlc = uuid7(), pack(wall_ms() - 60_000, 0)
    ops = [Op(f"node-{county}", 1, hlc, "notice", rid, "unit", SET, county, (), dev.user, county, dev.rank),
           Op(f"node-{county}", 2, hlc + 1, "notice", rid, "title", SET, "防汛通知", (), dev.user, county, dev.rank)]
    for field, kind in (("title", SET), ("body", ADD), ("body", 7)):
        bad = Op(f"node-{county}", 3, hlc + 2, "notice", rid, field, kind, None, (), dev.user, county, dev.rank)
        with pytest.raises(SyncError) as e:
            node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops([*ops, bad])))
        assert (e.value.code, e.value.details["field"]) == ("invalid_value", field), e.value.message
        assert node.store.count_ops() == 0


def test_one_counter_for_two_different_ops_in_a_batch_is_refused_and_the_same_op_twice_taken(node: Node) -> None:
    "As a counter reused across two requests is: the second op would be acknowledged and lost"
    _, token = node.add_device(VILLAGE, "张晓燕")
    dev = node.authenticate(token)
    ops = _batch(dev)
    other = msgspec.structs.replace(ops[BAD], field="address", value="育才路2号")

    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops([*ops, other])))

    assert (e.value.code, e.value.details) == ("forged_op", {"counter": BAD + 1}), e.value.message
    assert node.store.count_ops() == 0
    resp = node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops([*ops, ops[BAD]])))
    assert resp.acked == len(ops) and node.store.count_ops() == len(ops)


def test_a_link_may_not_send_two_different_ops_under_one_counter(node: Node) -> None:
    county = "510903000000"
    _, token = node.add_device(county, "区民政局", tier="county")
    dev = node.authenticate(token)
    rid, hlc = uuid7(), pack(wall_ms() - 60_000, 0)
    ops = [Op(f"node-{county}", 1, hlc, "notice", rid, "unit", SET, county, (), dev.user, county, dev.rank),
           Op(f"node-{county}", 2, hlc + 1, "notice", rid, "title", SET, "防汛通知", (), dev.user, county, dev.rank),
           Op(f"node-{county}", 2, hlc + 1, "notice", rid, "title", SET, "防火通知", (), dev.user, county, dev.rank)]
    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops)))
    assert (e.value.code, e.value.details) == ("forged_op", {"counter": 2}), e.value.message
    assert node.store.count_ops() == 0


def test_an_op_naming_a_held_record_under_another_collection_is_refused(node: Node) -> None:
    "A need's field written onto an escalation of the village: checked as a need's, applied to the escalation"
    _, token = node.add_device(VILLAGE, "张晓燕")
    dev = node.authenticate(token)
    esc = node.editor("刘主任").create("escalation", {"unit": VILLAGE, "need": uuid7(), "category": "其他",
                                                    "summary": "需要区里协调", "status": "已上报"})
    before = node.store.count_ops()
    op = Op(dev.device, 1, pack(wall_ms(), 0), "need", esc, "status", SET, "已关闭", (), dev.user, dev.unit, dev.rank)
    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops([op])))
    assert (e.value.code, e.value.details) == ("forged_op", {"op": 0, "record": esc})
    assert node.store.count_ops() == before and node.store.get(esc).data["status"] == "已上报"  # type: ignore[union-attr]


def test_a_township_tablet_may_not_write_an_escalation(node: Node) -> None:
    "Staff escalate on the node's pages: the county takes escalation ops written by the township's node only"
    _, token = node.add_device(TOWNSHIP, "刘主任", tier="township")
    dev = node.authenticate(token)
    op = Op(dev.device, 1, pack(wall_ms() - 60_000, 0), "escalation", uuid7(), "unit", SET, VILLAGE, (),
            dev.user, dev.unit, dev.rank)
    with pytest.raises(SyncError) as e:
        node.sync(dev, SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops([op])))
    assert (e.value.code, e.value.details["collection"]) == ("read_only", "escalation"), e.value.message
    assert node.store.count_ops() == 0


def test_revoking_a_device_the_node_does_not_know_says_so(node: Node) -> None:
    "After a restore, a tablet enrolled since the backup is unknown here: revoking it must not look done"
    with pytest.raises(SyncError) as e:
        node.revoke("tab-000000000000")
    assert e.value.code == "not_found" and "tab-000000000000" in e.value.message
