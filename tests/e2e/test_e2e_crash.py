"""kill -9: a node that dies between or during round trips loses nothing it acknowledged, and the tablet's
retries (or its next sync) finish the job without a duplicate or a gap."""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from client.tablet import NodeUnreachable, Progress, SyncReport, Tablet
from e2e_harness import (
    V1, Enrol, MakeTablet, NodeProcess, device_ops, integrity, node_digest, op_count, populate,
)
from sync.wire import SyncResponse

pytestmark = pytest.mark.e2e

#: Residents to register: each is a person, a need and a service, 17–18 ops in all: ~3000 ops.
PEOPLE = 172


@pytest.fixture(autouse=True)
def _push_1000_per_round(monkeypatch: pytest.MonkeyPatch) -> None:
    "These tests count on 1000 ops per round trip, so ~3000 pending ops take three"
    monkeypatch.setattr("client.tablet.PUSH_BATCH", 1000)


def _loaded_tablet(node: NodeProcess, enrol: Enrol, make_tablet: MakeTablet) -> Tablet:
    node.start()
    _, token = enrol(V1, "wang")
    tab = make_tablet(token, "wang", sleep=time.sleep)
    populate(tab, PEOPLE, tag="w")
    assert 2900 <= tab.pending() <= 3200
    return tab


def _sync_through(tab: Tablet, node: NodeProcess, killed: threading.Event, progress: Progress) -> SyncReport:
    "Sync in a thread; once the node has been killed, start it again from here"
    with ThreadPoolExecutor(1) as pool:
        fut = pool.submit(tab.sync, progress=progress, retries=8, backoff=0.1)
        assert killed.wait(60), "the node was never killed"
        node.kill()  # (a no-op if it is already dead)
        time.sleep(0.3)
        node.start()
        try:
            return fut.result(timeout=120)
        except NodeUnreachable:  # the node took longer to come back than the back-off waited
            return tab.sync()


def _assert_exactly_once(tab: Tablet, node_db: Path, pending: int) -> None:
    assert tab.pending() == 0
    assert device_ops(node_db, tab.device) == (pending, pending, 1, pending)
    assert op_count(node_db) == pending
    assert integrity(node_db) == "ok"
    assert tab.store.digest() == node_digest(node_db, V1)


def test_kill_9_after_the_first_round_trip(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    tab = _loaded_tablet(node, enrol, make_tablet)
    pending = tab.pending()
    killed = threading.Event()
    at_kill: list[int] = []

    def progress(report: SyncReport, resp: SyncResponse) -> None:
        if report.rounds == 1:
            at_kill.append(resp.acked)
            node.kill()
            killed.set()

    report = _sync_through(tab, node, killed, progress)

    assert at_kill == [1000], "the first round trip pushes (and the node acknowledges) 1000 ops"
    assert report.retries >= 1, "the tablet never noticed the node was gone"
    _assert_exactly_once(tab, node_db, pending)
    node.kill()  # and what was acknowledged survives the next power cut too
    assert integrity(node_db) == "ok"
    assert device_ops(node_db, tab.device) == (pending, pending, 1, pending)


class LoseReplyAfterCommit(httpx.BaseTransport):
    """The tablet's transport: passes requests to the real node, except that once armed it lets the node
    answer the next sync (so the batch is committed), kills the node and drops the answer."""

    def __init__(self, node: NodeProcess) -> None:
        self.inner = httpx.HTTPTransport()
        self.node = node
        self.armed = False
        self.fired = threading.Event()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        resp = self.inner.handle_request(request)
        if self.armed and request.url.path == "/api/sync":
            self.armed = False
            resp.read()
            resp.close()
            assert resp.status_code == 200
            self.node.kill()
            self.fired.set()
            raise httpx.ReadError("the node died before its answer arrived", request=request)
        return resp

    def close(self) -> None:
        self.inner.close()


def test_kill_9_after_the_node_committed_but_before_its_answer_arrived(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    "The tablet sends the same batch again to a node that already holds it"
    node.start()
    _, token = enrol(V1, "wang")
    transport = LoseReplyAfterCommit(node)
    with httpx.Client(transport=transport) as client:
        tab = make_tablet(token, "wang", sleep=time.sleep, client=client)
        populate(tab, PEOPLE, tag="w")
        pending = tab.pending()
        on_node: list[int] = []

        def progress(report: SyncReport, resp: SyncResponse) -> None:
            if report.rounds == 1:
                transport.armed = True
            elif transport.fired.is_set() and not on_node:
                on_node.append(resp.acked)

        report = _sync_through(tab, node, transport.fired, progress)

        assert on_node == [2000], "the retried batch must be acknowledged as the node already held it"
        assert report.retries >= 1
        _assert_exactly_once(tab, node_db, pending)


def test_kill_9_while_a_push_is_in_flight(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    "The kill lands some 40 ms into the second request, while the node decodes, checks or applies it"
    tab = _loaded_tablet(node, enrol, make_tablet)
    pending = tab.pending()
    killed = threading.Event()

    def kill_soon() -> None:
        time.sleep(0.04)
        node.kill()
        killed.set()

    def progress(report: SyncReport, resp: SyncResponse) -> None:
        if report.rounds == 1:
            threading.Thread(target=kill_soon).start()

    _sync_through(tab, node, killed, progress)

    _assert_exactly_once(tab, node_db, pending)
