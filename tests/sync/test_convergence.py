"""Property tests for the merge model (DESIGN.md, "The merge model").

Replicas here are in-memory ``Store``s, each with one ``Editor``: one device, one author, one tier, and a
fake wall clock that the test moves by hand, so replicas can be days apart. A generated *program* of
actions drives them: creates, edits, set adds and removes, deletes, restores, resolutions of the conflicts a
replica shows, and partial exchanges that copy a random subset of one replica's ops to another, shuffled,
re-batched and sometimes duplicated. ``expected_digest`` restates the merge rule of DESIGN.md from the op set
alone, independently of the store, so a replica is checked against the contract and not only against the
other replicas.

What is tested:
    1. convergence after any history and a full exchange, and every replica matching the merge rule
    2. idempotence of every batch and of the whole log
    3. causality beats tier; among concurrent writes tier beats clock
    4. delete vs concurrent edit, and field conflicts: visible everywhere, closed everywhere by one resolution
    5. order independence at the op level (ops arriving before the ops their ``pred`` names)
    6. ops of an older schema and of fields no schema knows are kept, shown and exchanged
"""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field as dc_field
from typing import Any, TypeAlias
from unittest.mock import ANY

import msgspec
from hypothesis import HealthCheck, event, given, settings, strategies as st

from sync import HLC, Editor, Op, Store
from sync.schema import GROUPS, PERSON, SCHEMA, Collection, Field, Schema, Text
from sync.store import REF_FIELDS, Conflict, LiveOp
from sync.types import DELETED, REMOVE, SET, SURVIVES_DELETE, TIER_NAME, TIER_RANK

# --- the world ---------------------------------------------------------------------------------

#: 2023-11-14T22:13:20Z
T0 = 1_700_000_000_000
SECOND = 1000
DAY = 86_400_000
TIERS = ("village", "township", "county", "city")
UNITS = {
    "village": "510903001001",
    "township": "510903001000",
    "county": "510903000000",
    "city": "510900000000",
}
VILLAGE = UNITS["village"]
#: Small pools so that concurrent writers often pick the same value, and often different ones.
VALUES: dict[str, tuple[str, ...]] = {
    "name": ("张三", "李四", "王芳"),
    "gender": ("男", "女"),
    "phone": ("13800000000", "13900000001", "0825-2222222"),
    "address": ("育才路1号", "育才路2号"),
    "unit": ("510903001001", "510903001002"),
    "notes": ("行动不便", "需要回访", "子女在外地"),
    "merged_into": ("018bcfe5-6800-7000-8000-000000000901", "018bcfe5-6800-7000-8000-000000000902"),
}
REGISTER_FIELDS = tuple(VALUES)
REVIEW_FIELDS = tuple(f for f in VALUES if SCHEMA.needs_review("person", f))
assert "notes" not in REVIEW_FIELDS and "name" in REVIEW_FIELDS  # the pools cover both kinds

_encode = msgspec.json.Encoder().encode


def record_id(n: int) -> str:
    "A deterministic, well-formed UUIDv7 (``uuid7()`` is random, which Hypothesis cannot replay)"
    return f"018bcfe5-6800-7000-8000-{n:012x}"


def all_ops(store: Store) -> list[Op]:
    return [op for _, op in store.ops_since(0, limit=10**9)]


def op_ids(store: Store) -> set[tuple[str, int]]:
    return {op.id for op in all_ops(store)}


# --- the merge rule, restated from DESIGN.md ---------------------------------------------------


def _rank(op: Op) -> tuple[int, int, str, int]:
    "tier rank, then clock, then op id"
    return (op.tier, op.hlc, op.site, op.counter)


def expected_digest(ops: Iterable[Op], schema: Schema = SCHEMA) -> dict[str, tuple[Any, ...]]:
    """What ``Store.digest()`` must say for a replica holding exactly ``ops``, computed from the contract:
    live ops are those no op of the record names in ``pred``; a register shows its winner by (tier, hlc,
    op id) and, if it is a review field whose live ops hold different values, an open conflict; a set
    field holds the elements of its live adds; ``_deleted`` is a register, and a delete standing against
    live values of other fields is a conflict."""
    by_record: dict[str, dict[tuple[str, int], Op]] = defaultdict(dict)
    for op in ops:
        by_record[op.record][op.id] = op
    out: dict[str, tuple[Any, ...]] = {}
    for rid, held in by_record.items():
        (coll,) = {op.coll for op in held.values()}
        superseded = {tuple(p) for op in held.values() for p in op.pred}
        live = [op for op in held.values() if op.id not in superseded and op.kind != REMOVE]
        by_field: dict[str, list[Op]] = defaultdict(list)
        for op in live:
            by_field[op.field].append(op)
        data: dict[str, Any] = {}
        conflicts = []
        for name, fops in by_field.items():
            if name == DELETED:
                continue
            regs = [op for op in fops if op.kind == SET]
            if regs:
                data[name] = max(regs, key=_rank).value
                if schema.needs_review(coll, name) and len({_encode(op.value) for op in regs}) > 1:
                    conflicts.append(name)
            else:
                data[name] = sorted({op.value for op in fops})
        dels = by_field.get(DELETED, [])
        deleted = bool(dels) and max(dels, key=_rank).value is True
        c = schema.collections.get(coll)
        unit_field = c.unit_field if c else "unit"
        # The unit does not count against a delete: a delete re-asserts the unit it saw, so the record
        # stays in its village, and a concurrent move shows as a conflict on the unit itself.
        others_live = any(name not in (DELETED, unit_field, *SURVIVES_DELETE) for name in by_field)
        if len({_encode(op.value) for op in dels}) > 1 or (deleted and others_live):
            conflicts.append(DELETED)
        unit = data.get(unit_field)
        out[rid] = (
            coll,
            unit if isinstance(unit, str) else None,
            deleted,
            data,
            tuple(sorted((op.field, op.site, op.counter) for op in live)),
            tuple(sorted(conflicts)),
        )
    return out


