"""The upper node's side of a link: one county (or city) node syncing with one node below it.

The upper node is the client. It holds a **link credential** the lower node issued (a device whose unit
is the upper node's unit and whose tier is its tier, see ``Node.is_link``) and speaks the ordinary sync
protocol to the lower node's ``POST /api/sync``:

    push   the ops the lower node should have: reference data (``unit``, ``catalogue``, ``notice``,
           ``task``) and escalation ops written at this node or relayed from above it, on records within
           the lower node's reach (its own units and the units above it)
    pull   the escalation ops written below (a township's escalations, never a person, need or service)

Progress lives in this node's database, table ``relay_links``, one row per lower node: the lower node's
epoch, the pull cursor (the lower node's sequence, checked as tablets' cursors are) and ``pushed_seq``,
this node's own sequence up to which every op for that link is acknowledged. A push is acknowledged by
the lower node's answer itself: it commits a batch before it answers. A lost answer means the batch is
sent again, which the lower node ignores (ops are idempotent). A lower node restored from a backup
answers with a new epoch: everything is pushed again and pulled from the top.

    sync_link(node, url, token) -> LinkSyncResult     one complete sync with one lower node
    link_progress(node) -> list[dict]                  where every link stands
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import httpx

from sync import units as unitlib
from sync.errors import SyncError
from sync.hlc import MAX_AHEAD_MS, physical_ms, wall_ms
from sync.ops import Op
from sync.schema import SCHEMA
from sync.types import TIER_RANK
from sync.wire import (
    MSGPACK,
    PROTOCOL_VERSION,
    SyncRequest,
    SyncResponse,
    compress,
    decode,
    encode,
    fewer_ops,
    refusal,
    unpack_ops,
)

from .node import LINK_SQL, MAX_PULL, REFERENCE_SQL, Node, written_as_node

#: Ops an upper node sends a lower one a request: what nodes of every version take (a node takes up to
#: ``MAX_BATCH``, 10,000 now and 5,000 before), so a county need not wait for its townships to upgrade
RELAY_BATCH = 5000

APP_VERSION = "cunsync-relay/0.1.0"

_SQL = """
CREATE TABLE IF NOT EXISTS relay_links (
    child TEXT PRIMARY KEY, url TEXT NOT NULL, device TEXT NOT NULL, epoch TEXT NOT NULL DEFAULT '',
    cursor INTEGER NOT NULL DEFAULT 0, cursor_check TEXT NOT NULL DEFAULT '',
    pushed_seq INTEGER NOT NULL DEFAULT 0, last_sync INTEGER, pushed_total INTEGER NOT NULL DEFAULT 0,
    pulled_total INTEGER NOT NULL DEFAULT 0);
