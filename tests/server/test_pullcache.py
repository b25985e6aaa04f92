"""Pulls from the scope streams (``server.pullcache``) answer exactly as the node's query of ``ops`` does.

The property test drives a township node in process with tablets in two villages and township staff:
creates, edits (concurrent ones too, so that ops turn dead), deletes, moves between villages, notices from
the township, and syncs with small page limits. After every push, the pull is answered both ways on
the same state, and the answers must hold the same ops, the same dead flags and the same cursor,
``more``, removed records and cursor check. The streams are kept small, so that trimming, catching up
and giving up on a pull too far behind all happen.
"""

from __future__ import annotations

import random
import sqlite3
import tempfile
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pytest
from hypothesis import given, settings, strategies as st

from server import pullcache
from server.node import Device, Node, _not_own
from sync import Editor, Store
from sync.hlc import HLC
from sync.wire import (
    PROTOCOL_VERSION,
    Spliced,
    SyncRequest,
    SyncResponse,
    decode,
    decompress,
    spliced_body,
    unpack_ops,
)

TOWNSHIP = "510903001000"
V1, V2 = "510903001001", "510903001002"


class Tab:
    "A tablet as the protocol sees it: its own store and editor, its cursor and acknowledgements"

    def __init__(self, node: Node, unit: str, name: str) -> None:
        _, token = node.add_device(unit, name)
        self.dev: Device = node.authenticate(token)
        self.node = node
        self.store = Store(None)
        self.editor = Editor(self.store, device=self.dev.device, user=name, unit=unit, tier="village",
                             clock=HLC())
        self.cursor, self.check, self.page, self.acked = 0, "", "", 0

    def request(self, limit: int) -> SyncRequest:
        batch, _ = self.store.packed_own(self.dev.device, self.acked, 10_000)
        return SyncRequest(protocol=PROTOCOL_VERSION, device=self.dev.device, ops=batch, cursor=self.cursor,
                           epoch=self.node.epoch, cursor_check=self.check, page=self.page, limit=limit)

    def take(self, resp: SyncResponse) -> None:
        ops, dead = unpack_ops(resp.ops)
        self.store.apply(ops, dead=dead)
        if resp.removed:
            self.store.forget(resp.removed)
        self.cursor, self.check, self.page, self.acked = resp.cursor, resp.cursor_check, resp.page, resp.acked

    def people(self) -> list[str]:
        return sorted(r.id for r in self.store.records("person"))


def _content(resp: SyncResponse) -> tuple[Any, ...]:
    ops, dead = unpack_ops(resp.ops)
    return (ops, dead, resp.acked, resp.cursor, resp.more, resp.removed, resp.cursor_check, resp.page,
            resp.bootstrapping)


@contextmanager
def _small_streams() -> Iterator[None]:
    with mock.patch.multiple(pullcache, MAX_OPS=15, MAX_TOTAL_OPS=25, CATCH_UP=30, SEGMENT_OPS=4):
        yield


