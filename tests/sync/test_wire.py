"""Tests for sync.wire: packed op batches, the sync messages in MessagePack and JSON, and gzip bodies."""

from __future__ import annotations

import gzip
import subprocess
import sys
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from sync import MalformedBody, Op, OpBatch, SyncRequest, SyncResponse, TooLarge, pack_ops, unpack_ops, uuid7
from sync.types import ADD, REMOVE, SET
from sync.wire import (Spliced, WireAuthor, WireOp, compress, decode, decompress, deflate, deflate_ops, encode,
                       fewer_ops, format_for, gzip_parts, media_type, ops_values_size, request_body, spliced_body)

T0 = 1_700_000_000_000 << 16
VILLAGE = "510903001001"
TOWNSHIP = "510903001000"


def _ops() -> list[Op]:
    "Ops from two devices and three authors, with preds naming both devices"
    p, n = uuid7(), uuid7()
    return [
        Op("tab-1", 1, T0 + 1, "person", p, "name", SET, "张三", (), "wang", VILLAGE, 1),
        Op("tab-1", 2, T0 + 2, "person", p, "groups", ADD, "老年人", (), "wang", VILLAGE, 1),
        Op("tab-1", 3, T0 + 3, "person", p, "groups", REMOVE, "老年人", (("tab-1", 2),), "wang", VILLAGE, 1),
        Op("node-t", 1, T0 + 4, "person", p, "name", SET, "张叁", (("tab-1", 1),), "li", TOWNSHIP, 2),
        Op("tab-1", 4, T0 + 5, "need", n, "minutes", SET, 45, (), "zhang", VILLAGE, 1),
        Op("tab-1", 5, T0 + 6, "need", n, "notes", SET, None, (("node-t", 1), ("tab-1", 4)), "wang", VILLAGE, 1),
    ]


def _request(ops: list[Op], dead: Any = ()) -> SyncRequest:
    return SyncRequest(protocol=1, device="tab-1", cursor=17, epoch="e1", ops=pack_ops(ops, dead),
                       client_time=T0 >> 16, app_version="0.1.0")


def test_pack_unpack_round_trip() -> None:
    ops = _ops()
    batch = pack_ops(ops, dead=[("tab-1", 1), ("tab-1", 2)])
    assert batch.devices == ["tab-1", "node-t"]
    assert len(batch.authors) == 3  # (tab-1, wang), (tab-1, zhang), (node-t, li)
    assert batch.dead == [0, 1]
    assert unpack_ops(batch) == (ops, {("tab-1", 1), ("tab-1", 2)})
    assert unpack_ops(pack_ops([])) == ([], set())


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_sync_request_round_trips(fmt: Any) -> None:
    ops = _ops()
    req = _request(ops, dead=[("node-t", 1)])
    got = decode(encode(req, fmt), SyncRequest, fmt)
    assert got == req
    assert unpack_ops(got.ops) == (ops, {("node-t", 1)})


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_sync_response_round_trips(fmt: Any) -> None:
    ops = _ops()
    resp = SyncResponse(protocol=1, acked=3, ops=pack_ops(ops, [ops[0].id]), cursor=99, more=True,
                        server_time=T0 >> 16, epoch="e1", removed=[uuid7()], bootstrapping=True)
    got = decode(encode(resp, fmt), SyncResponse, fmt)
    assert got == resp
    assert unpack_ops(got.ops) == (ops, {ops[0].id})


def test_request_fields_have_defaults() -> None:
    req = decode(encode({"protocol": 1, "device": "tab-1"}), SyncRequest)
    assert (req.cursor, req.ops, req.limit, req.schema_version) == (0, OpBatch(), 5000, 1)


def test_unknown_fields_are_ignored_for_schema_evolution() -> None:
    body = encode({"protocol": 1, "device": "tab-1", "battery": 80}, "json")
    assert decode(body, SyncRequest, "json").device == "tab-1"


@pytest.mark.parametrize(
    ("fmt", "body", "word"),
    [("msgpack", b"\xc1", "MessagePack"), ("json", b'{"protocol": 1,', "JSON"), ("json", b"\x00\xff", "JSON")],
)
def test_malformed_bytes(fmt: Any, body: bytes, word: str) -> None:
    with pytest.raises(MalformedBody) as exc:
        decode(body, SyncRequest, fmt)
    assert f"not valid {word}" in exc.value.message
    assert (exc.value.status, exc.value.code) == (400, "malformed_body")