"""


class LinkError(Exception):
    "The lower node refused the link's request, or sent what a link may not carry; the message says why"

    def __init__(self, message: str, *, code: str = "link_error", status: int = 0, details: Any = None) -> None:
        super().__init__(f"{message} [{code}]")
        self.message = message
        self.code = code
        self.status = status
        self.details = details


class LinkUnreachable(LinkError):
    "The lower node did not answer; nothing was lost, the next sync resumes where this one stopped"


@dataclass
class LinkSyncResult:
    "What one ``sync_link`` did"

    child: str
    device: str
    rounds: int = 0
    pushed: int = 0
    pulled: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    seconds: float = 0.0
    cursor: int = 0
    pushed_seq: int = 0
    epoch: str = ""


@dataclass
class _Progress:
    epoch: str = ""
    cursor: int = 0
    cursor_check: str = ""
    pushed_seq: int = 0


def _ensure_table(node: Node) -> None:
    with node.store.lock:
        node.store.conn.executescript(_SQL)


def link_progress(node: Node) -> list[dict[str, Any]]:
    "Every link this node has synced: lower node, url, device, epoch, cursors, totals, last sync (unix s)"
    _ensure_table(node)
    with node.store.lock:
        cur = node.store.conn.execute("SELECT * FROM relay_links ORDER BY child")
        cols = [d[0] for d in cur.description]
        return [dict(zip(cols, r)) for r in cur.fetchall()]


def sync_link(node: Node, url: str, token: str, *, client: httpx.Client | None = None,
              limit: int = MAX_PULL, max_rounds: int = 10_000) -> LinkSyncResult:
    """Sync this node with the node below it at ``url``, using the link credential ``token`` that node
    issued: push until nothing waits, pull until nothing waits. Raises ``LinkUnreachable`` when the lower
    node does not answer and ``LinkError`` when it refuses (its error code is kept). Safe to call again
    at any time; each round's result is committed before the next starts."""
    own = client is None
    http = client or httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0))
    base = url.rstrip("/")
    auth = {"authorization": f"Bearer {token}"}
    t0 = time.perf_counter()
    try:
        who = _whoami(http, base, auth)
        child = str(who["node_unit"])
        if (who.get("unit"), who.get("tier")) != (node.unit, node.tier):
            raise LinkError(f"the credential for {base} belongs to {who.get('unit')}/{who.get('tier')}, not to "
                            f"this node ({node.unit}/{node.tier}); ask that node for a link credential with "
                            f"unit {node.unit} and tier {node.tier}", code="wrong_link_credential")
        if child == node.unit or not unitlib.is_under(child, node.unit):
            raise LinkError(f"the node at {base} is {child}, which is not under this node's unit {node.unit}",
                            code="not_below")
        if who.get("revoked"):
            raise _revoked(child)
        device = str(who["device"])
        _ensure_table(node)
        result = LinkSyncResult(child=child, device=device)
        prog = _load(node, child)
        batch = RELAY_BATCH
        for _ in range(max_rounds):
            top, seqs = _pending(node, child, prog.pushed_seq, batch)
            req = SyncRequest(
                protocol=PROTOCOL_VERSION, device=device, cursor=prog.cursor, epoch=prog.epoch,
                ops=node.store.packed(seqs), limit=limit, client_time=wall_ms(), app_version=APP_VERSION,
                cursor_check=prog.cursor_check,
            )
            body = compress(encode(req))
            try:
                resp, down = _post(http, base, auth, body)
            except LinkError as e:
                if e.status == 413 and len(seqs) > 1:  # send fewer, down to one op, for the rest of this sync
                    batch = fewer_ops(e.details, len(seqs))
                    continue
                raise
            if resp.revoked:  # a node that still took the push of a revoked link: write nothing from it
                raise _revoked(child)
            result.rounds += 1
            result.bytes_up += len(body)
            result.bytes_down += down
            pushed_full = len(seqs) == batch
            new_pushed = seqs[-1] if pushed_full else top
            if prog.epoch and resp.epoch != prog.epoch:
                # the lower node was restored from a backup: it may lack anything sent before
                new_pushed = 0
                pushed_full = True
            ops, dead = unpack_ops(resp.ops)
            _check_pulled(node, child, ops)
            with node.store.transaction() as c:
                if ops:
                    node.store.apply(ops, dead=dead)
                    node.clock.observe(max(o.hlc for o in ops))
                prog = _Progress(resp.epoch, resp.cursor, resp.cursor_check, new_pushed)
                c.execute(
                    "INSERT INTO relay_links (child, url, device, epoch, cursor, cursor_check, pushed_seq, last_sync,"
                    " pushed_total, pulled_total) VALUES (?,?,?,?,?,?,?,?,?,?) ON CONFLICT (child) DO UPDATE SET"
                    " url = excluded.url, device = excluded.device, epoch = excluded.epoch, cursor = excluded.cursor,"
                    " cursor_check = excluded.cursor_check, pushed_seq = excluded.pushed_seq,"
                    " last_sync = excluded.last_sync, pushed_total = pushed_total + excluded.pushed_total,"
                    " pulled_total = pulled_total + excluded.pulled_total",
                    (child, base, device, resp.epoch, resp.cursor, resp.cursor_check, new_pushed, int(time.time()),
                     len(seqs), len(ops)),
                )
            result.pushed += len(seqs)
            result.pulled += len(ops)
            if not resp.more and not pushed_full:
                break
        result.cursor, result.pushed_seq, result.epoch = prog.cursor, prog.pushed_seq, prog.epoch
        result.seconds = time.perf_counter() - t0
        return result
    finally:
        if own:
            http.close()


def _load(node: Node, child: str) -> _Progress:
    with node.store.lock:
        row = node.store.conn.execute(
            "SELECT epoch, cursor, cursor_check, pushed_seq FROM relay_links WHERE child = ?", (child,)
        ).fetchone()
    return _Progress(*row) if row else _Progress()


def _pending(node: Node, child: str, after: int, limit: int) -> tuple[int, list[int]]:
    """This node's sequence now, and the sequence numbers of the next ops the lower node should have:
    link collections, written at this node's tier or above, on records in the lower node's reach"""
    lo, hi = unitlib.descendant_range(child)
    above = unitlib.ancestors(child)
    with node.store.lock:
        top = node.store.max_seq()
        rows = node.store.conn.execute(
            "SELECT o.seq FROM ops o JOIN records r ON r.id = o.record JOIN authors a ON a.id = o.author"
            f" WHERE o.seq > ? AND o.seq <= ? AND o.coll IN ({LINK_SQL}) AND a.tier >= ?"
            f" AND (r.unit BETWEEN ? AND ? OR (r.unit IN ({','.join('?' * len(above))}) AND r.coll IN ({REFERENCE_SQL})))"
            " ORDER BY o.seq LIMIT ?", (after, top, TIER_RANK[node.tier], lo, hi, *above, limit),
        ).fetchall()
    return top, [r[0] for r in rows]


