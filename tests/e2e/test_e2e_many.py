"""Fifty tablets syncing at once with the township editing the same records: once everyone has synced
after the last edit, every tablet holds exactly the node's state of its village."""

from __future__ import annotations

import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from client.tablet import Tablet
from e2e_harness import (
    TOWNSHIP, VILLAGES, Enrol, MakeTablet, NodeProcess, device_ops, node_digest, op_count, populate,
)

pytestmark = pytest.mark.e2e

TABLETS = 50
ROUNDS = 2


def _work(tab: Tablet, rng: random.Random) -> None:
    "A worker edits a few of the village's needs and services (whoever created them), then syncs"
    needs = tab.list("need")
    services = tab.list("service")
    for rec in rng.sample(needs, min(2, len(needs))):
        tab.update(rec.id, {"urgency": rng.choice(["一般", "较急", "紧急"])})
    for rec in rng.sample(services, min(1, len(services))):
        if rng.random() < 0.2:
            tab.delete(rec.id)
        else:
            tab.update(rec.id, {"minutes": rng.randrange(10, 120)})
    tab.sync()


def _township(staff: Tablet, rng: random.Random, round_: int) -> None:
    "Township staff assign needs, correct urgencies and names, and move a resident to another village"
    staff.sync()
    for rec in rng.sample(staff.list("need"), 10):
        staff.update(rec.id, {"assignee": f"社工{round_}", "urgency": "紧急"})
    people = staff.list("person")
    for rec in rng.sample(people, 5):
        staff.update(rec.id, {"name": rec.data["name"] + "改"})
    mover = rng.choice(people)
    assert mover.unit is not None
    staff.update(mover.id, {"unit": VILLAGES[(VILLAGES.index(mover.unit) + 1) % 3]})
    staff.sync()


def test_fifty_tablets_at_once_converge_village_by_village(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    tokens = [enrol(VILLAGES[i % 3], f"worker-{i}")[1] for i in range(TABLETS)]
    staff = make_tablet(enrol(TOWNSHIP, "li.zhen", tier="township")[1], "staff")

    def set_up(i: int) -> Tablet:
        "Enrolment, then a morning's work offline: ten records"
        tab = make_tablet(tokens[i], f"t{i:02d}")
        populate(tab, 3, tag=f"t{i}")
        tab.create("person", {"name": f"t{i}独居老人", "groups": ["老年人", "独居"]})
        return tab

    rngs = [random.Random(i) for i in range(TABLETS)]
    staff_rng = random.Random("township")
    with ThreadPoolExecutor(TABLETS) as pool:
        tabs = list(pool.map(set_up, range(TABLETS)))
        for round_ in range(ROUNDS):
            list(pool.map(lambda i: _work(tabs[i], rngs[i]), range(TABLETS)))
            _township(staff, staff_rng, round_)
        # quiescence: nothing is edited any more; one sync each brings everyone up to date
        list(pool.map(lambda tab: tab.sync(), tabs))
    staff.sync()

    total = 0
    for tab in [*tabs, staff]:
        assert tab.pending() == 0
        n, distinct, lo, hi = device_ops(node_db, tab.device)
        assert (n, distinct, lo) == (hi, hi, 1 if hi else 0)
        total += n
    assert op_count(node_db) == total
    for tab in tabs:
        assert tab.store.digest() == node_digest(node_db, tab.unit), f"{tab.device} ({tab.unit}) diverged"
    everything = node_digest(node_db)
    assert staff.store.digest() == everything
    assert len(everything) == TABLETS * 10
    assert any(v[5] for v in everything.values()), "the township's and villages' edits never met"
