"""Property test: reference data written at several tiers converges, and shows the higher tier's value.

Replicas at the township, county and city edit the same catalogue entries (whose ids follow from their
kind and code, so two tiers creating one code make one record) and notices, exchange random subsets of
their ops in random orders and batches, and finally everything. Every replica must then hold the same
digest, and each must match the merge rule restated from the op set (``expected_digest``): among
concurrent writes the higher tier wins; a write made after seeing another replaces it.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings, strategies as st

from sync import reference as ref
from sync.ops import Op
from test_convergence import all_ops, check_replica, deliver, make_replica

TIERS = ("township", "county", "city")
CODES = ("养老服务", "防汛救灾")
NAMES = ("名称甲", "名称乙", "名称丙")
TITLES = ("通知一", "通知二")


@dataclass(frozen=True)
class SetEntry:
    at: int
    code: int
    name: int
    order: int | None
    retired: bool | None


@dataclass(frozen=True)
class Notice:
    at: int
    title: int
    edit: int | None  # retitle the edit-th notice this replica holds, instead of adding one


@dataclass(frozen=True)
class Swap:
    src: int
    dst: int
    fraction: float
    seed: int


Action = SetEntry | Notice | Swap
replica = st.integers(0, len(TIERS) - 1)
actions = st.one_of(
    st.builds(SetEntry, replica, st.integers(0, len(CODES) - 1), st.integers(0, len(NAMES) - 1),
              st.none() | st.integers(0, 3), st.none() | st.booleans()),
    st.builds(Notice, replica, st.integers(0, len(TITLES) - 1), st.none() | st.integers(0, 3)),
    st.builds(Swap, replica, replica, st.floats(0, 1), st.integers(0, 2**16)),
)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(actions, min_size=3, max_size=25), st.integers(0, 2**16))
def test_reference_edits_at_several_tiers_converge_by_tier(program: list[Action], seed: int) -> None:
    replicas = [make_replica(i, tier, 1_700_000_000_000 + i) for i, tier in enumerate(TIERS)]
    rnd = random.Random(seed)
    for a in program:
        for r in replicas:
            r.now[0] += 1000
        if isinstance(a, SetEntry):
            ed = replicas[a.at].editor
            ref.set_catalogue(ed, "need_category", CODES[a.code], name=NAMES[a.name], order=a.order,
                              retired=a.retired)
        elif isinstance(a, Notice):
            ed = replicas[a.at].editor
            held = ed.store.records("notice")
            if a.edit is not None and held:
                ref.edit_reference(ed, held[a.edit % len(held)].id, {"title": TITLES[a.title]})
            else:
                ref.add_notice(ed, TITLES[a.title])
        elif a.src != a.dst:
            ops = all_ops(replicas[a.src].store)
            r = random.Random(a.seed)
            deliver(replicas[a.dst].store, [op for op in ops if r.random() < a.fraction], r, duplicate=True)
    everything: dict[tuple[str, int], Op] = {op.id: op for r in replicas for op in all_ops(r.store)}
    digests = []
    for r in replicas:
        deliver(r.store, list(everything.values()), rnd)
        digests.append(check_replica(r.store))
    assert digests[0] == digests[1] == digests[2]
    # one catalogue record per code, whoever created it, and its unit is the highest tier's that wrote it
    entries = replicas[0].store.records("catalogue")
    assert len({e.data["code"] for e in entries}) == len(entries)
    for e in entries:
        writers = {op.tier for op in everything.values() if op.record == e.id and op.field == "unit"}
        assert e.data["unit"] == replicas[max(writers) - 2].editor.unit
