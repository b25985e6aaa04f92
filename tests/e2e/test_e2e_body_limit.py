"""A push over the node's body limit (``CUNSYNC_MAX_BODY_MB``, lowered here so the test stays small).

The node refuses such a body with 413 ``too_large`` as soon as it knows (from ``Content-Length``, or
while it reads a body sent without one) and closes the connection while the client may still be
uploading. These tests check that a client still reads that answer rather than a broken connection:
a tablet halves its batch until every op is through, and a raw oversized request is refused whole. A
413 from a reverse proxy in front of the node, without the node's error body, halves the batch too.
(A body under the limit that inflates past the node's other limit is read whole before it is refused:
``test_e2e_errors.py``, ``gzip_bomb``.)
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from client.tablet import Tablet
from e2e_harness import V1, Enrol, MakeTablet, NodeProcess, device_ops, node_digest, op_count
from sync.edit import Editor
from sync.ops import Op
from sync.store import Store
from sync.wire import MSGPACK, PROTOCOL_VERSION, SyncRequest, SyncResponse, compress, decode, encode, pack_ops

pytestmark = pytest.mark.e2e

LIMIT_MB = 1
LIMIT = LIMIT_MB * 1024 * 1024


@pytest.fixture
def small_node(node: NodeProcess) -> NodeProcess:
    "The node, started with a body limit of ``LIMIT`` bytes"
    node.env["CUNSYNC_MAX_BODY_MB"] = str(LIMIT_MB)
    return node.start()


def _notes(rnd: random.Random) -> str:
    "A long note (the most ``notes`` holds) that hardly compresses: about 4 KB gzipped"
    return "".join(map(chr, rnd.choices(range(0x4E00, 0x9FA6), k=2000)))


def _write_notes(create: Callable[..., str], update: Callable[..., Any], people: int, edits: int) -> None:
    "Register ``people`` residents and rewrite each one's notes ``edits`` times"
    rnd = random.Random(7)
    for i in range(people):
        rid = create("person", {"unit": V1, "name": f"居民{i}", "notes": _notes(rnd)})
        for _ in range(edits):
            update(rid, {"notes": _notes(rnd)})


class Recorded(httpx.HTTPTransport):
    """A tablet's real HTTP link to the node that notes, for each sync request, the body's size and the
    status it got, or the name of the transport error it met"""

    def __init__(self) -> None:
        super().__init__()
        self.syncs: list[tuple[int, int | str]] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        sync = request.url.path == "/api/sync"
        try:
            resp = super().handle_request(request)
        except httpx.TransportError as e:
            if sync:
                self.syncs.append((len(request.content), type(e).__name__))
            raise
        if sync:
            self.syncs.append((len(request.content), resp.status_code))
        return resp


def _offline_with_notes(link: httpx.BaseTransport, enrol: Enrol, make_tablet: MakeTablet,
                        request: pytest.FixtureRequest, people: int) -> tuple[str, Tablet]:
    "A tablet on ``link`` that wrote long notes for days offline, each resident's 50 times: (device, tablet)"
    device, token = enrol(V1, "wang")
    http = httpx.Client(transport=link, timeout=30)
    request.addfinalizer(http.close)
    tab = make_tablet(token, "wang", client=http)
    with tab.store.transaction():
        _write_notes(tab.create, tab.update, people=people, edits=50)
    return device, tab


def test_a_tablet_whose_batch_is_over_the_limit_halves_it_until_all_is_acknowledged(
    small_node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet,
    request: pytest.FixtureRequest,
) -> None:
    "Days offline with long notes: the first batch is several times the limit; nothing is lost or stuck"
    link = Recorded()
    device, tab = _offline_with_notes(link, enrol, make_tablet, request, people=40)
    pending = tab.pending()
    assert pending > 2000  # the first batch is a full one, FIRST_PUSH ops

    report = tab.sync()

    assert tab.pending() == 0
    assert device_ops(node_db, device) == (pending, pending, 1, pending)
    assert tab.store.digest() == node_digest(node_db, V1)
    refused = [size for size, got in link.syncs if got == 413]
    assert refused and refused[0] > 4 * LIMIT, link.syncs  # the first batch, several times the limit
    assert all(got in (200, 413) for _, got in link.syncs), f"a broken connection, not a 413: {link.syncs}"
    assert all(size <= LIMIT for size, got in link.syncs if got == 200)
    assert report.retries == 0
    assert report.sent == pending


@pytest.fixture
def oversized(enrol: Enrol) -> Iterator[tuple[str, str, list[Op]]]:
    "A device, its token and its own valid ops, whose request body is over the limit"
    device, token = enrol(V1, "wang")
    ed = Editor(Store(), device=device, user="wang", unit=V1, tier="village")
    _write_notes(ed.create, ed.update, people=10, edits=60)
    yield device, token, [op for _, op in ed.store.ops_since(0)]
    ed.store.close()


def _body(ops: list[Op], device: str) -> bytes:
    return compress(encode(SyncRequest(protocol=PROTOCOL_VERSION, device=device, ops=pack_ops(ops))))


def _post(node: NodeProcess, token: str, content: bytes | Iterator[bytes]) -> httpx.Response:
    return httpx.post(node.url + "/api/sync", content=content, timeout=30, headers={
        "content-type": MSGPACK, "content-encoding": "gzip", "authorization": f"Bearer {token}"})


def _chunks(body: bytes, size: int = 64 * 1024) -> Iterator[bytes]:
    "The body sent without Content-Length (chunked): the node finds it too large while reading it"
    for i in range(0, len(body), size):
        yield body[i:i + size]


def test_a_raw_request_over_the_limit_gets_413_too_large_and_nothing_is_written(
    small_node: NodeProcess, node_db: Path, oversized: tuple[str, str, list[Op]]
) -> None:
    device, token, ops = oversized
    body = _body(ops, device)
    assert len(body) > 2 * LIMIT

    for content in (body, _chunks(body)):
        r = _post(small_node, token, content)
        assert (r.status_code, r.headers.get("content-type")) == (413, "application/json"), r.content[:300]
        err = r.json()["error"]
        assert (err["code"], err["details"]) == ("too_large", {"limit_bytes": LIMIT}), err
        assert "limit" in err["message"]
        assert op_count(node_db) == 0, "a refused request must write nothing"

    # the same ops in a request under the limit are taken: the size alone was refused
    part = ops[: len(ops) * LIMIT // len(body) // 2]
    r = _post(small_node, token, _body(part, device))
    assert r.status_code == 200, r.text
    assert decode(r.content, SyncResponse).acked == len(part)
    assert op_count(node_db) == len(part)


class Proxy(Recorded):
    "A reverse proxy in front of the node with a body limit of its own: its 413 is a page of its own making"

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/api/sync" and len(request.content) > LIMIT:
            self.syncs.append((len(request.content), 413))
            return httpx.Response(413, html="<html><body><h1>413 Request Entity Too Large</h1>nginx</body></html>")
        return super().handle_request(request)


def test_a_413_from_a_proxy_in_front_of_the_node_also_makes_the_tablet_send_less(
    node: NodeProcess, node_db: Path, enrol: Enrol, make_tablet: MakeTablet, request: pytest.FixtureRequest,
) -> None:
    node.start()  # with its own limit, far above the proxy's
    link = Proxy()
    device, tab = _offline_with_notes(link, enrol, make_tablet, request, people=20)
    pending = tab.pending()

    tab.sync()

    assert tab.pending() == 0 and device_ops(node_db, device) == (pending, pending, 1, pending)
    assert [got for _, got in link.syncs].count(413) >= 2 and link.syncs[-1][1] == 200
