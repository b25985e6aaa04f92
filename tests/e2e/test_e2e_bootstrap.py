"""Bootstrap: a fresh tablet receives its village's current state page by page, and an interrupted
bootstrap resumes at the page where it stopped."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from client.tablet import NodeUnreachable, SyncReport
from e2e_harness import TOWNSHIP, V1, V2, Enrol, MakeTablet, NodeProcess, node_digest
from server.node import Node
from sync.wire import SyncResponse, unpack_ops

pytestmark = pytest.mark.e2e

#: Residents of 广场社区 already on the node.
RESIDENTS = 2000


def _seed(node_db: Path) -> None:
    "Township staff registered the village's residents on the node itself, and a few in 育才社区"
    n = Node(node_db, TOWNSHIP)
    try:
        ed = n.editor("li.zhen")
        with n.store.transaction():
            for i in range(RESIDENTS):
                p = ed.create("person", {"unit": V2, "name": f"居民{i}", "gender": "女",
                                         "groups": ["老年人"] if i % 3 else ["儿童", "留守"]})
                if i % 10 == 0:
                    ed.update(p, {"name": f"居民{i}号", "groups": ["老年人", "独居"]})
            for i in range(50):
                ed.create("person", {"unit": V1, "name": f"育才{i}"})
    finally:
        n.close()


def _live_ops(digest: dict[str, tuple[object, ...]]) -> int:
    return sum(len(v[4]) for v in digest.values())  # type: ignore[arg-type]


def test_a_fresh_tablet_bootstraps_to_the_villages_state(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    _seed(node_db)
    node.start()
    tab = make_tablet(enrol(V2, "zhang")[1], "zhang")
    pages: list[bool] = []

    def progress(report: SyncReport, resp: SyncResponse) -> None:
        pages.append(resp.bootstrapping)

    report = tab.sync(progress=progress)

    want = node_digest(node_db, V2)
    assert len(want) == RESIDENTS
    assert tab.store.digest() == want
    assert report.received == _live_ops(want), "only the live ops of the village's records"
    assert pages[0] and not pages[-1] and len(pages) > 2, "the state comes in pages"


def test_an_interrupted_bootstrap_resumes_where_it_stopped(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    _seed(node_db)
    node.start()
    tab = make_tablet(enrol(V2, "zhang")[1], "zhang", sleep=time.sleep)
    received: list[int] = []  # ops in each answer, across both attempts

    def progress(report: SyncReport, resp: SyncResponse) -> None:
        received.append(len(unpack_ops(resp.ops)[0]))
        if len(received) == 1:
            assert resp.bootstrapping
            node.kill()

    with pytest.raises(NodeUnreachable):
        tab.sync(progress=progress, retries=1, backoff=0.01)
    first_page = received[0]
    assert tab.status()["records"]["person"] < RESIDENTS

    node.start()
    tab.sync(progress=progress)

    want = node_digest(node_db, V2)
    total = _live_ops(want)
    assert 0 < first_page < total
    assert sum(received) == total, (
        f"received {sum(received)} ops for a village state of {total}: "
        "pages already received were sent again")
    assert tab.store.digest() == want