def conflict_view(store: Store) -> list[tuple[Any, ...]]:
    "Open conflicts without local sequence numbers: (record, field, coll, unit, winner, candidate op ids)"
    return sorted(
        (c.record, c.field, c.coll, c.unit, _encode(c.winner),
         tuple(sorted((x.device, x.counter) for x in c.candidates)))
        for c in store.conflicts()
    )


def check_replica(store: Store, schema: Schema = SCHEMA) -> dict[str, tuple[Any, ...]]:
    """The replica's digest follows the merge rule for the ops it holds, and its conflict list agrees with
    its digest. Returns the digest."""
    digest = store.digest()
    assert digest == expected_digest(all_ops(store), schema)
    views = conflict_view(store)
    assert [(v[0], v[1]) for v in views] == sorted(
        (rid, f) for rid, d in digest.items() for f in d[5]
    )
    # the ref_ columns that records(naming=...) reads hold what the record's values name
    cols = ", ".join(f"ref_{f}" for f in REF_FIELDS)
    for rid, coll, *refs in store.conn.execute(f"SELECT id, coll, {cols} FROM records"):
        data = digest[rid][3]
        assert refs == [data[f] if coll in colls and isinstance(data.get(f), str) and data[f] else None
                        for f, colls in REF_FIELDS.items()], rid
    for rid, name, coll, _unit, winner, candidates in views:
        live = digest[rid][4]
        if name == DELETED:
            # every competing op but the unit's (it says where the record is, not whether it is) and those
            # a delete leaves live (where a merged resident went)
            c = schema.collections.get(coll)
            unit_field = c.unit_field if c else "unit"
            assert set(candidates) == {(dev, n) for f, dev, n in live
                                       if f != unit_field and f not in SURVIVES_DELETE}
        else:
            assert set(candidates) == {(dev, n) for f, dev, n in live if f == name}
            assert winner == _encode(digest[rid][3][name])
    return digest


# --- delivering ops ----------------------------------------------------------------------------


def deliver(
    store: Store,
    ops: Sequence[Op],
    rnd: random.Random,
    *,
    duplicate: bool = False,
    check_idempotent: bool = False,
) -> int:
    """Apply ``ops`` in a shuffled order, in batches of random sizes, some ops perhaps twice. Returns how
    many ops were new. With ``check_idempotent``, every batch is applied a second time and must change
    nothing."""
    ops = list(ops)
    if duplicate and ops:
        ops += rnd.choices(ops, k=rnd.randint(1, len(ops)))
    rnd.shuffle(ops)
    new = 0
    i = 0
    while i < len(ops):
        size = rnd.choice((1, 1, 2, 3, 5, 8, 13, len(ops)))
        batch = ops[i : i + size]
        i += size
        result = store.apply(batch)
        assert result.new + result.duplicates == len(batch)
        new += result.new
        if check_idempotent:
            before, held = store.digest(), store.count_ops()
            again = store.apply(batch[::-1])
            assert (again.new, again.duplicates) == (0, len(batch))
            assert store.digest() == before
            assert store.count_ops() == held
    return new


# --- replicas and the program that drives them -------------------------------------------------


@dataclass
class Replica:
    tier: str
    store: Store
    editor: Editor
    now: list[int]  # the fake wall clock, in ms; a list so the clock's closure sees it move

    @property
    def device(self) -> str:
        return self.editor.device


def make_replica(index: int, tier: str, start_ms: int, schema: Schema = SCHEMA) -> Replica:
    now = [start_ms]
    # replicas keep all, two or none of the records they wrote last in memory (``Store._stored``)
    store = Store(schema=schema, recent_records=(20_000, 2, 0)[index % 3])
    editor = Editor(
        store, device=f"dev{index}-{tier}", user=f"user{index}", unit=UNITS[tier], tier=tier,
        clock=HLC(clock=lambda: now[0]),
    )
    return Replica(tier, store, editor, now)


@dataclass(frozen=True)
class Create:
    at: int
    values: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class Update:
    at: int
    rec: int
    field: str
    value: str


@dataclass(frozen=True)
class Concurrent:
    """Several replicas set the same field of the same record (or delete it: value ``None``), one after the
    other, with no exchange between; then, if ``share``, each of them gets all the others' ops (so they see
    the conflict they made)"""

    rec: int
    field: str
    edits: tuple[tuple[int, str | None], ...]  # (replica, value)
    share: bool


@dataclass(frozen=True)
class SetGroups:
    "update(groups=[...]): the editor turns the list into adds and removes"

    at: int
    rec: int
    groups: tuple[str, ...]


