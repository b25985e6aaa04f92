"""The wire format: msgspec structs for the sync protocol, MessagePack by default, JSON on request,
bodies gzip-compressed.

Ops travel packed: a batch lists each device once and each author (device, user, unit, tier) once, and
every op refers to them by index; record ids travel as 16 raw bytes. Following msgspec's schema-evolution
rules, new fields get defaults, no field changes type, and ``array_like`` structs only append.
"""

from __future__ import annotations

import gzip
import struct
import sys
import threading
import zlib
from collections.abc import Callable, Collection, Iterable, Sequence
from typing import Annotated, Any, Literal, NamedTuple, TypeVar

import msgspec

from .errors import MalformedBody, TooLarge
from .ops import Op
from .types import OpId

_json_decode = msgspec.json.decode

PROTOCOL_VERSION = 1
#: Oldest protocol this code still speaks.
MIN_PROTOCOL_VERSION = 1

MSGPACK = "application/msgpack"
JSON = "application/json"
Format = Literal["msgpack", "json"]
#: an integer SQLite stores (and MessagePack carries): 0 to 2**63 - 1
UInt = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class WireAuthor(msgspec.Struct, array_like=True, frozen=True):
    device: UInt
    user: str
    unit: str
    tier: UInt


class WireOp(msgspec.Struct, array_like=True, gc=False):
    author: UInt
    counter: UInt
    hlc: UInt
    coll: str
    record: bytes
    field: str
    kind: UInt
    value: Any = None
    #: superseded op ids, flattened: device index, counter, device index, counter, ...
    pred: list[UInt] = []


class OpBatch(msgspec.Struct, array_like=True):
    devices: list[str] = []
    authors: list[WireAuthor] = []
    ops: list[WireOp] = []
    #: indexes into ``ops`` of ops the sender knows are already superseded
    dead: list[UInt] = []


#: Records a request may ask about in ``SyncRequest.unseen``; a tablet with more asks again
MAX_UNSEEN = 10_000


class SyncRequest(msgspec.Struct, kw_only=True):
    "One round trip, tablet to node: pending ops up, and where the tablet's pull stands"

    protocol: UInt
    device: str
    cursor: UInt = 0
    #: where an interrupted bootstrap stands: the last record id received ("" when not bootstrapping)
    page: str = ""
    epoch: str = ""
    limit: UInt = 5000
    client_time: UInt = 0
    app_version: str = ""
    #: the schema version a tablet writes (``sync.schema``); a node that knows an older one refuses it.
    #: Links between nodes leave it at 1: their ops are checked field by field.
    schema_version: UInt = 1
    #: the node's check of ``cursor`` from its last answer
    cursor_check: str = ""
    #: own ops the tablet still holds unsent after this request's batch (shown on the devices page)
    pending: UInt = 0
    #: records the tablet holds that its last bootstrap did not bring: the node answers, in ``removed``,
    #: those it holds outside the device's scope (they left it before a backup the node was restored from)
    unseen: list[str] = []
    #: last, so that ``request_body`` can join a batch deflated beforehand to the fields before it
    ops: OpBatch = msgspec.field(default_factory=OpBatch)


class SyncResponse(msgspec.Struct, kw_only=True):
    "The node's answer: what it acknowledged, ops for the tablet, its new cursor, whether more waits"

    protocol: UInt
    acked: UInt
    ops: OpBatch
    cursor: UInt
    more: bool
    server_time: UInt
    epoch: str
    #: records that left the device's scope: drop them locally (they were not deleted)
    removed: list[str] = []
    #: True while the node is still sending a bootstrap of the current state
    bootstrapping: bool = False
    page: str = ""
    #: an answer that is a page of a bootstrap says which: "first" (the bootstrap started with this
    #: request) or "next"; its last page has ``page`` "". At the end, a tablet asks about the records it
    #: holds that no page brought (``SyncRequest.unseen``). Older nodes send ""; older tablets ignore it
    bootstrap: str = ""
    #: names the op at ``cursor``: a node restored from a backup no longer holds it there
    cursor_check: str = ""
    #: the device was revoked without wipe: its ops are still taken, and it receives nothing
    revoked: bool = False


class EnrolRequest(msgspec.Struct, kw_only=True):
    "A tablet exchanging a one-time enrolment code for its device credential"

    code: str
    #: a tablet re-attaching to a node that no longer knows it (restored from a backup older than its
    #: enrolment) names its device id, and the worker, unit and tier it holds: the node creates the device
    #: under that id, only if it does not know it and the code was made to re-attach that device, for that
    #: worker, unit and tier. Empty for a new tablet; older nodes ignore them (and enrol a new device)
    device: str = ""
    user: str = ""
    unit: str = ""
    tier: str = ""


