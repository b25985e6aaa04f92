"""``Store.written_after``: the op rows a store inserted lately, from memory, exactly as the ``ops`` table
and its ``superseded`` marks give them; or nothing, when memory cannot say.

Three tablets and the township edit the same residents, concurrently too, and their ops reach a node's
store in random batches and orders: ops before the ops they supersede, ops the sender says are dead,
ops before their record's unit op, a batch that rolls back, a batch written by a second connection.
After every step, what memory gives for several starting points must equal what the table gives.
"""

from __future__ import annotations

import itertools
import random
from pathlib import Path
from typing import Any
from unittest import mock

from hypothesis import given, settings, strategies as st

from sync import Editor, Op, Store
from sync import store as storelib
from sync.hlc import HLC

V1, V2 = "510903001001", "510903001002"
T0 = 1_700_000_000_000
TOWNSHIP = "510903001000"

_TABLE = (f"SELECT {Store.OP_COLUMNS}, EXISTS (SELECT 1 FROM superseded s WHERE s.site = o.site"
          " AND s.counter = o.counter AND s.record = o.record), unit FROM ops o WHERE seq > ? AND unit IS NOT NULL"
          " ORDER BY seq")


def _every(unit: str) -> bool:
    return True


def _from_table(store: Store, after: int, unit: str | None = None) -> list[tuple[Any, ...]]:
    "The op rows after ``after`` that some unit's scope holds (of ``unit``, if given)"
    return [(*r[:11], bool(r[11]), r[12]) for r in store.conn.execute(_TABLE, (after,))
            if unit is None or r[12] == unit]


def _from_memory(by_unit: dict[str | None, list[tuple[Any, ...]]]) -> list[tuple[Any, ...]]:
    "Memory's rows as the table gives them: JSON as text, the unit last, in seq order"
    def text(v: Any) -> Any:
        return v.decode() if isinstance(v, (bytes, bytearray)) else v
    for rows in by_unit.values():
        assert rows and [r[0] for r in rows] == sorted(r[0] for r in rows)
    return sorted((*r[:8], text(r[8]), text(r[9]), r[10], r[11], u) for u, rows in by_unit.items() for r in rows)


class Devices:
    "Three village tablets and the township, each with a store of its own, editing the same residents"

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.stores = [Store() for _ in range(4)]
        self.editors = [
            Editor(s, device=f"dev-{i}", user=f"u{i}", unit=TOWNSHIP if i == 3 else V1,
                   tier="township" if i == 3 else "village", clock=HLC(clock=itertools.count(T0 + i, 1000).__next__))
            for i, s in enumerate(self.stores)
        ]

    def close(self) -> None:
        for s in self.stores:
            s.close()

    def work(self) -> None:
        "A few edits on one device; sometimes what it holds goes to another first (so edits build on it)"
        rng = self.rng
        i = rng.randrange(4)
        ed, store = self.editors[i], self.stores[i]
        if rng.random() < 0.4:
            other = self.stores[rng.randrange(4)]
            other.apply([op for _, op in store.ops_since(0)])
        people = [r.id for r in store.records("person")]
        for _ in range(rng.randint(1, 4)):
            if not people or rng.random() < 0.3:
                people.append(ed.create("person", {"unit": V1, "name": f"居民{rng.randrange(100)}"}))
            elif rng.random() < 0.15:
                ed.update(rng.choice(people), {"unit": rng.choice([V1, V2])})
            elif rng.random() < 0.1:
                ed.delete(rng.choice(people))
            else:
                ed.update(rng.choice(people), {"notes": f"走访{rng.randrange(100)}"})

    def some_ops(self) -> list[Op]:
        "A random handful of all the ops made so far, in a random order"
        ops = [op for s in self.stores for _, op in s.ops_since(0)]
        return self.rng.sample(ops, min(len(ops), self.rng.randint(1, 12)))


STEPS = st.lists(st.sampled_from(["work", "apply", "apply", "apply", "dead", "rollback", "other"]),
                 min_size=5, max_size=40)