@dataclass(frozen=True)
class AddGroup:
    at: int
    rec: int
    group: str


@dataclass(frozen=True)
class RemoveGroup:
    at: int
    rec: int
    group: str


@dataclass(frozen=True)
class Delete:
    at: int
    rec: int


@dataclass(frozen=True)
class Restore:
    at: int
    rec: int


@dataclass(frozen=True)
class Resolve:
    """Resolve the ``pick``-th open conflict a replica shows: replica ``at``, or if it shows none the next
    one that does. On ``_deleted``: keep the delete if ``choice`` is even, else restore. On a field: the
    ``choice``-th candidate's value, or with choice 3 the last value of the field's pool."""

    at: int
    pick: int
    choice: int


@dataclass(frozen=True)
class Exchange:
    "Copy a random subset (``fraction``) of ``src``'s ops to ``dst``, shuffled and re-batched"

    src: int
    dst: int
    fraction: float
    seed: int
    duplicate: bool
    observe: bool  # the receiving clock catches up with what it received, as a sync does


@dataclass(frozen=True)
class Tick:
    "One replica's wall clock jumps ahead"

    at: int
    ms: int


Action: TypeAlias = (
    Create | Update | Concurrent | SetGroups | AddGroup | RemoveGroup | Delete | Restore | Resolve | Exchange | Tick
)


@dataclass
class Net:
    replicas: list[Replica]
    check_idempotent: bool = False
    made: int = 0
    resolved: list[str] = dc_field(default_factory=list)  # the fields of the conflicts resolved

    @classmethod
    def build(cls, tiers: Sequence[str], offsets: Sequence[int], **kw: Any) -> Net:
        return cls([make_replica(i, t, T0 + o) for i, (t, o) in enumerate(zip(tiers, offsets))], **kw)

    def close(self) -> None:
        for r in self.replicas:
            r.store.close()

    def record(self, r: Replica, rec: int) -> str | None:
        ids = sorted(x.id for x in r.store.records(include_deleted=True))
        return ids[rec % len(ids)] if ids else None

    def run(self, actions: Iterable[Action]) -> None:
        for action in actions:
            for r in self.replicas:
                r.now[0] += SECOND
            self.step(action)

    def step(self, a: Action) -> None:
        if isinstance(a, Exchange):
            src, dst = self.replicas[a.src], self.replicas[a.dst]
            if src is dst:
                return
            rnd = random.Random(a.seed)
            ops = [op for op in all_ops(src.store) if rnd.random() < a.fraction]
            deliver(dst.store, ops, rnd, duplicate=a.duplicate, check_idempotent=self.check_idempotent)
            if a.observe and ops:
                dst.editor.clock.observe(max(op.hlc for op in ops))
            return
        if isinstance(a, Concurrent):
            for at, value in a.edits:
                self.step(Delete(at, a.rec) if value is None else Update(at, a.rec, a.field, value))
            if a.share:
                for i, j in itertools.permutations(sorted({at for at, _ in a.edits}), 2):
                    self.step(Exchange(i, j, 1.0, seed=i * 7 + j, duplicate=False, observe=True))
            return
        if isinstance(a, Resolve):
            self.resolve(a)
            return
        r = self.replicas[a.at]
        ed = r.editor
        if isinstance(a, Tick):
            r.now[0] += a.ms
        elif isinstance(a, Create):
            self.made += 1
            ed.create("person", dict(a.values), record=record_id(self.made))
        else:
            rid = self.record(r, a.rec)
            if rid is None:
                return
            if isinstance(a, Update):
                ed.update(rid, {a.field: a.value})
            elif isinstance(a, SetGroups):
                ed.update(rid, {"groups": list(a.groups)})
            elif isinstance(a, AddGroup):
                ed.add(rid, "groups", a.group)
            elif isinstance(a, RemoveGroup):
                ed.remove(rid, "groups", a.group)
            elif isinstance(a, Delete):
                ed.delete(rid)
            elif isinstance(a, Restore):
                rec = r.store.get(rid)
                if rec is None or rec.merged_into is None:  # a merged resident: ``Editor.restore`` refuses
                    ed.restore(rid)

    def resolve(self, a: Resolve) -> None:
        n = len(self.replicas)
        for r in (self.replicas[(a.at + i) % n] for i in range(n)):
            found = sorted(r.store.conflicts(), key=lambda c: (c.record, c.field))
            if found:
                break
        else:
            return
        c = found[a.pick % len(found)]
        value: Any
        if c.field == DELETED:
            rec = r.store.get(c.record)  # a merged resident's delete is confirmed: ``Editor.resolve`` refuses a restore
            value = a.choice % 2 == 0 or (rec is not None and rec.merged_into is not None)
        elif a.choice < 3:
            value = c.candidates[a.choice % len(c.candidates)].value
        else:
            value = VALUES[c.field][-1]
        r.editor.resolve(c.record, c.field, value)
        self.resolved.append(c.field)
        # a value whose pred names every live op closes the conflict, at once, where it was written
        assert (c.record, c.field) not in {(x.record, x.field) for x in r.store.conflicts()}

    def union(self) -> list[Op]:
        ops: dict[tuple[str, int], Op] = {}
        for r in self.replicas:
            for op in all_ops(r.store):
                ops.setdefault(op.id, op)
        return list(ops.values())

    def full_exchange(self, seed: int) -> None:
        "Every replica gets every op, each in its own random order and batching"
        rnd = random.Random(seed)
        everything = self.union()
        for r in self.replicas:
            deliver(r.store, everything, rnd, duplicate=rnd.random() < 0.5,
                    check_idempotent=self.check_idempotent)


