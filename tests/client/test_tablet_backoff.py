"""The tablet's retries: a node that cannot be reached, or answers 502/503/504/507, is tried again after
0.5 s, 1 s, 2 s, ... (capped at 30 s); after the last retry the tablet gives up with ``NodeUnreachable``
and keeps every op. No server: the node is an ``httpx.MockTransport``, the waits are recorded."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from client.tablet import NodeUnreachable, SyncFailed, Tablet, _server_ms
from sync.hlc import pack, wall_ms
from sync.wire import (
    MSGPACK, PROTOCOL_VERSION, SyncRequest, SyncResponse, decode, encode, pack_ops, unpack_ops,
)

VILLAGE = "510903001001"


class FlakyNode:
    """A node that fails as scripted (``"connect"`` for a refused connection, or an HTTP status), then
    acknowledges every op it is sent"""

    def __init__(self, *failures: str | int) -> None:
        self.failures = list(failures)
        self.bodies: list[bytes] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.bodies.append(request.content)
        if self.failures:
            failure = self.failures.pop(0)
            if failure == "connect":
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
            return httpx.Response(int(failure), json={"error": {
                "code": "unavailable", "message": "the node is busy; retry later", "details": None}})
        assert request.headers["authorization"] == "Bearer t0ken"
        req = decode(gzip.decompress(request.content), SyncRequest)
        ops, _ = unpack_ops(req.ops)
        resp = SyncResponse(protocol=PROTOCOL_VERSION, acked=max((o.counter for o in ops), default=0),
                            ops=pack_ops([]), cursor=7, more=False, server_time=pack(wall_ms()), epoch="e1")
        return httpx.Response(200, content=encode(resp), headers={"content-type": MSGPACK})


class Rig:
    def __init__(self, tmp_path: Path) -> None:
        self.sleeps: list[float] = []
        self.node = FlakyNode()
        self.client = httpx.Client(transport=httpx.MockTransport(lambda r: self.node(r)))
        self.tablet = Tablet(tmp_path / "tablet.db", client=self.client, sleep=self.sleeps.append)
        for k, v in {"server": "http://township.test", "token": "t0ken", "device": "tab-1", "user": "wang",
                     "unit": VILLAGE, "tier": "village"}.items():
            self.tablet.store.set_meta(k, v)
        person = self.tablet.create("person", {"name": "张秀英", "groups": ["老年人", "独居"]})
        self.tablet.create("need", {"person": person, "category": "养老服务"})
        self.pending = self.tablet.pending()
        assert self.pending == 7

    def close(self) -> None:
        self.tablet.close()
        self.client.close()


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    r = Rig(tmp_path)
    yield r
    r.close()


def test_waits_double_through_refused_connections_and_a_503_then_the_sync_completes(rig: Rig) -> None:
    rig.node = FlakyNode("connect", "connect", "connect", 503)

    report = rig.tablet.sync()

    assert rig.sleeps == [0.5, 1.0, 2.0, 4.0]
    assert report.retries == 4
    assert len(rig.node.bodies) == 5 and len(set(rig.node.bodies)) == 1, "a retry resends the same request"
    assert rig.tablet.pending() == 0
    assert rig.tablet.acked() == rig.pending
    assert report.sent == rig.pending


def test_the_wait_starts_from_the_backoff_given(rig: Rig) -> None:
    rig.node = FlakyNode(502, 504, 507)
    rig.tablet.sync(backoff=0.1)
    assert rig.sleeps == [0.1, 0.2, 0.4]
    assert rig.tablet.pending() == 0


def test_the_wait_is_capped_at_thirty_seconds(rig: Rig) -> None:
    rig.node = FlakyNode(*["connect"] * 9)
    rig.tablet.sync(retries=9)
    assert rig.sleeps == [0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0, 30.0]
    assert rig.tablet.pending() == 0


def test_after_the_last_retry_the_node_is_unreachable_and_every_op_is_kept(rig: Rig) -> None:
    rig.node = FlakyNode(*["connect"] * 10)

    with pytest.raises(NodeUnreachable, match="7 ops are kept"):
        rig.tablet.sync(retries=3)

    assert rig.sleeps == [0.5, 1.0, 2.0]
    assert len(rig.node.bodies) == 4
    assert rig.tablet.pending() == rig.pending
    assert rig.tablet.acked() == 0

    rig.tablet.sync()  # the node is back
    assert rig.tablet.pending() == 0


def test_a_node_busy_past_the_last_retry_is_reported_with_its_error(rig: Rig) -> None:
    rig.node = FlakyNode(*[503] * 10)
    with pytest.raises(SyncFailed) as e:
        rig.tablet.sync(retries=2)
    assert (e.value.status, e.value.code) == (503, "unavailable")
    assert rig.sleeps == [0.5, 1.0]
    assert rig.tablet.pending() == rig.pending


def test_a_refusal_is_not_retried(rig: Rig) -> None:
    rig.node = FlakyNode(400)
    with pytest.raises(SyncFailed) as e:
        rig.tablet.sync()
    assert e.value.status == 400
    assert rig.sleeps == []
    assert len(rig.node.bodies) == 1
    assert rig.tablet.pending() == rig.pending


def test_a_long_backlog_goes_in_batches_that_double_from_the_first_up_to_the_most(
    rig: Rig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The first request carries ``FIRST_PUSH`` ops, so the node starts early; each full one after it
    twice as many, up to ``PUSH_BATCH``; every op goes once, in order"""
    import client.tablet as tablet_mod

    monkeypatch.setattr(tablet_mod, "FIRST_PUSH", 2)
    monkeypatch.setattr(tablet_mod, "PUSH_BATCH", 8)
    for i in range(4):
        rig.tablet.create("person", {"name": f"王{i}", "phone": f"1380000000{i}"})  # 3 ops each
    total = rig.tablet.pending()
    assert total == rig.pending + 12

    report = rig.tablet.sync()

    batches = [[op.counter for op in unpack_ops(decode(gzip.decompress(b), SyncRequest).ops)[0]]
               for b in rig.node.bodies]
    assert [len(b) for b in batches] == [2, 4, 8, total - 14]
    assert [c for b in batches for c in b] == list(range(1, total + 1))
    assert report.sent == total and rig.tablet.pending() == 0


