"""Exchanges that arrive together (``Node.sync_bodies``): their pushes share one transaction and one commit,
each is answered as it would be alone, a refused request is refused alone, and a write that fails rolls the
group back and runs each exchange again by itself."""

from __future__ import annotations

import asyncio
import gzip
import sqlite3
import time
from collections.abc import Callable, Coroutine, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import msgspec
import pytest

from server.exchanges import Exchanges
from server.node import Device, Exchange, Node
from sync import Op, uuid7
from sync.errors import SyncError
from sync.hlc import pack, wall_ms
from sync.types import SET
from sync.wire import PROTOCOL_VERSION, SyncRequest, SyncResponse, pack_ops, unpack_ops

TOWNSHIP = "510903001000"
T = TypeVar("T")
VILLAGES = ("510903001001", "510903001002")


@pytest.fixture
def node(tmp_path: Path) -> Iterator[Node]:
    n = Node(tmp_path / "node.db", TOWNSHIP)
    yield n
    n.close()


def _tablet(node: Node, village: str, name: str) -> Device:
    _, token = node.add_device(village, name)
    return node.authenticate(token)


def _persons(dev: Device, count: int, *, first: int = 1) -> list[Op]:
    ops: list[Op] = []
    hlc = pack(wall_ms() - 60_000, 0)
    for i in range(count):
        rid = uuid7()
        for field, value in (("unit", dev.unit), ("name", f"{dev.user}{i}"), ("phone", "13800000000")):
            ops.append(Op(dev.device, first + len(ops), hlc + len(ops), "person", rid, field, SET, value,
                          (), dev.user, dev.unit, dev.rank))
    return ops


def _exchange(dev: Device, ops: list[Op], node: Node | None = None) -> Exchange:
    "A push; with ``node``, from a tablet whose cursor is at the node's last op (it pulls only what is new)"
    at = {} if node is None else {"cursor": node.store.max_seq(), "epoch": node.epoch,
                                  "cursor_check": node._cursor_check(node.store.max_seq())}
    req = SyncRequest(protocol=PROTOCOL_VERSION, device=dev.device, ops=pack_ops(ops), **at)
    return (dev, req, "msgpack", True)


def _response(out: tuple[bytes, bool] | Exception) -> SyncResponse:
    assert not isinstance(out, Exception), out
    body, gzipped = out
    return msgspec.msgpack.decode(gzip.decompress(body) if gzipped else body, type=SyncResponse)


def _commits(node: Node) -> list[str]:
    seen: list[str] = []
    node.store.conn.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_a_group_is_written_in_one_commit_and_each_is_answered(node: Node) -> None:
    for v in VILLAGES:  # the villages hold a resident each: the tablets are past their bootstrap
        base = _tablet(node, v, "赵德明")
        node.sync_bodies([_exchange(base, _persons(base, 1))])
    tablets = [_tablet(node, VILLAGES[i % 2], f"社工{i}") for i in range(4)]
    top = node.store.max_seq()
    exchanges = [_exchange(t, _persons(t, 2), node) for t in tablets]
    commits = _commits(node)
    handed: list[tuple[int, int]] = []  # (index, commits by then), as each answer is handed over

    outs = node.sync_bodies(exchanges, lambda i, out: handed.append((i, len(commits))))

    assert len(commits) == 1
    assert handed == [(i, 1) for i in range(4)]  # each handed over once, in turn, after the commit
    assert node.store.count_ops() == top + 4 * 6
    for t, out in zip(tablets, outs):
        resp = _response(out)
        assert resp.acked == 6
        got, _ = unpack_ops(resp.ops)
        # the pull holds the other tablet of its village, never its own ops nor the other village's
        assert {op.site for op in got} == {o.device for o in tablets if o.unit == t.unit and o is not t}
        assert len(got) == 6


def test_a_refused_request_is_refused_alone(node: Node) -> None:
    a, b, c = (_tablet(node, VILLAGES[0], n) for n in ("甲", "乙", "丙"))
    forged = [msgspec.structs.replace(op, user="李四") if i == 4 else op for i, op in enumerate(_persons(b, 2))]

    outs = node.sync_bodies([_exchange(a, _persons(a, 2)), _exchange(b, forged), _exchange(c, _persons(c, 1))])

    assert isinstance(outs[1], SyncError) and outs[1].code == "forged_op"
    assert _response(outs[0]).acked == 6 and _response(outs[2]).acked == 3
    held = {r[0] for r in node.store.conn.execute("SELECT s.device FROM ops o JOIN sites s ON s.id = o.site")}
    assert b.device not in held and {a.device, c.device} <= held