def nested_too_deeply(fmt: Any, depth: int = 100_000) -> bytes:
    "A sync request whose one op's value is arrays nested ``depth`` deep: a few hundred bytes gzipped"
    body = encode(_request([Op("tab-1", 1, T0, "person", uuid7(), "notes", SET, "DEEP", (), "wang", VILLAGE, 1)]),
                  fmt)
    deep = b"\x91" * depth + b"\xc0" if fmt == "msgpack" else b"[" * depth + b"]" * depth
    return body.replace(encode("DEEP", fmt), deep)


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_values_nested_too_deeply_are_a_malformed_body(fmt: Any) -> None:
    with pytest.raises(MalformedBody) as exc:
        decode(nested_too_deeply(fmt), SyncRequest, fmt)
    assert "nests arrays or maps too deeply" in exc.value.message
    assert (exc.value.status, exc.value.code) == (400, "malformed_body")
    assert isinstance(decode(nested_too_deeply(fmt, 100), SyncRequest, fmt).ops.ops[0].value, list)  # not refused


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"protocol": 1, "device": "tab-1", "ops": "none"}, "$.ops"),
        ({"protocol": "1", "device": "tab-1"}, "$.protocol"),
        ({"device": "tab-1"}, "protocol"),
        ({"protocol": 1, "device": "tab-1", "ops": [[], [], [[0, 1, 2, "person", b"\x01" * 16, "name", "k"]]]},
         "$.ops[2][0][6]"),
    ],
)
def test_wrong_types_name_the_path(fmt: Any, body: dict[str, Any], path: str) -> None:
    with pytest.raises(MalformedBody) as exc:
        decode(encode(body, fmt), SyncRequest, fmt)
    assert path in exc.value.message
    assert exc.value.message.startswith("the body does not match the protocol")


def _mangled(change: Callable[[OpBatch], None]) -> OpBatch:
    batch = pack_ops(_ops())
    change(batch)
    return batch


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda b: setattr(b.ops[0], "author", len(b.authors)), id="author-past-end"),
        pytest.param(lambda b: setattr(b.ops[0], "author", -1), id="author-negative"),
        pytest.param(lambda b: b.authors.__setitem__(0, WireAuthor(2, "wang", VILLAGE, 1)),
                     id="author-device-past-end"),
        pytest.param(lambda b: b.authors.__setitem__(0, WireAuthor(-1, "wang", VILLAGE, 1)),
                     id="author-device-negative"),
        pytest.param(lambda b: setattr(b.ops[2], "pred", [5, 2]), id="pred-device-past-end"),
        pytest.param(lambda b: setattr(b.ops[2], "pred", [-1, 2]), id="pred-device-negative"),
        pytest.param(lambda b: setattr(b.ops[2], "pred", [0]), id="pred-odd"),
        pytest.param(lambda b: setattr(b, "dead", [len(b.ops)]), id="dead-past-end"),
        pytest.param(lambda b: setattr(b, "dead", [-1]), id="dead-negative"),
        pytest.param(lambda b: setattr(b.ops[0], "record", b"\x01" * 15), id="record-short"),
        pytest.param(lambda b: setattr(b.ops[0], "record", b"\x01" * 17), id="record-long"),
    ],
)
def test_bad_indexes_are_malformed(change: Callable[[OpBatch], None]) -> None:
    with pytest.raises(MalformedBody):
        unpack_ops(_mangled(change))


def test_an_odd_pred_is_refused_naming_the_op() -> None:
    with pytest.raises(MalformedBody, match=r"ops\[2\]\.pred has an odd number of items") as exc:
        unpack_ops(_mangled(lambda b: setattr(b.ops[2], "pred", [0])))
    assert exc.value.details == {"op": 2}


def test_fewer_ops_after_a_413_takes_the_nodes_limit_only_when_it_is_fewer() -> None:
    assert fewer_ops({"limit": 300}, 1000) == 300
    assert fewer_ops({"limit": 1000}, 1000) == 500  # it takes as many: the body was too big, so half
    assert fewer_ops({"limit": 0}, 1000) == 500
    assert fewer_ops({"limit_bytes": 1 << 20}, 1000) == 500
    assert fewer_ops(None, 1000) == 500


def test_pack_refuses_a_record_id_that_is_not_a_uuid() -> None:
    op = _ops()[0]
    with pytest.raises(MalformedBody, match="not a UUID"):
        pack_ops([msgspec.structs.replace(op, record="not-a-uuid")])


def test_decompress_round_trip_and_limit() -> None:
    body = encode(_request(_ops()))
    assert decompress(compress(body), limit=len(body)) == body
    with pytest.raises(TooLarge) as exc:
        decompress(compress(body), limit=len(body) - 1)
    assert exc.value.status == 413