# --- strategies --------------------------------------------------------------------------------


groups_st = st.lists(st.sampled_from(GROUPS), max_size=3, unique=True).map(tuple)


@st.composite
def person_values(draw: st.DrawFn) -> tuple[tuple[str, Any], ...]:
    values: dict[str, Any] = {"name": draw(st.sampled_from(VALUES["name"])), "unit": VILLAGE}
    for name in draw(st.lists(st.sampled_from(("gender", "phone", "address", "notes")), unique=True)):
        values[name] = draw(st.sampled_from(VALUES[name]))
    groups = draw(groups_st)
    if groups:
        values["groups"] = list(groups)
    return tuple(values.items())


def actions(n: int) -> st.SearchStrategy[Action]:
    at = st.integers(0, n - 1)
    rec = st.integers(0, 2)
    update = st.sampled_from(REGISTER_FIELDS).flatmap(
        lambda f: st.builds(Update, at, rec, st.just(f), st.sampled_from(VALUES[f]))
    )
    concurrent = st.sampled_from(REGISTER_FIELDS).flatmap(
        lambda f: st.builds(
            Concurrent, rec, st.just(f),
            st.lists(st.tuples(at, st.sampled_from((*VALUES[f], None))), min_size=2, max_size=n).map(tuple),
            st.booleans(),
        )
    )
    resolve = st.builds(Resolve, at, st.integers(0, 7), st.integers(0, 3))
    return st.one_of(
        st.builds(Tick, at, st.sampled_from((SECOND, 3_600_000, DAY, 3 * DAY))),
        st.builds(Create, at, person_values()),
        update,
        update,
        concurrent,
        concurrent,
        resolve,
        resolve,
        st.builds(SetGroups, at, rec, groups_st),
        st.builds(AddGroup, at, rec, st.sampled_from(GROUPS)),
        st.builds(RemoveGroup, at, rec, st.sampled_from(GROUPS)),
        st.builds(Delete, at, rec),
        st.builds(Restore, at, rec),
        st.builds(
            Exchange, at, at, st.sampled_from((0.3, 0.7, 1.0)), st.integers(0, 2**16),
            st.booleans(), st.booleans(),
        ),
        st.builds(Exchange, at, at, st.just(1.0), st.integers(0, 2**16), st.booleans(), st.booleans()),
    )


@dataclass(frozen=True)
class Scenario:
    tiers: tuple[str, ...]
    offsets: tuple[int, ...]  # each replica's wall clock, relative to T0, in ms
    creates: tuple[Create, ...]  # the first records...
    shared: bool  # ...and whether every replica gets them before the program starts
    actions: tuple[Action, ...]
    seed: int  # for the exchanges the scenario itself makes

    def net(self, **kw: Any) -> Net:
        return Net.build(self.tiers, self.offsets, **kw)


@st.composite
def scenarios(draw: st.DrawFn, min_actions: int = 8, max_actions: int = 30) -> Scenario:
    """3 or 4 replicas at distinct tiers (4: one at each), wall clocks up to days apart, one of them days
    ahead of every other; a few records, usually known to every replica; then a program of edits and
    partial exchanges, so that replicas edit the same records concurrently."""
    n = draw(st.integers(3, 4))
    tiers = tuple(draw(st.permutations(TIERS))[:n])
    offsets = [draw(st.sampled_from((0, -DAY, 2 * DAY)) | st.integers(-2 * DAY, 2 * DAY)) for _ in range(n)]
    fast = draw(st.integers(0, n - 1))
    offsets[fast] = max(offsets) + draw(st.integers(1, 30)) * DAY
    creates = draw(st.lists(st.builds(Create, st.integers(0, n - 1), person_values()), min_size=1, max_size=3))
    shared = draw(st.integers(0, 4)) > 0
    program = draw(st.lists(actions(n), min_size=min_actions, max_size=max_actions))
    return Scenario(tiers, tuple(offsets), tuple(creates), shared, tuple(program), draw(st.integers(0, 2**16)))


def run(scenario: Scenario, **kw: Any) -> Net:
    net = scenario.net(**kw)
    net.run(scenario.creates)
    if scenario.shared:
        net.full_exchange(scenario.seed + 1)
    net.run(scenario.actions)
    return net


# --- 1. convergence ----------------------------------------------------------------------------


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_replicas_converge_after_any_history_and_a_full_exchange(scenario: Scenario) -> None:
    net = run(scenario)
    try:
        # before the exchange, every replica already follows the merge rule for what it holds
        for r in net.replicas:
            check_replica(r.store)
        net.full_exchange(scenario.seed)
        everything = {op.id for op in net.union()}
        digests = [check_replica(r.store) for r in net.replicas]
        conflicts = [conflict_view(r.store) for r in net.replicas]
        for name in sorted({DELETED if f == DELETED else "a field" for f in net.resolved}):
            event(f"resolved a conflict on {name} during the program")
        for name in sorted({DELETED if v[1] == DELETED else "a field" for v in conflicts[0]}):
            event(f"a conflict on {name} open after the exchange")
        for r, digest, conf in zip(net.replicas, digests, conflicts):
            assert op_ids(r.store) == everything, r.device
            assert digest == digests[0], r.device
            assert conf == conflicts[0], r.device
        assert digests[0] == expected_digest(net.union())
    finally:
        net.close()