class EnrolResponse(msgspec.Struct, kw_only=True):
    device: str
    token: str
    user: str
    unit: str
    tier: str
    node_unit: str


class ErrorDetail(msgspec.Struct):
    code: str
    message: str
    details: Any = None


class ErrorBody(msgspec.Struct):
    error: ErrorDetail


def refusal(status: int, body: bytes) -> ErrorDetail:
    """What a node's error answer says: its code, message and details. An answer that is no
    ``ErrorBody`` (a proxy's error page, say) gives the code ``http_error`` and names the status."""
    try:
        return decode(body, ErrorBody, "json").error
    except MalformedBody:
        return ErrorDetail("http_error", f"the node answered HTTP {status}")


def fewer_ops(details: Any, sent: int) -> int:
    """How many ops to send a request after a 413 refused one of ``sent`` (``details``: the error's): the
    most the node says it takes (``limit``), or else half (the body was over its size, or a proxy's)"""
    cap = details.get("limit") if isinstance(details, dict) else None
    return cap if isinstance(cap, int) and 0 < cap < sent else sent // 2


def pack_ops(ops: Iterable[Op], dead: Iterable[OpId] = ()) -> OpBatch:
    devices: dict[str, int] = {}
    authors: dict[tuple[int, str, str, int], int] = {}
    out: list[WireOp] = []

    def dev(d: str) -> int:
        i = devices.get(d)
        if i is None:
            i = devices[d] = len(devices)
        return i

    dead_set = set(dead)
    dead_idx: list[int] = []
    rids: dict[str, bytes] = {}
    for op in ops:
        key = (dev(op.site), op.user, op.unit, op.tier)
        a = authors.get(key)
        if a is None:
            a = authors[key] = len(authors)
        pred: list[int] = []
        for d, c in op.pred:
            pred.append(dev(d))
            pred.append(c)
        if dead_set and (op.site, op.counter) in dead_set:
            dead_idx.append(len(out))
        rb = rids.get(op.record)
        if rb is None:
            rb = rids[op.record] = uuid_bytes(op.record)
        out.append(WireOp(a, op.counter, op.hlc, op.coll, rb, op.field, op.kind, op.value, pred))
    return OpBatch(
        list(devices), [WireAuthor(*k) for k in authors], out, dead_idx
    )


#: An op ready to pack, decoded from its row: (site id, counter, hlc, coll, record id as 16 bytes, field,
#: kind, value, pred as [[device, counter], ...] or None, author id)
Prepared = tuple[int, int, int, str, bytes, str, int, Any, Any, int]


def prepare_rows(rows: Iterable[tuple[Any, ...]]) -> list[tuple[int, Prepared]]:
    """Op rows as the store keeps them — (seq, site, counter, hlc, coll, record, field, kind, value JSON,
    pred JSON, author) — decoded, with their seqs, ready for ``pack_prepared``. Collection and field
    names are interned and a record's ops share its id, so ops kept for later pulls stay small."""
    out: list[tuple[int, Prepared]] = []
    rids: dict[str, bytes] = {}
    intern = sys.intern
    for seq, site, counter, hlc, coll, record, field, kind, value, pred, aid in rows:
        rb = rids.get(record)
        if rb is None:
            rb = rids[record] = uuid_bytes(record)
        out.append((seq, (site, counter, hlc, intern(coll), rb, intern(field), kind,
                          _json_decode(value) if value is not None else None,
                          _json_decode(pred) if pred else None, aid)))
    return out


def pack_prepared(
    ops: Iterable[tuple[int, Prepared]],
    device_of: Callable[[int], str],
    author_of: Callable[[int], tuple[str, str, int]],
    dead: Collection[int] = (),
) -> OpBatch:
    """Pack (seq, prepared op) pairs the same as ``pack_ops`` would pack their ``Op`` objects; ``dead``
    names the sequence numbers to flag as superseded"""
    devices: dict[str, int] = {}
    authors: dict[tuple[int, str, str, int], int] = {}
    by_author: dict[tuple[int, int], int] = {}  # (author id, site id) -> index in ``authors``
    out: list[WireOp] = []
    dead_idx: list[int] = []

    def dev(d: str) -> int:
        i = devices.get(d)
        if i is None:
            i = devices[d] = len(devices)
        return i

    for seq, (site, counter, hlc, coll, record, field, kind, value, pred, aid) in ops:
        a = by_author.get((aid, site))
        if a is None:
            user, unit, tier = author_of(aid)
            key = (dev(device_of(site)), user, unit, tier)
            a = authors.get(key)
            if a is None:
                a = authors[key] = len(authors)
            by_author[(aid, site)] = a
        flat: list[int] = []
        if pred:
            for d, c in pred:
                flat.append(dev(d))
                flat.append(c)
        if seq in dead:
            dead_idx.append(len(out))
        out.append(WireOp(a, counter, hlc, coll, record, field, kind, value, flat))
    return OpBatch(list(devices), [WireAuthor(*k) for k in authors], out, dead_idx)