def test_decompress_refuses_a_gzip_bomb() -> None:
    bomb = compress(b"\0" * (64 << 20))
    assert len(bomb) < 100_000
    tracemalloc.start()
    try:
        with pytest.raises(TooLarge) as exc:
            decompress(bomb, limit=1 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert exc.value.details == {"limit_bytes": 1 << 20}
    assert "limit" in exc.value.message
    assert peak < 16 << 20  # it stopped inflating near the limit, not after 64 MiB


def test_decompress_refuses_what_is_not_gzip() -> None:
    with pytest.raises(MalformedBody, match="gzip"):
        decompress(b"\x93\x01\x02\x03", limit=1000)


def test_decompress_refuses_a_truncated_body() -> None:
    # an upload cut off mid-way must not be taken for a shorter body
    body = compress(encode(_request(_ops())))
    with pytest.raises(MalformedBody, match="gzip"):
        decompress(body[: len(body) // 2], limit=1 << 20)


def test_a_request_body_joined_from_a_batch_deflated_ahead_is_one_gzip_member() -> None:
    # the tablet deflates its next batch while the node works; the body must read as any gzip does
    req = _request(_ops())
    for batch in (req.ops, pack_ops([]), pack_ops(_ops() * 400)):
        whole = msgspec.structs.replace(req, ops=batch)
        body = request_body(msgspec.structs.replace(req, ops=OpBatch()), deflate_ops(batch))
        plain = encode(whole)
        assert gzip.decompress(body) == plain  # also checks the trailer's CRC and length
        one = zlib.decompressobj(16 + zlib.MAX_WBITS)  # one member, nothing after it
        assert one.decompress(body) == plain and one.eof and not one.unused_data
        assert decode(decompress(body, limit=len(plain)), SyncRequest) == whole
        assert len(body) <= len(compress(plain)) * 1.01 + 64  # two parts: a few bytes more


def test_a_packed_single_field_edit_is_small() -> None:
    op = Op("tab-village-1", 1234, T0 + 99, "person", uuid7(), "name", SET, "张叁", (("tab-village-1", 1200),),
            "wang.cun", VILLAGE, 1)
    (wire_op,) = pack_ops([op]).ops
    overhead = len(msgspec.msgpack.encode(wire_op)) - ops_values_size([op])
    assert overhead < 60
    # in a batch, devices and authors are listed once: per op, the overhead stays under that
    ops = [msgspec.structs.replace(op, counter=1234 + i, record=uuid7()) for i in range(100)]
    batch_size = len(encode(pack_ops(ops)))
    assert (batch_size - ops_values_size(ops)) / len(ops) < 60


def test_formats() -> None:
    assert format_for("application/json; charset=utf-8") == "json"
    assert format_for("application/msgpack") == "msgpack"
    assert format_for(None) == "msgpack"
    assert media_type("json") == "application/json"
    assert media_type("msgpack") == "application/msgpack"


def test_packing_straight_from_store_rows_equals_packing_ops() -> None:
    from sync import Store

    with Store() as store:
        store.apply(_ops())
        held = store.ops_since(0)
        seqs = [seq for seq, _ in held]
        ops = [op for _, op in held]
        dead = {seqs[0], seqs[3]}
        batch = store.packed(seqs, dead)
        assert batch == pack_ops(ops, {ops[0].id, ops[3].id})
        got, got_dead = unpack_ops(batch)
        assert got == ops and got_dead == {ops[0].id, ops[3].id}


def test_one_worker_on_two_tablets_packs_each_op_with_its_own_device() -> None:
    "One author (user, unit, tier) on two devices: packed from store rows, each op keeps its device"
    from sync import Store

    p = uuid7()
    ops = [Op("tab-1", 1, T0 + 1, "person", p, "name", SET, "张三", (), "wang", VILLAGE, 1),
           Op("tab-2", 1, T0 + 2, "person", p, "phone", SET, "13800000000", (), "wang", VILLAGE, 1)]
    with Store() as store:
        store.apply(ops)
        batch = store.packed([seq for seq, _ in store.ops_since(0)])
        assert batch == pack_ops(ops)
        assert unpack_ops(batch) == (ops, set())


def test_ops_kept_for_pulls_never_go_stale(tmp_path: Any) -> None:
    "``Store.packed`` keeps the ops it read; each way an op row can change makes it read them again"
    import sqlite3

    from sync import Store

    with Store(tmp_path / "s.db") as store:
        ops = _ops()
        store.apply(ops)
        seqs = [seq for seq, _ in store.ops_since(0)]
        in_order = [op for _, op in store.ops_since(0)]
        first = store.packed(seqs)
        assert len(store._ready) == len(ops)
        assert store.packed(seqs[2:]) == pack_ops(in_order[2:])  # from what it kept, and the same

        # a commit by another connection (another process) drops what was kept
        other = sqlite3.connect(tmp_path / "s.db")
        other.execute("UPDATE ops SET value = '\"张仨\"' WHERE seq = ?", (seqs[0],))
        other.commit()
        other.close()
        assert store.packed(seqs[:1]).ops[0].value == "张仨"

        # a clock correction rewrites the device's unsent ops
        store.restamp("tab-1", 0, 1000, ceiling=T0 + (10**6 << 16))
        assert [w.hlc for w in store.packed(seqs).ops] != [w.hlc for w in first.ops]
        assert store.packed(seqs) == pack_ops([op for _, op in store.ops_since(0)])

        # forgotten records free their sequence numbers for new ops
        store.forget([ops[0].record])
        fresh = Op("tab-2", 1, T0 + 9, "person", uuid7(), "name", SET, "李四", (), "li", VILLAGE, 1)
        store.apply([fresh])
        held = store.ops_since(0)
        assert store.packed([seq for seq, _ in held]) == pack_ops([op for _, op in held])

        # rows read inside a transaction are not kept: it may still roll back
        store._ready.clear()
        with store.transaction():
            assert len(store.packed([seq for seq, _ in held]).ops) == len(held)
            assert not store._ready


@pytest.mark.parametrize("n", [0, 1, 15, 16, 65_535, 65_536])
def test_a_spliced_response_inflates_to_the_response_with_its_ops(n: int) -> None:
    "Ops given as deflated parts (runs of any length) sit in the body where ``encode`` puts them"
    ops = [WireOp(i % 3, i + 1, T0 + i, "person", bytes(16), "notes", SET, f"走访{i}" if i % 2 else None,
                  [0, i] if i % 5 == 0 else []) for i in range(n)]
    authors = [WireAuthor(0, "wang", VILLAGE, 1), WireAuthor(1, "li", VILLAGE, 1), WireAuthor(1, "zhao", TOWNSHIP, 2)]
    batch = OpBatch(["tab-1", "tab-2"], authors, [], [k for k in range(n) if k % 7 == 3])
    resp = SyncResponse(protocol=1, acked=9, ops=batch, cursor=12_345, more=True, server_time=T0, epoch="e1",
                        removed=["r-1"], cursor_check="tab-1:9")
    blobs = [encode(op) for op in ops]
    cuts = sorted({0, n, *range(0, n, 997), *(k for k in (1, 2, 14) if k < n)})
    parts = [deflate(b"".join(blobs[a:b])) for a, b in zip(cuts, cuts[1:])]
    body = spliced_body(Spliced(resp, n, parts))
    whole = msgspec.structs.replace(resp, ops=msgspec.structs.replace(batch, ops=ops))
    assert gzip.decompress(body) == encode(whole)
    assert decode(decompress(body, 1 << 26), SyncResponse) == whole


def test_a_part_deflated_to_follow_another_refers_back_into_it_and_inflates_after_it() -> None:
    first = "".join(f"四川省遂宁市船山区育才路街道{i}号 " for i in range(300)).encode()
    second = "".join(f"四川省遂宁市船山区育才路街道{i}号 " for i in range(150, 450)).encode()
    alone, chained = deflate(second), deflate(second, after=first)
    assert len(chained.deflated) < len(alone.deflated) * 0.7  # it repeats what came before
    body = gzip_parts([deflate(first), chained])
    assert gzip.decompress(body) == first + second


FIRST_DECODES = """
import sys, threading
sys.setswitchinterval(1e-6)  # switch threads as often as can be: the race shows in about a third of runs
from sync import wire
from sync.wire import SyncResponse, pack_ops
body = wire.encode(SyncResponse(protocol=1, acked=0, ops=pack_ops([]), cursor=1, more=False, server_time=0,
                                epoch="e"))
go = threading.Event()
def first_decode():
    go.wait()
    assert wire.decode(body, SyncResponse).cursor == 1
threads = [threading.Thread(target=first_decode) for _ in range(50)]
for t in threads:
    t.start()
go.set()
for t in threads:
    t.join()
print("decoded")
"""


def test_threads_decoding_a_type_for_the_first_time_at_once_do_not_crash() -> None:
    # msgspec 0.22 crashed (SIGSEGV) when threads made decoders of one Struct type at once; ``decode`` makes
    # them one at a time. In a fresh interpreter each run, so the type is new to each
    root = Path(__file__).resolve().parents[2]
    for _ in range(8):
        run = subprocess.run([sys.executable, "-c", FIRST_DECODES], cwd=root, capture_output=True, text=True,
                             timeout=60)
        assert (run.returncode, run.stdout.strip()) == (0, "decoded"), run.stderr[-2000:]