# --- 2. idempotence ----------------------------------------------------------------------------


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(max_actions=20), st.randoms(use_true_random=False))
def test_reapplying_any_batch_or_the_whole_log_changes_nothing(scenario: Scenario, rnd: random.Random) -> None:
    # every batch of every exchange is applied twice on arrival (check_idempotent)
    net = run(scenario, check_idempotent=True)
    try:
        net.full_exchange(scenario.seed)
        everything = net.union()
        for r in net.replicas:
            before, conflicts, held = r.store.digest(), conflict_view(r.store), r.store.count_ops()
            log = all_ops(r.store)
            whole = r.store.apply(log)
            assert (whole.new, whole.duplicates) == (0, len(log))
            assert deliver(r.store, everything, rnd, duplicate=True) == 0
            assert r.store.digest() == before
            assert conflict_view(r.store) == conflicts
            assert r.store.count_ops() == held
    finally:
        net.close()


# --- 3. causality beats tier; among concurrent writes tier beats clock ---------------------------

higher_tiers = st.sampled_from(("township", "county", "city"))


def two_values(field: str) -> st.SearchStrategy[tuple[str, str]]:
    return st.permutations(VALUES[field]).map(lambda v: (v[0], v[1]))


@settings(max_examples=60, deadline=None)
@given(
    higher=higher_tiers,
    field_values=st.sampled_from(REGISTER_FIELDS).flatmap(lambda f: st.tuples(st.just(f), two_values(f))),
    village_ahead=st.integers(1, 60).map(lambda d: d * DAY),
    creator=st.sampled_from(("village", "higher")),
    seed=st.integers(0, 2**16),
)
def test_concurrent_higher_tier_write_wins_even_against_a_village_clock_days_ahead(
    higher: str, field_values: tuple[str, tuple[str, str]], village_ahead: int, creator: str, seed: int
) -> None:
    field, (village_value, higher_value) = field_values
    net = Net.build(["village", higher, "village"], [village_ahead, 0, 0])
    v, h, observer = net.replicas
    try:
        origin = v if creator == "village" else h
        rid = origin.editor.create("person", {"name": "张三", "unit": VILLAGE}, record=record_id(1))
        net.full_exchange(seed)
        (h_op,) = h.editor.update(rid, {field: higher_value})
        (v_op,) = v.editor.update(rid, {field: village_value})
        assert v_op.hlc > h_op.hlc  # the village clock is days ahead: only the tier can make h win
        net.full_exchange(seed + 1)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None and rec.data[field] == higher_value, r.device
            live = {(e.device, e.counter) for e in r.store.state(rid)[field]}
            assert live == {h_op.id, v_op.id}, r.device
            fields = [c.field for c in r.store.conflicts(record=rid)]
            assert fields == ([field] if field in REVIEW_FIELDS else []), r.device
        if field in REVIEW_FIELDS:
            unit = higher_value if field == "unit" else VILLAGE
            expected = [Conflict(rid, "person", unit, field, higher_value, [
                LiveOp(h.device, h_op.counter, h_op.hlc, higher, higher_value, "user1", UNITS[higher], ANY),
                LiveOp(v.device, v_op.counter, v_op.hlc, "village", village_value, "user0", VILLAGE, ANY),
            ])]
            assert [observer.store.conflicts(record=rid)] == [expected]
    finally:
        net.close()


@settings(max_examples=60, deadline=None)
@given(
    higher=higher_tiers,
    field_values=st.sampled_from(REGISTER_FIELDS).flatmap(lambda f: st.tuples(st.just(f), two_values(f))),
    village_behind=st.integers(0, 60).map(lambda d: d * DAY),
    seed=st.integers(0, 2**16),
)
def test_a_village_edit_made_after_seeing_a_higher_tier_value_wins_over_it(
    higher: str, field_values: tuple[str, tuple[str, str]], village_behind: int, seed: int
) -> None:
    field, (higher_value, village_value) = field_values
    # the village clock is behind, so neither tier nor clock favours the village edit: only causality does
    net = Net.build(["village", higher, "county"], [-village_behind, 0, 0])
    v, h, observer = net.replicas
    try:
        rid = v.editor.create("person", {"name": "张三", "unit": VILLAGE}, record=record_id(1))
        net.full_exchange(seed)
        (h_op,) = h.editor.update(rid, {field: higher_value})
        deliver(v.store, all_ops(h.store), random.Random(seed))  # the village sees the correction
        assert v.store.get(rid).data[field] == higher_value  # type: ignore[union-attr]
        (v_op,) = v.editor.update(rid, {field: village_value})
        assert h_op.id in v_op.pred
        net.full_exchange(seed + 1)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None, r.device
            assert (rec.data[field], rec.conflicts) == (village_value, []), r.device
            assert [(e.device, e.counter) for e in r.store.state(rid)[field]] == [v_op.id], r.device
        assert observer.store.digest() == expected_digest(net.union())
    finally:
        net.close()