def unpack_ops(batch: OpBatch) -> tuple[list[Op], set[OpId]]:
    "Ops from a packed batch; an index that points nowhere is a malformed body"
    devices = batch.devices
    negative = MalformedBody("an op refers to a negative device, author or op index")
    if any(a.device < 0 for a in batch.authors) or min(batch.dead, default=0) < 0:
        raise negative
    try:
        authors = [(devices[a.device], a.user, a.unit, a.tier) for a in batch.authors]
        ops = []
        ids: dict[bytes, str] = {}  # a record's ops travel together: convert each id once
        for i, w in enumerate(batch.ops):
            if w.author < 0:
                raise negative
            site, user, unit, tier = authors[w.author]
            p = w.pred
            if not p:
                pred: tuple[tuple[str, int], ...] = ()
            elif len(p) % 2:
                raise MalformedBody(f"ops[{i}].pred has an odd number of items", details={"op": i})
            elif min(p) < 0:
                raise negative
            elif len(p) == 2:
                pred = ((devices[p[0]], p[1]),)
            else:
                pred = tuple((devices[p[j]], p[j + 1]) for j in range(0, len(p), 2))
            rid = ids.get(w.record)
            if rid is None:
                if len(w.record) != 16:
                    raise MalformedBody(f"ops[{i}].record must be 16 bytes (a UUID)", details={"op": i})
                h = w.record.hex()
                rid = ids[w.record] = f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
            ops.append(Op(site, w.counter, w.hlc, w.coll, rid, w.field, w.kind, w.value, pred, user, unit, tier))
        dead = {ops[i].id for i in batch.dead}
    except IndexError:
        raise MalformedBody("an op refers to a device, author or op index the batch does not list") from None
    return ops, dead


def uuid_bytes(record: str) -> bytes:
    "A record id (a UUID) as the 16 bytes the wire carries"
    try:
        return bytes.fromhex(record.replace("-", ""))
    except ValueError:
        raise MalformedBody(f"record id {record!r} is not a UUID") from None


# -- bodies ---------------------------------------------------------------------------------------

_msgpack_encoder = msgspec.msgpack.Encoder()
_json_encoder = msgspec.json.Encoder()
_decoders: dict[tuple[type, str], Any] = {}
#: Decoders are made one at a time. msgspec describes a Struct type for decoding when a decoder of it is
#: first made; two threads making decoders of the same type at once crashed the process (msgspec 0.22,
#: a segfault in ``mpack_decode``): 200 tablets' first syncs in threads, and 50 threads' first decode
#: of a ``SyncResponse`` in about a third of tries.
_decoders_lock = threading.Lock()
T = TypeVar("T")


def encode(msg: Any, fmt: Format = "msgpack") -> bytes:
    return _msgpack_encoder.encode(msg) if fmt == "msgpack" else _json_encoder.encode(msg)


def decode(body: bytes, type_: type[T], fmt: Format = "msgpack") -> T:
    "Decode a body into ``type_``; errors name the path, as msgspec gives it. Safe from any thread"
    dec = _decoders.get((type_, fmt))
    if dec is None:
        with _decoders_lock:
            dec = _decoders.get((type_, fmt))
            if dec is None:
                dec = _decoders[(type_, fmt)] = (
                    msgspec.msgpack.Decoder(type_) if fmt == "msgpack" else msgspec.json.Decoder(type_)
                )
    try:
        return dec.decode(body)  # type: ignore[no-any-return]
    except msgspec.ValidationError as e:
        raise MalformedBody(f"the body does not match the protocol: {e}") from None
    except msgspec.DecodeError as e:
        raise MalformedBody(f"the body is not valid {'MessagePack' if fmt == 'msgpack' else 'JSON'}: {e}") from None
    except RecursionError:  # msgspec's answer to arrays or maps nested thousands deep
        raise MalformedBody("the body nests arrays or maps too deeply; no value of the protocol nests") from None


def compress(body: bytes, level: int = 6) -> bytes:
    return gzip.compress(body, compresslevel=level, mtime=0)


class Deflated(NamedTuple):
    "A part of a gzip body, compressed on its own ahead of time: see ``gzip_parts``"

    data: bytes
    deflated: bytes


