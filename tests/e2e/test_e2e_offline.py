"""Offline first: what workers enter while the township node is down reaches it, once, when it is back."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.tablet import NodeUnreachable
from e2e_harness import (
    V1, V2, V3, Enrol, MakeTablet, NodeProcess, device_ops, node_digest, op_count, populate,
)

pytestmark = pytest.mark.e2e


def test_work_entered_while_the_node_is_down_arrives_once(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    workers = [(V1, "wang"), (V1, "li"), (V2, "zhang"), (V3, "zhao")]
    tabs = [make_tablet(enrol(unit, user)[1], user) for unit, user in workers]
    node.stop()

    created = {tab.device: populate(tab, 4 + i, tag=user)
               for i, (tab, (_, user)) in enumerate(zip(tabs, workers))}
    own = {tab.device: tab.pending() for tab in tabs}
    assert all(n > 0 for n in own.values())

    for tab in tabs:
        t0 = time.monotonic()
        with pytest.raises(NodeUnreachable):
            tab.sync(retries=1, backoff=0.01)
        assert time.monotonic() - t0 < 5
        assert tab.pending() == own[tab.device], "a failed sync must keep every op on the tablet"

    node.start()
    for _ in range(2):  # the second pass brings each tablet what its village neighbour pushed after it
        for tab in tabs:
            tab.sync()

    assert op_count(node_db) == sum(own.values())
    for tab in tabs:
        n = own[tab.device]
        assert tab.pending() == 0
        assert device_ops(node_db, tab.device) == (n, n, 1, n), "every op once, no gap, no duplicate"
    everything = node_digest(node_db)
    assert sorted(everything) == sorted(rid for ids in created.values() for rid in ids)
    for tab in tabs:
        assert tab.store.digest() == node_digest(node_db, tab.unit)
    assert set(tabs[0].store.digest()) == set(created[tabs[0].device] + created[tabs[1].device])


def test_a_sync_report_tells_the_nodes_own_time_for_each_round_trip(
    node: NodeProcess, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    tab = make_tablet(enrol(V1, "wang")[1], "wang")
    populate(tab, 3, tag="wang")

    report = tab.sync()

    assert report.rounds >= 1
    assert len(report.node_ms) == len(report.round_ms) == report.rounds
    # the node's part is some of each round trip, never more than all of it
    assert all(0 < node_ms <= round_ms for node_ms, round_ms in zip(report.node_ms, report.round_ms))