# --- 4. visible conflicts, closed everywhere by one resolution --------------------------------

BASE = {"name": "张三", "unit": VILLAGE, "gender": "女", "phone": "13800000000", "groups": ["老年人"]}


def deletion(ops: list[Op]) -> Op:
    "The ``_deleted`` op among the ops a delete wrote"
    (op,) = [op for op in ops if op.field == DELETED]
    return op


def _live_op(op: Op) -> LiveOp:
    "How ``Store.conflicts()`` shows a competing op (its local sequence number left open)"
    return LiveOp(op.site, op.counter, op.hlc, TIER_NAME[op.tier], op.value, op.user, op.unit, ANY)


@settings(max_examples=60, deadline=None)
@given(
    tiers=st.lists(st.sampled_from(TIERS), min_size=3, max_size=3),
    offsets=st.lists(st.integers(-3 * DAY, 3 * DAY), min_size=3, max_size=3),
    # every edit changes the value; a concurrent move (an edit of the unit) has a test of its own below
    edit=st.sampled_from([f for f in REGISTER_FIELDS if f != "unit" and f not in SURVIVES_DELETE]).flatmap(
        lambda f: st.tuples(st.just(f), st.sampled_from([v for v in VALUES[f] if v != BASE.get(f)]))
    ),
    keep=st.booleans(),
    resolver=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_delete_against_a_concurrent_edit_is_a_conflict_everywhere_until_one_resolution(
    tiers: list[str], offsets: list[int], edit: tuple[str, str], keep: bool, resolver: int, seed: int
) -> None:
    field, value = edit
    net = Net.build(tiers, offsets)
    a, b, _ = net.replicas
    try:
        rid = a.editor.create("person", BASE, record=record_id(1))
        net.full_exchange(seed)
        d_op = deletion(a.editor.delete(rid))
        (e_op,) = b.editor.update(rid, {field: value})
        net.full_exchange(seed + 1)
        candidates = sorted([d_op, e_op], key=_rank, reverse=True)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None and rec.deleted, r.device
            assert rec.conflicts == [DELETED], r.device
            # unit: ANY, because the record's unit is gone while it is deleted (see the report)
            assert r.store.conflicts() == [
                Conflict(rid, "person", ANY, DELETED, True, [_live_op(op) for op in candidates])
            ], r.device

        net.replicas[resolver].editor.resolve(rid, DELETED, keep)
        net.full_exchange(seed + 2)
        expected_data = {**BASE, field: value}
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None, r.device
            assert (rec.deleted, rec.conflicts, r.store.conflicts()) == (keep, [], []), r.device
            if not keep:
                assert rec.data == expected_data, r.device
        digests = [check_replica(r.store) for r in net.replicas]
        assert digests == [digests[0]] * len(digests)
    finally:
        net.close()


@settings(max_examples=20, deadline=None)
@given(deleter=st.sampled_from(TIERS), mover=st.sampled_from(TIERS), seed=st.integers(0, 2**16))
def test_a_delete_against_a_concurrent_move_is_a_conflict(deleter: str, mover: str, seed: int) -> None:
    """Moving a resident to another village is an edit like any other: a delete made without seeing it is a
    visible conflict that shows the move, not a silent win for the delete."""
    net = Net.build([deleter, mover, "township"], [0, 0, 0])
    a, b, _ = net.replicas
    try:
        rid = a.editor.create("person", BASE, record=record_id(1))
        net.full_exchange(seed)
        deleting = {op.id for op in a.editor.delete(rid)}
        (move,) = b.editor.update(rid, {"unit": "510903001002"})
        net.full_exchange(seed + 1)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None and rec.deleted, r.device
            # an open conflict on the record sets the move against the delete (on _deleted or on the unit)
            shown = [{(x.device, x.counter) for x in c.candidates} for c in r.store.conflicts(record=rid)]
            assert any(move.id in ids and ids & deleting for ids in shown), r.device
    finally:
        net.close()


@settings(max_examples=60, deadline=None)
@given(
    tiers=st.lists(st.sampled_from(TIERS), min_size=3, max_size=3),
    offsets=st.lists(st.integers(-3 * DAY, 3 * DAY), min_size=3, max_size=3),
    field_values=st.sampled_from(REVIEW_FIELDS).flatmap(lambda f: st.tuples(st.just(f), two_values(f))),
    choice=st.sampled_from(("first", "second", "other")),
    resolver=st.integers(0, 2),
    seed=st.integers(0, 2**16),
)
def test_a_field_conflict_is_visible_everywhere_until_one_resolution(
    tiers: list[str], offsets: list[int], field_values: tuple[str, tuple[str, str]], choice: str,
    resolver: int, seed: int,
) -> None:
    field, (first, second) = field_values
    net = Net.build(tiers, offsets)
    a, b, _ = net.replicas
    try:
        rid = net.replicas[2].editor.create("person", {"name": "张三", "unit": VILLAGE}, record=record_id(1))
        net.full_exchange(seed)
        (a_op,) = a.editor.update(rid, {field: first})
        (b_op,) = b.editor.update(rid, {field: second})
        net.full_exchange(seed + 1)
        winner, loser = sorted([a_op, b_op], key=_rank, reverse=True)
        for r in net.replicas:
            unit = winner.value if field == "unit" else VILLAGE
            assert r.store.conflicts() == [
                Conflict(rid, "person", unit, field, winner.value, [_live_op(winner), _live_op(loser)])
            ], r.device
            assert r.store.get(rid).data[field] == winner.value, r.device  # type: ignore[union-attr]

        others = [v for v in VALUES[field] if v not in (first, second)]
        chosen = second if choice == "second" else others[0] if choice == "other" and others else first
        (fix,) = net.replicas[resolver].editor.resolve(rid, field, chosen)
        assert set(fix.pred) == {a_op.id, b_op.id}
        net.full_exchange(seed + 2)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None, r.device
            assert (rec.data[field], rec.conflicts, r.store.conflicts()) == (chosen, [], []), r.device
    finally:
        net.close()


@settings(max_examples=40, deadline=None)
@given(
    old_groups=st.lists(st.sampled_from(GROUPS), min_size=1, max_size=3, unique=True),
    edit=st.one_of(
        st.tuples(st.just("add"), st.sampled_from(GROUPS)),
        # a concurrent move is not an edit the delete hides: it conflicts on the unit (a test below)
        st.sampled_from([f for f in REGISTER_FIELDS if f != "unit" and f not in SURVIVES_DELETE]).flatmap(
            lambda f: st.tuples(st.just(f), st.sampled_from(VALUES[f]))
        ),
    ),
    seed=st.integers(0, 2**16),
)
def test_restore_brings_back_what_the_delete_superseded_besides_the_concurrent_edit(
    old_groups: list[str], edit: tuple[str, str], seed: int
) -> None:
    """Resolving a delete-vs-edit conflict by restoring gives the record as it was, plus the concurrent edit:
    what a user would expect, and what a history without the delete gives. A concurrent *add* to a set field
    does not replace the elements the set held (add-wins observed-remove set), so they must come back."""
    kind, value = edit
    net = Net.build(["village", "village", "township"], [0, 0, 0])
    a, b, c = net.replicas
    try:
        rid = a.editor.create("person", {**BASE, "groups": old_groups}, record=record_id(1))
        net.full_exchange(seed)
        a.editor.delete(rid)
        if kind == "add":
            b.editor.add(rid, "groups", value)
            expected = {**BASE, "groups": sorted({*old_groups, value})}
        else:
            b.editor.update(rid, {kind: value})
            expected = {**BASE, "groups": sorted(old_groups), kind: value}
        net.full_exchange(seed + 1)
        c.editor.resolve(rid, DELETED, False)
        net.full_exchange(seed + 2)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None and not rec.deleted and rec.conflicts == [], r.device
            assert rec.data == expected, r.device
    finally:
        net.close()


@settings(max_examples=30, deadline=None)
@given(
    deleter=st.sampled_from(TIERS),
    concurrent_edit=st.one_of(
        st.none(), st.sampled_from(("name", "phone", "notes")).flatmap(
            lambda f: st.tuples(st.just(f), st.sampled_from(VALUES[f])))
    ),
    seed=st.integers(0, 2**16),
)
def test_a_deleted_record_stays_in_its_unit(deleter: str, concurrent_edit: tuple[str, str] | None, seed: int) -> None:
    """A delete does not move a record out of its village: the village's listing with deleted records shows
    it, and its delete-vs-edit conflict shows among the village's conflicts. (Nodes scope what they send a
    tablet by ``records.unit``: a record whose unit is lost stops reaching the village's tablets.)"""
    net = Net.build([deleter, "village", "township"], [0, 0, 0])
    a, b, _ = net.replicas
    try:
        rid = b.editor.create("person", {"name": "张三", "unit": VILLAGE}, record=record_id(1))
        net.full_exchange(seed)
        a.editor.delete(rid)
        if concurrent_edit is not None:
            b.editor.update(rid, dict([concurrent_edit]))
        net.full_exchange(seed + 1)
        for r in net.replicas:
            rec = r.store.get(rid)
            assert rec is not None and rec.deleted, r.device
            assert rec.unit == VILLAGE, r.device
            assert [x.id for x in r.store.records("person", unit=VILLAGE, include_deleted=True)] == [rid], r.device
            expected = [(rid, DELETED)] if concurrent_edit is not None else []
            assert [(c.record, c.field) for c in r.store.conflicts(unit=VILLAGE)] == expected, r.device
    finally:
        net.close()


# --- 5. order independence at the op level -----------------------------------------------------


def causal_order(ops: Sequence[Op]) -> list[Op]:
    "The ops so that each comes after every op of the set its pred names"
    by_id = {op.id: op for op in ops}
    out: list[Op] = []
    done: set[tuple[str, int]] = set()

    def visit(op: Op) -> None:
        if op.id in done:
            return
        done.add(op.id)
        for p in op.pred:
            if p in by_id:
                visit(by_id[p])
        out.append(op)

    for op in sorted(ops, key=lambda o: o.id):
        visit(op)
    return out


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios(min_actions=5, max_actions=25), st.integers(0, 2**16), st.integers(0, 2**16))
def test_any_order_and_batching_of_the_same_ops_gives_the_same_replica(
    scenario: Scenario, seed1: int, seed2: int
) -> None:
    net = run(scenario)
    try:
        ops = net.union()
    finally:
        net.close()
    forward = causal_order(ops)
    backward = forward[::-1]  # every op arrives before the ops its pred names
    if any(op.pred for op in ops):
        event("some ops arrive before their preds")
    rnd1, rnd2 = random.Random(seed1), random.Random(seed2)

    def fresh(feed: Callable[[Store], object]) -> dict[str, tuple[Any, ...]]:
        "A new replica fed the ops by ``feed``: it must hold them all and follow the merge rule"
        with Store() as s:
            feed(s)
            assert op_ids(s) == {op.id for op in ops}
            return check_replica(s)

    def one_by_one(order: list[Op]) -> Callable[[Store], object]:
        return lambda s: [s.apply([op]) for op in order]

    one_by_one_backward = fresh(one_by_one(backward))
    whole_backward = fresh(lambda s: s.apply(backward))
    causal = fresh(one_by_one(forward))
    shuffled = fresh(lambda s: deliver(s, ops, rnd1))
    shuffled_dup = fresh(lambda s: deliver(s, ops, rnd2, duplicate=True))
    assert one_by_one_backward == whole_backward == causal == shuffled == shuffled_dup
    assert causal == expected_digest(ops)


