"""The records a store wrote last, kept in memory so that a batch editing them need not read them back:
what is kept is what was written, and it goes when a transaction rolls back or another connection
writes the file."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import msgspec
import pytest

from sync import Editor, Op, Store

MakeEditor = Callable[..., Editor]
VILLAGE = "510903001001"


def _ops(store: Store) -> list[Op]:
    return [op for _, op in store.ops_since(0)]


def _reads_of_records(store: Store) -> tuple[list[str], Callable[[], None]]:
    "The SELECTs of whole stored records this store's connection runs from now on"
    seen: list[str] = []

    def trace(sql: str) -> None:
        if sql.lstrip().startswith("SELECT id, coll, unit, unit_seq"):
            seen.append(sql)

    store.conn.set_trace_callback(trace)
    return seen, lambda: store.conn.set_trace_callback(None)


def _assert_as_fresh(store: Store, tablet: Editor, rid: str) -> None:
    "``store`` holds what a fresh replica given all the tablet's ops holds, and each live op of ``rid`` once"
    with Store(recent_records=0) as fresh:
        fresh.apply(_ops(tablet.store))
        assert store.digest() == fresh.digest()
    # a kept state from a batch that failed would hold an edit's op twice
    assert len(store.live_ops([rid])) == len({op.id for op in store.live_ops([rid])})


@pytest.fixture
def tablet(make_editor: MakeEditor) -> Iterator[Editor]:
    "A village tablet's editor on a scratch store: the ops it makes are applied elsewhere"
    with Store() as scratch:
        yield make_editor(scratch, "village", device="tab-1")


def test_an_edit_of_a_record_just_written_is_applied_without_reading_it_back(
    store: Store, tablet: Editor
) -> None:
    rid = tablet.create("person", {"name": "张三", "unit": VILLAGE})
    store.apply(_ops(tablet.store))
    seen, stop = _reads_of_records(store)
    try:
        edit = tablet.update(rid, {"phone": "13800000000"})
        store.apply(edit)
        assert seen == []
        # one it never wrote is read from the file
        other = tablet.create("person", {"name": "李四", "unit": VILLAGE})
        store.apply([op for op in _ops(tablet.store) if op.record == other])
        assert len(seen) == 1
    finally:
        stop()
    assert store.get(rid).data["phone"] == "13800000000"  # type: ignore[union-attr]


def test_without_memory_every_batch_reads_its_records(tablet: Editor) -> None:
    with Store(recent_records=0) as store:
        rid = tablet.create("person", {"name": "张三", "unit": VILLAGE})
        store.apply(_ops(tablet.store))
        seen, stop = _reads_of_records(store)
        try:
            store.apply(tablet.update(rid, {"phone": "13800000000"}))
        finally:
            stop()
        assert len(seen) == 1
        record = store.get(rid)
        assert record is not None
        assert record.data == {"name": "张三", "unit": VILLAGE, "phone": "13800000000"}


def test_a_write_by_another_connection_is_read_back_not_overwritten(
    db_path: Path, tablet: Editor, make_editor: MakeEditor
) -> None:
    rid = tablet.create("person", {"name": "张三", "unit": VILLAGE})
    with Store(db_path) as node, Store(db_path) as cli:
        node.apply(_ops(tablet.store))  # the node keeps the record as it wrote it
        # township staff correct the name through another connection (another process, say)
        staff = make_editor(Store(), "township", device="node-staff")
        staff.store.apply(_ops(tablet.store))
        correction = staff.update(rid, {"name": "张叁"})
        cli.apply(correction)
        # the node then takes the tablet's edit of another field: the correction must survive it
        node.apply(tablet.update(rid, {"phone": "13800000000"}))
        record = node.get(rid)
        assert record is not None
        assert record.data["name"] == "张叁"
        assert record.data["phone"] == "13800000000"
        live = {(op.site, op.counter) for op in node.live_ops([rid])}
        assert (correction[0].site, correction[0].counter) in live
        staff.store.close()


def test_a_batch_that_rolls_back_leaves_nothing_kept(
    store: Store, tablet: Editor, monkeypatch: pytest.MonkeyPatch
) -> None:
    rid = tablet.create("person", {"name": "张三", "unit": VILLAGE})
    store.apply(_ops(tablet.store))
    edit = tablet.update(rid, {"phone": "13800000000", "name": "张叁"})

    def fail(*args: object) -> None:
        raise RuntimeError("disk went away")

    # fails after the records were written (and kept), before the commit
    monkeypatch.setattr(store, "_advance_site", fail)
    with pytest.raises(RuntimeError):
        store.apply(edit)
    monkeypatch.undo()
    store.apply(edit)
    _assert_as_fresh(store, tablet, rid)


def test_a_commit_that_fails_is_rolled_back_and_leaves_nothing_kept(store: Store, tablet: Editor) -> None:
    rid = tablet.create("person", {"name": "张三", "unit": VILLAGE})
    store.apply(_ops(tablet.store))
    edit = tablet.update(rid, {"phone": "13800000000", "name": "张叁"})

    def no_commit(action: int, arg: str | None, *_: object) -> int:
        "SQLite refuses the COMMIT statement (as a full disk would refuse the commit)"
        deny = action == sqlite3.SQLITE_TRANSACTION and arg == "COMMIT"
        return sqlite3.SQLITE_DENY if deny else sqlite3.SQLITE_OK

    store.conn.set_authorizer(no_commit)
    try:
        with pytest.raises(sqlite3.DatabaseError):
            store.apply(edit)
    finally:
        store.conn.set_authorizer(None)
    assert not store.conn.in_transaction
    assert store.get(rid).data == {"name": "张三", "unit": VILLAGE}  # type: ignore[union-attr]
    store.apply(edit)  # sent again, it applies on what was committed
    _assert_as_fresh(store, tablet, rid)


def test_a_clock_correction_of_kept_records_matches_one_of_stored_records(tablet: Editor) -> None:
    ids = [tablet.create("person", {"name": f"居民{i}", "unit": VILLAGE}) for i in range(3)]
    tablet.update(ids[0], {"phone": "13800000000"})
    ops = _ops(tablet.store)
    with Store() as kept, Store(recent_records=0) as read:
        for store in (kept, read):
            store.apply(ops)
        seen, stop = _reads_of_records(kept)
        try:
            for store in (kept, read):
                assert store.restamp("tab-1", 0, 60_000, ceiling=max(op.hlc for op in ops) << 8) == len(ops)
        finally:
            stop()
        assert seen == []  # the correction took the kept records from memory
        assert len(kept._recent) == 3  # and keeps them as it rewrote them
        assert kept.digest() == read.digest()
        shifted = {op.id: op.hlc for op in read.live_ops(ids)}
        assert {op.id: op.hlc for op in kept.live_ops(ids)} == shifted
        assert all(shifted[op.id] > op.hlc for op in ops if op.id in shifted)
        # a concurrent edit stamped between the old and the corrected clock loses to the corrected one
        name = next(op for op in ops if op.record == ids[2] and op.field == "name")
        rival = msgspec.structs.replace(name, site="tab-2", counter=1, hlc=name.hlc + (30_000 << 16),
                                        value="王五")
        for store in (kept, read):
            store.apply([rival])
            assert store.get(ids[2]).data["name"] == "居民2"  # type: ignore[union-attr]
        assert kept.digest() == read.digest()


def test_only_the_last_records_written_are_kept(tablet: Editor) -> None:
    with Store(recent_records=4) as store:
        ids = [tablet.create("person", {"name": f"居民{i}", "unit": VILLAGE}) for i in range(10)]
        store.apply(_ops(tablet.store))
        assert len(store._recent) <= 4
        assert set(store._recent) <= set(ids[-4:])
        # an edit of each, kept or not, lands on what is stored
        for i, rid in enumerate(ids):
            store.apply(tablet.update(rid, {"phone": f"1380000000{i}"}))
        for i, rid in enumerate(ids):
            assert store.get(rid).data["phone"] == f"1380000000{i}"  # type: ignore[union-attr]


def test_a_record_forgotten_and_received_again_is_built_afresh(store: Store, tablet: Editor) -> None:
    rid = tablet.create("person", {"name": "张三", "unit": VILLAGE})
    tablet.update(rid, {"phone": "13800000000"})
    ops = _ops(tablet.store)
    store.apply(ops)
    before = store.digest()
    store.forget([rid])  # it left this replica's scope
    assert store.get(rid) is None
    store.apply(ops)  # and came back whole
    assert store.digest() == before