def deflate(data: bytes, level: int = 6, *, after: bytes = b"") -> Deflated:
    """``data`` compressed on its own, its deflate blocks flushed to a byte boundary and not final.
    With ``after``: compressed as the bytes that follow ``after`` in one stream, free to refer back into
    its last 32 KiB, so it compresses better but may only follow a part of exactly those bytes."""
    if after:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, zdict=after[-(1 << 15):])
    else:
        c = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS)
    return Deflated(data, c.compress(data) + c.flush(zlib.Z_SYNC_FLUSH))


_GZIP_HEADER = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"  # deflate, no name, mtime 0, OS unknown
_FINAL_BLOCK = zlib.compressobj(6, zlib.DEFLATED, -zlib.MAX_WBITS).flush()  # an empty final block


def gzip_parts(parts: Iterable[Deflated]) -> bytes:
    """One gzip body (a single member, as any gunzip reads it) of parts deflated separately: each
    part's blocks end on a byte boundary and refer to nothing before it, so they follow one another as
    one deflate stream, which an empty final block closes. The trailer's CRC covers every part."""
    out = [_GZIP_HEADER]
    crc = size = 0
    for p in parts:
        crc = zlib.crc32(p.data, crc)
        size += len(p.data)
        out.append(p.deflated)
    out += (_FINAL_BLOCK, struct.pack("<II", crc, size & 0xFFFFFFFF))
    return b"".join(out)


_EMPTY_BATCH = _msgpack_encoder.encode(OpBatch())


def deflate_ops(batch: OpBatch) -> Deflated:
    "A push batch encoded and deflated for ``request_body``: the bulk of the work, done ahead of time"
    return deflate(_msgpack_encoder.encode(batch))


def request_body(req: SyncRequest, ops: Deflated) -> bytes:
    """The gzipped MessagePack body of ``req`` with the batch ``ops`` (``deflate_ops``) in place of
    ``req.ops``: it inflates to what ``encode`` makes of that request. Only the small fields before the
    batch are encoded and deflated here."""
    head = _msgpack_encoder.encode(msgspec.structs.replace(req, ops=OpBatch()))
    # ``ops`` is the last field: its key ends the head, followed by the empty batch it replaces
    assert head.endswith(b"\xa3ops" + _EMPTY_BATCH), "SyncRequest.ops must stay its last field"
    return gzip_parts([deflate(head[: -len(_EMPTY_BATCH)]), ops])


class Spliced(NamedTuple):
    """A response whose ops are given already encoded, as deflated parts (``server.pullcache``):
    ``response.ops`` holds the batch's devices, authors and dead list, and no ops"""

    response: SyncResponse
    op_count: int  # ops in ``parts``
    parts: list[Deflated]


def _array_header(n: int) -> bytes:
    if n < 16:
        return bytes((0x90 | n,))
    if n < 1 << 16:
        return b"\xdc" + n.to_bytes(2, "big")
    return b"\xdd" + n.to_bytes(4, "big")


def spliced_body(s: Spliced) -> bytes:
    """The gzipped MessagePack body of a spliced response: it inflates to what ``encode`` makes of the
    response with its ops in place. Only the small fields around the ops are encoded and deflated here."""
    batch = s.response.ops
    full = _msgpack_encoder.encode(s.response)
    empty = _msgpack_encoder.encode(batch)  # [devices, authors, [], dead]
    at = full.index(b"\xa3ops" + empty) + 4  # only two integers come before the ``ops`` key
    tables = _msgpack_encoder.encode(batch.devices) + _msgpack_encoder.encode(batch.authors)
    head = full[:at] + b"\x94" + tables + _array_header(s.op_count)
    tail = _msgpack_encoder.encode(batch.dead) + full[at + len(empty):]
    return gzip_parts([deflate(head), *s.parts, deflate(tail)])


def decompress(body: bytes, limit: int) -> bytes:
    "Gunzip a body, refusing one that would inflate past ``limit`` bytes"
    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    try:
        out = d.decompress(body, limit + 1)
    except zlib.error as e:
        raise MalformedBody(f"the body is not valid gzip: {e}") from None
    if not d.eof and not d.unconsumed_tail and len(out) <= limit:
        raise MalformedBody("the gzip body is truncated; send the whole body again")
    if len(out) > limit or d.unconsumed_tail:
        raise TooLarge(f"the body inflates past the limit of {limit} bytes; send smaller batches",
                       details={"limit_bytes": limit})
    return out


def format_for(content_type: str | None) -> Format:
    return "json" if content_type and "json" in content_type else "msgpack"


def media_type(fmt: Format) -> str:
    return JSON if fmt == "json" else MSGPACK


def ops_values_size(ops: Sequence[Op]) -> int:
    "Bytes of the ops' values alone in MessagePack: the yardstick for wire overhead"
    return sum(len(_msgpack_encoder.encode(o.value)) for o in ops)
