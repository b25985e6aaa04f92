"""A retried request is harmless: the node acknowledges what it already holds and writes nothing twice."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from e2e_harness import V1, Enrol, MakeTablet, NodeProcess, node_digest, op_count, populate
from sync.ops import Op
from sync.wire import MSGPACK, PROTOCOL_VERSION, SyncRequest, SyncResponse, compress, decode, encode, pack_ops

pytestmark = pytest.mark.e2e


def _body(device: str, ops: list[Op]) -> bytes:
    return compress(encode(SyncRequest(protocol=PROTOCOL_VERSION, device=device, ops=pack_ops(ops))))


def _post(node: NodeProcess, token: str, body: bytes) -> SyncResponse:
    r = httpx.post(node.url + "/api/sync", content=body, timeout=30, headers={
        "content-type": MSGPACK, "content-encoding": "gzip", "authorization": f"Bearer {token}"})
    assert r.status_code == 200, r.text
    return decode(r.content, SyncResponse)


def test_the_same_request_sent_twice(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    node.start()
    device, token = enrol(V1, "wang")
    tab = make_tablet(token, "wang")
    populate(tab, 3, tag="w")
    ops = [op for _, op in tab.store.ops_since(0)]
    body = _body(device, ops)

    first = _post(node, token, body)
    after_first = (op_count(node_db), node_digest(node_db))
    second = _post(node, token, body)

    assert first.acked == second.acked == len(ops) == max(o.counter for o in ops)
    assert (op_count(node_db), node_digest(node_db)) == after_first
    assert op_count(node_db) == len(ops)


def test_a_retry_that_overlaps_what_the_node_holds(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet
) -> None:
    "The answer to the first request was lost; the tablet's next batch repeats part of it and goes on"
    node.start()
    device, token = enrol(V1, "wang")
    tab = make_tablet(token, "wang")
    populate(tab, 4, tag="w")
    ops = [op for _, op in tab.store.ops_since(0)]
    half = len(ops) // 2

    assert _post(node, token, _body(device, ops[:half])).acked == half
    assert _post(node, token, _body(device, ops[half // 2:])).acked == len(ops)
    assert op_count(node_db) == len(ops)

    tab.sync()  # the tablet itself never heard of either acknowledgement
    assert tab.pending() == 0
    assert op_count(node_db) == len(ops)
    assert tab.store.digest() == node_digest(node_db, V1)