class World:
    def __init__(self, path: Path, seed: int) -> None:
        self.node = Node(path, TOWNSHIP)
        self.rng = random.Random(seed)
        # three tablets in one village: an op two of them supersede at once turns dead for the third
        self.tabs = [Tab(self.node, V1, "张丽"), Tab(self.node, V1, "王芳"), Tab(self.node, V1, "赵敏"),
                     Tab(self.node, V2, "李强")]
        self.staff = self.node.editor("陈主任")
        self.streamed = 0
        self.compared = 0

    def close(self) -> None:
        for t in self.tabs:
            t.store.close()
        self.node.close()

    def sync(self, tab: Tab, limit: int) -> None:
        "One round trip, its pull answered from the stream where it can be, checked against the query"
        node = self.node
        req = tab.request(limit)
        with node.store.lock:  # as ``Node._sync`` does it, keeping what the push took for the query
            ops, now = node._refuse(tab.dev, req)
            with node.store.transaction():
                pushed = node._write(tab.dev, req, ops, now)
            out = node._answer(tab.dev, req, pushed, spliced=True)
            want = node._pull(tab.dev, req, pushed)  # the query's answer on the same state
        if isinstance(out, Spliced):
            self.streamed += 1
            got = decode(decompress(spliced_body(out), 1 << 26), SyncResponse)
        else:
            got = out
        assert isinstance(want, SyncResponse)
        assert _content(got) == _content(want)
        self.compared += 1
        tab.take(got)

    def step(self, action: str, limit: int) -> None:
        rng = self.rng
        tab = rng.choice(self.tabs)
        node_people = [r.id for r in self.node.store.records("person")]
        if action == "create":
            tab.editor.create("person", {"unit": tab.dev.unit, "name": f"居民{rng.randrange(1000)}",
                                         "groups": [rng.choice(["老年人", "儿童", "残疾人"])]})
        elif action == "edit" and tab.people():
            field = rng.choice(["phone", "notes", "notes", "name"])
            value = {"phone": f"1380000{rng.randrange(10000):04d}", "notes": f"走访{rng.randrange(100)}",
                     "name": f"更正{rng.randrange(100)}"}[field]
            tab.editor.update(rng.choice(tab.people()), {field: value})
        elif action == "delete" and tab.people():
            tab.editor.delete(rng.choice(tab.people()))
        elif action == "staff_edit" and node_people:
            self.staff.update(rng.choice(node_people), {"notes": f"镇街复核{rng.randrange(100)}"})
        elif action == "move" and node_people:
            rid = rng.choice(node_people)
            rec = self.node.store.get(rid)
            assert rec is not None
            self.staff.update(rid, {"unit": V2 if rec.unit == V1 else V1})
        elif action == "notice":
            self.staff.create("notice", {"unit": TOWNSHIP, "title": f"通知{rng.randrange(100)}"})
        elif action == "sync":
            self.sync_all(tab, limit)
        elif action == "race":
            # staff and a tablet both supersede a new record's notes: that op is dead by the time the
            # third tablet of the village pulls it (it was in the stream before it died)
            a, b, c = rng.sample(self.tabs[:3], 3)
            rid = a.editor.create("person", {"unit": V1, "name": "新登记", "notes": "初访"})
            self.sync_all(a, limit)
            self.sync_all(b, limit)
            self.staff.update(rid, {"notes": "镇街更正"})
            if rid in b.people():
                b.editor.update(rid, {"notes": "村里更正"})
            self.sync_all(b, limit)
            self.sync_all(c, limit)

    def in_use(self, tabs: list[Tab], limit: int) -> None:
        "Each tablet registers a resident and syncs: it holds a cursor past its bootstrap, as one in use"
        for tab in tabs:
            tab.editor.create("person", {"unit": tab.dev.unit, "name": "首位居民"})
            self.sync_all(tab, limit)
            self.sync(tab, limit)

    def sync_all(self, tab: Tab, limit: int) -> None:
        "Round trips until nothing waits either way, as a tablet's sync makes them"
        for _ in range(50):
            before = (tab.cursor, tab.acked, tab.page)
            self.sync(tab, limit)
            if (tab.cursor, tab.acked, tab.page) == before:
                break


ACTIONS = st.sampled_from(["create", "create", "edit", "edit", "delete", "staff_edit", "move", "notice",
                           "race", "sync", "sync", "sync"])


@settings(max_examples=30, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), actions=st.lists(ACTIONS, min_size=10, max_size=100),
       limit=st.sampled_from([3, 10, 5000]))
def test_streamed_pulls_answer_as_the_query_does(seed: int, actions: list[str], limit: int) -> None:
    with tempfile.TemporaryDirectory() as d, _small_streams():
        world = World(Path(d) / "node.db", seed)
        try:
            world.in_use(world.tabs, limit)
            for action in actions:
                world.step(action, limit)
            for tab in world.tabs:
                world.sync(tab, limit)
            assert world.streamed > 0, "no pull was answered from a stream"
        finally:
            world.close()


