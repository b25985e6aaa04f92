"""Ingest benchmark: how fast a node's store takes ops, against a plain SQLite insert of as many rows.

    .venv/bin/python bench/ingest.py                 # 200,000 ops, 3 alternating runs of each part
    .venv/bin/python bench/ingest.py --ops 20000     # quicker
    .venv/bin/python bench/ingest.py --profile       # also part 1 once under cProfile (stderr)
    .venv/bin/python bench/ingest.py --stream /tmp/ops.bin   # author once, reuse on later runs

Set-up (not timed): a realistic op stream is authored with ``sync.Editor`` the way the pilot makes it.
Six village tablets (two per village of 新会镇) and the township node each edit a scratch in-memory
``Store`` of their own, with their own counters and hybrid clocks (each a few seconds off true time).
In rounds, the tablets create persons, needs and services (about 8 fields each) and make single-field
edits to their own records; they upload to the township, whose staff then make edits of their own, and
the township sends each tablet its village's new ops. About 5% of edits are concurrent: at the start of
a round a tablet and the township edit the same field of the same record from the same state (so the
two ops name the same ``pred``), which leaves an open conflict on review fields until a later edit
resolves it. Creates make about 60% of the ops, edits 40%. The stream is the township store's op log
(``ops_since(0)``): tablets' upload batches interleaved with the township's own edits, in the order
the node accepted them.

Part 1 (timed): a fresh file-backed store, opened as a node opens it (``Store(path, durable=True,
checkpoint_thread=True)``: checkpoints run in a thread of their own), applies the stream in batches of
1,000 ops (``store.apply``): ops/s.
Part 2 (timed): a fresh SQLite file (WAL, synchronous=FULL, the store's cache size), one table with the
columns of the store's ``ops`` table and no index but the rowid; the same number of rows (the ops'
rows, built before the clock starts) go in with ``executemany``, one transaction per 1,000 rows: rows/s.
The two parts run alternately (A B A B A B) and the medians are reported, since the machine is shared.

``wire_bytes_per_op``: the stream packed with ``sync.wire.pack_ops`` in batches of 1,000, MessagePack
(``wire.encode``) then gzip (``wire.compress``), total bytes over ops.

The last line on stdout is one JSON object: ops_per_s, raw_rows_per_s, ratio, wire_bytes_per_op, ops.
Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import datetime as dt
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import _common as common  # also puts the project root on sys.path

import msgspec

from sync import Editor, Op, Store
from sync.hlc import HLC
from sync.schema import (
    CATEGORIES,
    GENDERS,
    GROUPS,
    NEED_TRANSITIONS,
    PROVIDER_KINDS,
    URGENCIES,
)
from sync.types import ADD, SET
from sync import wire

BATCH = 1_000
CREATE_SHARE = 0.60  # of all ops
CONCURRENT_SHARE = 0.05  # of edit ops: both ops of each concurrent pair count
TOWNSHIP_SHARE = 0.10  # of edit ops, besides the concurrent ones
TABLET_OPS_PER_ROUND = 300  # roughly, per tablet between two syncs

TOWNSHIP = ("510921101000", "新会镇")
VILLAGES = (("510921101201", "石板村"), ("510921101202", "龙潭村"), ("510921101203", "红星村"))
TABLETS_PER_VILLAGE = 2
ADDRESS_PREFIX = "四川省遂宁市蓬溪县新会镇"
AREA_CODE = "510921"
CN = dt.timezone(dt.timedelta(hours=8))
START = dt.datetime(2025, 3, 3, 8, 30, tzinfo=CN)

# -- Chinese values -----------------------------------------------------------------------------------

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万严覃戴莫"
)
GIVEN = "秀英桂兰玉珍凤华明国建平志强军伟芳娜敏静丽洪德福贵成文春梅淑荣海金林宝珠翠兴发才永红云霞小秋菊"
WORKERS = ("张晓燕", "李春梅", "王建国", "刘芳", "陈志强", "杨丽", "周敏", "吴秀兰")
STAFF = ("赵德明", "孙淑荣", "黄海", "何静")
NEED_TEXT: dict[str, tuple[str, ...]] = {
    "养老服务": ("独居老人需要每周上门探访", "需要助餐服务，每日午餐送餐上门", "行动不便，需要陪同就医"),
    "儿童关爱": ("父母在外务工，需要课后托管", "留守儿童需要学业辅导", "需要假期看护和安全教育"),
    "困难救助": ("家庭收入低，申请临时救助", "房屋漏雨需要修缮", "申请低保资格复核"),
    "助残服务": ("需要申请轮椅等辅具", "需要康复训练指导", "办理残疾证需要协助"),
    "医疗健康": ("高血压需要定期测量血压", "糖尿病需要用药指导", "需要家庭医生签约"),
    "家政服务": ("需要每月两次上门保洁", "冬季需要协助购买和搬运燃料"),
    "生活物资": ("需要米面油等生活物资", "冬季需要棉被和取暖用品"),
    "心理支持": ("老伴去世后情绪低落，需要心理疏导", "孩子厌学，家长需要沟通指导"),
    "就业帮扶": ("希望找到附近的零工", "需要参加技能培训"),
    "其他": ("需要协助办理社保卡", "需要帮助联系在外子女"),
}
PERSON_NOTES = (
    "子女在外务工，每月电话联系一次", "患有高血压，需定期测量血压", "腿脚不便，很少出门",
    "与孙子同住，孙子在镇上读小学", "听力较差，沟通时需大声", "已签约家庭医生", "喜欢参加村里的坝坝舞",
)
SERVICE_NOTES = (
    "上门探访，老人身体状况良好", "送去米面油各一份", "陪同到镇卫生院复诊", "辅导作业一小时",
    "协助填写救助申请表", "测量血压 150/95，提醒按时服药", "与家属电话沟通，约定下次上门时间",
)
PROVIDERS = {
    "社工": "新会镇社会工作服务站", "志愿者": "蓬溪县青年志愿者协会", "社会组织": "遂宁市心连心社会服务中心",
    "企业": "蓬溪县康乐家政服务有限公司", "村干部": "村民委员会",
}
#: The usual next status when a worker moves a need on (otherwise any allowed move)
FORWARD = {"待处理": "已分派", "已分派": "服务中", "服务中": "已解决", "已解决": "已关闭"}


class Sim:
    "Simulated wall time (ms) shared by every device's clock"

    def __init__(self) -> None:
        self.ms = int(START.timestamp() * 1000)

    def tick(self, rng: random.Random, lo: float = 5, hi: float = 90) -> None:
        self.ms += int(rng.uniform(lo, hi) * 1000)

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.ms / 1000, CN)


def id_number(rng: random.Random, birth: dt.date, gender: str) -> str:
    "An 18-digit resident ID with a correct ISO 7064 check character"
    seq = rng.randrange(0, 50) * 2 + (1 if gender == "男" else 0)
    body = f"{AREA_CODE}{birth:%Y%m%d}{rng.randrange(10)}{seq:02d}"
    weights = (7, 9, 10, 5, 8, 4, 2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    return body + "10X98765432"[sum(int(c) * w for c, w in zip(body, weights)) % 11]


def phone(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return f"0825-{rng.randrange(5_000_000, 9_000_000)}"
    return f"1{rng.choice('3589')}{rng.randrange(10**9):09d}"


def name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def address(rng: random.Random, village: str) -> str:
    return f"{ADDRESS_PREFIX}{village}{rng.randint(1, 9)}组{rng.randint(1, 60)}号"


# -- authoring the stream -----------------------------------------------------------------------------


class Device:
    def __init__(self, device: str, user: str, unit: str, tier: str, sim: Sim, skew_ms: int,
                 village: str | None) -> None:
        self.store = Store()  # scratch replica, in memory
        self.sim = sim
        self.editor = Editor(self.store, device=device, user=user, unit=unit, tier=tier,
                             clock=HLC(clock=lambda: sim.ms + skew_ms))
        self.device = device
        self.unit = unit
        self.village = village
        self.mine: dict[str, list[str]] = {"person": [], "need": [], "service": []}
        self.synced: dict[str, int] = {"person": 0, "need": 0, "service": 0}
        self.cursor = 0  # this replica's seq after its last sync


class Author:
    """Builds the op stream. Counts what it made, so the mix can be reported."""

    def __init__(self, target: int, seed: int) -> None:
        self.target = target
        self.rng = random.Random(seed)
        self.sim = Sim()
        r = self.rng
        self.township = Device(f"node-{TOWNSHIP[0]}", r.choice(STAFF), TOWNSHIP[0], "township", self.sim,
                               0, None)
        self.tablets: list[Device] = []
        for code, vname in VILLAGES:
            for _ in range(TABLETS_PER_VILLAGE):
                self.tablets.append(Device(
                    f"tab-{r.getrandbits(48):012x}", r.choice(WORKERS), code, "village", self.sim,
                    r.randint(-30_000, 30_000), vname,
                ))
        self.village_of: dict[str, str] = {}  # record -> village code
        self.coll_of: dict[str, str] = {}
        self.person_of: dict[str, str] = {}  # need -> person
        self.counts: Counter[str] = Counter()
        self.down_cursor = 0

    # -- totals ---------------------------------------------------------------------------------

    @property
    def create_ops(self) -> int:
        return self.counts["create_ops"]

    @property
    def edit_ops(self) -> int:
        return self.counts["edit_ops"]

    @property
    def total(self) -> int:
        return self.create_ops + self.edit_ops

    def _want_edit(self) -> bool:
        return self.edit_ops < self.create_ops * (1 - CREATE_SHARE) / CREATE_SHARE

    # -- creates --------------------------------------------------------------------------------

    def create(self, t: Device) -> None:
        r, now = self.rng, self.sim.now()
        kind = r.choices(("person", "need", "service"), (45, 30, 25))[0]
        if kind != "person" and not t.mine["person"]:
            kind = "person"
        if kind == "service" and not t.mine["need"]:
            kind = "need"
        vname = t.village or ""
        if kind == "person":
            gender = r.choice(GENDERS)
            age = r.choices((r.randint(60, 95), r.randint(3, 16), r.randint(17, 59)), (55, 20, 25))[0]
            birth = dt.date(now.year - age, r.randint(1, 12), r.randint(1, 28))
            groups = ["老年人"] if age >= 60 else ["儿童"] if age <= 16 else [r.choice(("困难群众", "残疾人"))]
            if r.random() < 0.35:
                extra = r.choice(GROUPS)
                if extra not in groups:
                    groups.append(extra)
            values: dict[str, Any] = {
                "name": name(r), "gender": gender, "birth_date": birth.isoformat(),
                "id_number": id_number(r, birth, gender), "phone": phone(r), "address": address(r, vname),
                "unit": t.unit, "groups": groups,
            }
        elif kind == "need":
            person = r.choice(t.mine["person"][-400:])
            cat = r.choice(CATEGORIES)
            values = {
                "person": person, "unit": t.unit, "category": cat, "description": r.choice(NEED_TEXT[cat]),
                "urgency": r.choices(URGENCIES, (6, 3, 1))[0], "status": "待处理",
                "assignee": t.editor.user, "due_date": (now + dt.timedelta(days=r.randint(3, 30))).date().isoformat(),
            }
        else:
            need = r.choice(t.mine["need"][-400:])
            pk = r.choice(PROVIDER_KINDS)
            values = {
                "need": need, "person": self.person_of[need], "unit": t.unit,
                "service_type": r.choice(CATEGORIES), "provider_kind": pk,
                "provider_name": vname + PROVIDERS[pk] if pk == "村干部" else PROVIDERS[pk],
                "served_at": now.strftime("%Y-%m-%dT%H:%M"), "minutes": r.choice((30, 45, 60, 90, 120)),
            }
            if r.random() < 0.3:
                values["notes"] = r.choice(SERVICE_NOTES)
        rid = t.editor.create(kind, values, record=common.uuid7_at(r, self.sim.ms))
        n = sum(len(v) if isinstance(v, list) else 1 for v in values.values() if v is not None)
        self.counts["create_ops"] += n
        self.counts[f"create_{kind}"] += 1
        t.mine[kind].append(rid)
        self.village_of[rid] = t.unit
        self.coll_of[rid] = kind
        if kind == "need":
            self.person_of[rid] = values["person"]

    # -- edits ----------------------------------------------------------------------------------

    def _pick(self, t: Device, synced_only: bool = False) -> str | None:
        r = self.rng
        colls = [c for c in ("need", "person", "service")
                 if (t.synced[c] if synced_only else len(t.mine[c]))]
        if not colls:
            return None
        weights = {"need": 45, "person": 30, "service": 25}
        coll = r.choices(colls, [weights[c] for c in colls])[0]
        pool = t.mine[coll][: t.synced[coll]] if synced_only else t.mine[coll]
        if r.random() < 0.7:  # mostly recent casework
            pool = pool[-300:]
        return r.choice(pool)

    def edit_value(self, d: Device, rid: str, *, avoid: Any = None) -> tuple[str, int, Any]:
        "A plausible single-field edit of ``rid`` on ``d``'s replica: (field, kind, value)"
        r, coll = self.rng, self.coll_of[rid]
        rec = d.store.get(rid)
        assert rec is not None, rid
        data = rec.data
        if coll == "person":
            f = r.choices(("phone", "address", "notes", "groups", "name", "birth_date", "id_number"),
                          (30, 20, 25, 10, 5, 5, 5))[0]
            if f == "phone":
                v: Any = phone(r)
            elif f == "address":
                v = address(r, dict(VILLAGES)[self.village_of[rid]])
            elif f == "notes":
                v = r.choice(PERSON_NOTES)
            elif f == "groups":
                have = set(data.get("groups") or ())
                v = r.choice([g for g in GROUPS if g not in have] or list(GROUPS))
                return f, ADD, v
            elif f == "name":
                v = name(r)
            else:
                birth = dt.date.fromisoformat(data["birth_date"]) + dt.timedelta(days=r.randint(-400, 400))
                if f == "birth_date":
                    v = birth.isoformat()
                else:
                    v = id_number(r, birth, data.get("gender") or "男")
        elif coll == "need":
            f = r.choices(("status", "urgency", "assignee", "due_date", "description"), (45, 15, 15, 10, 15))[0]
            if f == "status":
                cur = data.get("status", "待处理")
                opts = [s for s in NEED_TRANSITIONS[cur] if s != avoid]
                fwd = FORWARD.get(cur)
                if cur == "已关闭" or not opts:
                    f, v = "description", r.choice(NEED_TEXT[data["category"]])
                else:
                    v = fwd if fwd in opts and r.random() < 0.8 else r.choice(opts)
            elif f == "urgency":
                v = r.choice(URGENCIES)
            elif f == "assignee":
                v = r.choice(WORKERS + STAFF)
            elif f == "due_date":
                v = (self.sim.now() + dt.timedelta(days=r.randint(1, 30))).date().isoformat()
            else:
                v = r.choice(NEED_TEXT[data["category"]])
        else:
            f = r.choices(("minutes", "notes", "people_served", "provider_name"), (30, 30, 20, 20))[0]
            if f == "minutes":
                v = r.choice((20, 30, 40, 45, 60, 90, 120, 150))
            elif f == "notes":
                v = r.choice(SERVICE_NOTES)
            elif f == "people_served":
                v = r.randint(1, 6)
            else:
                v = PROVIDERS[r.choice(PROVIDER_KINDS[:4])]
        return f, SET, v

    def edit(self, d: Device, rid: str, f: str, kind: int, v: Any) -> int:
        if kind == ADD:
            ops = d.editor.add(rid, f, v)
        else:
            ops = d.editor.update(rid, {f: v})
        self.counts["edit_ops"] += len(ops)
        return len(ops)

    def concurrent_pair(self, t: Device) -> None:
        "The tablet and the township edit one field of one record from the same state"
        rid = self._pick(t, synced_only=True)
        if rid is None:
            return
        f, kind, v1 = self.edit_value(t, rid)
        if kind != SET:
            return
        # the township's value for the same field, from its own replica (which holds the same state)
        for _ in range(10):
            f2, _, v2 = self.edit_value(self.township, rid, avoid=v1 if f == "status" else None)
            if f2 == f and v2 != v1:
                break
        else:
            return
        n = self.edit(t, rid, f, SET, v1)
        self.sim.tick(self.rng, 1, 20)
        n += self.edit(self.township, rid, f, SET, v2)
        self.counts["concurrent_ops"] += n
        self.counts["concurrent_pairs"] += 1

    # -- rounds ---------------------------------------------------------------------------------

    def run(self, progress: Callable[[str], None]) -> list[Op]:
        r = self.rng
        last_edits = 0
        rounds = 0
        while self.total < self.target:
            rounds += 1
            edits_before = self.edit_ops
            # 1. concurrent pairs, on records both replicas hold in the same state: enough to bring
            #    them to their share of the edits made by the end of this round (by the last round's pace)
            want = CONCURRENT_SHARE * (self.edit_ops + last_edits)
            tries = 0
            while self.counts["concurrent_ops"] + 1 < want and tries < 1000:
                tries += 1
                self.concurrent_pair(r.choice(self.tablets))
            # 2. the tablets' casework
            for t in r.sample(self.tablets, len(self.tablets)):
                budget = int(TABLET_OPS_PER_ROUND * r.uniform(0.5, 1.5))
                start = self.total
                while self.total - start < budget:
                    self.sim.tick(r)
                    if self._want_edit() and (rid := self._pick(t)) is not None:
                        self.edit(t, rid, *self.edit_value(t, rid))
                    else:
                        self.create(t)
            # 3. upload: each tablet's new ops, one batch per tablet, in the order they connect
            for t in r.sample(self.tablets, len(self.tablets)):
                up = [op for _, op in t.store.ops_since(t.cursor, limit=1 << 30)]
                assert all(op.site == t.device for op in up)
                if up:
                    self.township.store.apply(up)
                    self.township.editor.clock.observe(max(op.hlc for op in up))
                self.counts["uploads"] += 1
            # 4. the township's own edits, on anything it now holds
            for _ in range(_stochastic_round(r, TOWNSHIP_SHARE * self.edit_ops - self.counts["township_ops"])):
                self.sim.tick(r, 2, 30)
                t = r.choice(self.tablets)
                rid = self._pick(t)
                if rid is not None:
                    self.edit(self.township, rid, *self.edit_value(self.township, rid))
                    self.counts["township_ops"] += 1
            # 5. download: each tablet gets its village's new ops it did not make
            down = [op for _, op in self.township.store.ops_since(self.down_cursor, limit=1 << 30)]
            self.down_cursor = self.township.store.max_seq()
            for t in self.tablets:
                mine = [op for op in down if self.village_of[op.record] == t.unit and op.site != t.device]
                if mine:
                    t.store.apply(mine)
                    t.editor.clock.observe(max(op.hlc for op in mine))
                t.cursor = t.store.max_seq()
                t.synced = {c: len(v) for c, v in t.mine.items()}
            last_edits = self.edit_ops - edits_before
            if rounds % 10 == 0:
                progress(f"  round {rounds}: {self.total:,} ops")
        self.counts["rounds"] = rounds
        ops = [op for _, op in self.township.store.ops_since(0, limit=self.target)]
        assert len(ops) == self.target, (len(ops), self.target)
        return ops


def _stochastic_round(rng: random.Random, x: float) -> int:
    if x <= 0:
        return 0
    n = int(x)
    return n + (rng.random() < x - n)


# -- the timed parts ----------------------------------------------------------------------------------


def part_store(batches: Sequence[Sequence[Op]], path: Path) -> Callable[[], int]:
    "Part 1, ready to run: a fresh durable store; the returned call applies every batch"
    store = Store(path, durable=True, checkpoint_thread=True)

    def run() -> int:
        try:
            for b in batches:
                store.apply(b)
            return store.count_ops()
        finally:
            store.close()

    return run


RAW_SQL = """
CREATE TABLE ops (
    seq INTEGER PRIMARY KEY, site INTEGER NOT NULL, counter INTEGER NOT NULL, hlc INTEGER NOT NULL,
    coll TEXT NOT NULL, record TEXT NOT NULL, field TEXT NOT NULL, kind INTEGER NOT NULL,
    value TEXT, pred TEXT, author INTEGER NOT NULL, unit TEXT)