def test_a_failed_write_rolls_the_group_back_and_each_runs_alone(node: Node,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    a, b, c = (_tablet(node, VILLAGES[0], n) for n in ("甲", "乙", "丙"))
    apply = node.store.apply
    calls: list[str] = []

    def failing(ops: list[Op], **kw: object) -> object:
        calls.append(ops[0].site)
        if ops[0].site == b.device:
            raise sqlite3.OperationalError("disk I/O error")
        return apply(ops, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(node.store, "apply", failing)
    commits = _commits(node)

    outs = node.sync_bodies([_exchange(t, _persons(t, 2)) for t in (a, b, c)])

    # in the group a was applied, then b failed: rolled back; then a, b and c alone
    assert calls == [a.device, b.device, a.device, b.device, c.device]
    assert isinstance(outs[1], sqlite3.OperationalError)
    assert _response(outs[0]).acked == 6 and _response(outs[2]).acked == 6
    assert len(commits) == 2  # a's and c's own; the group's was rolled back
    sites = [r[0] for r in node.store.conn.execute(
        "SELECT s.device FROM ops o JOIN sites s ON s.id = o.site ORDER BY o.seq")]
    assert sites == [a.device] * 6 + [c.device] * 6  # nothing twice, nothing of b


def test_a_group_leaves_the_node_as_the_same_exchanges_one_by_one(tmp_path: Path) -> None:
    grouped, single = Node(tmp_path / "g.db", TOWNSHIP), Node(tmp_path / "s.db", TOWNSHIP)
    try:
        exchanges: list[list[Exchange]] = [[], []]
        for i in range(6):
            devs = []
            for n in (grouped, single):
                _, token = n.add_device(VILLAGES[i % 2], f"社工{i}", device=f"tab-{i}")
                devs.append(n.authenticate(token))
            ops = _persons(devs[0], 3)
            for k, dev in enumerate(devs):
                exchanges[k] += [_exchange(dev, ops)] * (2 if i == 3 else 1)  # tab-3 retries in the group
        pairs = list(zip(grouped.sync_bodies(exchanges[0]), [single.sync_bodies([e])[0] for e in exchanges[1]]))

        assert [_response(g).acked for g, _ in pairs] == [_response(s).acked for _, s in pairs]
        assert grouped.store.digest() == single.store.digest()
    finally:
        grouped.close()
        single.close()


def _run(main: Callable[[], Coroutine[Any, Any, T]]) -> T:
    "``asyncio.run(main())`` in a thread of its own: the browser tests keep an event loop running in this one"
    pool = ThreadPoolExecutor(1)
    try:
        return pool.submit(lambda: asyncio.run(main())).result(timeout=60)
    finally:
        pool.shutdown(wait=False)


async def _until(done: Callable[[], bool], seconds: float = 10.0) -> None:
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, "waited too long"
        await asyncio.sleep(0.005)


def _body(dev: Device, ops: list[Op], node: Node) -> bytes:
    return gzip.compress(msgspec.msgpack.encode(_exchange(dev, ops, node)[1]))


def _behind_a_busy_store(node: Node, monkeypatch: pytest.MonkeyPatch, count: int, *,
                         hang_up: int | None = None) -> tuple[list[Device], list[Any], list[str]]:
    """``count`` tablets' pushes sent through ``Exchanges`` while the store is busy: the first is taken and
    waits for the store, the others queue behind it (``hang_up``'s caller hangs up while it waits); then
    the store is free. Returns the devices, their answers (or errors) and the commits made."""
    base = _tablet(node, VILLAGES[0], "赵德明")
    node.sync_bodies([_exchange(base, _persons(base, 1))])
    tokens = [node.add_device(VILLAGES[0], f"社工{i}")[1] for i in range(count)]
    devs = [node.authenticate(t) for t in tokens]
    bodies = [_body(d, _persons(d, 2), node) for d in devs]
    asked: list[str | None] = []
    authenticate = node.authenticate
    monkeypatch.setattr(node, "authenticate", lambda token: asked.append(token) or authenticate(token))
    exchanges = Exchanges(node, 1 << 20)
    commits = _commits(node)

    async def herd() -> list[tuple[bytes, bool] | BaseException]:
        def run(i: int) -> asyncio.Future[tuple[bytes, bool]]:
            return asyncio.ensure_future(exchanges.run(tokens[i], bodies[i], True, "msgpack", "msgpack", True))

        node.store.lock.acquire()  # the store is busy
        try:
            runs = [run(0)]
            await _until(lambda: bool(asked))  # the first is taken, and waits for the store
            runs += [run(i) for i in range(1, count)]
            await _until(lambda: len(exchanges._waiting) == count - 1)  # the others queue behind it
            if hang_up is not None:
                runs[hang_up].cancel()
                await asyncio.sleep(0.01)
        finally:
            node.store.lock.release()
        return await asyncio.gather(*runs, return_exceptions=True)

    try:
        return devs, _run(herd), commits
    finally:
        exchanges.close()


def test_requests_that_wait_for_the_store_are_answered_together(node: Node,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    devs, outs, commits = _behind_a_busy_store(node, monkeypatch, 5)

    assert all(_response(o).acked == 6 for o in outs)
    assert len(commits) == 2  # the first alone, the four that waited together
    # each pull holds the others' new residents, but its own never
    for d, out in zip(devs, outs):
        got, _ = unpack_ops(_response(out).ops)
        assert d.device not in {op.site for op in got}


#: An op's value nested 100,000 arrays deep (msgspec raises RecursionError): 300 bytes gzipped
_NESTED_TOO_DEEPLY = msgspec.msgpack.encode(
    {"protocol": PROTOCOL_VERSION, "device": "tab-1", "ops": [[], [], [[0, 1, 2, "person", b"\x01" * 16, "notes", 0,
                                                                         "DEEP", []]]]}
).replace(msgspec.msgpack.encode("DEEP"), b"\x91" * 100_000 + b"\xc0")


@pytest.mark.parametrize(("token", "body", "code"), [
    (None, b"", "unauthorized"),  # an unknown caller learns nothing about its body
    ("good", b"", "malformed_body"),
    # mtime=0: the same bytes, so the same test id, in every process (pytest-xdist's workers must agree)
    ("good", gzip.compress(b"\xc1not msgpack", mtime=0), "malformed_body"),
    ("good", gzip.compress(_NESTED_TOO_DEEPLY, mtime=0), "malformed_body"),
])
def test_a_bad_request_gets_its_error_and_the_next_is_answered(node: Node, token: str | None, body: bytes,
                                                               code: str) -> None:
    base = _tablet(node, VILLAGES[0], "赵德明")
    node.sync_bodies([_exchange(base, _persons(base, 1))])
    good = node.add_device(VILLAGES[0], "张晓燕")[1]
    dev = node.authenticate(good)
    exchanges = Exchanges(node, 1 << 20)

    async def two() -> list[tuple[bytes, bool] | BaseException]:
        return await asyncio.gather(
            exchanges.run(good if token == "good" else token, body, True, "msgpack", "msgpack", True),
            exchanges.run(good, _body(dev, _persons(dev, 1), node), True, "msgpack", "msgpack", True),
            return_exceptions=True)

    try:
        bad, ok = _run(two)
    finally:
        exchanges.close()
    assert isinstance(bad, SyncError) and bad.code == code, bad
    assert _response(ok).acked == 3  # type: ignore[arg-type]


def test_a_request_whose_caller_has_gone_is_dropped_unwritten(node: Node, monkeypatch: pytest.MonkeyPatch) -> None:
    devs, outs, _ = _behind_a_busy_store(node, monkeypatch, 3, hang_up=1)

    assert isinstance(outs[1], asyncio.CancelledError)
    assert _response(outs[0]).acked == 6 and _response(outs[2]).acked == 6
    held = {r[0] for r in node.store.conn.execute("SELECT s.device FROM ops o JOIN sites s ON s.id = o.site")}
    assert devs[1].device not in held and {devs[0].device, devs[2].device} <= held