# --- 6. ops of an older schema, and of fields no schema knows ----------------------------------


def _person_with(extra: Field) -> Collection:
    return Collection(PERSON.name, PERSON.label, {**PERSON.fields, extra.name: extra}, PERSON.unit_field)


#: A tablet's schema: version 1, whose person has a ``contact`` field...
SCHEMA_V1 = Schema(1, {**SCHEMA.collections, "person": _person_with(Field("contact", Text, "联系人", since=1))})
#: ...that version 2 retired: still declared, so queued ops are accepted.
SCHEMA_V2 = Schema(
    2, {**SCHEMA.collections, "person": _person_with(Field("contact", Text, "联系人", since=1, retired=2))}
)

int64 = st.integers(-(2**63), 2**63 - 1)  # what MessagePack carries
contacts = st.text(st.characters(codec="utf-8"), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None)
@given(first=contacts, second=contacts, seed=st.integers(0, 2**16))
def test_ops_for_a_field_a_newer_schema_retired_are_kept_and_shown(first: str, second: str, seed: int) -> None:
    rnd = random.Random(seed)
    tablet = make_replica(0, "village", T0, SCHEMA_V1)
    node = make_replica(1, "township", T0, SCHEMA_V2)
    with tablet.store, node.store, Store(schema=SCHEMA_V2) as copy:
        rid = tablet.editor.create("person", {"name": "张三", "unit": VILLAGE, "contact": first}, record=record_id(1))
        tablet.editor.update(rid, {"contact": second, "phone": "13800000000"})
        queued = all_ops(tablet.store)
        assert any(op.field == "contact" for op in queued)
        assert deliver(node.store, queued, rnd, duplicate=True) == len(queued)
        assert op_ids(node.store) == {op.id for op in queued}
        assert node.store.get(rid).data == {  # type: ignore[union-attr]
            "name": "张三", "unit": VILLAGE, "contact": second, "phone": "13800000000"
        }
        assert node.store.digest() == tablet.store.digest()
        # the node writes on, and the retired field survives the next exchange
        node.editor.update(rid, {"name": "李四"})
        deliver(copy, all_ops(node.store), rnd)
        deliver(tablet.store, all_ops(node.store), rnd)
        for s in (node.store, copy, tablet.store):
            assert s.get(rid).data["contact"] == second  # type: ignore[union-attr]
            assert s.digest() == node.store.digest()