@settings(max_examples=60, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), steps=STEPS, keep=st.sampled_from([3, 5, 30, 20_000]))
def test_memory_gives_the_op_rows_the_table_gives(tmp_path_factory: Any, seed: int, steps: list[str],
                                                  keep: int) -> None:
    rng = random.Random(seed)
    path: Path = tmp_path_factory.mktemp("written") / "node.db"
    devices = Devices(rng)
    node = Store(path)
    other = Store(path)  # a second connection to the same file
    tops = [0]
    answered = wrote = 0
    assert node.written_after(0, 0, _every) is None  # nothing written; and from now on it keeps what it writes
    try:
        with mock.patch.object(storelib, "WRITTEN_OPS", keep):
            for step in steps:
                if step == "work":
                    devices.work()
                    continue
                ops = devices.some_ops()
                before = node.max_seq()
                if step == "rollback":
                    try:
                        with node.transaction():
                            node.apply(ops)
                            raise RuntimeError("the batch fails")
                    except RuntimeError:
                        pass
                elif step == "other":
                    other.apply(ops)
                else:
                    applied = node.apply(ops, dead={op.id for op in ops if rng.random() < 0.2}
                                         if step == "dead" else ())
                    if applied.new:  # a plain apply on this connection: memory has what it wrote
                        assert node.written_after(before, node.max_seq(), _every) is not None
                        wrote += 1
                top = node.max_seq()
                tops.append(top)
                for after in {0, before, top, rng.choice(tops), max(0, top - rng.randint(1, 8))}:
                    got = node.written_after(after, top, _every)
                    if got is not None:
                        assert _from_memory(got) == _from_table(node, after)
                        answered += 1
                        one = node.written_after(after, top, V2.__eq__)  # one unit's rows only
                        assert one is not None and _from_memory(one) == _from_table(node, after, V2)
                # asked up to a seq that is not its last, memory says nothing
                assert node.written_after(0, top + 1, _every) is None
                # what it keeps stays about ``keep`` rows: the oldest go (the last apply's stay whole)
                assert sum(map(len, node._written_rows.values())) <= max(keep, 12)
        assert answered >= wrote
    finally:
        other.close()
        node.close()
        devices.close()


def test_memory_says_nothing_inside_a_transaction_or_after_another_connection_wrote(
        db_path: Path) -> None:
    devices = Devices(random.Random(3))
    for _ in range(6):
        devices.work()
    ops = [op for s in devices.stores for _, op in s.ops_since(0)]
    half = len(ops) // 2
    with Store(db_path) as node, Store(db_path) as other:
        node.apply(ops[:3])
        start = node.max_seq()
        assert node.written_after(0, start, _every) is None  # nobody asked before: nothing was kept
        node.apply(ops[:half])
        top = node.max_seq()
        assert node.written_after(start, top, _every) is not None
        assert node.written_after(start - 1, top, _every) is None  # from before what it kept
        with node.transaction():
            assert node.written_after(start, top, _every) is None
        other.apply(ops[half:])
        assert node.written_after(start, top, _every) is None  # it may have marked some of them superseded
        assert node.written_after(start, node.max_seq(), _every) is None
        node.apply(ops[:3])  # nothing new; its next write starts afresh
        devices.work()
        node.apply([op for s in devices.stores for _, op in s.ops_since(0)])
        assert node.written_after(top, node.max_seq(), _every) is None  # the other connection's ops lie between
    devices.close()


def test_memory_says_nothing_once_held_ops_are_rewritten(tmp_path: Path) -> None:
    "A tablet forgetting a record that left its village drops its ops: what memory kept is no longer so"
    devices = Devices(random.Random(4))
    for _ in range(6):
        devices.work()
    ops = [op for s in devices.stores for _, op in s.ops_since(0)]
    with Store(tmp_path / "tablet.db") as store:
        store.written_after(0, 0, _every)
        store.apply(ops)
        top = store.max_seq()
        assert store.written_after(0, top, _every) is not None
        store.forget([op.record for op in ops if op.record != ops[-1].record][:1])  # the last op stays
        assert store.max_seq() == top
        assert store.written_after(0, top, _every) is None
    devices.close()


def test_an_op_kept_in_memory_that_turns_dead_later_is_shown_dead(tmp_path: Path) -> None:
    "Two tablets supersede the same op at once: when the second edit comes, that op turns dead"
    devices = Devices(random.Random(5))
    a, b, c = devices.editors[:3]
    rid = a.create("person", {"unit": V1, "name": "新登记", "notes": "初访"})
    made = [op for _, op in devices.stores[0].ops_since(0)]
    for other in devices.stores[1:3]:
        other.apply(made)
    (y,) = b.update(rid, {"notes": "村里更正"})
    (z,) = c.update(rid, {"notes": "再次走访"})
    with Store(tmp_path / "node.db") as node:
        node.written_after(0, 0, _every)
        node.apply(made)
        node.apply([y])
        before = node.written_after(0, node.max_seq(), _every)
        assert before is not None and not any(row[11] for rows in before.values() for row in rows)
        node.apply([z])  # names the notes op that y already superseded: it is dead from now on
        got = node.written_after(0, node.max_seq(), _every)
        assert got is not None
        assert _from_memory(got) == _from_table(node, 0)
        notes = next(op for op in made if op.field == "notes")
        assert [row[11] for rows in got.values() for row in rows if row[2] == notes.counter
                and row[5] == rid and row[6] == "notes"] == [True]
    devices.close()