@pytest.fixture
def world(tmp_path: Path) -> Iterator[World]:
    "A node whose village 1 has three tablets in use"
    w = World(tmp_path / "node.db", 1)
    w.in_use(w.tabs[:3], 5000)
    yield w
    w.close()


def test_the_tablets_of_a_village_share_what_one_pushed_deflated_once(world: World) -> None:
    a, b, c = world.tabs[:3]
    for tab in (a, b, c):
        world.sync_all(tab, 5000)
    for i in range(30):
        a.editor.create("person", {"unit": V1, "name": f"居民{i}", "notes": "入户登记"})
    world.sync_all(a, 5000)
    deflated: list[int] = []
    real = pullcache.deflate

    def counting(data: bytes, level: int = 6, *, after: bytes = b"") -> Any:
        deflated.append(len(data))
        return real(data, level, after=after)

    streamed = world.streamed
    with mock.patch.object(pullcache, "deflate", counting):
        world.sync(b, 5000)
        first = len(deflated)
        world.sync(c, 5000)
    assert world.streamed == streamed + 2, "both pulls came from the stream"
    assert first >= 1, "b's pull deflated a's segment"
    assert len(deflated) == first, "c's pull reused it"
    assert len(b.people()) == len(c.people()) == 33  # a's 30 and the three tablets' first residents


def test_an_op_noted_dead_in_a_rolled_back_batch_stays_live_in_the_stream(world: World) -> None:
    a, b, c = world.tabs[:3]
    rid = a.editor.create("person", {"unit": V1, "name": "新登记", "notes": "初访"})
    world.sync_all(a, 5000)
    world.sync_all(b, 5000)  # the stream now holds a's notes op
    world.staff.update(rid, {"notes": "镇街更正"})
    late = b.editor.update(rid, {"notes": "村里更正"})  # names a's op, no longer live on the node
    store = world.node.store
    with pytest.raises(RuntimeError), store.transaction():
        store.apply(late)
        assert store.turned_dead(0)[0], "a's op was noted dead inside the batch"
        raise RuntimeError("the batch fails before its commit")
    streamed = world.streamed
    world.sync(c, 5000)  # a's op reaches c live, from the stream, as the query has it
    assert world.streamed == streamed + 1
    assert c.store.get(rid) is not None


@settings(max_examples=200, deadline=None)
@given(after=st.integers(0, 40),
       batch=st.one_of(st.just((0, -1)), st.tuples(st.integers(1, 40), st.integers(0, 12))),
       own=st.integers(1, 3), sites=st.lists(st.integers(1, 3), min_size=40, max_size=40))
def test_not_own_leaves_out_exactly_the_pushed_batch_and_the_devices_own_ops(
        after: int, batch: tuple[int, int], own: int, sites: list[int]) -> None:
    # the pushed batch's seqs are the pusher's own, as the node writes them
    lo, size = batch
    pushed = (lo, min(40, lo + size)) if lo else (0, -1)
    with closing(sqlite3.connect(":memory:")) as conn:
        conn.execute("CREATE TABLE ops (seq INTEGER PRIMARY KEY, site INTEGER)")
        conn.executemany("INSERT INTO ops VALUES (?, ?)",
                         [(s, own if pushed[0] <= s <= pushed[1] else site) for s, site in enumerate(sites, 1)])
        got = [row[0] for cond, params in _not_own(after, pushed, own)
               for row in conn.execute(f"SELECT seq FROM ops WHERE {cond} ORDER BY seq", params)]
        want = [s for s, site in conn.execute("SELECT seq, site FROM ops ORDER BY seq")
                if s > after and not pushed[0] <= s <= pushed[1] and site != own]
    assert got == want  # disjoint ranges, in order: no op twice
