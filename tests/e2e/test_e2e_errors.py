"""Bad requests: each gets a 4xx with the one error shape ``{"error": {"code", "message", "details"}}``,
and the node writes nothing."""

from __future__ import annotations

import time
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import msgspec
import pytest

from e2e_harness import TOWNSHIP, V1, V2, NodeProcess, op_count
from server.app import MAX_INFLATED
from server.node import MAX_BATCH, Node
from sync.edit import Editor
from sync.hlc import HLC
from sync.ops import Op
from sync.schema import SCHEMA
from sync.store import Store
from sync.wire import MSGPACK, PROTOCOL_VERSION, SyncRequest, SyncResponse, compress, encode, pack_ops

pytestmark = pytest.mark.e2e


@dataclass
class Server:
    node: NodeProcess
    db: Path
    devices: dict[str, tuple[str, str]]  # name -> (device, token)

    def post(self, body: bytes, *, token: str | None = None, gzip: bool = True,
             content_type: str = MSGPACK) -> httpx.Response:
        headers = {"content-type": content_type}
        if gzip:
            headers["content-encoding"] = "gzip"
        if token is not None:
            headers["authorization"] = f"Bearer {token}"
        return httpx.post(self.node.url + "/api/sync", content=body, headers=headers, timeout=30)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    db = tmp_path_factory.mktemp("errors") / "township.db"
    n = Node(db, TOWNSHIP)
    try:
        devices = {
            "wang": n.add_device(V1, "wang"),
            "zhang": n.add_device(V2, "zhang"),
            "retired": n.add_device(V1, "retired"),
            "lost": n.add_device(V1, "lost"),
            "replayer": n.add_device(V1, "replayer"),
        }
        n.revoke(devices["retired"][0], wipe=True)
        n.revoke(devices["lost"][0], wipe=False)
        ed = n.editor("li.zhen")  # something on the node already, so "unchanged" is not "still empty"
        ed.create("person", {"unit": V1, "name": "张秀英"})
    finally:
        n.close()
    proc = NodeProcess(db).start()
    yield Server(proc, db, devices)
    proc.kill()


def _editor(device: str, user: str, unit: str = V1) -> Editor:
    return Editor(Store(), device=device, user=user, unit=unit, tier="village")


def _person(ed: Editor, **values: Any) -> list[Op]:
    "The ops of a new resident, as the device's own editor writes them"
    rid = ed.create("person", {"unit": ed.unit, "name": "王芳", "gender": "女", **values})
    return ed.store.record_ops(rid)


def _request(device: str, ops: list[Op], **kw: Any) -> bytes:
    return compress(encode(SyncRequest(protocol=kw.pop("protocol", PROTOCOL_VERSION), device=device,
                                       ops=pack_ops(ops), **kw)))