@settings(max_examples=40, deadline=None)
@given(
    coll=st.sampled_from(("person", "household")),
    field=st.sampled_from(("wechat", "contact", "_x")),
    value=st.one_of(contacts, int64, st.booleans(), st.lists(int64, max_size=3)),
    seed=st.integers(0, 2**16),
)
def test_ops_for_fields_unknown_to_the_schema_are_kept_and_exchanged(
    coll: str, field: str, value: Any, seed: int
) -> None:
    rnd = random.Random(seed)
    rid = record_id(7)
    # a tablet on some newer schema wrote these; the store is generic and must keep them
    ops = [
        Op("tab-new", 1, T0 << 16, coll, rid, "name", SET, "张三", (), "user9", VILLAGE, TIER_RANK["village"]),
        Op("tab-new", 2, (T0 << 16) + 1, coll, rid, field, SET, value, (), "user9", VILLAGE, TIER_RANK["village"]),
    ]
    with Store() as a, Store() as b, Store(schema=SCHEMA_V1) as c:
        assert deliver(a, ops, rnd, duplicate=True) == 2
        assert sorted(all_ops(a), key=lambda o: o.id) == ops
        assert a.get(rid).data == {"name": "张三", field: value}  # type: ignore[union-attr]
        deliver(b, all_ops(a), rnd)
        deliver(c, all_ops(b), rnd)
        for s in (b, c):
            assert sorted(all_ops(s), key=lambda o: o.id) == ops
            assert s.get(rid).data[field] == value  # type: ignore[union-attr]
        assert a.digest() == b.digest()

