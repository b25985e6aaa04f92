"""Shared helpers for the sync benchmarks (push, bootstrap, concurrent): a real node in a subprocess,
realistic Chinese person records, a fast builder for big node databases, and a py-spy profile summary.

The node is the real thing: ``cunsync serve`` (hypercorn) in its own process, on a free loopback port,
polled on ``GET /api/health`` until it answers and stopped with SIGTERM afterwards.
"""

from __future__ import annotations

import datetime as dt
import math
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from anywhere
    sys.path.insert(0, str(ROOT))

import _common  # noqa: E402  (bench/ is on the path: this module is imported by the benches beside it)
import httpx  # noqa: E402

from sync.ops import Op  # noqa: E402
from sync.schema import GROUPS, SCHEMA  # noqa: E402
from sync.types import ADD, SET, TIER_RANK  # noqa: E402

TOWNSHIP = "510903001000"
#: The ten villages (社区) under the township; the first three are in the sample unit tree.
VILLAGES: dict[str, str] = {
    "510903001001": "育才社区", "510903001002": "广场社区", "510903001003": "和平社区",
    "510903001004": "紫东社区", "510903001005": "明月社区", "510903001006": "南津社区",
    "510903001007": "嘉禾社区", "510903001008": "金桥社区", "510903001009": "顺南社区",
    "510903001010": "永兴社区",
}
ADDRESS_PREFIX = "四川省遂宁市船山区育才路街道"
WORKERS = ("张晓燕", "李春梅", "王建国", "刘芳", "陈志强", "杨丽", "周敏", "吴秀兰", "赵德明", "孙淑荣")


# -- the node ------------------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class RunningNode:
    def __init__(self, proc: subprocess.Popen[bytes], url: str, log: Path) -> None:
        self.proc = proc
        self.url = url
        self.log = log

    @property
    def pid(self) -> int:
        return self.proc.pid