def _gzip_bomb() -> bytes:
    "A few dozen kilobytes that inflate past the node's limit"
    c = zlib.compressobj(9, zlib.DEFLATED, 16 + zlib.MAX_WBITS)
    mib = b"\0" * (1 << 20)
    return b"".join([c.compress(mib) for _ in range(MAX_INFLATED // len(mib) + 1)] + [c.flush()])


#: A prepared bad request: calling it sends it.
Send = Callable[[], httpx.Response]


def _valid(s: Server) -> tuple[str, str, list[Op]]:
    device, token = s.devices["wang"]
    return device, token, _person(_editor(device, "wang"))


def no_token(s: Server) -> Send:
    device, _, ops = _valid(s)
    body = _request(device, ops)
    return lambda: s.post(body)


def unknown_token(s: Server) -> Send:
    device, _, ops = _valid(s)
    body = _request(device, ops)
    return lambda: s.post(body, token="not-a-token")


def malformed_msgpack(s: Server) -> Send:
    body = compress(b"\xc1\xc1 this is not MessagePack")
    return lambda: s.post(body, token=s.devices["wang"][1])


def not_a_sync_request(s: Server) -> Send:
    body = compress(msgspec.msgpack.encode({"protocol": "one", "device": 7}))
    return lambda: s.post(body, token=s.devices["wang"][1])


def empty_body(s: Server) -> Send:
    return lambda: s.post(b"", token=s.devices["wang"][1], gzip=False)


def not_gzip(s: Server) -> Send:
    "Says gzip, is not"
    device, token, ops = _valid(s)
    body = encode(SyncRequest(protocol=PROTOCOL_VERSION, device=device, ops=pack_ops(ops)))
    return lambda: s.post(body, token=token, gzip=True)


def clock_days_ahead(s: Server) -> Send:
    "An op stamped two days ahead of the node's clock"
    device, token = s.devices["wang"]
    ahead = HLC(clock=lambda: int(time.time() * 1000) + 2 * 86_400_000)
    ed = Editor(Store(), device=device, user="wang", unit=V1, tier="village", clock=ahead)
    rid = ed.create("person", {"unit": V1, "name": "王芳"})
    body = _request(device, ed.store.record_ops(rid))
    return lambda: s.post(body, token=token)


def replayed_op_id(s: Server) -> Send:
    "An op id the node already holds, sent again with other content"
    device, token = s.devices["replayer"]
    first = _person(_editor(device, "replayer"))
    r = s.post(_request(device, first), token=token)
    assert r.status_code == 200, r.text
    second = _person(_editor(device, "replayer"), name="李强")  # counters 1.. again, other content
    body = _request(device, second)
    return lambda: s.post(body, token=token)


def protocol_too_new(s: Server) -> Send:
    device, token, ops = _valid(s)
    body = _request(device, ops, protocol=PROTOCOL_VERSION + 1)
    return lambda: s.post(body, token=token)


def schema_too_new(s: Server) -> Send:
    "A tablet app that writes a newer schema than the node knows"
    device, token, ops = _valid(s)
    body = _request(device, ops, schema_version=SCHEMA.version + 1)
    return lambda: s.post(body, token=token)


def protocol_too_old(s: Server) -> Send:
    device, token, ops = _valid(s)
    body = _request(device, ops, protocol=0)
    return lambda: s.post(body, token=token)


def request_names_another_device(s: Server) -> Send:
    _, token, _ = _valid(s)
    other = s.devices["zhang"][0]
    body = _request(other, _person(_editor(other, "zhang", V2)))
    return lambda: s.post(body, token=token)


def op_claims_another_devices_site(s: Server) -> Send:
    device, token, ops = _valid(s)
    forged = _person(_editor(s.devices["zhang"][0], "wang"))  # the same author, another device's id
    body = _request(device, ops + forged)
    return lambda: s.post(body, token=token)


def op_claims_a_higher_tier(s: Server) -> Send:
    device, token, ops = _valid(s)
    body = _request(device, ops[:-1] + [msgspec.structs.replace(ops[-1], tier=2)])
    return lambda: s.post(body, token=token)


def record_placed_in_another_village(s: Server) -> Send:
    device, token, ops = _valid(s)
    placed = [msgspec.structs.replace(o, value=V2) if o.field == "unit" else o for o in ops]
    body = _request(device, placed)
    return lambda: s.post(body, token=token)


def edit_of_another_villages_record(s: Server) -> Send:
    "广场社区 registers a resident; 育才社区's device renames it"
    device, token, ops = _valid(s)
    zhang, zhang_token = s.devices["zhang"]
    theirs = _person(_editor(zhang, "zhang", V2))
    s.post(_request(zhang, theirs), token=zhang_token).raise_for_status()
    ed = _editor(device, "wang")
    ed.store.apply(ops + theirs)
    body = _request(device, ops + ed.update(theirs[0].record, {"name": "李四"}))
    return lambda: s.post(body, token=token)


def invalid_category(s: Server) -> Send:
    device, token, ops = _valid(s)
    ed = _editor(device, "wang")
    ed.store.apply(ops)
    rid = ed.create("need", {"unit": V1, "person": ops[0].record, "category": "养老服务"})
    need = [msgspec.structs.replace(o, value="不存在的类别") if o.field == "category" else o
            for o in ed.store.record_ops(rid)]
    body = _request(device, ops + need)
    return lambda: s.post(body, token=token)


def wrong_type(s: Server) -> Send:
    device, token, ops = _valid(s)
    body = _request(device, [msgspec.structs.replace(o, value=42) if o.field == "name" else o for o in ops])
    return lambda: s.post(body, token=token)


def unknown_field(s: Server) -> Send:
    device, token, ops = _valid(s)
    extra = msgspec.structs.replace(ops[-1], counter=ops[-1].counter + 1, field="salary", value="1000")
    body = _request(device, ops + [extra])
    return lambda: s.post(body, token=token)


def unknown_collection(s: Server) -> Send:
    device, token, ops = _valid(s)
    extra = msgspec.structs.replace(ops[-1], counter=ops[-1].counter + 1, coll="salary", field="amount")
    body = _request(device, ops + [extra])
    return lambda: s.post(body, token=token)


def too_many_ops(s: Server) -> Send:
    device, token, _ = _valid(s)
    ed = _editor(device, "wang")
    with ed.store.transaction():
        while ed.store.count_ops() <= MAX_BATCH:
            ed.create("person", {"unit": V1, "name": "王芳", "gender": "女", "birth_date": "1950-01-01"})
    body = _request(device, [op for _, op in ed.store.ops_since(0, limit=MAX_BATCH * 2)])
    return lambda: s.post(body, token=token)


def gzip_bomb(s: Server) -> Send:
    body = _gzip_bomb()
    assert len(body) < 1 << 20
    return lambda: s.post(body, token=s.devices["wang"][1])


CASES: list[tuple[Callable[[Server], Send], int, str]] = [
    (no_token, 401, "unauthorized"),
    (unknown_token, 401, "unauthorized"),
    (malformed_msgpack, 400, "malformed_body"),
    (not_a_sync_request, 400, "malformed_body"),
    (empty_body, 400, "malformed_body"),
    (not_gzip, 400, "malformed_body"),
    (protocol_too_new, 409, "version_mismatch"),
    (protocol_too_old, 409, "version_mismatch"),
    (schema_too_new, 409, "version_mismatch"),
    (request_names_another_device, 403, "forged_op"),
    (op_claims_another_devices_site, 403, "forged_op"),
    (op_claims_a_higher_tier, 403, "forged_op"),
    (record_placed_in_another_village, 403, "out_of_scope"),
    (edit_of_another_villages_record, 403, "out_of_scope"),
    (invalid_category, 400, "invalid_value"),
    (wrong_type, 400, "invalid_value"),
    (unknown_field, 400, "unknown_field"),
    (unknown_collection, 400, "unknown_collection"),
    (too_many_ops, 413, "too_large"),
    (clock_days_ahead, 400, "clock_ahead"),
    (replayed_op_id, 403, "forged_op"),
    (gzip_bomb, 413, "too_large"),
]


def assert_error_shape(r: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert (r.status_code, r.headers.get("content-type")) == (status, "application/json"), r.content[:300]
    body = r.json()
    assert list(body) == ["error"]
    err = body["error"]
    assert sorted(err) == ["code", "details", "message"]
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and len(err["message"]) > 10
    return err  # type: ignore[no-any-return]


@pytest.mark.parametrize(("case", "status", "code"), CASES, ids=[c[0].__name__ for c in CASES])
def test_a_bad_request_is_refused_whole_with_the_one_error_shape(
    server: Server, case: Callable[[Server], Send], status: int, code: str
) -> None:
    send = case(server)
    before = op_count(server.db)
    r = send()
    assert op_count(server.db) == before, "a refused request must write nothing"
    assert_error_shape(r, status, code)


def test_a_revoked_device_without_wipe_pushes_but_pulls_nothing(server: Server) -> None:
    "Issue 4: without wipe, a revoked tablet may still push what it holds but pulls nothing"
    device, token = server.devices["lost"]
    before = op_count(server.db)
    ops = _person(_editor(device, "lost"))
    r = server.post(_request(device, ops), token=token)
    assert r.status_code == 200, r.text
    assert op_count(server.db) - before == len(ops)
    resp = msgspec.msgpack.decode(r.content, type=SyncResponse)
    assert resp.acked == len(ops) and resp.ops.ops == [] and not resp.more


def test_a_revoked_device_is_refused(server: Server) -> None:
    "DESIGN: revoked devices (revoked with wipe) get a clear 4xx error with a machine-readable code, and nothing is written"
    device, token = server.devices["retired"]
    before = op_count(server.db)
    r = server.post(_request(device, _person(_editor(device, "retired"))), token=token)
    written = op_count(server.db) - before
    assert (r.status_code, written) == (403, 0), (
        f"a revoked device got HTTP {r.status_code}; {written} ops written")
    assert_error_shape(r, 403, "device_revoked")