class LimitedNode(FlakyNode):
    """A node that takes at most ``limit`` ops a request, as an older node would: more is refused with
    413 ``too_large``, naming the limit when ``says_limit``; when not, naming a byte limit, as a node
    refuses a body over its size"""

    def __init__(self, limit: int, says_limit: bool) -> None:
        super().__init__()
        self.limit = limit
        self.says_limit = says_limit
        self.taken: list[list[int]] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        req = decode(gzip.decompress(request.content), SyncRequest)
        counters = [op.counter for op in unpack_ops(req.ops)[0]]
        if len(counters) > self.limit:
            return httpx.Response(413, json={"error": {
                "code": "too_large", "message": f"{len(counters)} ops in one request",
                "details": {"limit": self.limit} if self.says_limit else {"limit_bytes": 2}}})
        self.taken.append(counters)
        return super().__call__(request)


@pytest.mark.parametrize("says_limit", [True, False], ids=["node names its limit", "body over its size"])
def test_a_node_that_takes_fewer_ops_a_request_gets_them_all_in_smaller_batches(
    rig: Rig, monkeypatch: pytest.MonkeyPatch, says_limit: bool
) -> None:
    import client.tablet as tablet_mod

    monkeypatch.setattr(tablet_mod, "FIRST_PUSH", 2)
    monkeypatch.setattr(tablet_mod, "PUSH_BATCH", 8)
    for i in range(4):
        rig.tablet.create("person", {"name": f"王{i}", "phone": f"1380000000{i}"})
    total = rig.tablet.pending()
    rig.node = LimitedNode(3, says_limit)

    report = rig.tablet.sync()

    taken = rig.node.taken
    assert all(len(b) <= 3 for b in taken)
    assert [c for b in taken for c in b] == list(range(1, total + 1)), "every op once, in order"
    assert report.sent == total and rig.tablet.pending() == 0


def test_a_single_op_over_the_limit_is_reported(rig: Rig) -> None:
    rig.node = LimitedNode(0, True)
    with pytest.raises(SyncFailed) as e:
        rig.tablet.sync()
    assert e.value.code == "too_large"
    assert rig.tablet.pending() == rig.pending


@pytest.mark.parametrize(("header", "ms"), [
    ("sync;dur=12.5", 12.5),
    ('sync;desc="exchange";dur=3', 3.0),
    ("sync;dur=4.0, db;dur=2", 4.0),  # the first metric is the node's
    ("", None),  # a node from before 2026-11-27 sends none
    ("sync", None),
    ("sync;dur=soon", None),
])
def test_the_nodes_time_is_read_from_server_timing(header: str, ms: float | None) -> None:
    assert _server_ms(header) == ms