@contextmanager
def running_node(db: str | Path, *, unit: str = TOWNSHIP, timeout: float = 60.0,
                 env: dict[str, str] | None = None) -> Iterator[RunningNode]:
    """``cunsync serve`` on a free loopback port, until the block ends (SIGTERM, then SIGKILL after 10 s).

    The node's stderr goes to ``<db>.log``; its tail is printed if it does not come up.
    """
    port = free_port()
    bind = f"127.0.0.1:{port}"
    url = f"http://{bind}"
    log = Path(str(db) + ".log")
    with open(log, "wb") as logf:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from client.cli import cli; cli()", "serve", "--db", str(db),
             "--unit", unit, "--bind", bind],
            cwd=ROOT, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
            env={**os.environ, **(env or {})},
        )
    try:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as c:
            while True:
                if proc.poll() is not None:
                    raise RuntimeError(f"the node exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
                try:
                    if c.get(url + "/api/health").status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if time.monotonic() > deadline:
                    raise RuntimeError(f"the node did not answer within {timeout} s:\n{log.read_text()[-2000:]}")
                time.sleep(0.05)
        yield RunningNode(proc, url, log)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@contextmanager
def workdir(keep: bool = False, prefix: str = "cunsync-bench-") -> Iterator[Path]:
    d = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield d
    finally:
        if keep:
            print(f"# kept {d}", file=sys.stderr)
        else:
            shutil.rmtree(d, ignore_errors=True)


# -- realistic persons --------------------------------------------------------------------------------

SURNAMES = (
    "王李张刘陈杨黄赵吴周徐孙马朱胡郭何高林罗郑梁谢宋唐许韩冯邓曹彭曾肖田董袁潘蒋蔡余杜叶程苏魏吕丁"
    "任沈姚卢姜崔钟谭陆汪范金石廖贾夏韦付方白邹孟熊秦邱江尹薛段雷侯龙史陶黎贺顾毛郝龚邵万严覃戴莫"
)
GIVEN = "秀英桂兰玉珍凤华明国建平志强军伟芳娜敏静丽洪德福贵成文春梅淑荣海金林宝珠翠兴发才永红云霞小秋菊"
PERSON_NOTES = (
    "子女在外务工，每月电话联系一次", "患有高血压，需定期测量血压", "腿脚不便，很少出门",
    "与孙子同住，孙子在附近读小学", "听力较差，沟通时需大声", "已签约家庭医生", "喜欢参加社区的坝坝舞",
    "独居，邻居可帮忙照看", "糖尿病，每月到社区卫生服务中心取药", "低保户，每季度复核一次",
    "父母在外务工，由爷爷奶奶照顾", "二级肢体残疾，使用轮椅",
)
EDIT_NOTES = (
    "本周已上门探访，身体状况良好", "电话回访，家属表示近期会回家", "已协助办理高龄津贴",
    "血压 150/95，已提醒按时服药", "已联系社区医生上门随访", "送去米面油各一份", "已更新联系电话",
)


def person_name(rng: random.Random) -> str:
    return rng.choice(SURNAMES) + "".join(rng.choice(GIVEN) for _ in range(rng.choice((1, 2, 2))))


def phone(rng: random.Random) -> str:
    if rng.random() < 0.1:
        return f"0825-{rng.randrange(2_000_000, 9_000_000)}"
    return f"1{rng.choice('3589')}{rng.randrange(10**9):09d}"


def person(rng: random.Random, village: str) -> dict[str, Any]:
    """A resident as a worker enters one: eight fields, unit first (as ``Tablet.create`` orders them)"""
    kind = rng.random()
    today = dt.date(2025, 6, 1)
    if kind < 0.55:  # 老年人
        age = rng.randint(60, 95)
        groups = ["老年人"] + rng.sample(["独居", "困难群众", "残疾人"], rng.choice((0, 0, 1)))
    elif kind < 0.80:  # 儿童
        age = rng.randint(2, 16)
        groups = ["儿童"] + (["留守"] if rng.random() < 0.5 else [])
    else:
        age = rng.randint(20, 59)
        groups = [rng.choice(["困难群众", "残疾人"])]
    birth = today - dt.timedelta(days=age * 365 + rng.randrange(365))
    name = VILLAGES.get(village, "社区")
    return {
        "unit": village,
        "name": person_name(rng),
        "gender": rng.choice(("男", "女")),
        "birth_date": birth.isoformat(),
        "phone": phone(rng),
        "address": f"{ADDRESS_PREFIX}{name}{rng.randint(1, 30)}栋{rng.randint(1, 4)}单元{rng.randint(1, 6)}0{rng.randint(1, 4)}号",
        "groups": [g for g in GROUPS if g in groups],
        "notes": rng.choice(PERSON_NOTES),
    }


def edit(rng: random.Random) -> dict[str, Any]:
    "A single-field edit: a new phone number or a new note"
    if rng.random() < 0.5:
        return {"phone": phone(rng)}
    return {"notes": rng.choice(EDIT_NOTES)}


# -- building a node database fast -------------------------------------------------------------------


def person_ops(values: dict[str, Any], record: str, *, device: str, user: str, unit: str, tier: str,
               counter: int, hlc: int) -> list[Op]:
    """The ops ``Editor.create`` makes for a person, numbered from ``counter`` and stamped from ``hlc``
    (one clock tick per op), without a transaction per record"""
    rank = TIER_RANK[tier]
    out: list[Op] = []
    for name, value in values.items():
        f = SCHEMA.field("person", name)
        elems = [(ADD, e) for e in value] if f.merge == "set" else [(SET, value)]
        for kind, v in elems:
            v = SCHEMA.validate("person", name, kind, v)
            out.append(Op(device, counter, hlc, "person", record, name, kind, v, (), user, unit, rank))
            counter += 1
            hlc += 1
    return out


def fill_village(store: Any, village: str, n: int, *, device: str, user: str, seed: int,
                 batch_ops: int = 50_000) -> int:
    """``n`` persons of one village authored by one village device, applied to ``store`` in big batches
    (``Store.apply``). Deterministic for a seed: the same village gets the same records and ids."""
    from sync.hlc import pack

    rng = random.Random(seed)
    counter = store.conn.execute("SELECT max_counter FROM sites WHERE device = ?", (device,)).fetchone()
    counter = (counter[0] if counter else 0) + 1
    hlc = pack(int(time.time() * 1000) - 86_400_000)  # authored yesterday
    ops: list[Op] = []
    total = 0
    for i in range(n):
        rid = _common.uuid7_at(rng, (hlc >> 16) + i)
        made = person_ops(person(rng, village), rid, device=device, user=user, unit=village, tier="village",
                          counter=counter, hlc=hlc)
        counter += len(made)
        hlc += len(made) + 1
        ops.extend(made)
        if len(ops) >= batch_ops:
            store.apply(ops)
            total += len(ops)
            ops = []
    if ops:
        store.apply(ops)
        total += len(ops)
    return total


def herd_options(ap: Any) -> None:
    "The options of the 200-tablet herd that ``bench/concurrent.py`` and ``bench/burst.py`` share"
    ap.add_argument("--tablets", type=int, default=200)
    ap.add_argument("--records", type=int, default=20, help="new persons per tablet")
    ap.add_argument("--edits", type=int, default=5, help="single-field edits per tablet")
    ap.add_argument("--villages", type=int, default=10)
    ap.add_argument("--base", type=int, default=100, help="persons each village holds before")
    ap.add_argument("--scale", type=float, default=1.0, help="multiply the tablets (0.1: quick check)")
    ap.add_argument("--seed", type=int, default=7)


def herd_node(db: Path, args: Any) -> list[tuple[str, str]]:
    """The herd's node database: ``--villages`` villages of ``--base`` persons each, and the tablets
    enrolled round-robin over them. Returns each tablet's (village, token)"""
    from server.node import Node

    n = max(1, int(args.tablets * args.scale))
    villages = [f"{TOWNSHIP[:9]}{i:03d}" for i in range(1, args.villages + 1)]
    node = Node(db, TOWNSHIP)
    try:
        for v in villages:
            dev, _ = node.add_device(v, "赵德明", device=f"tab-{v}-base")
            fill_village(node.store, v, args.base, device=dev, user="赵德明", seed=int(v[-3:]))
        return [(villages[i % len(villages)], node.add_device(villages[i % len(villages)], WORKERS[i % len(WORKERS)])[1])
                for i in range(n)]
    finally:
        node.close()


def herd_tablet(tab: Any, village: str, args: Any, rng: random.Random) -> None:
    """A herd tablet in use: its bootstrap synced, then ``--records`` new persons and ``--edits``
    single-field edits (to its own records and to ones it received) made locally, not synced"""
    tab.sync()
    received = [r.id for r in tab.store.records("person")]
    mine = []
    with tab.store.transaction():
        for _ in range(args.records):
            mine.append(tab.create("person", person(rng, village)))
        for k in range(args.edits):
            pool = mine if (k % 2 == 0 or not received) else received
            tab.update(rng.choice(pool), edit(rng))


def cpu_seconds(pid: int | None = None) -> float:
    "CPU seconds (user + system, all threads) a process has used so far; this process if ``pid`` is None"
    if pid is None:
        t = os.times()
        return t.user + t.system
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime


def log(msg: str) -> None:
    "Progress, to stderr, so stdout stays the table and the final JSON line"
    print(msg, file=sys.stderr, flush=True)


def print_pressure(figures: dict[str, Any]) -> None:
    "The line that tells a reader how loaded the machine was during the run"
    print(f"CPU pressure over the last minute (share of time some task waited for a CPU): "
          f"{figures['cpu_pressure_avg60']}%; wall-clock figures grow with it, CPU seconds much less")
    if "pace_ms_before" in figures:
        print(f"the machine's pace (bench/_common.pace_ms, lower is faster): {figures['pace_ms_before']} ms "
              f"before the timed part, {figures['pace_ms_after']} ms after")


def cpu_pressure() -> float | None:
    """The share of the last 60 s in which some runnable task waited for a CPU (Linux PSI), in percent:
    how much other work on the machine was slowing every wall-clock figure down"""
    try:
        for line in Path("/proc/pressure/cpu").read_text().splitlines():
            if line.startswith("some"):
                return float(dict(kv.split("=") for kv in line.split()[1:])["avg60"])
    except (OSError, KeyError, ValueError):
        pass
    return None


# -- stats ---------------------------------------------------------------------------------------------


def percentile(xs: list[float], p: float) -> float:
    "Nearest-rank percentile (p in 0..100)"
    if not xs:
        return float("nan")
    s = sorted(xs)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


# -- py-spy ------------------------------------------------------------------------------------------


def py_spy() -> str | None:
    exe = Path(sys.executable).with_name("py-spy")
    return str(exe) if exe.exists() else shutil.which("py-spy")


class Spy:
    """``py-spy record`` attached to a running process (the node, or this process) while a block runs;
    on exit prints the heaviest functions, by own and by inclusive samples, to stderr.

    Usage: ``with Spy(pid, "node", out_dir): ...``. Does nothing if py-spy is not installed.
    """

    def __init__(self, pid: int, label: str, out_dir: Path, *, rate: int = 200, idle: bool = False,
                 top: int = 25) -> None:
        self.pid, self.label, self.rate, self.idle, self.top = pid, label, rate, idle, top
        self.out = Path(out_dir) / f"pyspy-{label}.txt"
        self.proc: subprocess.Popen[bytes] | None = None
        self.summary = ""

    def __enter__(self) -> Spy:
        exe = py_spy()
        if exe is None:
            print("# py-spy not installed: no profile (pip install py-spy)", file=sys.stderr)
            return self
        cmd = [exe, "record", "--pid", str(self.pid), "--format", "raw", "-o", str(self.out),
               "--rate", str(self.rate), "--nonblocking"]
        if self.idle:
            cmd.append("--idle")
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        time.sleep(0.7)  # let it attach
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            _, err = self.proc.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            _, err = self.proc.communicate()
        if not self.out.exists():
            print(f"# py-spy wrote nothing for {self.label}: {err.decode(errors='replace')[-500:]}",
                  file=sys.stderr)
            return
        self.summary = summarize_raw(self.out.read_text(), self.top)
        print(f"== py-spy profile of the {self.label} ({self.out}) ==\n{self.summary}", file=sys.stderr,
              flush=True)


def summarize_raw(text: str, top: int = 25) -> str:
    "The heaviest functions in py-spy's raw (collapsed-stack) output, by own and inclusive samples"
    own: Counter[str] = Counter()
    incl: Counter[str] = Counter()
    lines_own: Counter[str] = Counter()
    total = 0
    root = str(ROOT) + os.sep
    for line in text.splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [_frame(f, root) for f in stack.split(";")]
        own[frames[-1]] += count
        # the innermost frame of the project's own code, with its line: where the project spends it
        for raw in reversed(stack.split(";")):
            if _is_project(raw, root):
                lines_own[_frame(raw, root, line=True)] += count
                break
        for f in set(frames):
            incl[f] += count
    if not total:
        return "(no samples)"
    lines = [f"{total} samples", "-- by own samples --"]
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in own.most_common(top)]
    lines.append("-- by inclusive samples --")
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in incl.most_common(top)]
    lines.append("-- project lines, by samples spent in or under them (innermost project frame) --")
    lines += [f"{100 * c / total:5.1f}%  {f}" for f, c in lines_own.most_common(top)]
    return "\n".join(lines)


_PROJECT_DIRS = ("sync/", "server/", "client/", "bench/")


def _is_project(frame: str, root: str) -> bool:
    "A frame in the project's own code (py-spy prints project paths relative to the working directory)"
    loc = frame.partition(" (")[2]
    if "site-packages" in loc:
        return False
    if loc.startswith(root):
        loc = loc[len(root):]
    return loc.startswith(_PROJECT_DIRS)


def _frame(frame: str, root: str, *, line: bool = False) -> str:
    "'fn (path/to/file.py:123)' -> 'fn (file.py)' with project paths made relative (and ':123' if line)"
    name, _, loc = frame.partition(" (")
    loc = loc.rstrip(")")
    path, _, lineno = loc.rpartition(":")
    if not path:
        path, lineno = loc, ""
    if path.startswith(root):
        path = path[len(root):]
    elif "site-packages" in path:
        path = path.split("site-packages" + os.sep, 1)[1]
    return f"{name} ({path}:{lineno})" if line else f"{name} ({path})"