def _check_pulled(node: Node, child: str, ops: list[Op]) -> None:
    """What a link may bring up: escalation ops written below this node by the node of their unit, within
    the lower node's units, on escalation records. Anything else is refused before anything is written."""
    lo, hi = unitlib.descendant_range(child)
    now = node.reference_ms()  # as the node checks a push: a clock set back refuses nothing right
    for i, op in enumerate(ops):
        if op.coll != "escalation":
            raise LinkError(f"the node {child} sent a {op.coll} op; a link brings up escalations only",
                            code="bad_pull", details={"op": i})
        if not _under(op.unit, child) or op.tier >= TIER_RANK[node.tier]:
            raise LinkError(f"the node {child} sent an op by {op.unit} at tier {op.tier}, which is not below "
                            "this node", code="bad_pull", details={"op": i})
        if not written_as_node(op):
            raise LinkError(f"the node {child} sent an op by device {op.site!r} at tier {op.tier} for unit {op.unit}; "
                            f"escalation ops are written by node-{op.unit} at its unit's tier", code="bad_pull",
                            details={"op": i})
        if physical_ms(op.hlc) - now > MAX_AHEAD_MS:
            raise LinkError(f"the node {child} sent an op stamped ahead of this node's clock; correct its clock",
                            code="clock_ahead", details={"op": i})
        try:
            if op.value is None:
                SCHEMA.field(op.coll, op.field)
            else:
                SCHEMA.validate(op.coll, op.field, op.kind, op.value)
        except SyncError as e:
            raise LinkError(f"the node {child} sent an invalid op: {e.message}", code="bad_pull",
                            details={"op": i}) from None
        if op.field == "unit" and op.value is not None and not _under(op.value, child):
            raise LinkError(f"the node {child} sent an escalation for unit {op.value}, not one of its own",
                            code="bad_pull", details={"op": i})
    records = list({op.record for op in ops})
    with node.store.lock:
        for rid in records:
            row = node.store.conn.execute("SELECT coll, unit FROM records WHERE id = ?", (rid,)).fetchone()
            if row is not None and (row[0] != "escalation" or row[1] is None or not lo <= row[1] <= hi):
                raise LinkError(f"the node {child} sent ops for record {rid}, which is not one of its escalations",
                                code="bad_pull", details={"record": rid})


def _revoked(child: str) -> LinkError:
    return LinkError(f"the node {child} revoked this node's link credential; ask its admin for a new one. "
                     + _store_new(child), code="device_revoked", status=403)


def unknown_link_token(where: str, child: str) -> str:
    """What an upper node is told when the node below (``where``: how to name it; ``child``: its unit, or a
    placeholder) does not know its link token; the node's own answer speaks to a tablet"""
    return (f"{where} does not know this link token (a typo in `cunsync link add`, or the node restored from an "
            "older backup): ask its admin for a new one (`cunsync device add --unit <upper unit> --tier <upper "
            "tier>` there). " + _store_new(child))


def _store_new(child: str) -> str:
    "Where an upper node stores a new link credential from ``child``: each kind of sync reads it elsewhere"
    return (f"Store it with `cunsync link add --unit {child} --token NEW` for the scheduled sync and snapshot "
            "pulls; `cunsync link-sync` by hand takes it as --token NEW (or CUNSYNC_LINK_TOKEN)")


def _under(code: object, unit: str) -> bool:
    "Whether ``code`` is a well-formed unit code at or under ``unit``"
    try:
        return isinstance(code, str) and unitlib.normalize_code(code) == code and unitlib.is_under(code, unit)
    except unitlib.UnitCodeError:
        return False


def _whoami(http: httpx.Client, base: str, auth: dict[str, str]) -> dict[str, Any]:
    try:
        r = http.get(base + "/api/whoami", headers=auth)
    except httpx.InvalidURL as e:
        raise LinkError(f"{base!r} is not a node's URL ({e}); correct it with `cunsync link add --url`",
                        code="invalid_url") from None
    except httpx.TransportError as e:
        raise LinkUnreachable(f"the node at {base} did not answer ({type(e).__name__}); the link syncs next time",
                              code="unreachable") from None
    if r.status_code != 200:
        if refusal(r.status_code, r.content).code == "unauthorized":
            raise LinkError(unknown_link_token(f"the node at {base}", "<its unit>"), code="unauthorized",
                            status=r.status_code)
        _raise(r)
    got: dict[str, Any] = r.json()
    return got


def _post(http: httpx.Client, base: str, auth: dict[str, str], body: bytes) -> tuple[SyncResponse, int]:
    headers = {**auth, "content-type": MSGPACK, "content-encoding": "gzip", "accept": MSGPACK,
               "accept-encoding": "gzip"}
    try:
        r = http.post(base + "/api/sync", content=body, headers=headers)
    except httpx.TransportError as e:
        raise LinkUnreachable(f"the node at {base} did not answer ({type(e).__name__}); the link syncs next time",
                              code="unreachable") from None
    if r.status_code != 200:
        _raise(r)
    return decode(r.content, SyncResponse), r.num_bytes_downloaded


def _raise(r: httpx.Response) -> None:
    err = refusal(r.status_code, r.content)
    raise LinkError(err.message, code=err.code, status=r.status_code, details=err.details)