"""


def raw_rows(ops: Sequence[Op]) -> list[tuple[Any, ...]]:
    "The rows the store's ops table gets for these ops (compact site and author ids, JSON values, the record's unit)"
    enc = msgspec.json.Encoder().encode
    sites: dict[str, int] = {}
    authors: dict[tuple[str, str, int], int] = {}
    units: dict[str, str] = {}
    rows = []
    for seq, op in enumerate(ops, 1):
        sid = sites.setdefault(op.site, len(sites) + 1)
        aid = authors.setdefault((op.user, op.unit, op.tier), len(authors) + 1)
        if op.field == "unit" and isinstance(op.value, str):
            units[op.record] = op.value
        rows.append((
            seq, sid, op.counter, op.hlc, op.coll, op.record, op.field, op.kind,
            enc(op.value).decode() if op.value is not None else None,
            enc(op.pred).decode() if op.pred else None,
            aid, units.get(op.record),
        ))
    return rows


def part_raw(batches: Sequence[Sequence[tuple[Any, ...]]], path: Path) -> Callable[[], int]:
    "Part 2, ready to run: a fresh SQLite file set up like the store's; the call inserts every batch"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA cache_size=-65536")
    conn.execute(RAW_SQL)

    def run() -> int:
        try:
            for b in batches:
                conn.execute("BEGIN IMMEDIATE")
                conn.executemany("INSERT INTO ops VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", b)
                conn.execute("COMMIT")
            (n,) = conn.execute("SELECT count(*) FROM ops").fetchone()
            return int(n)
        finally:
            conn.close()

    return run


def wire_bytes(ops: Sequence[Op]) -> tuple[int, int]:
    "(gzip bytes, msgpack bytes) of the ops packed in batches of 1,000"
    gz = raw = 0
    for i in range(0, len(ops), BATCH):
        body = wire.encode(wire.pack_ops(ops[i : i + BATCH]))
        raw += len(body)
        gz += len(wire.compress(body))
    return gz, raw


class StreamFile(msgspec.Struct):
    ops: int
    seed: int
    seconds: float
    counts: dict[str, int]
    stream: list[Op]


def stream(n: int, seed: int, path: Path | None,
           progress: Callable[[str], None]) -> tuple[list[Op], Counter[str], float]:
    "The authored ops, with the author's counts and how long authoring took; from ``path`` if it matches"
    if path is not None and path.exists():
        f = msgspec.msgpack.decode(path.read_bytes(), type=StreamFile)
        if f.ops == n and f.seed == seed:
            progress(f"reusing the {n:,} ops in {path}")
            return f.stream, Counter(f.counts), f.seconds
    progress(f"authoring {n:,} ops with sync.Editor (not timed) ...")
    t0 = time.perf_counter()
    author = Author(n, seed)
    ops = author.run(progress)
    seconds = time.perf_counter() - t0
    if path is not None:
        path.write_bytes(msgspec.msgpack.encode(StreamFile(n, seed, seconds, dict(author.counts), ops)))
    return ops, author.counts, seconds


# -- main -----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ops", type=int, default=200_000, help="ops in the stream (default 200000)")
    ap.add_argument("--runs", type=int, default=3, help="timed runs of each part, alternating (default 3)")
    ap.add_argument("--profile", action="store_true",
                    help="first run part 1 once under cProfile; top 25 by cumulative time to stderr")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--dir", type=Path, default=None, help="where the temporary databases go (default: $TMPDIR)")
    ap.add_argument("--stream", type=Path, default=None, metavar="FILE",
                    help="keep the authored ops in FILE and reuse them while --ops and --seed match "
                         "(delete FILE after changing the generator or sync.edit)")
    args = ap.parse_args(argv)
    n = args.ops
    if n < 1 or args.runs < 1:
        ap.error("--ops and --runs must be at least 1")

    def progress(msg: str) -> None:
        print(msg, file=sys.stderr, flush=True)

    common.print_machine()
    print(f"# {common.source_id('sync/store.py')}")
    ops, c, gen_s = stream(n, args.seed, args.stream, progress)
    total = c["create_ops"] + c["edit_ops"]
    print(
        f"# stream: {len(ops):,} ops authored in {gen_s:.1f} s over {c['rounds']} sync rounds by "
        f"{len(VILLAGES) * TABLETS_PER_VILLAGE} tablets + 1 township node; "
        f"creates {c['create_person']:,} persons, {c['create_need']:,} needs, {c['create_service']:,} services "
        f"= {c['create_ops'] / total:.0%} of ops; edits {c['edit_ops']:,} "
        f"({c['township_ops'] + c['concurrent_pairs']:,} by the township; "
        f"{c['concurrent_pairs']:,} concurrent pairs = {c['concurrent_ops'] / max(c['edit_ops'], 1):.1%} of edits)"
    )

    batches = [ops[i : i + BATCH] for i in range(0, n, BATCH)]
    rows = raw_rows(ops)
    row_batches = [rows[i : i + BATCH] for i in range(0, n, BATCH)]
    gz, packed = wire_bytes(ops)

    tmp = Path(tempfile.mkdtemp(prefix="cunsync-bench-", dir=args.dir))
    try:
        if args.profile:
            progress("part 1 under cProfile ...")
            d = tmp / "profile"
            d.mkdir()
            prof_s, count = common.profile(part_store(batches, d / "store.db"), top=25)
            assert count == n, count
            progress(f"profiled part 1: {prof_s:.2f} s ({n / prof_s:,.0f} ops/s under the profiler)")
        store_s: list[float] = []
        raw_s: list[float] = []
        store_cpu: list[float] = []
        raw_cpu: list[float] = []
        for i in range(args.runs):
            d = tmp / f"run{i}"
            d.mkdir()
            s, cpu, count = common.timed(part_store(batches, d / "store.db"))
            assert count == n, f"the store holds {count} ops, expected {n}"
            store_s.append(s)
            store_cpu.append(cpu)
            progress(f"run {i + 1}/{args.runs}: store.apply {s:.2f} s, cpu {cpu:.2f} s ({n / s:,.0f} ops/s)")
            s, cpu, count = common.timed(part_raw(row_batches, d / "raw.db"))
            assert count == n, count
            raw_s.append(s)
            raw_cpu.append(cpu)
            progress(f"run {i + 1}/{args.runs}: executemany {s:.3f} s, cpu {cpu:.3f} s ({n / s:,.0f} rows/s)")
            shutil.rmtree(d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    a, b = common.median(store_s), common.median(raw_s)
    ops_per_s, rows_per_s = common.rate(n, a), common.rate(n, b)
    ratio = ops_per_s / rows_per_s
    runs_h = [f"run {i + 1} s" for i in range(args.runs)]
    print()
    common.print_table(
        ["part", *runs_h, "median s", "median cpu s", "per second"],
        [
            ["1 store.apply, 1,000-op batches", *store_s, a, common.median(store_cpu), ops_per_s],
            ["2 executemany, 1,000-row txns", *raw_s, b, common.median(raw_cpu), rows_per_s],
        ],
    )
    print()
    print(f"ratio ops/s : raw rows/s = {ratio:.3f} (goal >= 0.25)")
    print(f"wire: {gz / n:.1f} bytes/op gzip ({packed / n:.1f} bytes/op msgpack, {BATCH:,}-op batches)")
    common.emit_json({
        "ops_per_s": round(ops_per_s),
        "raw_rows_per_s": round(rows_per_s),
        "ratio": round(ratio, 4),
        "wire_bytes_per_op": round(gz / n, 2),
        "ops": n,
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
